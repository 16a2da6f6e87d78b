"""Precision decided in the ONNX graph: mixed FP16 and explicit INT8 (Q/DQ), plus an agreement report.

TensorRT 10/11 *strongly typed* networks take every tensor's type from the ONNX graph instead of
choosing kernels by builder flags, so the precision of an artifact is fixed here, once, and every
runtime (ONNX Runtime, TensorRT) executes the same graph:

* :func:`convert_fp16` -- weights and activations in float16; the numerically sensitive *decode tail*
  (everything after the last convolutions: the DFL Softmax / ReduceSum expectation, the score
  Sigmoid, the anchor/stride box arithmetic, an in-graph NMS if present) stays float32, and so do the
  graph inputs and outputs, so the SDK feeds the same float32 ``images`` and reads float32 outputs.
  Uses ONNX Runtime's float16 converter (``onnxruntime.transformers.float16``, MIT) with a node
  block list: no extra dependency.
* :func:`quantize_int8` -- static INT8 with explicit QuantizeLinear/DequantizeLinear pairs (QDQ
  format, symmetric int8 activations and per-channel symmetric int8 weights: what TensorRT's explicit
  quantization accepts), calibrated with ``onnxruntime.quantization`` on the user's images through
  :func:`sdk.preprocess.preprocess`; the decode tail stays float. Calibration ranges are cached in a
  JSON file keyed by the model graph's hash and the calibration images' hash.
* :func:`agreement` -- fp32 reference vs candidate, through the SDK's own pre/post-processing.
* :func:`copy_manifest` -- the converted artifact's manifest (``precision`` and ``extra`` set).

Both converted models run in ONNX Runtime on CPU. There, FP16 is a correctness path, not a speed-up
(x86 has few float16 kernels: ONNX Runtime wraps those nodes in casts), and INT8 is fast only with
``activations="uint8"``, which ONNX Runtime fuses into QLinearConv and friends; the default symmetric
int8 activations (TensorRT's requirement) mostly run as DequantizeLinear -> float Conv on x86.
Convert the raw-output graph: an appended TensorRT NMS plugin cannot run in ONNX Runtime, so it cannot
be calibrated (append NMS after the precision change; ONNX NonMaxSuppression is fine either way).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import YoloWorldError
from sdk.manifest import MANIFEST_KEY, read_manifest, write_sidecar
from sdk.postprocess import postprocess_image
from sdk.preprocess import preprocess

# Selectors understood by ``keep_fp32`` / ``keep_float`` besides op types and node names.
DECODE_TAIL = "decode_tail"  # every node after the last Conv/MatMul (nothing it feeds is a Conv/MatMul)
ATTENTION = "max_sigmoid_attention"  # ReduceMax -> ... -> Sigmoid -> Mul gates of the VL-PAN

# The decode tail holds the DFL Softmax/ReduceSum, the score Sigmoid and the box arithmetic; the op
# types are listed too so that a graph whose tail is fed by something unusual keeps them float32.
DEFAULT_FP32_OPS: tuple[str, ...] = (DECODE_TAIL, "Softmax", "ReduceSum", "TopK", "NonMaxSuppression")
# INT8: the decode tail stays float and reads the last convs' float outputs (no Q/DQ after them).
# Measured on the demo's fine-tuned tiny model (15 epochs, 256 px, 32 calibration images, 16 val
# images; fp32 mAP50:95 0.723): default 0.722, raw max |d score| 0.020, 108/119 detections matched
# at IoU >= 0.9 (conf 0.05); tail quantized too: 0.709 and only 75/119 matched (mean IoU 0.93);
# attention gates also float: 0.728, 105/119 matched (no gain beyond noise, so they are quantized);
# uint8 activations: 0.724, 111/119. FP16 on the same model: 0.723, 119/119, |d score| 3e-4.
DEFAULT_FLOAT_INT8: tuple[str, ...] = (DECODE_TAIL,)

_COMPUTE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
_CALIB_FORMAT = "yoloworld-sdk-calibration"
_CALIB_VERSION = 1


class PrecisionError(YoloWorldError):
    """A precision conversion could not be done (bad input, no calibration images, ...)."""


# ---------------------------------------------------------------------------------------------
# graph selection


def decode_tail_nodes(graph: Any) -> list[str]:
    """Names of the nodes after the last compute ops: those from which no Conv/ConvTranspose/MatMul/
    Gemm is reachable downstream (decode, sigmoid, box math, in-graph NMS). Nodes must be named."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    feeds_compute: dict[int, bool] = {}
    for node in reversed(graph.node):  # ONNX graphs are topologically sorted
        feeds_compute[id(node)] = node.op_type in _COMPUTE_OPS or any(
            feeds_compute.get(id(c), False) for out in node.output for c in consumers.get(out, ()))
    return [n.name for n in graph.node if not feeds_compute[id(n)]]


def attention_nodes(graph: Any) -> list[str]:
    """Names of the max-sigmoid attention internals: each ReduceMax and the chain of elementwise /
    shape ops it feeds up to and including the Mul that gates the features."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    chain_ops = {"Div", "Add", "Mul", "Sigmoid", "Unsqueeze", "Reshape", "Transpose", "Squeeze"}
    out: list[str] = []
    for node in graph.node:
        if node.op_type != "ReduceMax":
            continue
        cur = node
        out.append(cur.name)
        for _ in range(8):
            nxt = [c for o in cur.output for c in consumers.get(o, ())]
            if len(nxt) != 1 or nxt[0].op_type not in chain_ops:
                break
            cur = nxt[0]
            out.append(cur.name)
            if cur.op_type == "Mul":
                break
    return out


def select_nodes(graph: Any, selectors: Iterable[str]) -> list[str]:
    """Node names matched by ``selectors``: :data:`DECODE_TAIL`, :data:`ATTENTION`, op types, node names."""
    selectors = set(selectors)
    chosen: set[str] = set()
    if DECODE_TAIL in selectors:
        chosen.update(decode_tail_nodes(graph))
    if ATTENTION in selectors:
        chosen.update(attention_nodes(graph))
    chosen.update(n.name for n in graph.node if n.op_type in selectors or n.name in selectors)
    return [n.name for n in graph.node if n.name in chosen]  # graph order


def _name_nodes(model: Any) -> None:
    """Give unnamed nodes unique names (block lists and exclusions are by name)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def _toposort(graph: Any) -> None:
    """Reorder ``graph.node`` topologically, keeping the existing order where it is already valid."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise PrecisionError(f"graph has a cycle or a missing input near node {rest[0].name!r}")
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered, strict=True):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


# ---------------------------------------------------------------------------------------------
# FP16


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike, keep_fp32: Sequence[str] = DEFAULT_FP32_OPS
                 ) -> None:
    """Write a mixed-precision copy of ``src`` to ``dst``: initializers and activations float16, the
    nodes selected by ``keep_fp32`` (see :func:`select_nodes`; default: the decode tail) float32 with
    Cast nodes at the boundaries, graph inputs/outputs float32. The manifest (metadata and sidecar)
    is copied with ``precision="fp16"`` when ``src`` has one."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    _name_nodes(model)
    blocked = select_nodes(model.graph, keep_fp32)
    fp16 = convert_float_to_float16(model, keep_io_types=True, node_block_list=blocked,
                                    op_block_list=[])  # [] = only our list (default blocks Max/Min/Range...)
    _toposort(fp16.graph)  # the converter appends its input/output Casts at the end
    fp16.producer_name = model.producer_name or "yoloworld-sdk"
    onnx.checker.check_model(fp16)
    _save_atomic(fp16, dst)
    _copy_manifest_if_any(src, dst, "fp16", {"fp32_nodes": len(blocked), "keep_fp32": list(keep_fp32)})


# ---------------------------------------------------------------------------------------------
# INT8


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

    def rewind(self) -> None:
        self._i = 0

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.get_next()
        if batch is None:
            raise StopIteration
        return batch


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike,
                  calib_images: str | os.PathLike | Sequence[np.ndarray] | Sequence[str | os.PathLike],
                  imgsz: int, cache: str | os.PathLike | None = None, max_images: int = 64, *,
                  keep_float: Sequence[str] = DEFAULT_FLOAT_INT8, op_types: Sequence[str] | None = None,
                  activations: str = "int8", method: str = "minmax",
                  log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Static INT8 quantization of ``src`` into ``dst`` in QDQ form.

    Weights: int8, symmetric, per output channel. ``activations``: ``"int8"`` (default) symmetric
    int8 with zero points of 0, the only activation quantization TensorRT's explicit (Q/DQ) mode
    accepts; ``"uint8"`` asymmetric uint8, what ONNX Runtime's x86 CPU kernels fuse into QLinearConv
    and friends (with int8 activations ONNX Runtime on x86 leaves most convs as DequantizeLinear ->
    float Conv, slower than FP32). ``keep_float``: nodes left unquantized (see
    :func:`select_nodes`; default the decode tail). ``op_types``: op types to quantize (default: every
    type ONNX Runtime can quantize). ``method``: ``minmax`` (default) | ``percentile`` (99.999th).

    ``calib_images``: a folder, image paths or BGR uint8 arrays; at most ``max_images`` are used (an
    even spread). ``cache``: a calibration JSON; reused when its model-graph and image-set hashes
    (and ``imgsz``, ``method``, ``op_types``) match, written otherwise. Returns (and records in the manifest
    ``extra``) ``calibration_images``, ``calibration_sha256``, ``calibration_cached``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    if activations not in ("int8", "uint8"):
        raise PrecisionError(f"activations {activations!r}; expected 'int8' (TensorRT) or 'uint8' (ONNX Runtime CPU)")
    if method not in methods:
        raise PrecisionError(f"calibration method {method!r}; expected one of {sorted(methods)}")
    src, dst = Path(src), Path(dst)
    t0 = time.perf_counter()
    model = onnx.load(str(src))
    _name_nodes(model)
    foreign = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node
                      if n.domain not in ("", "ai.onnx", "com.microsoft")})
    if foreign:
        raise PrecisionError(f"{src}: calibration runs the model in ONNX Runtime, which cannot run {foreign}; "
                             f"quantize the raw-output export and add the TensorRT NMS afterwards")
    input_name = model.graph.input[0].name
    items = _list_images(calib_images, max_images)
    key = {"model_sha256": graph_sha256(model), "images_sha256": _images_sha256(items, imgsz),
           "num_images": len(items), "imgsz": imgsz, "method": method,
           "op_types": sorted(op_types) if op_types else None}  # what decides the calibrated ranges
    excluded = select_nodes(model.graph, keep_float)
    extra_options: dict[str, Any] = {"ActivationSymmetric": activations == "int8", "WeightSymmetric": True}
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
            if stored is not None and stored.get("key") == key:
                ort_cache.write_text(json.dumps(stored["ranges"]))
                cached = True
                log(f"reusing calibration ranges from {cache}")
            else:
                log(f"calibration cache {cache} is for another model or image set: recalibrating")
        named = Path(tmp) / "named.onnx"
        onnx.save(model, str(named))
        reader = None if cached else ImageCalibrationReader(items, imgsz, input_name)
        if not cached:
            log(f"calibrating on {len(items)} images at {imgsz} ({method})")
        with _quiet_root_warnings("Please consider"):  # ORT's advice to run its own pre-processing
            quantize_static(
                str(named), str(Path(tmp) / "int8.onnx"), reader, quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(op_types) if op_types else None, per_channel=True,
                reduce_range=False, weight_type=QuantType.QInt8,
                activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
                nodes_to_exclude=excluded, calibrate_method=methods[method], extra_options=extra_options,
                **({"calibration_cache_path": str(ort_cache)} if cache is not None else {}))
        if cache is not None and not cached:
            payload = {"format": _CALIB_FORMAT, "version": _CALIB_VERSION, "key": key,
                       "ranges": json.loads(ort_cache.read_text())}
            from sdk.atomic import atomic_write_text

            atomic_write_text(cache, json.dumps(payload))
            log(f"wrote calibration cache {cache}")
        q = onnx.load(str(Path(tmp) / "int8.onnx"))
    rewired = float_inputs_for(q, set(excluded))
    q.producer_name = model.producer_name or "yoloworld-sdk"
    del q.metadata_props[:]
    q.metadata_props.extend(model.metadata_props)
    onnx.checker.check_model(q)
    _save_atomic(q, dst)
    info = {"calibration_images": len(items), "calibration_sha256": key["images_sha256"],
            "calibration_cached": cached, "calibration_method": method,
            "activations": activations, "float_nodes": len(excluded),
            "float_inputs_rewired": rewired}
    _copy_manifest_if_any(src, dst, "int8", {k: v for k, v in info.items() if k != "calibration_cached"})
    n_q = sum(n.op_type == "QuantizeLinear" for n in q.graph.node)
    log(f"wrote {dst} ({n_q} QuantizeLinear, {len(excluded)} float nodes kept) in "
        f"{time.perf_counter() - t0:.1f} s")
    return info


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


# ---------------------------------------------------------------------------------------------
# manifest and files


def _save_atomic(model: Any, dst: Path) -> None:
    import onnx

    from sdk.atomic import atomic_path

    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))


def copy_manifest(src: str | os.PathLike, dst: str | os.PathLike, precision: str, extra: dict[str, Any]
                  ) -> None:
    """``dst``'s manifest := ``src``'s with ``precision`` set and ``extra`` merged into its ``extra``;
    written into ``dst``'s ONNX ``metadata_props`` and its ``.json`` sidecar."""
    import onnx

    manifest = read_manifest(src)
    manifest = dataclasses.replace(manifest, precision=precision, extra={**manifest.extra, **extra})
    dst = Path(dst)
    model = onnx.load(str(dst))
    del model.metadata_props[:]
    model.metadata_props.add(key=MANIFEST_KEY, value=manifest.to_json())
    _save_atomic(model, dst)
    write_sidecar(manifest, dst)


def _copy_manifest_if_any(src: Path, dst: Path, precision: str, extra: dict[str, Any]) -> None:
    try:
        read_manifest(src)
    except YoloWorldError:
        return  # a plain ONNX file: nothing to describe
    copy_manifest(src, dst, precision, extra)


# ---------------------------------------------------------------------------------------------
# agreement


class Agreement(dict):
    """The :func:`agreement` report: a plain dict (JSON-ready) that prints as one line."""

    def __str__(self) -> str:
        return (f"detections {self['reference_detections']} vs {self['candidate_detections']}, "
                f"matched {self['matched']} ({self['matched_fraction']:.1%}), matched |d score| max "
                f"{self['matched_score_diff_max']:.4f} mean {self['matched_score_diff_mean']:.4f}, "
                f"mean IoU {self['matched_mean_iou']:.4f}, raw max |d score| {self['raw_score_diff_max']:.4f}")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of xyxy boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_by_iou(a_xyxy: np.ndarray, a_score: np.ndarray, a_cls: np.ndarray, b_xyxy: np.ndarray,
                 b_score: np.ndarray, b_cls: np.ndarray, min_iou: float = 0.9) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching, ``a`` best score first: among the unused ``b`` of the same class with
    IoU >= ``min_iou``, the one with the closest score (then the highest IoU). Boxes are compared after
    clipping, where several detections of a class can share one box (a random model's image-sized
    boxes): the score tells which of them is the partner. Returns ``(i, j, iou)`` pairs."""
    iou = box_iou(a_xyxy, b_xyxy)
    iou[np.asarray(a_cls)[:, None] != np.asarray(b_cls)[None, :]] = -1.0
    a_score, b_score = np.asarray(a_score, np.float64), np.asarray(b_score, np.float64)
    used = np.zeros(len(b_cls), bool)
    pairs = []
    for i in np.argsort(-a_score, kind="stable"):
        candidates = np.flatnonzero(~used & (iou[i] >= min_iou))
        if len(candidates):
            j = int(candidates[np.lexsort((-iou[i, candidates], np.abs(b_score[candidates] - a_score[i])))[0]])
            used[j] = True
            pairs.append((int(i), j, float(iou[i, j])))
    return pairs


def _session(path: str | os.PathLike) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # no cast-insertion chatter for float16 nodes on CPU
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def agreement(reference_onnx: str | os.PathLike, candidate_onnx: str | os.PathLike, images: list[np.ndarray],
              imgsz: int, conf: float = 0.25, iou: float = 0.7, min_iou: float = 0.9, max_det: int = 300
              ) -> Agreement:
    """Run both models with ONNX Runtime (CPU) on BGR uint8 ``images`` through the SDK's preprocess and
    :func:`~sdk.postprocess.postprocess_image` (raw ``scores``/``boxes`` outputs) and compare.

    ``matched``: detections paired one-to-one with the same class and IoU >= ``min_iou``;
    ``matched_fraction`` = matched / max(reference, candidate) (1.0 when both are empty), so a
    missing and an extra detection both count against it. ``raw_score_diff_max``: max |d| over all
    raw sigmoid scores; ``raw_box_diff_max``: max |d| px over the boxes of anchors whose reference
    score exceeds ``conf``.
    """
    ref, cand = _session(reference_onnx), _session(candidate_onnx)
    n_ref = n_cand = 0
    score_diffs: list[float] = []
    ious: list[float] = []
    raw_score, raw_box = 0.0, 0.0
    for img in images:
        x, infos = preprocess([img], imgsz)
        name = ref.get_inputs()[0].name
        rs, rb = ref.run(["scores", "boxes"], {name: x})
        cs, cb = cand.run(["scores", "boxes"], {cand.get_inputs()[0].name: x})
        rs, rb, cs, cb = (np.asarray(t, np.float32) for t in (rs, rb, cs, cb))
        raw_score = max(raw_score, float(np.abs(rs - cs).max()))
        live = rs[0].max(-1) > conf
        if live.any():
            raw_box = max(raw_box, float(np.abs(rb[0][live] - cb[0][live]).max()))
        a = postprocess_image(rs[0], rb[0], infos[0], conf, iou, max_det)
        b = postprocess_image(cs[0], cb[0], infos[0], conf, iou, max_det)
        n_ref, n_cand = n_ref + len(a[2]), n_cand + len(b[2])
        for i, j, v in match_by_iou(a[0], a[1], a[2], b[0], b[1], b[2], min_iou):
            score_diffs.append(abs(float(a[1][i]) - float(b[1][j])))
            ious.append(v)
    matched = len(ious)
    denom = max(n_ref, n_cand)
    return Agreement(
        images=len(images), reference_detections=n_ref, candidate_detections=n_cand, matched=matched,
        matched_fraction=matched / denom if denom else 1.0,
        matched_score_diff_max=max(score_diffs, default=0.0),
        matched_score_diff_mean=float(np.mean(score_diffs)) if score_diffs else 0.0,
        matched_mean_iou=float(np.mean(ious)) if ious else 1.0,
        raw_score_diff_max=raw_score, raw_box_diff_max=raw_box, conf=conf, iou=iou, min_iou=min_iou)


__all__ = ["ATTENTION", "DECODE_TAIL", "DEFAULT_FLOAT_INT8", "DEFAULT_FP32_OPS", "Agreement",
           "ImageCalibrationReader", "PrecisionError", "agreement", "attention_nodes", "box_iou",
           "convert_fp16", "copy_manifest", "decode_tail_nodes", "graph_sha256", "match_by_iou",
           "quantize_int8", "select_nodes"]
