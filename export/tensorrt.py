"""TensorRT engines from the exported ONNX: build, cache, compatibility checks; a static op check.

``build_engine`` parses the ONNX into a *strongly typed* network, so the graph alone decides the
precision (fp32, fp16 casts, int8 Q/DQ): no builder precision flags, no calibrators. One optimization
profile covers the batch axis of ``images`` (3 x H x W fixed by the manifest). The engine is written
atomically with a ``<engine>.json`` sidecar: the ONNX manifest plus ``extra`` describing the build
(TensorRT version, GPU and compute capability, profile, precision, ONNX hash, cache key).

Engines only run on the TensorRT version and GPU architecture that built them, so they are cached by
(ONNX hash, GPU, compute capability, TensorRT version, precision, profile): ``engine_cache_key``.
``check_engine_compatible`` compares an engine's sidecar with this machine before deserialising.

``TRT_SUPPORTED_OPS`` / ``unsupported_ops`` / ``restriction_issues`` check a graph against TensorRT's
ONNX parser without TensorRT (from onnx-tensorrt's ``docs/operators.md``, TensorRT 10).

TensorRT is imported lazily: importing this module needs neither TensorRT nor a GPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
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
from sdk.manifest import Manifest, file_sha256, read_manifest, sidecar_path, write_sidecar

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


def _key_parts(onnx_sha256: str, gpu_name: str, compute_capability: Any, trt_version: str, precision: str,
               profile: Any) -> dict[str, Any]:
    return {"onnx_sha256": str(onnx_sha256), "gpu": str(gpu_name), "compute_capability": _cc_str(compute_capability),
            "tensorrt": str(trt_version), "precision": str(precision),
            "profile": json.loads(json.dumps(profile, sort_keys=True))}  # tuples -> lists


def engine_cache_key(onnx_sha256: str, gpu_name: str, compute_capability: Any, trt_version: str,
                     precision: str, profile: Any) -> str:
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

    if cache_dir is not None:
        hit = _cache_lookup(Path(cache_dir), key, _parts_from_extra(extra), log)
        if hit is not None:
            cached = Manifest.from_json(sidecar_path(hit).read_text(), source=str(sidecar_path(hit)))
            if hit.resolve() != engine_path.resolve():
                with atomic_path(engine_path) as tmp:
                    shutil.copyfile(hit, tmp)
            write_sidecar(cached, engine_path)
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


def _static_check(onnx_path: Path, precision: str, log: Callable[[str], Any]) -> None:
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


# ----------------------------------------------------------------------------------------------------
# Compatibility of a built engine with this machine
# ----------------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------------
# Static op support (no TensorRT needed)
# ----------------------------------------------------------------------------------------------------

# Every op onnx-tensorrt's docs/operators.md (TensorRT 10.x, opsets 9-20) marks supported. Notes on the ones that matter
# for detectors (restrictions are checked by ``restriction_issues`` where they can be checked statically):
# * NonMaxSuppression: experimental (a plugin, scalar inputs had to be initializers) in TensorRT 8.0-8.4;
#   a native layer (INMSLayer) since 8.5, no restrictions listed; FP32/FP16 only.
# * TopK: ``sorted`` must be 1 and K < 3840 (TensorRT 10); K had to be an initializer before 8.6.
#   The host NMS's pre-NMS top-30000 cannot be one TopK in TensorRT.
# * Slice / Squeeze / Unsqueeze / Pad / Reduce*: ``axes`` must be an initializer (constant).
# * Resize: modes nearest/linear; no antialias; aspect-ratio policy "stretch" only.
# * MaxPool / AveragePool: 2D or 3D, dilations all 1; MaxPool's Indices output unsupported.
# * LayerNormalization: only the first output (Y).
# * QuantizeLinear / DequantizeLinear: zero point must be 0 (symmetric); INT8/FP8/INT4 are quantized types
#   reachable only through Q/DQ from a wider float type.
# * Cast: TensorRT types only (DOUBLE is cast down to FLOAT with clamping).
# * Einsum is supported by the parser but the exporter keeps it out (slow and restricted in older versions).
_PARSER_OPS: frozenset[str] = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil
Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements
GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN
LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max
MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# Ops the parser imports through its plugin fallback (``trt.init_libnvinfer_plugins`` registers them), in
# any domain. EfficientNMS_TRT: deprecated since TensorRT 10.12, still shipped.
TRT_PLUGIN_OPS: frozenset[str] = frozenset({"EfficientNMS_TRT"})

# What an exported graph may contain: the parser's ONNX ops plus the plugin ops.
TRT_SUPPORTED_OPS: frozenset[str] = _PARSER_OPS | TRT_PLUGIN_OPS

TOPK_MAX_K = 3840  # exclusive bound (onnx-tensorrt docs, TensorRT 10)
OPSET_RANGE = (9, 20)  # TensorRT 10.0's parser; later 10.x releases accept newer opsets
_RESIZE_COORD_MODES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_RESIZE_NEAREST_MODES = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
_AXES_INPUT = {"Slice": 3, "Squeeze": 1, "Unsqueeze": 1, "Pad": 3, **{
    op: 1 for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                     "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")}}


def _as_model(onnx_model: Any) -> Any:
    if isinstance(onnx_model, (str, os.PathLike)):
        import onnx

        return onnx.load(str(onnx_model), load_external_data=False)
    return onnx_model


def _walk(graph: Any, constants: frozenset[str]) -> Iterator[tuple[Any, frozenset[str]]]:
    """Every node of ``graph`` and of its subgraphs (If/Loop/Scan bodies), with the constant names in scope."""
    constants = constants | {t.name for t in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output}
    for node in graph.node:
        yield node, constants
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _walk(sub, constants)


def _nodes(model: Any) -> Iterator[tuple[Any, frozenset[str]]]:
    """Graph nodes, local functions expanded (the parser inlines them)."""
    functions = {(f.domain, f.name): f for f in getattr(model, "functions", [])}
    seen: set[tuple[str, str]] = set()

    def expand(items: Iterator[tuple[Any, frozenset[str]]]) -> Iterator[tuple[Any, frozenset[str]]]:
        for node, consts in items:
            key = (node.domain, node.op_type)
            if key in functions:
                if key not in seen:
                    seen.add(key)
                    fn = functions[key]
                    inner = frozenset(o for n in fn.node if n.op_type == "Constant" for o in n.output)
                    yield from expand((n, inner) for n in fn.node)
                continue
            yield node, consts

    yield from expand(_walk(model.graph, frozenset()))


def unsupported_ops(onnx_model: Any) -> list[str]:
    """Sorted op types of ``onnx_model`` (a ModelProto or a path) that TensorRT's ONNX parser does not
    support; ops of other domains are named ``domain::Op``. Empty for a graph TensorRT can parse."""
    model = _as_model(onnx_model)
    bad = set()
    for node, _ in _nodes(model):
        if node.op_type in TRT_PLUGIN_OPS:
            continue
        if node.domain in ("", "ai.onnx") and node.op_type in TRT_SUPPORTED_OPS:
            continue
        bad.add(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}")
    return sorted(bad)


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _const_values(model: Any) -> dict[str, Any]:
    """name -> numpy value of initializers and Constant outputs (main graph)."""
    from onnx import numpy_helper

    values = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    values[n.output[0]] = a.t
    out = {}
    for name, tensor in values.items():
        try:
            out[name] = numpy_helper.to_array(tensor)
        except Exception:
            continue
    return out


def restriction_issues(onnx_model: Any) -> list[str]:
    """Per-op restrictions of TensorRT's ONNX parser that ``onnx_model`` violates, as messages (empty if
    none): opset range, TopK (sorted, K < 3840), Resize modes, constant ``axes``, pooling dilations,
    MaxPool indices, LayerNormalization extra outputs, non-zero Q/DQ zero points."""
    model = _as_model(onnx_model)
    issues = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset < OPSET_RANGE[0]:
        issues.append(f"opset {opset} is older than TensorRT's parser accepts (>= {OPSET_RANGE[0]})")
    elif opset is not None and opset > OPSET_RANGE[1]:
        issues.append(f"opset {opset} is newer than TensorRT 10.0's parser documents (<= {OPSET_RANGE[1]}); "
                      "it needs a newer TensorRT")
    consts = _const_values(model)
    nodes = list(_nodes(model))
    producers = {o: n for n, _ in nodes for o in n.output}
    for node, constants in nodes:
        op, where = node.op_type, f"{node.op_type} node {node.name or node.output[0]!r}"
        if op == "TopK":
            if _attr(node, "sorted", 1) != 1:
                issues.append(f"{where}: sorted=0 is unsupported")
            k = _topk_bound(node.input[1], consts, producers) if len(node.input) > 1 else None
            if k is not None and k >= TOPK_MAX_K:
                issues.append(f"{where}: K={k} (or up to it) must be < {TOPK_MAX_K}")
        elif op == "Resize":
            mode = _as_str(_attr(node, "mode", "nearest"))
            coord = _as_str(_attr(node, "coordinate_transformation_mode", "half_pixel"))
            nearest = _as_str(_attr(node, "nearest_mode", "round_prefer_floor"))
            if mode not in ("nearest", "linear"):
                issues.append(f"{where}: mode {mode!r} unsupported (nearest, linear)")
            if coord not in _RESIZE_COORD_MODES:
                issues.append(f"{where}: coordinate_transformation_mode {coord!r} unsupported")
            if mode == "nearest" and nearest not in _RESIZE_NEAREST_MODES:
                issues.append(f"{where}: nearest_mode {nearest!r} unsupported")
            if _attr(node, "antialias", 0):
                issues.append(f"{where}: antialias is unsupported")
            if _as_str(_attr(node, "keep_aspect_ratio_policy", "stretch")) != "stretch":
                issues.append(f"{where}: keep_aspect_ratio_policy must be 'stretch'")
        elif op in ("MaxPool", "AveragePool", "LpPool"):
            if any(d != 1 for d in _attr(node, "dilations", []) or []):
                issues.append(f"{where}: dilations must be 1")
            if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
                issues.append(f"{where}: the Indices output is unsupported")
        elif op == "LayerNormalization" and any(node.output[1:]):
            issues.append(f"{where}: only the first output (Y) is supported")
        elif op in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
            zp = consts.get(node.input[2])
            if zp is not None and zp.any():
                issues.append(f"{where}: the zero point must be 0 (symmetric quantization)")
        if op in _AXES_INPUT:
            i = _AXES_INPUT[op]
            if len(node.input) > i and node.input[i] and node.input[i] not in constants:
                issues.append(f"{where}: 'axes' must be a constant (initializer)")
    return issues


def _topk_bound(name: str, consts: dict[str, Any], producers: dict[str, Any]) -> int | None:
    """Largest K a TopK can get from ``name``: a constant, or ``Min(..., constant)`` (a dynamic k capped
    by a constant, as the nms form's ``min(selected, max_det)``); None if unknown."""
    if name in consts:
        return int(consts[name].max())
    node = producers.get(name)
    if node is not None and node.op_type == "Min":
        caps = [int(consts[i].max()) for i in node.input if i in consts]
        return min(caps) if caps else None
    return None


def _as_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def graph_precision(onnx_model: Any) -> str:
    """What a strongly typed engine of this graph computes in: ``int8`` (Q/DQ nodes), ``fp16`` / ``bf16``
    (half-precision weights or casts), else ``fp32``."""
    import onnx

    model = _as_model(onnx_model)
    ops = set()
    halves = set()
    half_types = {onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}
    for node, _ in _nodes(model):
        ops.add(node.op_type)
        if node.op_type == "Cast" and _attr(node, "to") in half_types:
            halves.add(half_types[_attr(node, "to")])
    halves |= {half_types[t.data_type] for t in model.graph.initializer if t.data_type in half_types}
    if ops & {"QuantizeLinear", "DequantizeLinear"}:
        return "int8"
    if halves:
        return "fp16" if "fp16" in halves else "bf16"
    return "fp32"


__all__ = ["INPUT_NAME", "OPSET_RANGE", "TOPK_MAX_K", "TRT_PLUGIN_OPS", "TRT_SUPPORTED_OPS", "EngineBuildError",
           "EngineIncompatible", "GpuInfo", "TensorRTUnavailable", "build_engine", "check_engine_compatible",
           "current_gpu", "engine_cache_key", "file_sha256", "graph_precision", "import_tensorrt", "make_profile",
           "restriction_issues", "runtime_environment", "unsupported_ops"]
