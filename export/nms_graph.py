"""End-to-end output forms: non-maximum suppression appended to the raw ONNX graph.

The raw graph (``export.onnx_export``) ends in ``scores`` ``(B, A, C)`` (sigmoid) and ``boxes``
``(B, A, 4)`` (xyxy, input pixels). Two end-to-end forms replace those outputs with the padded
per-image contract of :class:`sdk.manifest.Manifest` (K = ``nms.max_det``):

- ``num_dets``    ``(B, 1)``    int32: valid entries per image;
- ``det_boxes``   ``(B, K, 4)`` float32: xyxy in network-input pixels (not clipped, not un-letterboxed);
- ``det_scores``  ``(B, K)``    float32, best first;
- ``det_classes`` ``(B, K)``    int32.

``nms`` (:func:`append_onnx_nms`) uses the standard ONNX ``NonMaxSuppression`` plus plain ops (tested
in ONNX Runtime; TensorRT's ONNX parser has not been tried on it yet) and pads entries past ``num_dets`` with box 0,
score 0 and class **-1**. ``trt_nms`` (:func:`append_trt_efficient_nms`) is one ``EfficientNMS_TRT``
plugin node for TensorRT only; there, entries past ``num_dets`` are whatever the plugin writes.
Consumers must read ``num_dets`` (``sdk.postprocess.unpack_nms_outputs`` does).

Semantics against the host path (``sdk.postprocess.postprocess_image``): the same multi-label
candidates (every (anchor, class) pair with score > conf), class-aware greedy NMS suppressing IoU >
iou, the best ``max_det`` per image. The in-graph ``nms`` form considers *every* candidate above conf
(there is no 30000 pre-NMS top-k): it is identical to the host path whenever fewer than 30000
(anchor, class) pairs of an image pass conf, which is always the case at deployment thresholds.
``EfficientNMS_TRT`` keeps the best 4096 candidates before its NMS (NVIDIA's plugin documentation),
so it can differ from the host path only when more than 4096 pairs pass conf (evaluation settings
such as conf 0.001 on crowded images). NMS runs on input-pixel boxes while the host runs on
original-image boxes: letterboxing is a uniform scale plus a shift, so IoUs agree up to float32
rounding. Two corner cases where the graph and the host differ, both in the graph's favour: the host's
class-aware pass separates classes by mmcv's coordinate offset (class * (max coordinate + 1)), so a
box reaching below about -1 px can suppress a far-away box of the next class, while the graph's NMS is
strictly per class; agnostic NMS keeps one class per anchor, while the host keeps several classes of
one anchor only in the degenerate cases iou = 1 or a zero-area box.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sdk.manifest import NmsSettings, OutputForm
from sdk.postprocess import postprocess_image
from sdk.preprocess import LetterboxInfo

from .verify import DEFAULT_TOLERANCE, Agreement, ExportError, Tolerance, check_images, compare_raw, require

NMS_OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")
RAW_OUTPUTS = ("scores", "boxes")
CLASS_PAD = -1  # det_classes past num_dets (the ``nms`` form)
TRT_DOMAIN = "TRT"  # custom-op domain of the plugin node; TensorRT's parser finds plugins by op_type
TRT_PLUGIN = "EfficientNMS_TRT"
_P = "nms/"  # prefix of every tensor and node this module adds


def append_nms(model: onnx.ModelProto, nms: NmsSettings, output_form: OutputForm) -> onnx.ModelProto:
    """Dispatch on the manifest's ``output_form`` (``"nms"`` or ``"trt_nms"``)."""
    if output_form == "nms":
        return append_onnx_nms(model, nms)
    if output_form == "trt_nms":
        return append_trt_efficient_nms(model, nms)
    raise ExportError(f"output_form must be 'raw', 'nms' or 'trt_nms', got {output_form!r}")


def append_onnx_nms(model: onnx.ModelProto, nms: NmsSettings) -> onnx.ModelProto:
    """A copy of the raw ``model`` ending in standard ONNX ``NonMaxSuppression`` and padded outputs.

    ``NonMaxSuppression`` gets ``boxes`` ``(B, A, 4)`` (xyxy; its IoU is symmetric in x and y so the
    y-first convention does not matter) and the scores transposed to ``(B, C, A)``, with
    ``max_output_boxes_per_class = max_det``, ``iou_threshold = iou`` (IoU > iou suppresses) and
    ``score_threshold = conf`` (score > conf passes): class-aware NMS over all multi-label
    candidates, as the host path. ``nms.agnostic``: NMS on the per-anchor best class score
    ``(B, 1, A)`` with the class from ``ArgMax`` (the host's agnostic NMS over multi-label pairs
    reduces to this, since an anchor's other classes share its box, IoU 1). The selected triples are
    ranked per image with ``TopK`` (k = min(max_det, selected), dynamic) over a ``(B, N)`` score
    matrix masked by batch index, then padded to ``max_det``: box 0, score 0, class -1 past
    ``num_dets``. Works with a dynamic batch axis and with no detections in some or all images.
    The default-domain opset must be >= 13 (the export uses 17).
    """
    _check_settings(nms)
    out = _copy_with_raw_outputs_as_values(model)
    graph = out.graph
    opset = _default_opset(out)
    if opset < 13:
        raise ExportError(f"in-graph NMS needs opset >= 13, the graph has {opset}")
    batch_dim = _batch_dim(graph)
    scores, boxes = _float32_inputs(graph)
    c = _Consts(graph)
    add = _adder(graph)
    selections = _select(add, c, scores, boxes, nms)
    _rank_and_pad(add, c, scores, *selections, nms)
    _set_outputs(graph, batch_dim, nms.max_det)
    return out


def _select(add: Any, c: _Consts, scores: str, boxes: str, nms: NmsSettings) -> tuple[str, str, str, str]:
    """``NonMaxSuppression`` over every candidate: (batch index (N,), boxes (N, 4), scores (N,),
    classes (N,)) of the N selected (image, class, anchor) triples."""
    i64 = c.tensor
    if nms.agnostic:
        best = add("ArgMax", [scores], axis=2, keepdims=1)  # (B, A, 1) int64
        best_score = add("GatherElements", [scores, best], axis=2)  # (B, A, 1)
        scores_t = add("Transpose", [best_score], perm=[0, 2, 1])  # (B, 1, A)
    else:
        scores_t = add("Transpose", [scores], perm=[0, 2, 1])  # (B, C, A)
    selected = add("NonMaxSuppression", [boxes, scores_t, i64("max_det", [nms.max_det]),
                                         c.f32("iou", [nms.iou]), c.f32("conf", [nms.conf])],
                   center_point_box=0)  # (N, 3) int64: batch, class, anchor
    batch_of = add("Gather", [selected, i64("zero", 0)], axis=1)  # (N,)
    batch_anchor = add("Gather", [selected, i64("cols02", [0, 2])], axis=1)  # (N, 2)
    sel_boxes = add("GatherND", [boxes, batch_anchor])  # (N, 4)
    sel_scores = add("GatherND", [scores_t, selected])  # (N,)
    if nms.agnostic:
        sel_classes = add("Reshape", [add("GatherND", [best, batch_anchor]), i64("flat", [-1])])
    else:
        sel_classes = add("Gather", [selected, i64("one", 1)], axis=1)  # (N,)
    return batch_of, sel_boxes, sel_scores, sel_classes


def _rank_and_pad(add: Any, c: _Consts, scores: str, batch_of: str, sel_boxes: str, sel_scores: str,
                  sel_classes: str, nms: NmsSettings) -> None:
    """Per image the best ``max_det`` selections (TopK over a (B, N) score matrix masked by image),
    padded to ``max_det``: the graph outputs ``num_dets``, ``det_boxes``, ``det_scores``, ``det_classes``."""
    i64 = c.tensor
    # per image: a (B, N) matrix holding the scores of that image's selections, -1 elsewhere
    batch = add("Gather", [add("Shape", [scores]), i64("zero", 0)], axis=0)  # scalar B
    rows = add("Unsqueeze", [add("Range", [i64("zero", 0), batch, i64("one", 1)]), i64("ax1", [1])])
    mine = add("Equal", [rows, add("Unsqueeze", [batch_of, i64("ax0", [0])])])  # (B, N) bool
    ranked = add("Where", [mine, add("Unsqueeze", [sel_scores, i64("ax0", [0])]), c.f32("neg1", -1.0)])
    k = add("Min", [add("Shape", [sel_scores]), i64("max_det", [nms.max_det])])  # (1,)
    top_scores, top_index = add("TopK", [ranked, k], outputs=2, axis=1, largest=1, sorted=1)  # (B, k)
    valid = add("GatherElements", [mine, top_index], axis=1)  # (B, k) bool, valid entries first
    num_dets = add("ReduceSum", [add("Cast", [valid], to=TensorProto.INT32), i64("ax1", [1])], keepdims=1)
    k_scores = add("Where", [valid, top_scores, c.f32("zero_f", 0.0)])
    k_boxes = add("Where", [add("Unsqueeze", [valid, i64("ax2", [2])]),
                            add("Gather", [sel_boxes, top_index], axis=0), c.f32("zero_f", 0.0)])  # (B, k, 4)
    k_classes = add("Where", [valid, add("Cast", [add("Gather", [sel_classes, top_index], axis=0)],
                                         to=TensorProto.INT32), c.i32("class_pad", CLASS_PAD)])
    missing = add("Sub", [i64("max_det", [nms.max_det]), k])  # (1,)
    pads2 = add("Concat", [i64("zeros3", [0, 0, 0]), missing], axis=0)  # (B, k) -> (B, K)
    pads3 = add("Concat", [i64("zeros4", [0, 0, 0, 0]), missing, i64("zeros1", [0])], axis=0)
    add("Identity", [num_dets], name="num_dets")
    add("Pad", [k_boxes, pads3, c.f32("zero_f", 0.0)], name="det_boxes", mode="constant")
    add("Pad", [k_scores, pads2, c.f32("zero_f", 0.0)], name="det_scores", mode="constant")
    add("Pad", [k_classes, pads2, c.i32("class_pad", CLASS_PAD)], name="det_classes", mode="constant")


def append_trt_efficient_nms(model: onnx.ModelProto, nms: NmsSettings) -> onnx.ModelProto:
    """A copy of the raw ``model`` ending in TensorRT's ``EfficientNMS_TRT`` plugin node.

    Node: op_type ``EfficientNMS_TRT``, domain ``TRT`` (declared in ``opset_import`` so the ONNX
    checker accepts it; TensorRT's ONNX parser finds the plugin in its registry by op_type and the
    ``plugin_version`` attribute), inputs ``boxes`` ``(B, A, 4)`` and ``scores`` ``(B, A, C)`` as the
    plugin documents them (no transpose), attributes ``plugin_version "1"``, ``background_class -1``,
    ``max_output_boxes = max_det``, ``score_threshold = conf``, ``iou_threshold = iou``,
    ``score_activation 0`` (the scores are already sigmoid), ``class_agnostic``, ``box_coding 0``
    (corners). Outputs as the ``nms`` form (the plugin's ``num_detections``, ``detection_boxes``,
    ``detection_scores``, ``detection_classes``), with undefined entries past ``num_dets``. The
    plugin pre-selects the best 4096 candidates before NMS. ONNX Runtime cannot run this graph.
    """
    _check_settings(nms)
    out = _copy_with_raw_outputs_as_values(model)
    graph = out.graph
    batch_dim = _batch_dim(graph)
    scores, boxes = _float32_inputs(graph)
    graph.node.append(helper.make_node(
        TRT_PLUGIN, [boxes, scores], list(NMS_OUTPUTS), name=f"{_P}{TRT_PLUGIN}", domain=TRT_DOMAIN,
        plugin_version="1", background_class=-1, max_output_boxes=int(nms.max_det),
        score_threshold=float(nms.conf), iou_threshold=float(nms.iou), score_activation=0,
        class_agnostic=int(bool(nms.agnostic)), box_coding=0))
    if not any(o.domain == TRT_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(TRT_DOMAIN, 1))
    _set_outputs(graph, batch_dim, nms.max_det)
    return out


def verify_nms_onnx(model: onnx.ModelProto, deploy, imgsz: int, batches: tuple[int, ...], nms: NmsSettings,
                    tolerance: Tolerance = DEFAULT_TOLERANCE) -> dict[int, tuple[Agreement, list[int]]]:
    """Check an ``nms``-form graph in ONNX Runtime (CPU) at each batch size.

    Runs ``model`` with its raw ``scores``/``boxes`` exposed as extra outputs: the raw tensors must
    match PyTorch within ``tolerance`` (as the raw form), and per image the padded outputs must hold
    the same detections, as sets, as :func:`reference_detections` (the host ``postprocess_image`` on
    those raw tensors at the same conf/iou/max_det/agnostic), with zeros and class -1 past
    ``num_dets``. Returns ``{batch: (raw agreement, detections per image)}``; raises
    :class:`ExportError` on any disagreement.
    """
    import onnxruntime as ort
    import torch

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    values = {v.name: v for v in probe.graph.value_info}
    for name in RAW_OUTPUTS:
        probe.graph.output.append(values[name])
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    images = check_images(imgsz, max(batches))
    report = {}
    for bs in batches:
        x = images[:bs]
        raw = dict(zip(names, session.run(names, {"images": x}), strict=True))
        with torch.no_grad():
            ref_s, ref_b = (t.numpy() for t in deploy(torch.from_numpy(x)))
        agreement = require(compare_raw(raw["scores"], raw["boxes"], ref_s, ref_b, tolerance),
                            f"ONNX Runtime vs PyTorch at batch {bs} ({bs} generated check images)")
        counts = []
        for b in range(bs):
            host = reference_detections(raw["scores"][b], raw["boxes"][b], nms, imgsz)
            problem = compare_padded(raw, b, host, imgsz)
            if problem:
                raise ExportError(f"in-graph NMS disagrees with the host NMS at batch {bs}, image {b}: {problem}")
            counts.append(len(host[0]))
        report[bs] = (agreement, counts)
    return report


def reference_detections(scores: np.ndarray, boxes: np.ndarray, nms: NmsSettings, imgsz: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the ``nms`` form must return for one image, from ``sdk.postprocess.postprocess_image`` on
    its raw ``scores`` ``(A, C)`` and ``boxes`` ``(A, 4)``: xyxy in input pixels clipped to ``imgsz``,
    scores, classes, best first.

    It is the host path at the same conf/iou/max_det with every candidate considered (no pre-NMS
    top-k), run so that it states the documented semantics exactly: class-aware NMS one class at a
    time (the host's single pass separates classes by mmcv's coordinate offset, which lets classes
    interact when boxes reach below about -1 px and rounds the shifted coordinates), agnostic NMS on
    each anchor's best class (what the host's agnostic NMS over multi-label pairs keeps whenever
    iou < 1 and boxes have an area).
    """
    identity = LetterboxInfo(scale_wh=(1.0, 1.0), pad_tblr=(0, 0, 0, 0), orig_hw=(imgsz, imgsz))
    a = scores.shape[0]

    def host(s: np.ndarray, agnostic: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return postprocess_image(s, boxes, identity, nms.conf, nms.iou, nms.max_det, agnostic, pre_nms_topk=s.size)

    if nms.agnostic:
        best = scores.argmax(1)  # first maximum, as ONNX ArgMax
        only_best = np.zeros_like(scores)
        only_best[np.arange(a), best] = scores[np.arange(a), best]
        return host(only_best, True)
    xyxy, score, cls = [np.zeros((0, 4), np.float32)], [np.zeros(0, np.float32)], [np.zeros(0, np.int64)]
    for k in np.flatnonzero((scores > nms.conf).any(0)):
        kx, ks, _ = host(scores[:, k:k + 1], False)
        xyxy.append(kx)
        score.append(ks)
        cls.append(np.full(len(ks), k, np.int64))
    xyxy, score, cls = np.concatenate(xyxy), np.concatenate(score), np.concatenate(cls)
    order = np.argsort(-score, kind="stable")[:nms.max_det]  # ties: lower class first, as TopK
    return xyxy[order], score[order], cls[order]


def compare_padded(raw: dict[str, np.ndarray], b: int, host: tuple[np.ndarray, np.ndarray, np.ndarray],
                   imgsz: int, box_atol: float = 1e-3, score_atol: float = 1e-6) -> str:
    """'' when image ``b`` of the padded outputs holds the same detection set as ``host`` (xyxy in
    input pixels clipped to ``imgsz``, scores, classes) and is padded with 0 / class -1; else why not."""
    k = int(raw["num_dets"][b, 0])
    xyxy, score, cls = host
    if k != len(score):
        return f"num_dets {k}, host {len(score)}"
    if np.any(raw["det_scores"][b, k:] != 0) or np.any(raw["det_boxes"][b, k:] != 0) \
            or np.any(raw["det_classes"][b, k:] != CLASS_PAD):
        return "entries past num_dets are not padding"
    g_box = np.clip(raw["det_boxes"][b, :k], 0, imgsz)
    g_score, g_cls = raw["det_scores"][b, :k], raw["det_classes"][b, :k].astype(np.int64)
    if np.any(np.diff(g_score) > 0):
        return "scores are not sorted best first"
    used = np.zeros(k, bool)
    for box, s, c in zip(xyxy, score, cls, strict=True):
        ok = ~used & (g_cls == c) & (np.abs(g_score - s) <= score_atol) & (np.abs(g_box - box).max(1) <= box_atol)
        if not ok.any():
            return f"host detection class {c} score {s:.6f} box {np.round(box, 2).tolist()} has no partner"
        used[np.flatnonzero(ok)[0]] = True
    return ""


# --- graph plumbing -------------------------------------------------------------------------------------

def _check_settings(nms: NmsSettings) -> None:
    if nms.max_det < 1:
        raise ExportError(f"max_det must be >= 1, got {nms.max_det}")
    if not 0.0 < nms.iou <= 1.0:
        raise ExportError(f"iou must be in (0, 1], got {nms.iou}")
    if not 0.0 <= nms.conf < 1.0:
        raise ExportError(f"conf must be in [0, 1), got {nms.conf}")


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _copy_with_raw_outputs_as_values(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose graph outputs are dropped; ``scores``/``boxes`` stay as typed ``value_info``."""
    outputs = {o.name: o for o in model.graph.output}
    if set(outputs) != set(RAW_OUTPUTS):
        raise ExportError(f"expected a raw graph with outputs {RAW_OUTPUTS}, got {tuple(outputs)}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    taken = {n.name for n in graph.node} | {t for n in graph.node for t in (*n.input, *n.output)} \
        | {i.name for i in graph.initializer} | {i.name for i in graph.input}
    if any(name.startswith(_P) for name in taken):
        raise ExportError("the graph already has NMS nodes")
    kept = [v for v in graph.value_info if v.name not in outputs]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    graph.value_info.extend(outputs[n] for n in RAW_OUTPUTS)
    del graph.output[:]
    return out


def _batch_dim(graph: onnx.GraphProto) -> onnx.TensorShapeProto.Dimension:
    scores = next(v for v in graph.value_info if v.name == "scores")
    return scores.type.tensor_type.shape.dim[0]


def _float32_inputs(graph: onnx.GraphProto) -> tuple[str, str]:
    """``scores``, ``boxes`` as float32 (a Cast is added for other float types)."""
    values = {v.name: v for v in graph.value_info}
    names = []
    for name in RAW_OUTPUTS:
        if values[name].type.tensor_type.elem_type == TensorProto.FLOAT:
            names.append(name)
        else:
            graph.node.append(helper.make_node("Cast", [name], [f"{_P}{name}_f32"], name=f"{_P}cast_{name}",
                                               to=TensorProto.FLOAT))
            names.append(f"{_P}{name}_f32")
    return names[0], names[1]


def _set_outputs(graph: onnx.GraphProto, batch_dim: onnx.TensorShapeProto.Dimension, max_det: int) -> None:
    batch = batch_dim.dim_param or (batch_dim.dim_value if batch_dim.HasField("dim_value") else "batch")
    shapes = {"num_dets": (TensorProto.INT32, [batch, 1]),
              "det_boxes": (TensorProto.FLOAT, [batch, max_det, 4]),
              "det_scores": (TensorProto.FLOAT, [batch, max_det]),
              "det_classes": (TensorProto.INT32, [batch, max_det])}
    for name in NMS_OUTPUTS:
        elem, shape = shapes[name]
        graph.output.append(helper.make_tensor_value_info(name, elem, shape))


class _Consts:
    """Named initializers, created once each."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph, self.made = graph, set()

    def _add(self, name: str, array: np.ndarray) -> str:
        full = f"{_P}{name}"
        if full not in self.made:
            self.graph.initializer.append(numpy_helper.from_array(array, full))
            self.made.add(full)
        return full

    def tensor(self, name: str, value) -> str:  # int64
        return self._add(name, np.asarray(value, np.int64))

    def f32(self, name: str, value) -> str:
        return self._add(name, np.asarray(value, np.float32))

    def i32(self, name: str, value) -> str:
        return self._add(name, np.asarray(value, np.int32))


def _adder(graph: onnx.GraphProto):
    """``add(op, inputs, outputs=1, name=None, **attrs)`` appends a node and returns its output name(s);
    ``name`` gives the (single) output a fixed name, else it is ``nms/<op>_<n>``."""
    count = [0]

    def add(op: str, inputs: list[str], outputs: int = 1, name: str | None = None, **attrs):
        count[0] += 1
        base = f"{_P}{op}_{count[0]}"
        outs = [name] if name else [f"{base}_out{i}" if outputs > 1 else base for i in range(outputs)]
        graph.node.append(helper.make_node(op, inputs, outs, name=base, **attrs))
        return outs[0] if outputs == 1 else outs

    return add


__all__ = ["CLASS_PAD", "NMS_OUTPUTS", "append_nms", "append_onnx_nms", "append_trt_efficient_nms",
           "compare_padded", "reference_detections", "verify_nms_onnx"]
