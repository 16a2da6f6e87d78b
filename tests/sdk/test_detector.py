"""Detector on the PyTorch backend: inputs, batching, vocabulary changes, errors, CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from parity import (
    FP16_BOX_ATOL,
    FP16_REL,
    FP16_SCORE_ATOL,
    RANDOM_BOX_ATOL,
    RANDOM_SCORE_ATOL,
    THREAD_SPLIT_BOX_ATOL,
    THREAD_SPLIT_SCORE_ATOL,
    assert_identical_detections,
    assert_same_detection_lists,
    assert_same_detections,
    max_rel_diff,
    require_detections,
)

from sdk import Detections, Detector, ImageError, RuntimeOptions, VocabularyError
from sdk.postprocess import decode_head_outputs, postprocess_image
from sdk.preprocess import preprocess

pytestmark = pytest.mark.numeric  # float comparisons across kernels: CI reruns these (Makefile)

CLASSES = ["person", "red car", "a dog"]
CONF = 0.05


@pytest.fixture(scope="module")
def detector(tiny_checkpoints):
    return Detector(tiny_checkpoints["v2"], classes=CLASSES, imgsz=160, conf=CONF)


def assert_same(a: Detections, b: Detections) -> None:
    """Same detections up to the float rounding of batched CPU kernels (logits differ by ~1e-5 of
    their range, see tests/model/test_forward.py): near-tied scores may swap places, and detections
    at the conf and max_det edges may be missing on one side."""
    assert_same_detections(a, b, conf=CONF, max_det=300, box_atol=RANDOM_BOX_ATOL, score_atol=RANDOM_SCORE_ATOL)


def assert_same_lists(a: list[Detections], b: list[Detections]) -> None:
    """:func:`assert_same` image by image, each side holding more than 10 detections in all (the random
    calibrated v2 model finds dozens per synthetic image at CONF): an empty result fails."""
    assert_same_detection_lists(a, b, conf=CONF, minimum=11, max_det=300, box_atol=RANDOM_BOX_ATOL,
                                score_atol=RANDOM_SCORE_ATOL)


def test_batched_equals_one_by_one(detector, images):
    batched = detector.predict(images, batch_size=4)
    singles = [detector.predict(img)[0] for img in images]
    assert len(batched) == len(images)
    assert sum(len(d) for d in batched) > 10  # not a vacuous comparison
    assert_same_lists(batched, singles)
    odd = detector.predict(images, batch_size=3)  # a short last batch
    assert_same_lists(odd, batched)


def test_matches_manual_pipeline(detector, tiny_checkpoints, images):
    """predict == preprocess -> model -> decode -> postprocess done by hand."""
    import torch

    from sdk.model import load_checkpoint

    model = load_checkpoint(tiny_checkpoints["v2"])
    batch, infos = preprocess(images[1:2], 160)
    with torch.no_grad():
        out = model(torch.from_numpy(batch), model.encode_text(CLASSES))
    scores, boxes = decode_head_outputs([t.numpy() for t in out.cls_logits],
                                        [t.numpy() for t in out.box_dists])
    xyxy, conf, cls = postprocess_image(scores[0], boxes[0], infos[0], 0.05, 0.7, 300)
    det = detector.predict(images[1])[0]
    manual = Detections(xyxy, conf, cls, np.array([CLASSES[c] for c in cls]))
    c = assert_same_detections(det, manual, conf=CONF, box_atol=THREAD_SPLIT_BOX_ATOL,
                               score_atol=THREAD_SPLIT_SCORE_ATOL)
    assert len(det) > 10 and c.matched >= len(det) - 1
    assert det.xyxy.dtype == np.float32 and det.class_id.dtype == np.int64
    h, w = images[1].shape[:2]
    assert (det.xyxy[:, [0, 2]] <= w).all() and (det.xyxy[:, [1, 3]] <= h).all() and (det.xyxy >= 0).all()


def test_sources_paths_folders_gray_rgba(detector, images, tmp_path):
    for i, img in enumerate(images[:2]):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), img)
    (tmp_path / "notes.txt").write_text("ignored")
    from_folder = detector.predict(tmp_path)
    from_arrays = detector.predict(images[:2])
    assert [d.data["source"] for d in from_folder] == [str(tmp_path / "img0.png"), str(tmp_path / "img1.png")]
    require_detections(from_folder, from_arrays)  # the comparisons below would pass on empty results
    for a, b in zip(from_folder, from_arrays, strict=True):
        assert_identical_detections(a, b)  # the same pixels in the same batch
    gray = cv2.cvtColor(images[0], cv2.COLOR_BGR2GRAY)
    from_gray, from_bgr = detector.predict(gray)[0], detector.predict(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))[0]
    require_detections(from_gray, from_bgr)
    assert from_gray == from_bgr
    rgba = cv2.cvtColor(images[0], cv2.COLOR_BGR2BGRA)
    from_rgba, from_rgb = detector.predict(rgba)[0], detector.predict(images[0])[0]
    require_detections(from_rgba, from_rgb)
    assert from_rgba == from_rgb


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("missing.jpg", "missing.jpg' does not exist"),
        (np.zeros((10, 10, 3), np.float32), "expected dtype uint8"),
        (np.zeros((10, 10, 2), np.uint8), r"expected shape \(H, W, 3\)"),
        (42, "unsupported image source of type int"),
    ],
)
def test_bad_images(detector, bad, match):
    with pytest.raises(ImageError, match=match):
        detector.predict(bad)


def test_unreadable_image_is_named(detector, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ImageError, match="broken.jpg"):
        detector.predict([str(tmp_path / "broken.jpg")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="holds no images"):
        detector.predict(tmp_path / "empty")


def test_set_classes_keeps_model(detector, images):
    model = detector.backend.model
    before = detector.predict(images[0])[0]
    require_detections(before)  # compared with the result after the round trip below
    detector.set_classes(["a dog"])
    assert detector.backend.model is model and detector.class_names == ["a dog"]
    only_dog = detector.predict(images[0])[0]
    require_detections(only_dog)  # the class check below holds for an empty result too
    assert set(only_dog.class_name) <= {"a dog"}
    with pytest.raises(VocabularyError):
        detector.set_classes([])
    assert detector.class_names == ["a dog"]  # a failed change keeps the old vocabulary
    detector.set_classes(CLASSES)
    after = detector.predict(images[0])[0]
    require_detections(after)
    assert_identical_detections(after, before)


def test_padding_prompt_never_reported(tiny_checkpoints, images):
    det = Detector(tiny_checkpoints["v2"], classes=["person"], imgsz=160, conf=0.01, pad_prompt=True)
    assert det.vocabulary.model_texts() == ["person", " "]
    res = det.predict(images)
    require_detections(res)  # the class check below holds for empty results too
    assert all(set(r.class_id.tolist()) <= {0} for r in res)
    plain = Detector(tiny_checkpoints["v2"], classes=["person"], imgsz=160, conf=0.01)
    # the pad prompt takes part in the neck's max-sigmoid attention, so scores change
    assert not np.array_equal(res[0].confidence[:5], plain.predict(images[0])[0].confidence[:5])


def test_prompt_merge_max(tiny_checkpoints, images):
    prompts = [["person", "human"], ["red car"]]
    mx = Detector(tiny_checkpoints["v1"], classes=prompts, imgsz=160, conf=0.05, prompt_merge="max")
    assert mx.vocabulary.model_texts() == ["person", "human", "red car"]
    mean = Detector(tiny_checkpoints["v1"], classes=prompts, imgsz=160, conf=0.05, prompt_merge="mean")
    for det in (mx, mean):
        assert det.class_names == ["person", "red car"]
        res = det.predict(images)
        require_detections(res)  # the class check below holds for empty results too
        assert all(set(r.class_id.tolist()) <= {0, 1} for r in res)


def test_results_exports(detector, images):
    det = detector.predict(images[0])[0]
    coco = det.to_coco(image_id=7, category_ids=[1, 3, 18])
    assert len(coco) == len(det) and coco[0]["image_id"] == 7
    assert coco[0]["category_id"] == [1, 3, 18][int(det.class_id[0])]
    x1, y1, x2, y2 = det.xyxy[0].tolist()
    assert coco[0]["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])
    drawn = det.draw(images[0])
    assert drawn.shape == images[0].shape and not np.array_equal(drawn, images[0])
    assert set(det.data["speed_ms"]) == {"preprocess", "inference", "postprocess"}
    assert len(det[det.confidence > 0.5]) == int((det.confidence > 0.5).sum())


def test_constructor_errors(tiny_checkpoints):
    with pytest.raises(VocabularyError, match="stores no vocabulary"):
        Detector(tiny_checkpoints["v2"])
    with pytest.raises(ValueError, match="multiple of 32"):
        Detector(tiny_checkpoints["v2"], classes=CLASSES, imgsz=100)
    with pytest.raises(ValueError, match="conf must be"):
        Detector(tiny_checkpoints["v2"], classes=CLASSES, conf=1.5)


def test_half_precision_stays_within_fp16_rounding(trained_tiny, tiny_checkpoints, images):
    """RuntimeOptions(half=True): float16 network, float32 text encoder. On fine-tuned weights, raw
    outputs stay within fp16 rounding of the float32 ones (FP16_REL of the largest magnitude; random
    calibrated weights amplify it to several %) and detections match within fp16 tolerances."""
    import torch

    ckpt, val_images = trained_tiny
    full = Detector(ckpt, imgsz=160, conf=0.01)
    with pytest.warns(UserWarning, match="float16 is meant for CUDA"):
        half = Detector(ckpt, imgsz=160, conf=0.01, runtime=RuntimeOptions(half=True))
    assert half.backend.model.backbone.stem.conv.weight.dtype == torch.float16
    batch, _ = preprocess([cv2.imread(str(p)) for p in val_images] + images, 160)
    ref, got = full.backend.infer(batch), half.backend.infer(batch)
    assert got.keys() == ref.keys()
    for key in ref:
        assert got[key].dtype == np.float32
        assert 0 < max_rel_diff(got[key], ref[key]) < FP16_REL, key
    a, b = full.predict(val_images + images, batch_size=3), half.predict(val_images + images, batch_size=3)
    assert sum(len(d) for d in a) > 20 and sum((d.confidence > 0.1).sum() for d in a[:len(val_images)]) >= 4
    assert_same_detection_lists(b, a, conf=0.01, minimum=21, box_atol=FP16_BOX_ATOL, score_atol=FP16_SCORE_ATOL)

    # the text encoder is left in float32: the same embeddings (and cache key) as the float32 model
    t_full = Detector(tiny_checkpoints["v2"], classes=CLASSES, imgsz=160)
    with pytest.warns(UserWarning):
        t_half = Detector(tiny_checkpoints["v2"], classes=CLASSES, imgsz=160, runtime=RuntimeOptions(half=True))
    np.testing.assert_array_equal(t_half.backend.encode_text(CLASSES), t_full.backend.encode_text(CLASSES))
    with pytest.raises(ValueError, match="precision it was exported with"):
        Detector("model.onnx", runtime=RuntimeOptions(half=True))


def test_cli_predict(tiny_checkpoints, images, tmp_path, capsys):
    from sdk.cli import predict_main

    for i, img in enumerate(images):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), img)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="meant for CUDA"):
        code = predict_main([str(tmp_path), "--weights", str(tiny_checkpoints["efficient"]),
                             "--classes", "person,red car", "--imgsz", "160", "--conf", "0.05",
                             "--out", str(out), "--half"])
    assert code == 0
    report = json.loads((out / "predictions.json").read_text())
    assert report["classes"] == ["person", "red car"] and len(report["results"]) == len(images)
    assert sorted(p.name for p in out.glob("*.jpg")) == [f"{i}.jpg" for i in range(len(images))]
    assert "4 images" in capsys.readouterr().out
    assert predict_main([str(tmp_path / "nope.jpg"), "--weights", str(tiny_checkpoints["v2"]),
                         "--classes", "a"]) == 2
    assert "nope.jpg' does not exist" in capsys.readouterr().err


def test_stream_equals_batched(detector, images, tmp_path):
    """predict_stream over arrays, a folder and a video file == predict on the same frames."""
    batched = detector.predict(images, batch_size=4)
    for bs in (1, 3):
        streamed = list(detector.predict_stream(iter(images), batch_size=bs))
        assert len(streamed) == len(images)
        assert_same_lists(streamed, batched)
        for a in streamed:
            assert set(a.data["speed_ms"]) == {"preprocess", "inference", "postprocess"}
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 160))
    for img in images:
        writer.write(cv2.resize(img, (160, 160)))
    writer.release()
    cap = cv2.VideoCapture(str(tmp_path / "clip.avi"))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == len(images)
    from_video = list(detector.predict_stream(str(tmp_path / "clip.avi"), batch_size=2))
    assert [d.data["source"] for d in from_video] == [f"{tmp_path / 'clip.avi'}#{i}" for i in range(len(frames))]
    assert_same_lists(from_video, detector.predict(frames, batch_size=2))
    with_frames = list(detector.predict_stream(str(tmp_path / "clip.avi"), batch_size=3, with_frames=True))
    assert len(with_frames) == len(frames)
    require_detections([det for _, det in with_frames], minimum=11)
    for (frame, det), ref_frame, ref in zip(with_frames, frames, from_video, strict=True):
        np.testing.assert_array_equal(frame, ref_frame)
        assert_same(det, ref)


def test_cli_predict_annotates_videos(detector, images, tmp_path, capsys, tiny_checkpoints):
    """A video argument gives <out>/<stem>.mp4 (every frame, its size) and one record per frame."""
    from sdk.cli import predict_main

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 120))
    for img in images:
        writer.write(cv2.resize(img, (160, 120)))
    writer.release()
    cv2.imwrite(str(tmp_path / "still.jpg"), images[0])
    out = tmp_path / "out"
    args = ["--weights", str(tiny_checkpoints["v2"]), "--classes", ",".join(CLASSES), "--imgsz", "160",
            "--conf", "0.05", "--batch-size", "3"]
    assert predict_main([str(video), str(tmp_path / "still.jpg"), *args, "--out", str(out)]) == 0
    assert "1 images, 1 videos" in capsys.readouterr().out
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (160, 120)
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == len(images)
    records = json.loads((out / "predictions.json").read_text())["results"]
    assert [r["image"] for r in records] == [f"{video}#{i}" for i in range(len(images))] + [
        str(tmp_path / "still.jpg")]
    streamed = list(detector.predict_stream(str(video), batch_size=3))
    assert sum(len(d) for d in streamed) > 0
    for record, det in zip(records, streamed, strict=False):
        assert len(record["class_id"]) == len(det)
        np.testing.assert_allclose(record["boxes_xyxy"], det.xyxy.reshape(-1, 4), atol=1e-2)
    assert not list(out.glob(".*.tmp*"))  # the atomic write left no temporary file

    assert predict_main([str(tmp_path / "missing.mp4"), *args, "--out", str(out)]) == 2
    assert "video '" in capsys.readouterr().err
    mp4 = out / "clip.mp4"
    assert predict_main([str(mp4), *args, "--out", str(out)]) == 2
    assert "would overwrite it" in capsys.readouterr().err
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    assert predict_main([str(tmp_path / "bad.mp4"), *args, "--out", str(tmp_path / "o2")]) == 2
    assert "cannot open video" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()  # a failed run leaves no output folder


def test_stream_errors_surface(detector, images, tmp_path):
    with pytest.raises(ImageError, match="cannot open video source"):
        list(detector.predict_stream(str(tmp_path / "missing.mp4")))
    bad = [images[0], np.zeros((4, 4), np.float32)]
    gen = detector.predict_stream(iter(bad))
    assert len(next(gen)) >= 0  # the first frame comes through
    with pytest.raises(ImageError, match="expected dtype uint8"):
        next(gen)


def test_skip_bad_images_reports_and_keeps_the_rest(detector, images, tmp_path):
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8 not really")
    cv2.imwrite(str(tmp_path / "ok.png"), images[0])
    items = [str(tmp_path / "ok.png"), str(tmp_path / "corrupt.jpg"), images[1]]
    with pytest.raises(ImageError, match="corrupt.jpg"):
        detector.predict(items)
    res = detector.predict(items, batch_size=2, skip_bad=True)
    assert len(res) == 3 and len(res[1]) == 0 and "corrupt.jpg" in res[1].data["error"]
    for got, image in ((res[0], images[0]), (res[2], images[1])):
        ref = detector.predict(image)[0]
        require_detections(got, ref)
        assert_same(got, ref)
