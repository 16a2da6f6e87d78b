"""The OpenVINO backend on the CPU: the same artifacts as ONNX Runtime, the same detections in float32,
bfloat16 close to them, int8 as accurate, throughput mode equal to latency mode, compiled models cached, and the
automatic backend choice. Skipped where ``openvino`` is not installed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from sdk import Detector, RuntimeOptions
from sdk.detector import default_backend
from sdk.preprocess import preprocess
from tests.parity import (
    OV_BF16_BOX_ATOL,
    OV_BF16_SCORE_ATOL,
    OV_FP32_BOX_ATOL,
    OV_FP32_REL,
    OV_FP32_SCORE_ATOL,
    OV_INT8_AP_DROP,
    assert_same_detection_lists,
    max_rel_diff,
)

ov = pytest.importorskip("openvino")

CONF = 0.05
FP32 = RuntimeOptions(precision="fp32")
# Detections each side of a comparison on ``_images`` must hold: the 4 validation images show shapes that the
# fine-tuned fixture finds at CONF (trained_tiny asserts mAP50 > 0.5), so a path that returns nothing fails.
MIN_DETECTIONS = 4


@pytest.fixture(scope="module")
def exports(trained_tiny, tmp_path_factory):
    """The fine-tuned tiny model exported with dynamic height and width: raw, nms and int8 forms."""
    import cv2

    from export.pipeline import ExportOptions, export_artifact
    from sdk.model.checkpoint import load_checkpoint_with_meta
    from sdk.vocabulary import Vocabulary

    ckpt, val = trained_tiny
    root = tmp_path_factory.mktemp("ov_exports")
    calib = root / "calib"
    calib.mkdir()
    for i, path in enumerate(val):
        cv2.imwrite(str(calib / f"{i}.png"), cv2.imread(str(path)))
    model, meta = load_checkpoint_with_meta(ckpt)
    vocab = Vocabulary.from_any(meta["vocabulary"])
    paths = {}
    for name, options in (("raw", ExportOptions(imgsz=160)), ("nms", ExportOptions(imgsz=160, output_form="nms",
                                                                                     nms=_nms())),
                          ("int8", ExportOptions(imgsz=160, precision="int8", calib_images=str(calib)))):
        paths[name] = root / f"{name}.onnx"
        manifest = export_artifact(model, vocab, paths[name], options, log=lambda *_: None)
        assert manifest.dynamic_hw  # the ONNX default
    return paths, [str(p) for p in val]


def _same(a: list, b: list, conf: float = CONF, box_atol: float = OV_FP32_BOX_ATOL,
          score_atol: float = OV_FP32_SCORE_ATOL, minimum: int = MIN_DETECTIONS) -> None:
    """The same detections image by image, each side holding at least ``minimum`` in all."""
    assert_same_detection_lists(a, b, conf=conf, minimum=minimum, box_atol=box_atol, score_atol=score_atol)


def _nms():
    from sdk.manifest import NmsSettings

    return NmsSettings(conf=CONF, iou=0.7, max_det=300)


def _images(val: list[str]) -> list[np.ndarray]:
    """The validation images and wide / tall crops of them: several rect shapes in one list."""
    import cv2

    base = [cv2.imread(p) for p in val]
    return [*base, cv2.resize(base[0], (300, 120)), cv2.resize(base[1], (90, 260)), base[2][:70]]


@pytest.mark.numeric
def test_fp32_matches_onnxruntime(exports):
    paths, val = exports
    ov_det = Detector(paths["raw"], conf=CONF, backend="openvino", runtime=FP32)
    ort_det = Detector(paths["raw"], conf=CONF, backend="onnxruntime")
    assert (ov_det.backend.name, ov_det.backend.precision) == ("openvino", "fp32")
    images = _images(val)
    for rect in (False, True):
        x, _ = preprocess(images[:4], 160, rect=rect)
        got, ref = ov_det.backend.infer(x), ort_det.backend.infer(x)
        assert max_rel_diff(got["scores"], ref["scores"]) < OV_FP32_REL
        assert max_rel_diff(got["boxes"], ref["boxes"]) < OV_FP32_REL
    _same(ov_det.predict(images, batch_size=3), ort_det.predict(images, batch_size=3))


def test_nms_form_and_batching(exports):
    """In-graph NMS on OpenVINO equals the same artifact on ONNX Runtime (an independent runtime, so within
    the cross-runtime tolerances) and host NMS on the raw form; batched equals one by one."""
    paths, val = exports
    images = _images(val)
    nms = Detector(paths["nms"], conf=CONF, backend="openvino", runtime=FP32).predict(images, batch_size=4)
    reference = Detector(paths["nms"], conf=CONF, backend="onnxruntime").predict(images, batch_size=4)
    assert reference[0].data["backend"] == "onnxruntime" and nms[0].data["backend"] == "openvino"
    _same(nms, reference)
    raw = Detector(paths["raw"], conf=CONF, backend="openvino", runtime=FP32)
    batched = raw.predict(images, batch_size=4)
    _same(nms, batched)
    one_by_one = [raw.predict(img)[0] for img in images]
    _same(batched, one_by_one)


def test_throughput_mode_equals_latency_mode(exports):
    paths, val = exports
    images = _images(val)
    latency = Detector(paths["raw"], conf=CONF, backend="openvino", runtime=FP32)
    many = Detector(paths["raw"], conf=CONF, backend="openvino",
                    runtime=RuntimeOptions(precision="fp32", performance="throughput", num_requests=2))
    assert many.backend.num_requests == 2 and many.backend.preferred_batch == 2
    got = many.predict(images, batch_size=len(images))
    _same(got, latency.predict(images, batch_size=1))
    streamed = list(many.predict_stream(images, batch_size=3))
    _same(streamed, got)


@pytest.mark.numeric
def test_bf16_close_to_fp32(exports):
    """bfloat16 moves scores by some 1e-3: every detection has a partner on the other side, except at an
    edge (near conf 0.1, or an NMS pair near the IoU threshold that rounding tips the other way: seen on a
    fixture trained with one thread, a 0.20 box suppressed in bf16)."""
    from sdk.backends.openvino import native_bf16, shared_core

    paths, val = exports
    atol = (OV_BF16_SCORE_ATOL, OV_BF16_BOX_ATOL)
    images = _images(val)
    ref = Detector(paths["raw"], conf=0.1, backend="openvino", runtime=FP32).predict(images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 asked for on a CPU without it: fp32, with a warning
        det = Detector(paths["raw"], conf=0.1, backend="openvino", runtime=RuntimeOptions(precision="bf16"))
    assert det.backend.precision == ("bf16" if native_bf16(shared_core()) else "fp32")
    got = det.predict(images)
    assert sum(int((r.confidence >= 0.1 + atol[0]).sum()) for r in ref) >= 5  # not vacuous
    assert_same_detection_lists(ref, got, conf=0.1, minimum=5, score_atol=atol[0], box_atol=atol[1])


@pytest.mark.numeric
def test_int8_keeps_the_fp32_accuracy(exports):
    """The int8 export on OpenVINO scores the labelled validation images (COCO mAP50:95 and mAP50) within
    ``OV_INT8_AP_DROP`` of float32; on a CPU without VNNI / AMX it is never picked automatically, and an
    explicit choice warns."""
    import json
    from pathlib import Path

    from sdk.backends.openvino import native_int8
    from sdk.evaluation import evaluate_detector

    paths, val = exports
    if not native_int8():  # e.g. AVX2 only
        assert default_backend(paths["int8"], "cpu") == "onnxruntime"
        with pytest.warns(UserWarning, match="no VNNI or AMX"):
            Detector(paths["int8"], backend="openvino")
        return
    data = Path(val[0]).parent.parent
    ann = json.loads((data / "annotations" / "val.json").read_text())
    ids = [c["id"] for c in ann["categories"]]
    metrics = {}
    for name, runtime in (("raw", FP32), ("int8", None)):
        det = Detector(paths[name], conf=0.01, backend="openvino", runtime=runtime)
        assert det.backend.precision == ("fp32" if name == "raw" else "int8")
        metrics[name] = evaluate_detector(det, ann, data / "val", ids, progress=False)[1]
    assert metrics["raw"]["AP50"] >= 0.5  # the fixture detects: a drop would show
    for key in ("AP", "AP50"):
        assert metrics["int8"][key] >= metrics["raw"][key] - OV_INT8_AP_DROP, (key, metrics)


def test_precision_follows_the_cpu(exports, monkeypatch):
    """bf16 where the CPU runs it natively, fp32 elsewhere; an explicit precision wins; int8 stays int8."""
    import sdk.backends.openvino as ovb

    paths, _ = exports
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(ovb, "native_bf16", lambda core, device="CPU", n=native: n)
        assert Detector(paths["raw"], backend="openvino").backend.precision == expected
        assert Detector(paths["raw"], backend="openvino", runtime=FP32).backend.precision == "fp32"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no VNNI: a warning (tested above)
            assert Detector(paths["int8"], backend="openvino").backend.precision == "int8"
    monkeypatch.setattr(ovb, "native_bf16", lambda core, device="CPU": False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        assert Detector(paths["raw"], backend="openvino", runtime=RuntimeOptions(precision="bf16")
                        ).backend.precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        Detector(paths["raw"], backend="openvino", runtime=RuntimeOptions(precision="int4"))  # type: ignore[arg-type]


def test_compiled_models_are_cached(exports, tmp_path):
    paths, val = exports
    options = RuntimeOptions(precision="fp32", cache_dir=str(tmp_path / "ovcache"))
    first = Detector(paths["raw"], conf=CONF, backend="openvino", runtime=options).predict(val[0])
    cached = sorted(p.name for p in (tmp_path / "ovcache").iterdir())
    assert cached  # the compiled model was written
    again = Detector(paths["raw"], conf=CONF, backend="openvino", runtime=options).predict(val[0])
    assert sorted(p.name for p in (tmp_path / "ovcache").iterdir()) == cached  # loaded, not compiled anew
    _same(again, first, minimum=1)  # one validation image: its shapes are found


def test_automatic_backend_choice(exports, monkeypatch):
    import importlib.util

    paths, _ = exports
    assert default_backend(paths["raw"], "cpu") == "openvino"
    assert Detector(paths["raw"]).backend.name == "openvino"
    assert default_backend(paths["raw"], "cuda:0") == "onnxruntime"
    assert default_backend("m.engine", "cuda") == "tensorrt" and default_backend("m.pt", "cpu") == "torch"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert default_backend(paths["raw"], "cpu") == "onnxruntime"
    for backend, path in (("tensorrt", paths["raw"]), ("torch", paths["raw"]), ("openvino", "m.pt")):
        with pytest.raises(ValueError, match=f"backend '{backend}' runs"):
            Detector(path, backend=backend)
    with pytest.raises(ValueError, match="backend must be one of"):
        Detector(paths["raw"], backend="tflite")  # type: ignore[arg-type]
