"""Static TensorRT support check (no TensorRT needed): every exported graph uses only ops, and op
settings, that TensorRT's ONNX parser supports; hand-made graphs exercise each rule."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import export.onnx_export as onnx_export
from export import nms_graph, precision, quantize
from export.trt_ops import (
    TOPK_MAX_K,
    TRT_PLUGIN_OPS,
    TRT_SUPPORTED_OPS,
    graph_precision,
    restriction_issues,
    unsupported_ops,
)
from sdk.backends.torch import encode_texts
from sdk.manifest import NmsSettings
from sdk.model import load_checkpoint
from sdk.vocabulary import Vocabulary

VARIANTS = ("v2", "v1", "efficient", "efficient_l2")
CLASSES = ["person", "red car", "a dog"]
IMGSZ = 160

# What exported YOLO-World graphs (raw, NMS forms, fp16, int8 Q/DQ) use or may use.
YOLOWORLD_OPS = {
    "Conv", "Sigmoid", "Mul", "Add", "Sub", "Div", "Concat", "Split", "Slice", "Resize", "MaxPool", "Reshape",
    "Transpose", "Softmax", "ReduceSum", "ReduceMax", "ReduceL2", "MatMul", "Gather", "GatherND", "GatherElements",
    "Unsqueeze", "Squeeze", "Shape", "Constant", "Cast", "Where", "Equal", "TopK", "NonMaxSuppression", "Pad",
    "ArgMax", "LayerNormalization", "QuantizeLinear", "DequantizeLinear", "Expand", "Clip", "Range", "Min",
    "Identity", "EfficientNMS_TRT",
}


@pytest.fixture(scope="module")
def raw_models(tiny_checkpoints, tmp_path_factory):
    """variant -> (path, ModelProto) of the raw export at 160 px with 3 classes.

    ONNX Runtime parity is tested in test_onnx_export.py; here only the graph matters, so the numeric
    self-check is bypassed (it would also make this op check depend on numerics)."""
    root = tmp_path_factory.mktemp("trt_ops")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(onnx_export, "verify_onnx", lambda *a, **k: {})
        for variant in VARIANTS:
            model = load_checkpoint(tiny_checkpoints[variant])
            vocab = Vocabulary.from_any(CLASSES)
            emb = vocab.embeddings(lambda t, m=model: encode_texts(m, None, t))
            path = root / f"{variant}.onnx"
            onnx_export.export_onnx(model, vocab, emb, path, imgsz=IMGSZ, log=lambda *_: None)
            out[variant] = (path, onnx.load(str(path)))
    return out


def test_supported_set_covers_every_op_an_export_uses():
    assert YOLOWORLD_OPS <= TRT_SUPPORTED_OPS
    assert "EfficientNMS_TRT" in TRT_PLUGIN_OPS <= TRT_SUPPORTED_OPS
    for unsupported in ("Unique", "SequenceAt", "StringNormalizer", "DFT", "QLinearConv"):
        assert unsupported not in TRT_SUPPORTED_OPS


@pytest.mark.slow  # four tiny exports (module fixture)
@pytest.mark.parametrize("variant", VARIANTS)
def test_raw_export_parses_in_tensorrt(raw_models, variant):
    path, proto = raw_models[variant]
    assert unsupported_ops(proto) == []
    assert unsupported_ops(path) == []  # a path works too
    assert restriction_issues(proto) == []
    assert graph_precision(proto) == "fp32"
    assert {"Conv", "Sigmoid", "Softmax"} <= {n.op_type for n in proto.graph.node}


@pytest.mark.slow  # four tiny exports (module fixture)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("agnostic", [False, True])
def test_nms_forms_parse_in_tensorrt(raw_models, variant, agnostic):
    settings = NmsSettings(conf=0.25, iou=0.7, max_det=300, agnostic=agnostic)
    proto = raw_models[variant][1]
    onnx_nms = nms_graph.append_onnx_nms(proto, settings)
    trt_nms = nms_graph.append_trt_efficient_nms(proto, settings)
    assert "NonMaxSuppression" in {n.op_type for n in onnx_nms.graph.node}
    assert "EfficientNMS_TRT" in {n.op_type for n in trt_nms.graph.node}
    for form in (onnx_nms, trt_nms):
        assert unsupported_ops(form) == []
        assert restriction_issues(form) == []


@pytest.mark.slow  # four tiny exports (module fixture)
def test_nms_topk_bound_follows_max_det(raw_models):
    """The nms form's TopK takes k = min(selected, max_det): max_det >= 3840 breaks TensorRT's limit."""
    proto = nms_graph.append_onnx_nms(raw_models["v2"][1], NmsSettings(max_det=TOPK_MAX_K))
    issues = restriction_issues(proto)
    assert any("TopK" in i and str(TOPK_MAX_K) in i for i in issues), issues


@pytest.mark.slow  # four tiny exports (module fixture)
def test_precision_forms_parse_in_tensorrt(raw_models, tmp_path):
    src = raw_models["v2"][0]
    dst = tmp_path / "fp16.onnx"
    precision.convert_fp16(src, dst)
    fp16 = onnx.load(str(dst))
    assert unsupported_ops(fp16) == [] and restriction_issues(fp16) == []
    assert graph_precision(fp16) == "fp16"


@pytest.mark.slow  # four tiny exports (module fixture)
def test_int8_qdq_parses_in_tensorrt(raw_models, tmp_path):
    from export.onnx_export import check_images

    images = [(np.transpose(x, (1, 2, 0))[:, :, ::-1] * 255).astype(np.uint8) for x in check_images(IMGSZ, 4)]
    dst = tmp_path / "int8.onnx"
    quantize.quantize_int8(raw_models["v2"][0], dst, images, IMGSZ, max_images=4, log=lambda *_: None)
    int8 = onnx.load(str(dst))
    assert unsupported_ops(int8) == []
    assert restriction_issues(int8) == []  # symmetric: every zero point 0, as TensorRT requires
    assert graph_precision(int8) == "int8"


# ---------------------------------------------------------------------------------------------
# Hand-made graphs: one rule each


def _model(nodes, inputs, outputs, initializers=(), opset=17, functions=(), extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets],
                             functions=list(functions))


def _f(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _i64(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


X, Y = _f("x", [1, 4, 8, 8]), _f("y", None)


def test_unsupported_ops_names_unknown_and_foreign_ops():
    m = _model([helper.make_node("Unique", ["x"], ["u"]),
                helper.make_node("FusedConv", ["x"], ["f"], domain="com.microsoft"),
                helper.make_node("EfficientNMS_TRT", ["x", "x"], ["a", "b", "c", "y"], domain="TRT"),
                helper.make_node("Relu", ["x"], ["r"])],
               [X], [Y], extra_opsets=[helper.make_opsetid("com.microsoft", 1), helper.make_opsetid("TRT", 1)])
    assert unsupported_ops(m) == ["Unique", "com.microsoft::FusedConv"]


def test_unsupported_ops_looks_into_subgraphs_and_functions():
    body = helper.make_graph([helper.make_node("Unique", ["x"], ["u"])], "then", [], [_f("u", None)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["v"])], "else", [], [_f("v", None)])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    m = _model([helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=other)], [X, cond], [Y])
    assert unsupported_ops(m) == ["Unique"]
    fn = helper.make_function("local", "MyOp", ["a"], ["b"], [helper.make_node("DFT", ["a"], ["b"])],
                              [helper.make_opsetid("", 17)])
    m = _model([helper.make_node("MyOp", ["x"], ["y"], domain="local")], [X], [Y], functions=[fn],
               extra_opsets=[helper.make_opsetid("local", 1)])
    assert unsupported_ops(m) == ["DFT"]


def test_topk_restrictions():
    ok = _model([helper.make_node("TopK", ["x", "k"], ["y", "i"], axis=-1)], [X], [Y], [_i64("k", [5])])
    assert restriction_issues(ok) == []
    big = _model([helper.make_node("TopK", ["x", "k"], ["y", "i"], axis=-1)], [X], [Y], [_i64("k", [TOPK_MAX_K])])
    assert any("K=3840" in i for i in restriction_issues(big))
    unsorted = _model([helper.make_node("TopK", ["x", "k"], ["y", "i"], axis=-1, sorted=0)], [X], [Y],
                      [_i64("k", [5])])
    assert any("sorted=0" in i for i in restriction_issues(unsorted))
    dynamic = _model([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Min", ["s", "cap"], ["k"]),
                      helper.make_node("TopK", ["x", "k"], ["y", "i"], axis=-1)], [X], [Y], [_i64("cap", [5000])])
    assert any("TopK" in i for i in restriction_issues(dynamic))


def test_resize_pool_layernorm_qdq_axes_opset_restrictions():
    cases = {
        "mode 'cubic'": [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic")],
        "coordinate_transformation_mode 'tf_crop_and_resize'": [
            helper.make_node("Resize", ["x", "", "scales"], ["y"],
                             coordinate_transformation_mode="tf_crop_and_resize")],
        "antialias": [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear", antialias=1)],
        "dilations": [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2])],
        "Indices": [helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2])],
        "first output": [helper.make_node("LayerNormalization", ["x", "scale"], ["y", "mean"])],
        "zero point": [helper.make_node("QuantizeLinear", ["x", "qs", "zp"], ["q"]),
                       helper.make_node("DequantizeLinear", ["q", "qs", "zp"], ["y"])],
        "'axes' must be a constant": [helper.make_node("Shape", ["x"], ["s"]),
                                      helper.make_node("Slice", ["x", "st", "en", "s"], ["y"])],
    }
    inits = [numpy_helper.from_array(np.ones(4, np.float32), "scales"),
             numpy_helper.from_array(np.ones(8, np.float32), "scale"),
             numpy_helper.from_array(np.float32(0.1), "qs"), numpy_helper.from_array(np.int8(3), "zp"),
             _i64("st", [0]), _i64("en", [1])]
    for expected, nodes in cases.items():
        issues = restriction_issues(_model(nodes, [X], [Y], inits))
        assert any(expected in i for i in issues), (expected, issues)
    fine = [helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="nearest",
                             coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
            helper.make_node("Constant", [], ["ax"], value=numpy_helper.from_array(np.array([1], np.int64))),
            helper.make_node("ReduceSum", ["r", "ax"], ["y"])]
    assert restriction_issues(_model(fine, [X], [Y], inits)) == []
    assert any("opset 21" in i for i in restriction_issues(_model([helper.make_node("Relu", ["x"], ["y"])],
                                                                   [X], [Y], opset=21)))


def test_graph_precision():
    q = _model([helper.make_node("QuantizeLinear", ["x", "qs"], ["q"]),
                helper.make_node("DequantizeLinear", ["q", "qs"], ["y"])], [X], [Y],
               [numpy_helper.from_array(np.float32(0.1), "qs")])
    assert graph_precision(q) == "int8"
    half = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT16)], [X], [Y])
    assert graph_precision(half) == "fp16"
    assert graph_precision(_model([helper.make_node("Relu", ["x"], ["y"])], [X], [Y])) == "fp32"
