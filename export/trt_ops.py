"""TensorRT op support of an ONNX graph, checked statically: no TensorRT, no GPU.

``TRT_SUPPORTED_OPS`` / :func:`unsupported_ops` / :func:`restriction_issues` check a graph against
TensorRT's ONNX parser (from onnx-tensorrt's ``docs/operators.md``, TensorRT 10); :func:`graph_precision`
says which precision a graph was converted to. ``export.tensorrt.build_engine`` runs these before
building, and the tests run them on every form of every export.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

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


__all__ = ["OPSET_RANGE", "TOPK_MAX_K", "TRT_PLUGIN_OPS", "TRT_SUPPORTED_OPS", "graph_precision", "restriction_issues",
           "unsupported_ops"]
