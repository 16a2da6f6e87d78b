"""TensorRT engines from the exported ONNX: build, cache, compatibility checks; a static op check.

``build_engine`` parses the ONNX into a *strongly typed* network, so the graph alone decides the
precision (fp32, fp16 casts, int8 Q/DQ): no builder precision flags, no calibrators. One optimization
profile covers the batch axis of ``images`` (3 x H x W fixed by the manifest). The engine is written
atomically with a ``<engine>.json`` sidecar: the ONNX manifest plus ``extra`` describing the build
(TensorRT version, GPU and compute capability, profile, precision, ONNX hash, cache key).

Engines only run on the TensorRT version and GPU architecture that built them, so they are cached by
(ONNX hash, GPU, compute capability, TensorRT version, precision, profile): ``engine_cache_key``.
``check_engine_compatible`` compares an engine's sidecar with this machine before deserialising.

Before building, the graph is checked against TensorRT's ONNX parser without TensorRT
(``export.trt_ops``).

TensorRT is imported lazily: importing this module needs neither TensorRT nor a GPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdk.atomic import atomic_path
from sdk.backends.trt_env import (
    EngineIncompatible,
    GpuInfo,
    TensorRTUnavailable,
    _cc_str,
    check_engine_compatible,
    current_gpu,
    import_tensorrt,
    runtime_environment,
)
from sdk.errors import YoloWorldError
from sdk.manifest import Manifest, Precision, file_sha256, read_manifest, sidecar_path, write_sidecar

from .trt_ops import graph_precision, restriction_issues, unsupported_ops

INPUT_NAME = "images"


class EngineBuildError(YoloWorldError):
    """TensorRT could not parse the ONNX or build an engine from it."""


# ----------------------------------------------------------------------------------------------------
# Engine cache key and profile
# ----------------------------------------------------------------------------------------------------

def make_profile(min_batch: int, opt_batch: int, max_batch: int, imgsz: tuple[int, int]) -> dict[str, Any]:
    """The optimization profile of input ``images``: batch min/opt/max, fixed ``3 x H x W``."""
    h, w = imgsz
    return {"input": INPUT_NAME, "min": [min_batch, 3, h, w], "opt": [opt_batch, 3, h, w],
            "max": [max_batch, 3, h, w]}


def _key_parts(onnx_sha256: str, gpu_name: str, compute_capability: Any, trt_version: str, precision: Precision,
               profile: Any) -> dict[str, Any]:
    return {"onnx_sha256": str(onnx_sha256), "gpu": str(gpu_name), "compute_capability": _cc_str(compute_capability),
            "tensorrt": str(trt_version), "precision": str(precision),
            "profile": json.loads(json.dumps(profile, sort_keys=True))}  # tuples -> lists


def engine_cache_key(onnx_sha256: str, gpu_name: str, compute_capability: Any, trt_version: str,
                     precision: Precision, profile: Any) -> str:
    """A 32-hex-digit key that changes with any of: the ONNX file, the GPU model, its compute capability
    (``"8.6"`` or ``(8, 6)``), the TensorRT version, the precision and the optimization profile."""
    parts = _key_parts(onnx_sha256, gpu_name, compute_capability, trt_version, precision, profile)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def _parts_from_extra(extra: dict[str, Any]) -> dict[str, Any] | None:
    try:
        gpu = extra["gpu"]
        return _key_parts(extra["onnx_sha256"], gpu["name"], gpu["compute_capability"], extra["tensorrt"],
                          extra["precision"], extra["profile"])
    except (KeyError, TypeError):
        return None


def _describe_change(name: str, old: Any, new: Any) -> str:
    if name == "profile" and isinstance(old, dict) and isinstance(new, dict):
        def batches(p: dict[str, Any]) -> str:
            return "/".join(str(p.get(k, ["?"])[0]) for k in ("min", "opt", "max")) + \
                " at " + "x".join(str(v) for v in p.get("max", [0, 0, 0, 0])[1:])
        return f"profile (batch {batches(old)} -> {batches(new)})"
    if name == "onnx_sha256":
        return f"ONNX file (sha256 {str(old)[:12]}... -> {str(new)[:12]}...)"
    label = {"gpu": "GPU", "compute_capability": "compute capability", "tensorrt": "TensorRT version"}.get(name, name)
    return f"{label} ({old} -> {new})"


# ----------------------------------------------------------------------------------------------------
# Build
# ----------------------------------------------------------------------------------------------------

def _batch_range(manifest: Manifest, min_batch: int, opt_batch: int, max_batch: int,
                 log: Callable[[str], Any]) -> tuple[int, int, int]:
    if not manifest.dynamic_batch:
        if (min_batch, opt_batch, max_batch) != (1, 1, 1):
            log("the ONNX has a static batch of 1: optimization profile fixed at batch 1")
        return 1, 1, 1
    if not (1 <= min_batch <= opt_batch <= max_batch):
        raise YoloWorldError(f"batch profile must satisfy 1 <= min <= opt <= max, got min {min_batch}, "
                             f"opt {opt_batch}, max {max_batch}")
    if max_batch > manifest.max_batch:
        log(f"note: the profile's max batch {max_batch} is above the {manifest.max_batch} the ONNX declares "
            "(its batch axis is dynamic, so TensorRT accepts it)")
    return min_batch, opt_batch, max_batch


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, min_batch: int = 1,
                 opt_batch: int = 8, max_batch: int = 32, workspace_gib: float = 4.0,
                 timing_cache: Path | None = None, cache_dir: Path | None = None,
                 log: Callable[[str], Any] = print) -> Path:
    """Build (or fetch from ``cache_dir``) a TensorRT engine for the exported ONNX ``onnx_path``.

    Writes ``engine_path`` and ``<engine_path>.json`` atomically and returns ``engine_path``.
    ``timing_cache``: a file read before and written after the build (kernel timings; speeds up
    rebuilds on the same GPU). ``cache_dir``: engines kept by :func:`engine_cache_key`; a matching entry
    is copied instead of rebuilt, otherwise the log says which part of the key changed.
    Raises :class:`TensorRTUnavailable` before any work if TensorRT or a GPU is missing.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if workspace_gib <= 0:
        raise YoloWorldError(f"workspace_gib must be positive, got {workspace_gib}")
    trt = import_tensorrt()
    gpu = current_gpu()
    if not onnx_path.is_file():
        raise YoloWorldError(f"{onnx_path}: no such ONNX file; export one with yoloworld-export --engine onnx")
    if engine_path.resolve() == onnx_path.resolve():
        raise YoloWorldError(f"the engine path {engine_path} would overwrite the ONNX")
    manifest = read_manifest(onnx_path)
    if manifest.open_vocabulary:
        raise YoloWorldError(f"{onnx_path}: open-vocabulary exports (text inputs) are not supported by the "
                             "TensorRT builder yet; export a fixed vocabulary")
    bmin, bopt, bmax = _batch_range(manifest, min_batch, opt_batch, max_batch, log)
    profile = make_profile(bmin, bopt, bmax, tuple(manifest.imgsz))
    onnx_sha = file_sha256(onnx_path)
    trt_version = str(trt.__version__)
    precision = manifest.precision
    key = engine_cache_key(onnx_sha, gpu.name, gpu.compute_capability, trt_version, precision, profile)
    extra = {**manifest.extra, "tensorrt": trt_version, "gpu": dataclasses.asdict(gpu), "profile": profile,
             "precision": precision, "onnx_sha256": onnx_sha, "cache_key": key, "workspace_gib": workspace_gib}

    if cache_dir is not None and _copy_from_cache(Path(cache_dir), key, extra, engine_path, log):
        return engine_path

    _static_check(onnx_path, precision, log)
    log(f"building a TensorRT {trt_version} engine for {gpu.name} (compute capability {gpu.compute_capability}), "
        f"batch {bmin}/{bopt}/{bmax} at {manifest.imgsz[0]}x{manifest.imgsz[1]}, precision from the graph "
        f"({precision}); this can take minutes")
    blob, io = _build(trt, onnx_path, manifest, profile, workspace_gib, timing_cache, log)
    extra["engine_sha256"] = hashlib.sha256(blob).hexdigest()
    extra["io"] = io
    engine_manifest = dataclasses.replace(
        manifest, max_batch=bmax, extra=extra, versions={**manifest.versions, "tensorrt": trt_version})
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(blob)
    write_sidecar(engine_manifest, engine_path)
    log(f"wrote {engine_path} ({len(blob) / 1e6:.1f} MB) and {engine_path.name}.json")
    if cache_dir is not None:
        entry = Path(cache_dir) / f"{key}.engine"
        if entry.resolve() != engine_path.resolve():
            with atomic_path(entry) as tmp:
                tmp.write_bytes(blob)
            write_sidecar(engine_manifest, entry)
        log(f"cached as {entry}")
    return engine_path


def _copy_from_cache(cache_dir: Path, key: str, extra: dict[str, Any], engine_path: Path,
                     log: Callable[[str], Any]) -> bool:
    """A cached engine of the same key, copied to ``engine_path`` with its sidecar; False on a miss."""
    hit = _cache_lookup(cache_dir, key, _parts_from_extra(extra), log)
    if hit is None:
        return False
    cached = Manifest.from_json(sidecar_path(hit).read_text(), source=str(sidecar_path(hit)))
    if hit.resolve() != engine_path.resolve():
        with atomic_path(engine_path) as tmp:
            shutil.copyfile(hit, tmp)
    write_sidecar(cached, engine_path)
    return True


def _cache_lookup(cache_dir: Path, key: str, parts: dict[str, Any] | None, log: Callable[[str], Any]) -> Path | None:
    entry = cache_dir / f"{key}.engine"
    side = sidecar_path(entry)
    if entry.is_file() and side.is_file():
        try:
            cached = Manifest.from_json(side.read_text(), source=str(side))
            ok = cached.extra.get("cache_key") == key and file_sha256(entry) == cached.extra.get("engine_sha256")
        except (YoloWorldError, OSError):
            ok = False
        if ok:
            log(f"reusing the cached TensorRT engine {entry} (same ONNX, GPU, compute capability, TensorRT "
                f"version, precision and profile)")
            return entry
        log(f"the cached engine {entry} is damaged or incomplete; rebuilding")
        return None
    best: tuple[int, float, list[str], Path] | None = None
    for other in sorted(cache_dir.glob("*.engine.json")) if cache_dir.is_dir() else []:
        try:
            other_parts = _parts_from_extra(Manifest.from_json(other.read_text(), source=str(other)).extra)
        except (YoloWorldError, OSError):
            continue
        if other_parts is None or parts is None:
            continue
        changed = [_describe_change(k, other_parts[k], parts[k]) for k in parts if other_parts.get(k) != parts[k]]
        rank = (len(changed), -other.stat().st_mtime)
        if best is None or rank < best[:2]:
            best = (*rank, changed, other)
    if best is None:
        log(f"no cached engine in {cache_dir}; building")
    else:
        log(f"no cached engine matches; rebuilding because the {', '.join(best[2])} changed since the closest "
            f"cached engine {best[3].name.removesuffix('.json')}")
    return None


def _static_check(onnx_path: Path, precision: Precision, log: Callable[[str], Any]) -> None:
    """Warn (do not fail: the parser has the last word) about ops and attributes TensorRT may reject."""
    try:
        import onnx
    except ImportError:
        return
    try:
        proto = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:
        return
    bad = unsupported_ops(proto)
    if bad:
        log(f"warning: ops TensorRT's ONNX parser does not list as supported: {bad}")
    for issue in restriction_issues(proto):
        log(f"warning: {issue}")
    detected = graph_precision(proto)
    if detected != precision and precision in ("fp32", "fp16", "bf16", "int8"):
        log(f"warning: the manifest says precision {precision!r} but the graph looks {detected!r}; "
            "a strongly typed engine follows the graph")


def _load_timing_cache(trt: Any, config: Any, path: Path | None, log: Callable[[str], Any]) -> None:
    blob = b""
    if path is not None and Path(path).is_file():
        blob = Path(path).read_bytes()
    try:
        cache = config.create_timing_cache(blob)
        ok = cache is not None and config.set_timing_cache(cache, False)
    except Exception:
        ok = False
    if blob and ok:
        log(f"loaded the timing cache {path} ({len(blob) / 1e3:.0f} kB)")
    if not ok:
        if blob:
            log(f"the timing cache {path} is from another GPU or TensorRT version; starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), False)


def _build(trt: Any, onnx_path: Path, manifest: Manifest, profile: dict[str, Any], workspace_gib: float,
           timing_cache: Path | None, log: Callable[[str], Any]) -> tuple[bytes, dict[str, Any]]:
    logger = trt.Logger(trt.Logger.WARNING)
    # Registers TensorRT's bundled plugins (EfficientNMS_TRT of the trt_nms output form) with the
    # parser's plugin fallback. EfficientNMS_TRT is deprecated since TensorRT 10.12 (INMSLayer, i.e. the
    # ONNX NonMaxSuppression of the nms form, replaces it) but still ships in 10.x/11.x.
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    # Strongly typed: tensor types follow the ONNX graph. TensorRT 11 always does this and keeps the
    # flag only for compatibility, so a release without it gets flags 0.
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(1 << int(flag) if flag is not None else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT's ONNX parser rejected {onnx_path}:\n  " + "\n  ".join(errors or ["?"]))
    inputs = {network.get_input(i).name: list(network.get_input(i).shape) for i in range(network.num_inputs)}
    if INPUT_NAME not in inputs:
        raise EngineBuildError(f"{onnx_path} has no input {INPUT_NAME!r} (inputs: {sorted(inputs)})")
    h, w = manifest.imgsz
    if inputs[INPUT_NAME][1:] != [3, h, w]:
        raise EngineBuildError(f"{onnx_path}: input {INPUT_NAME} is {inputs[INPUT_NAME]}, the manifest says "
                               f"(batch, 3, {h}, {w})")
    others = {n: s for n, s in inputs.items() if n != INPUT_NAME}
    if any(d < 0 for s in others.values() for d in s):
        raise EngineBuildError(f"{onnx_path}: dynamic inputs other than {INPUT_NAME}: {others}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if any(d < 0 for d in inputs[INPUT_NAME]):  # dynamic batch axis: one profile over it
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(INPUT_NAME, tuple(profile["min"]), tuple(profile["opt"]), tuple(profile["max"]))
        config.add_optimization_profile(opt_profile)
    elif inputs[INPUT_NAME][0] != profile["max"][0]:
        raise EngineBuildError(f"{onnx_path}: input {INPUT_NAME} has a static batch of {inputs[INPUT_NAME][0]}, "
                               f"the profile asks for {profile['min'][0]}..{profile['max'][0]}")
    if timing_cache is not None:
        _load_timing_cache(trt, config, timing_cache, log)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build an engine from {onnx_path} (see its log above); "
                               f"a larger workspace_gib ({workspace_gib} now) or a smaller max batch may help")
    blob = bytes(serialized)
    if timing_cache is not None:
        with atomic_path(timing_cache) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        log(f"saved the timing cache {timing_cache}")

    # Self-check: the plan deserialises here and has the manifest's tensors.
    engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
    if engine is None:
        raise EngineBuildError("the built engine does not deserialise (see TensorRT's log above)")
    io: dict[str, Any] = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        io[name] = {"mode": "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output",
                    "dtype": _np_dtype_name(trt, engine.get_tensor_dtype(name)),
                    "shape": [int(d) for d in engine.get_tensor_shape(name)]}
    outputs = [n for n, v in io.items() if v["mode"] == "output"]
    if sorted(outputs) != sorted(manifest.output_names):
        raise EngineBuildError(f"engine outputs {outputs} differ from the manifest's {list(manifest.output_names)}")
    return blob, io


def _np_dtype_name(trt: Any, dtype: Any) -> str:
    try:
        import numpy as np

        return np.dtype(trt.nptype(dtype)).name
    except Exception:  # types numpy lacks (bf16, fp8, int4)
        return str(dtype).rsplit(".", 1)[-1].lower()


__all__ = ["INPUT_NAME", "EngineBuildError", "EngineIncompatible", "GpuInfo", "TensorRTUnavailable", "build_engine",
           "check_engine_compatible", "current_gpu", "engine_cache_key", "file_sha256", "import_tensorrt",
           "make_profile", "runtime_environment"]
