"""Static INT8 with explicit QuantizeLinear/DequantizeLinear pairs (QDQ), calibrated on the user's images.

Symmetric int8 activations and per-channel symmetric int8 weights by default: what TensorRT's explicit
quantization accepts. Calibrated with ``onnxruntime.quantization`` through :func:`sdk.preprocess.preprocess`;
the decode tail stays float (``export.precision.select_nodes``). Calibration ranges are cached in a
JSON file keyed by the model graph's hash and the calibration images' hash. On x86 CPUs INT8 is fast
in ONNX Runtime only with ``activations="uint8"``, which it fuses into QLinearConv and friends; the
default symmetric int8 activations mostly run as DequantizeLinear -> float Conv there.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sdk.preprocess import preprocess

from .precision import (
    DEFAULT_FLOAT_INT8,
    DEFAULT_FLOAT_OUTPUTS,
    DEFAULT_INT8_OPS,
    PrecisionError,
    copy_manifest_if_any,
    name_nodes,
    save_model,
    select_nodes,
)

_CALIB_FORMAT = "yoloworld-sdk-calibration"


_CALIB_VERSION = 1


def _list_images(calib_images: str | os.PathLike | Sequence[np.ndarray] | Sequence[str | os.PathLike],
                 max_images: int) -> list[str | np.ndarray]:
    from sdk.images import expand_sources

    if isinstance(calib_images, (str, os.PathLike)) and not Path(calib_images).exists():
        raise PrecisionError(f"calibration images: {str(calib_images)!r} does not exist")
    items = expand_sources(calib_images)
    if not items:
        raise PrecisionError("no calibration images")
    if max_images > 0 and len(items) > max_images:
        # an even spread over a sorted folder rather than its first files (often one scene)
        idx = np.linspace(0, len(items) - 1, max_images).round().astype(int)
        items = [items[i] for i in idx]
    return items


def _images_sha256(items: list[str | np.ndarray], imgsz: int) -> str:
    """Hash of the calibration set: every image's content (array bytes, or file bytes), not its name,
    in order, and ``imgsz``."""
    h = hashlib.sha256(f"imgsz={imgsz};n={len(items)}".encode())
    for item in items:
        if isinstance(item, np.ndarray):
            img = np.ascontiguousarray(item)
            h.update(f"{img.shape}{img.dtype}".encode())
            h.update(img.tobytes())
        else:
            with open(item, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def graph_sha256(model: Any) -> str:
    """Hash of an ONNX model's graph and opsets (not its metadata, so re-described models match)."""
    h = hashlib.sha256(model.graph.SerializeToString(deterministic=True))
    for o in model.opset_import:
        h.update(f"{o.domain}:{o.version}".encode())
    return h.hexdigest()


class ImageCalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader``: one preprocessed image per batch.

    Images are loaded and letterboxed lazily, one at a time, so a large set costs no memory."""

    def __init__(self, items: list[str | np.ndarray], imgsz: int, input_name: str = "images") -> None:
        self.items, self.imgsz, self.input_name = items, imgsz, input_name
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        from sdk.images import load

        if self._i >= len(self.items):
            return None
        img, _ = load(self.items[self._i], self._i)
        self._i += 1
        return {self.input_name: preprocess([img], self.imgsz)[0]}

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.get_next()
        if batch is None:
            raise StopIteration
        return batch


def _check_runnable(model: Any, src: Path) -> None:
    """Calibration runs the graph in ONNX Runtime: refuse custom-domain ops (the TensorRT NMS plugin)."""
    foreign = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node
                      if n.domain not in ("", "ai.onnx", "com.microsoft")})
    if foreign:
        raise PrecisionError(f"{src}: calibration runs the model in ONNX Runtime, which cannot run {foreign}; "
                             f"quantize the raw-output export and add the TensorRT NMS afterwards")


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike,
                  calib_images: str | os.PathLike | Sequence[np.ndarray] | Sequence[str | os.PathLike],
                  imgsz: int, cache: str | os.PathLike | None = None, max_images: int = 64, *,
                  keep_float: Sequence[str] = DEFAULT_FLOAT_INT8, op_types: Sequence[str] | None = DEFAULT_INT8_OPS,
                  activations: str = "int8", method: str = "minmax",
                  float_outputs: Sequence[str] = DEFAULT_FLOAT_OUTPUTS,
                  log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Static INT8 quantization of ``src`` into ``dst`` in QDQ form.

    Weights: int8, symmetric, per output channel. ``activations``: ``"int8"`` (default) symmetric
    int8 with zero points of 0, the only activation quantization TensorRT's explicit (Q/DQ) mode
    accepts; ``"uint8"`` asymmetric uint8, what ONNX Runtime's x86 CPU kernels fuse into QLinearConv
    and friends (with int8 activations ONNX Runtime on x86 leaves most convs as DequantizeLinear ->
    float Conv, slower than FP32). ``keep_float``: nodes left unquantized (see :func:`select_nodes`;
    default :data:`DEFAULT_FLOAT_INT8`: the decode tail, stem and head outputs). ``op_types``: op types to
    quantize (default :data:`DEFAULT_INT8_OPS`, the convolutions; None: every type ONNX Runtime can
    quantize). ``method``: ``minmax`` (default) | ``percentile`` (99.999th). ``float_outputs``: op types
    whose outputs get no Q/DQ pair (default :data:`DEFAULT_FLOAT_OUTPUTS`, the convolutions: their
    activation function runs on the float output; empty: ONNX Runtime's default, every output quantized).

    ``calib_images``: a folder, image paths or BGR uint8 arrays; at most ``max_images`` are used (an
    even spread). ``cache``: a calibration JSON; reused when its model-graph and image-set hashes
    (and ``imgsz``, ``method``, ``op_types``, ``float_outputs``) match, written otherwise. Returns (and
    records in the manifest ``extra``) ``calibration_images``, ``calibration_sha256``, ``calibration_cached``.
    """
    import onnx

    if activations not in ("int8", "uint8"):
        raise PrecisionError(f"activations {activations!r}; expected 'int8' (TensorRT) or 'uint8' (ONNX Runtime CPU)")
    if method not in ("minmax", "percentile"):
        raise PrecisionError(f"calibration method {method!r}; expected one of ['minmax', 'percentile']")
    src, dst = Path(src), Path(dst)
    t0 = time.perf_counter()
    model = onnx.load(str(src))
    name_nodes(model)
    _check_runnable(model, src)
    items = _list_images(calib_images, max_images)
    excluded = select_nodes(model.graph, keep_float)
    key = {"model_sha256": graph_sha256(model), "images_sha256": _images_sha256(items, imgsz),
           "num_images": len(items), "imgsz": imgsz, "method": method,
           "op_types": sorted(op_types) if op_types else None,  # what decides the calibrated ranges
           "float_outputs": sorted(float_outputs),
           "float_nodes_sha256": hashlib.sha256(",".join(excluded).encode()).hexdigest()}  # which tensors have one
    q, cached = _calibrate_and_quantize(model, items, imgsz, key, excluded, op_types, activations, method,
                                        float_outputs, cache, log)
    rewired = float_inputs_for(q, set(excluded))
    q.producer_name = model.producer_name or "yoloworld-sdk"
    del q.metadata_props[:]
    q.metadata_props.extend(model.metadata_props)
    onnx.checker.check_model(q)
    save_model(q, dst)
    info = {"calibration_images": len(items), "calibration_sha256": key["images_sha256"],
            "calibration_cached": cached, "calibration_method": method,
            "activations": activations, "float_nodes": len(excluded), "float_outputs": ",".join(float_outputs),
            "float_inputs_rewired": rewired}
    copy_manifest_if_any(src, dst, "int8", {k: v for k, v in info.items() if k != "calibration_cached"})
    n_q = sum(n.op_type == "QuantizeLinear" for n in q.graph.node)
    log(f"wrote {dst} ({n_q} QuantizeLinear, {len(excluded)} float nodes kept) in "
        f"{time.perf_counter() - t0:.1f} s")
    return info


def _calibrate_and_quantize(model: Any, items: list[str | np.ndarray], imgsz: int, key: dict[str, Any],
                            excluded: list[str], op_types: Sequence[str] | None, activations: str, method: str,
                            float_outputs: Sequence[str], cache: str | os.PathLike | None,
                            log: Callable[[str], Any]) -> tuple[Any, bool]:
    """``onnxruntime.quantization.quantize_static`` in QDQ form with the calibration cache: returns the
    quantized model and whether the cached ranges were used."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    extra_options: dict[str, Any] = {"ActivationSymmetric": activations == "int8", "WeightSymmetric": True,
                                     "OpTypesToExcludeOutputQuantization": list(float_outputs)}
    if method == "percentile":
        extra_options["CalibPercentile"] = 99.999
    if cache is not None and "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        log(f"this onnxruntime ({_ort_version()}) cannot reuse calibration ranges: calibrating without a cache")
        cache = None
    with tempfile.TemporaryDirectory(prefix="yw-int8-") as tmp:
        ort_cache = Path(tmp) / "ranges.json"
        cached = False
        if cache is not None and Path(cache).is_file():
            stored = _read_calibration(Path(cache))
            cached = stored is not None and stored.get("key") == key
            if cached:
                ort_cache.write_text(json.dumps(stored["ranges"]))
            log(f"reusing calibration ranges from {cache}" if cached else
                f"calibration cache {cache} is for another model or image set: recalibrating")
        named = Path(tmp) / "named.onnx"
        onnx.save(model, str(named))
        if not cached:
            log(f"calibrating on {len(items)} images at {imgsz} ({method})")
        with _quiet_root_warnings("Please consider"):  # ORT's advice to run its own pre-processing
            quantize_static(
                str(named), str(Path(tmp) / "int8.onnx"),
                None if cached else ImageCalibrationReader(items, imgsz, model.graph.input[0].name),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=list(op_types) if op_types else None,
                per_channel=True, reduce_range=False, weight_type=QuantType.QInt8,
                activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
                nodes_to_exclude=excluded, calibrate_method=methods[method], extra_options=extra_options,
                **({"calibration_cache_path": str(ort_cache)} if cache is not None else {}))
        if cache is not None and not cached:
            from sdk.atomic import atomic_write_text

            atomic_write_text(cache, json.dumps({"format": _CALIB_FORMAT, "version": _CALIB_VERSION, "key": key,
                                                 "ranges": json.loads(ort_cache.read_text())}))
            log(f"wrote calibration cache {cache}")
        return onnx.load(str(Path(tmp) / "int8.onnx")), cached


def float_inputs_for(model: Any, names: set[str]) -> int:
    """Feed the nodes ``names`` (left unquantized) the float tensors themselves instead of their
    QuantizeLinear -> DequantizeLinear round trip (ONNX Runtime's quantizer puts Q/DQ on every
    quantized op's output, e.g. on the last convs' logits that only the float decode tail reads).
    Q/DQ nodes and initializers nothing reads any more are removed. Returns the rewired inputs."""
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    rewired = 0
    for node in graph.node:
        if node.name not in names:
            continue
        for k, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                continue  # a weight's DQ (int8 initializer): the node really is quantized data
            node.input[k] = q.input[0]
            rewired += 1
    outputs = {o.name for o in graph.output}
    while True:  # drop Q/DQ nodes whose outputs nobody reads
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)
    return rewired


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


@contextlib.contextmanager
def _quiet_root_warnings(prefix: str) -> Iterator[None]:
    """Drop root-logger records starting with ``prefix`` while inside."""

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(prefix)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _read_calibration(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != _CALIB_FORMAT or data.get("version") != _CALIB_VERSION:
        return None
    return data


__all__ = ["ImageCalibrationReader", "float_inputs_for", "graph_sha256", "quantize_int8"]
