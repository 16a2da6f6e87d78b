"""Accuracy of what a user gets without flags, on the fine-tuned fixture (issue 23): the default export scores
as the checkpoint does, and the default int8 export stays within a COCO AP point of float32.

Scored with pycocotools (conf 0.001, IoU 0.7, 300 per image, as ``yoloworld-eval``) on 32 generated images of
the fixture's four shapes (its own 4 validation images are too few to resolve a point of AP)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from sdk import Detector
from tests.parity import DEFAULT_PATH_AP_DIFF, INT8_AP_DROP

IMGSZ = 160


@pytest.fixture(scope="module")
def scored(trained_tiny, tmp_path_factory):
    """(checkpoint, default fp32 export, default int8 export calibrated on the training images, scorer)."""
    from export.pipeline import ExportOptions, export_artifact
    from sdk.cli import read_ground_truth
    from sdk.evaluation import evaluate_detector
    from sdk.model.checkpoint import load_checkpoint_with_meta
    from sdk.vocabulary import Vocabulary
    from training.synthetic import make_shapes_dataset

    ckpt, val = trained_tiny
    root = tmp_path_factory.mktemp("accuracy")
    model, meta = load_checkpoint_with_meta(ckpt)
    vocab = Vocabulary.from_any(meta["vocabulary"])
    fp32, int8 = root / "fp32.onnx", root / "int8.onnx"
    export_artifact(model, vocab, fp32, ExportOptions(imgsz=IMGSZ), log=lambda *_: None)
    train = Path(val[0]).parent.parent / "train"
    export_artifact(model, vocab, int8, ExportOptions(imgsz=IMGSZ, precision="int8", calib_images=str(train)),
                    log=lambda *_: None)
    data = make_shapes_dataset(root / "eval", num_train=2, num_val=32, size=128, seed=7).parent
    gt, images = read_ground_truth(str(data / "annotations" / "val.json"), "val", str(data / "val"))
    cats = sorted(c["id"] for c in gt["categories"])

    def score(det: Detector) -> dict:
        return evaluate_detector(det, gt, images, cats, batch_size=8, progress=False)[1]

    return ckpt, fp32, int8, score


def _default(weights, **kw) -> Detector:
    return Detector(weights, conf=0.001, iou=0.7, max_det=300, **kw)


@pytest.mark.numeric
def test_default_export_scores_as_the_checkpoint(scored):
    """Checkpoint and export, each run the default way (the export on the fastest backend here, e.g.
    OpenVINO bf16), letterbox the same way and score within DEFAULT_PATH_AP_DIFF."""
    ckpt, fp32, _, score = scored
    a, b = _default(ckpt), _default(fp32)
    assert a.rect is False and b.rect is False  # the square letterbox for both file types
    ma, mb = score(a), score(b)
    assert ma["AP50"] >= 0.5, ma  # the fixture detects: a difference would show
    for key in ("AP", "AP50"):
        assert abs(ma[key] - mb[key]) <= DEFAULT_PATH_AP_DIFF, (key, ma[key], mb[key], b.describe())


@pytest.mark.numeric
def test_default_int8_within_a_point_of_fp32(scored):
    """The default int8 export on the default backend here (OpenVINO where the CPU has VNNI or AMX) loses at
    most INT8_AP_DROP of float32's AP and AP50."""
    _, fp32, int8, score = scored
    ref, det = score(_default(fp32, backend="onnxruntime")), _default(int8)
    assert det.backend.precision == "int8"
    got = score(det)
    for key in ("AP", "AP50"):
        assert got[key] >= ref[key] - INT8_AP_DROP, (key, ref[key], got[key], det.backend.name)


def test_sensitive_layers_stay_float(scored):
    """The stem and the head's last convolutions (box distributions, the folded text-contrastive product) read
    float weights; every other convolution reads int8 ones (through DequantizeLinear)."""
    from export.precision import head_output_nodes, stem_nodes

    _, fp32, int8, _ = scored
    src = onnx.load(str(fp32)).graph
    keep = set(stem_nodes(src)) | set(head_output_nodes(src))
    assert len(stem_nodes(src)) == 1 and len(head_output_nodes(src)) == 6  # 3 levels x (boxes, classes)
    q = onnx.load(str(int8)).graph
    dq_out = {o for n in q.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in q.node if n.op_type == "Conv"]
    float_weight = {n.name for n in convs if n.input[1] not in dq_out}
    assert float_weight == keep


def test_conv_outputs_stay_float(scored):
    """No QuantizeLinear reads a Conv's output: each Conv feeds its SiLU in float, and the SiLU's output is what
    the next Conv quantizes (one Q/DQ pair per Conv input), the placement OpenVINO fuses into one int8 kernel."""
    _, _, int8, _ = scored
    q = onnx.load(str(int8)).graph
    producer = {o: n.op_type for n in q.node for o in n.output}
    quantized = [producer.get(n.input[0], "input") for n in q.node if n.op_type == "QuantizeLinear"]
    assert quantized and "Conv" not in quantized, sorted(set(quantized))
    assert quantized.count("Mul") >= len(quantized) // 2  # mostly SiLU outputs (x * sigmoid(x))


def test_int8_activation_form_per_engine(tmp_path):
    """uint8 activations for ONNX (OpenVINO and ONNX Runtime on x86), symmetric int8 for TensorRT and Triton,
    which refuse uint8."""
    from export.pipeline import ExportOptions, check_options

    assert ExportOptions(precision="int8").activations == "uint8"
    assert ExportOptions(precision="int8", int8_activations="int8").activations == "int8"
    assert ExportOptions(engine="trt", precision="int8").activations == "int8"
    assert ExportOptions(engine="triton", precision="int8").activations == "int8"
    with pytest.raises(ValueError, match="needs symmetric int8 activations"):
        check_options(tmp_path / "m.engine", ExportOptions(engine="trt", precision="int8", int8_activations="uint8"))
