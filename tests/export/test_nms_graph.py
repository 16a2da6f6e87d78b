"""End-to-end output forms: ONNX NonMaxSuppression in the graph (vs the host NMS) and EfficientNMS_TRT."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from parity import SAME_RUNTIME_BOX_ATOL, SAME_RUNTIME_SCORE_ATOL, match_detections

from export.nms_graph import (
    CLASS_PAD,
    NMS_OUTPUTS,
    append_onnx_nms,
    append_trt_efficient_nms,
    reference_detections,
    verify_nms_onnx,
)
from export.onnx_export import ExportError, build_deploy_model, export_onnx
from sdk import Detector
from sdk.manifest import MANIFEST_KEY, NmsSettings, read_manifest, write_sidecar
from sdk.postprocess import postprocess_image, unpack_nms_outputs
from sdk.preprocess import preprocess

pytestmark = pytest.mark.numeric  # float comparisons across kernels: CI reruns these (Makefile)

CLASSES = ["person", "red car", "a dog"]
IMGSZ = 160
CONF, IOU = 0.05, 0.5
SETTINGS = NmsSettings(CONF, IOU, 300)


@pytest.fixture(scope="module")
def exported(tiny_exports):
    """The shared tiny exports (raw, nms, trt_nms at ``SETTINGS``) and the raw graph."""
    assert tiny_exports.nms == SETTINGS and tiny_exports.vocab.names == CLASSES
    tiny_exports.raw_proto = onnx.load(str(tiny_exports.paths["raw"]))
    return tiny_exports


def _session(model):
    import onnxruntime as ort

    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"])


def _run(session, batch):
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"images": batch}), strict=True))


def _check_padded(out, nms):
    """Contract of the padded outputs: dtypes, shapes, best first, padding past num_dets."""
    b = out["num_dets"].shape[0]
    assert out["num_dets"].dtype == np.int32 and out["num_dets"].shape == (b, 1)
    assert out["det_boxes"].dtype == np.float32 and out["det_boxes"].shape == (b, nms.max_det, 4)
    assert out["det_scores"].dtype == np.float32 and out["det_scores"].shape == (b, nms.max_det)
    assert out["det_classes"].dtype == np.int32 and out["det_classes"].shape == (b, nms.max_det)
    for i, k in enumerate(out["num_dets"][:, 0]):
        assert np.all(np.diff(out["det_scores"][i, :k]) <= 0)
        assert np.all(out["det_scores"][i, :k] > nms.conf)
        assert np.all(out["det_scores"][i, k:] == 0) and np.all(out["det_boxes"][i, k:] == 0)
        assert np.all(out["det_classes"][i, k:] == CLASS_PAD)


def _assert_same_as_host(out, raw, infos, nms) -> list[int]:
    """Per image, unpacked graph detections == host postprocess_image on the raw form, as sets."""
    counts = []
    for i, info in enumerate(infos):
        g = unpack_nms_outputs(out, i, info, nms.conf, nms.max_det)
        h = postprocess_image(raw["scores"][i], raw["boxes"][i], info, nms.conf, nms.iou, nms.max_det, nms.agnostic)
        assert len(g[0]) == len(h[0]) == out["num_dets"][i, 0], (i, len(g[0]), len(h[0]))
        # the same raw tensors went in: scores and boxes are gathered, not recomputed
        assert match_detections(*g, *h, box_atol=SAME_RUNTIME_BOX_ATOL, score_atol=SAME_RUNTIME_SCORE_ATOL) == len(h[0])
        counts.append(len(h[0]))
    return counts


@pytest.mark.parametrize("agnostic", [False, True])
def test_onnx_nms_equals_raw_plus_host_nms(exported, images, agnostic):
    nms = dataclasses.replace(SETTINGS, agnostic=agnostic)
    # class-aware: the artifact export_onnx wrote; agnostic: appended to the raw graph here
    model = exported.paths["nms"] if not agnostic else append_onnx_nms(exported.raw_proto, nms)
    graph, raw = _session(model), _session(exported.paths["raw"])
    counts = []
    for chunk in (images[:3], images[3:]):  # batch 3, then batch 1 (dynamic batch axis)
        batch, infos = preprocess(chunk, IMGSZ)
        out = _run(graph, batch)
        _check_padded(out, nms)
        counts += _assert_same_as_host(out, _run(raw, batch), infos, nms)
    # not vacuous: dozens of detections per image (about 50-120 class-aware, 10-50 agnostic here;
    # the exact counts depend on the CPU's float kernels, so the host computes them above)
    assert min(counts) >= 10, counts


def test_no_detections_in_some_or_all_images(exported, images):
    raw = _session(exported.paths["raw"])
    batch, infos = preprocess(images[:3], IMGSZ)
    best = _run(raw, batch)["scores"].max(axis=(1, 2))  # measured 0.993, 0.965, 1.0: far from 0.98, 0.995
    assert best[1] < 0.98 < best[0] < 0.995 and best[2] > 0.98
    for conf, b, inf in ((0.98, batch, infos), (0.995, batch[:2], infos[:2])):
        nms = NmsSettings(conf, IOU, 300)
        out = _run(_session(append_onnx_nms(exported.raw_proto, nms)), b)
        _check_padded(out, nms)
        counts = _assert_same_as_host(out, _run(raw, b), inf, nms)
        # 0.98: image 1 has none, the others some; 0.995: none at all
        assert (counts[0] > 0 and counts[1] == 0 and counts[2] > 0) if conf == 0.98 else counts == [0, 0]
    assert np.all(out["det_boxes"] == 0) and np.all(out["det_scores"] == 0) and np.all(out["det_classes"] == -1)


def test_max_det_truncation_keeps_the_best(exported, images):
    batch, infos = preprocess(images, IMGSZ)
    raw = _run(_session(exported.paths["raw"]), batch)
    full = _run(_session(exported.paths["nms"]), batch)  # max_det 300: dozens to ~120 per image
    for max_det in (5, 1):
        nms = NmsSettings(CONF, IOU, max_det)
        out = _run(_session(append_onnx_nms(exported.raw_proto, nms)), batch)
        _check_padded(out, nms)
        assert out["num_dets"][:, 0].tolist() == [max_det] * 4
        # images 0, 1: distinct scores, the same best max_det as the host; images 2, 3 have dozens of
        # candidates tied at score 1.0 (tiny random model), so only the scores are unique there
        assert _assert_same_as_host(out, raw, infos[:2], nms) == [max_det] * 2
        for i in (2, 3):
            host = postprocess_image(raw["scores"][i], raw["boxes"][i], infos[i], CONF, IOU, max_det)
            assert np.array_equal(out["det_scores"][i], host[1]) and np.all(host[1] == 1.0)
        # exactly the first max_det of the untruncated result, in order
        np.testing.assert_array_equal(out["det_scores"], full["det_scores"][:, :max_det])
        np.testing.assert_array_equal(out["det_classes"], full["det_classes"][:, :max_det])
        np.testing.assert_array_equal(out["det_boxes"], full["det_boxes"][:, :max_det])


def test_detector_on_nms_artifact_equals_raw_artifact(exported, images):
    raw_path, nms_path = exported.paths["raw"], exported.paths["nms"]
    # both artifacts run the same raw graph on the same batches: bit-equal raw tensors, so the graph's
    # NMS must give exactly the host's detections
    got = Detector(nms_path, backend="onnxruntime", conf=CONF, iou=IOU).predict(images, batch_size=3)
    ref = Detector(raw_path, backend="onnxruntime", conf=CONF, iou=IOU).predict(images, batch_size=3)
    assert min(len(r) for r in ref) >= 10
    for a, b in zip(got, ref, strict=True):
        _assert_same_set(a, b)
        assert np.all(a.xyxy[:, 2] <= a.data["image_hw"][1]) and np.all(a.xyxy >= 0)  # clipped as the host
    # a higher conf at predict time tightens what the graph kept; equals the host at that conf
    high = Detector(nms_path, backend="onnxruntime", conf=0.5, iou=IOU).predict(images, batch_size=3)
    high_ref = Detector(raw_path, backend="onnxruntime", conf=0.5, iou=IOU).predict(images, batch_size=3)
    assert sum(len(r) for r in high_ref) > 20 and all(len(h) < len(r) for h, r in zip(high_ref, ref, strict=True))
    for a, b in zip(high, high_ref, strict=True):
        _assert_same_set(a, b)
    # agnostic artifact (appended here, manifest adjusted) vs the raw artifact with agnostic NMS
    nms = dataclasses.replace(SETTINGS, agnostic=True)
    proto = append_onnx_nms(exported.raw_proto, nms)
    agn_path = exported.root / "model_nms_agnostic.onnx"
    manifest = dataclasses.replace(exported.manifests["nms"], nms=nms)
    del proto.metadata_props[:]
    proto.metadata_props.add(key=MANIFEST_KEY, value=manifest.to_json())
    onnx.save(proto, str(agn_path))
    write_sidecar(manifest, agn_path)
    got = Detector(agn_path, backend="onnxruntime", conf=CONF).predict(images, batch_size=3)
    agn_ref = Detector(raw_path, backend="onnxruntime", conf=CONF, iou=IOU, agnostic=True).predict(images, batch_size=3)
    assert all(0 < len(x) < len(r) for x, r in zip(agn_ref, ref, strict=True))  # agnostic suppresses more
    for a, b in zip(got, agn_ref, strict=True):
        _assert_same_set(a, b)


def _assert_same_set(a, b) -> None:
    """Graph NMS vs host NMS on bit-equal raw tensors: the same detections (boxes to 1e-4 px: both
    un-letterbox in float32; the order may differ only among tied scores)."""
    assert len(a) == len(b)
    assert match_detections(a.xyxy, a.confidence, a.class_id, b.xyxy, b.confidence, b.class_id,
                            SAME_RUNTIME_BOX_ATOL, SAME_RUNTIME_SCORE_ATOL) == len(b)


def test_export_manifest_and_log(exported):
    for form in ("raw", "nms", "trt_nms"):
        manifest = exported.manifests[form]
        assert read_manifest(exported.paths[form]) == manifest
        assert manifest.output_form == form and manifest.nms == SETTINGS
        assert manifest.output_names == (("scores", "boxes") if form == "raw" else NMS_OUTPUTS)
        proto = onnx.load(str(exported.paths[form]))
        assert tuple(o.name for o in proto.graph.output) == manifest.output_names
        assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert "check batch 3: in-graph NMS == host NMS, detections per image" in exported.logs["nms"]
    assert "EfficientNMS_TRT not run" in exported.logs["trt_nms"]
    assert "check batch 1: ONNX Runtime vs PyTorch" in exported.logs["trt_nms"]
    assert "NMS" not in exported.logs["raw"]
    with pytest.raises(Exception, match="EfficientNMS_TRT"):  # ONNX Runtime cannot load the plugin node
        _session(exported.paths["trt_nms"])


def test_export_verification_catches_a_wrong_nms(exported):
    deploy = build_deploy_model(exported.model, exported.vocab, exported.emb, IMGSZ)
    report = verify_nms_onnx(append_onnx_nms(exported.raw_proto, SETTINGS), deploy, IMGSZ, (2,), SETTINGS)
    class_aware = report[2][1]  # detections on export's check images (about 60 each)
    assert len(class_aware) == 2 and min(class_aware) >= 10
    agnostic = dataclasses.replace(SETTINGS, agnostic=True)
    report = verify_nms_onnx(append_onnx_nms(exported.raw_proto, agnostic), deploy, IMGSZ, (1,), agnostic)
    assert 0 < report[1][1][0] < class_aware[0]  # agnostic suppresses across classes too
    wrong = append_onnx_nms(exported.raw_proto, dataclasses.replace(SETTINGS, iou=0.3))
    with pytest.raises(ExportError, match="in-graph NMS disagrees with the host NMS"):
        verify_nms_onnx(wrong, deploy, IMGSZ, (1,), SETTINGS)
    with pytest.raises(ExportError, match="output_form"):
        export_onnx(exported.model, exported.vocab, exported.emb, exported.root / "x.onnx", output_form="bogus")
    with pytest.raises(ExportError, match="expected a raw graph"):
        append_onnx_nms(wrong, SETTINGS)


@pytest.mark.parametrize("agnostic", [False, True])
def test_trt_efficient_nms_graph(exported, agnostic):
    nms = NmsSettings(conf=0.3, iou=0.6, max_det=100, agnostic=agnostic)
    before = exported.raw_proto.SerializeToString()
    proto = append_trt_efficient_nms(exported.raw_proto, nms)
    assert exported.raw_proto.SerializeToString() == before  # the input model is not modified
    onnx.checker.check_model(proto, full_check=True)
    plugins = [n for n in proto.graph.node if n.op_type == "EfficientNMS_TRT"]
    assert len(plugins) == 1 and plugins[0].domain == "TRT"
    node = plugins[0]
    assert list(node.input) == ["boxes", "scores"] and tuple(node.output) == NMS_OUTPUTS
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"plugin_version": b"1", "background_class": -1, "max_output_boxes": 100,
                     "score_threshold": pytest.approx(0.3), "iou_threshold": pytest.approx(0.6),
                     "score_activation": 0, "class_agnostic": int(agnostic), "box_coding": 0}
    assert {(o.domain, o.version) for o in proto.opset_import} == {("", 17), ("TRT", 1)}
    outs = {o.name: o.type.tensor_type for o in proto.graph.output}
    assert tuple(outs) == NMS_OUTPUTS
    expect = {"num_dets": (TensorProto.INT32, ["batch", 1]), "det_boxes": (TensorProto.FLOAT, ["batch", 100, 4]),
              "det_scores": (TensorProto.FLOAT, ["batch", 100]), "det_classes": (TensorProto.INT32, ["batch", 100])}
    for name, (elem, shape) in expect.items():
        assert outs[name].elem_type == elem
        assert [d.dim_param or d.dim_value for d in outs[name].shape.dim] == shape
    # the raw tensors stay typed for the plugin's inputs: scores (B, A, C), boxes (B, A, 4)
    values = {v.name: v.type.tensor_type for v in proto.graph.value_info}
    assert [d.dim_param or d.dim_value for d in values["scores"].shape.dim] == ["batch", 525, 3]
    assert [d.dim_param or d.dim_value for d in values["boxes"].shape.dim] == ["batch", 525, 4]


def _synthetic_raw_graph() -> onnx.ModelProto:
    """A stand-in raw graph: inputs ``s``/``b`` pass through to outputs ``scores``/``boxes``."""
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("Identity", ["s"], ["scores"]), h.make_node("Identity", ["b"], ["boxes"])], "raw",
        [h.make_tensor_value_info("s", TensorProto.FLOAT, ["batch", None, None]),
         h.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", None, 4])],
        [h.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", None, None]),
         h.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", None, 4])])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


@pytest.mark.parametrize("agnostic", [False, True])
def test_random_candidates_equal_host_nms(agnostic):
    """Fuzz on a stand-in raw graph: 3 images x 300 anchors x 4 classes of clustered boxes."""
    rs = np.random.RandomState(0)
    centers = rs.uniform(20, 600, (3, 300, 2)) // 80 * 80 + 40 + rs.normal(0, 4, (3, 300, 2))  # 8 x 8 clusters
    wh = rs.uniform(60, 80, (3, 300, 2))
    boxes = np.concatenate((centers - wh / 2, centers + wh / 2), -1).astype(np.float32)
    scores = (rs.uniform(0, 1, (3, 300, 4)) ** 3).astype(np.float32)
    scores[2] *= 0.1  # image 2: nothing above conf
    info = preprocess([np.zeros((640, 640, 3), np.uint8)], 640)[1][0]  # identity letterbox
    counts = []
    for max_det in (300, 20):
        nms = NmsSettings(conf=0.2, iou=0.45, max_det=max_det, agnostic=agnostic)
        out = _run_named(_session(append_onnx_nms(_synthetic_raw_graph(), nms)), {"s": scores, "b": boxes})
        _check_padded(out, nms)
        counts.append(_assert_same_as_host(out, {"scores": scores, "boxes": boxes}, [info] * 3, nms))
    # measured: the host keeps 213/217 (class-aware) or 61/63 (agnostic) of 480/495 candidates
    assert counts == ([[61, 63, 0], [20, 20, 0]] if agnostic else [[213, 217, 0], [20, 20, 0]])


def test_class_aware_is_per_class_on_host_and_in_the_graph():
    """Classes never suppress each other, on the host or in the graph. mmcv's coordinate-offset trick
    (boxes shifted by class * (max coordinate + 1)) let a box reaching below about -1 px suppress another
    class's box far away; the host compares labels instead (as mmcv's own per-class branch does)."""
    boxes = np.array([[[90, 90, 100, 100], [-10, -10, -1, -1]]], np.float32)
    scores = np.array([[[0.9, 0.0], [0.0, 0.8]]], np.float32)
    nms = NmsSettings(conf=0.25, iou=0.7, max_det=10)
    out = _run_named(_session(append_onnx_nms(_synthetic_raw_graph(), nms)), {"s": scores, "b": boxes})
    assert out["num_dets"][0, 0] == 2 and out["det_classes"][0, :2].tolist() == [0, 1]
    info = preprocess([np.zeros((640, 640, 3), np.uint8)], 640)[1][0]
    host = postprocess_image(scores[0], boxes[0], info, nms.conf, nms.iou, nms.max_det)
    assert host[2].tolist() == [0, 1]
    ref = reference_detections(scores[0], boxes[0], nms, 640)  # what export verification compares to
    assert ref[2].tolist() == [0, 1]


def _run_named(session, feeds):
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))
