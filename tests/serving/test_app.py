"""The app in this process (FastAPI's test client): answers equal ``Detector.predict``, per-request
vocabularies, batching equals one by one, every bad request a JSON 4xx, the model / health / OpenAPI
endpoints and the page's files."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import bomb_png, compare

from sdk.settings import DetectorSettings
from serving import ServeSettings, build_app
from serving.batcher import Batcher, Job

ONNX = DetectorSettings(backend="onnxruntime")


def client(settings: ServeSettings):
    from fastapi.testclient import TestClient

    return TestClient(build_app(settings))


def post(c, image: bytes | None, **fields):
    """A multipart ``POST /v1/detect``; without ``image``, a multipart body without that field."""
    files = [("image", ("image.jpg", image, "application/octet-stream"))] if image is not None else \
        [("conf", (None, "0.5"))]
    return c.post("/v1/detect", files=files, data={k: str(v) for k, v in fields.items()})


@pytest.mark.slow
@pytest.mark.parametrize("kind, classes", [
    ("checkpoint", None),  # torch, the checkpoint's own vocabulary
    ("checkpoint", "reversed"),  # torch, a vocabulary per request
    ("folded", None),  # ONNX Runtime, vocabulary folded in
    ("open_vocab", "reversed"),  # ONNX Runtime, open vocabulary, classes per request
])
def test_detect_equals_predict(serve_models, kind, classes):
    from sdk import Detector

    weights = getattr(serve_models, kind)
    names = serve_models.classes[::-1] if classes else None
    settings = DetectorSettings(backend=None if kind == "checkpoint" else "onnxruntime")
    expected = Detector.from_settings(weights, names or (serve_models.classes if kind == "open_vocab" else None),
                                      settings).predict(serve_models.images, conf=0.3)
    app_classes = ",".join(serve_models.classes) if kind == "open_vocab" else None
    with client(ServeSettings(str(weights), app_classes, settings)) as c:
        for path, exp in zip(serve_models.images, expected, strict=True):
            fields = {"conf": 0.3, **({"classes": ",".join(names)} if names else {})}
            r = post(c, Path(path).read_bytes(), **fields)
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(exp) > 0  # the trained model finds the shapes: the comparison is not vacuous
            compare(body, exp)
            h, w = cv2.imread(path).shape[:2]
            assert body["image_size"] == {"width": w, "height": h}
            assert body["vocabulary"] == (names or serve_models.classes)
            assert body["ran"]["backend"] == ("torch" if kind == "checkpoint" else "onnxruntime")
            assert set(body["times_ms"]) >= {"decode", "queue", "preprocess", "inference", "postprocess", "total"}


def test_batching_equals_one_by_one(serve_models, images):
    """8 jobs of mixed sizes and two vocabularies, submitted at once to a batcher that gathers them (a
    long wait): each answer equals ``predict`` on that image alone, and the gathered ones shared calls."""
    from sdk import Detector

    det = Detector.from_settings(serve_models.open_vocab, serve_models.classes, ONNX)
    single = Detector.from_settings(serve_models.open_vocab, serve_models.classes, ONNX)
    vocabs = [det.vocabulary, type(det.vocabulary).from_any(serve_models.classes[::-1])]
    pictures = [cv2.imread(p) for p in serve_models.images] + list(images)
    jobs = [Job(img, vocabs[i % 2], 0.05, 0.7, 300) for i, img in enumerate(pictures)]
    batcher = Batcher(det, max_batch=8, max_wait_ms=500)
    try:
        outcomes = [f.result(60) for f in [batcher.submit(j) for j in jobs]]
    finally:
        batcher.close()
    for job, outcome in zip(jobs, outcomes, strict=True):
        single.set_classes(job.vocabulary)
        expected = single.predict(job.image_bgr, conf=0.05)[0]
        assert outcome.detections.class_name.tolist() == expected.class_name.tolist()
        np.testing.assert_allclose(outcome.detections.xyxy, expected.xyxy, atol=1e-3, rtol=0)
        np.testing.assert_allclose(outcome.detections.confidence, expected.confidence, atol=1e-5, rtol=0)
    assert sum(len(o.detections) for o in outcomes) > 0
    assert max(o.batch_size for o in outcomes) == 4  # 8 gathered, one call per vocabulary


def _png(h: int, w: int) -> bytes:
    return cv2.imencode(".png", np.full((h, w, 3), 127, np.uint8))[1].tobytes()


GOOD = _png(40, 60)


@pytest.mark.parametrize("image, fields, status, field, says", [
    (b"\x00garbage\xff" * 50, {}, 400, "image", "cannot read"),  # bytes that are no image
    (None, {}, 400, "image", "missing"),  # no image field
    (b"", {}, 400, "image", "empty"),  # an empty file
    (GOOD[:60], {}, 400, "image", "cannot"),  # a truncated PNG
    (GOOD, {"conf": "1.5"}, 400, "conf", "[0, 1)"),  # out of range
    (GOOD, {"conf": "high"}, 400, "conf", "a number"),  # not a number
    (GOOD, {"conf": "nan"}, 400, "conf", "finite"),  # not finite
    (GOOD, {"iou": "0"}, 400, "iou", "(0, 1]"),
    (GOOD, {"max_det": "0"}, 400, "max_det", ">= 1"),
    (GOOD, {"max_det": "2.5"}, 400, "max_det", "an integer"),
    (GOOD, {"classes": "a,b,c,d,e"}, 400, "classes", "limit of 4"),  # too many classes
    (GOOD, {"classes": "[[\"a\""}, 400, "classes", "not valid JSON"),
    (GOOD, {"classes": "[[]]"}, 400, "classes", "non-empty"),
    (GOOD, {"classes": "x" * 300}, 400, "classes", "300 characters"),
    (GOOD, {"colour": "red"}, 400, "colour", "unknown field"),
    (_png(200, 200), {}, 413, "image", "more than the limit of 10000"),  # pixel limit
    (bomb_png(), {}, 413, "image", "256000000 pixels"),  # a decompression bomb, refused from its header
])
def test_bad_requests(serve_models, image, fields, status, field, says):
    settings = ServeSettings(str(serve_models.open_vocab), ",".join(serve_models.classes), ONNX, max_classes=4,
                             max_pixels=10_000)
    with client(settings) as c:
        r = post(c, image, **fields)
        assert r.status_code == status, r.text
        assert r.json()["field"] == field and says in r.json()["error"], r.json()
        assert post(c, GOOD).status_code == 200  # still up and answering


def test_bad_bodies(serve_models):
    """Not multipart, an image sent as text, a body over the limit: 4xx with a JSON error."""
    with client(ServeSettings(str(serve_models.folded), detector=ONNX, max_body_bytes=50_000)) as c:
        r = c.post("/v1/detect", json={"image": "abc"})
        assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]
        r = c.post("/v1/detect", data={"image": "abc"}, files={"conf": (None, "0.5")})
        assert r.status_code == 400 and "file part" in r.json()["error"]
        r = post(c, _png(20, 20) + b"\0" * 60_000)
        assert r.status_code == 413 and "limit of 50000 bytes" in r.json()["error"]
        assert c.get("/healthz").json() == {"status": "ok", "pending": 0}
        assert c.get("/v1/model").json()["batching"]["max_batch"] == 1  # the default on a CPU


def test_folded_model_refuses_classes(serve_models):
    """A per-request vocabulary on a folded export: 400 naming the vocabulary folded in."""
    with client(ServeSettings(str(serve_models.folded), detector=ONNX)) as c:
        r = post(c, GOOD, classes="cat,dog")
        assert r.status_code == 400 and r.json()["field"] == "classes"
        assert all(name in r.json()["error"] for name in serve_models.classes), r.json()
        assert "folded" in r.json()["error"]


def test_classes_never_read_from_disk(serve_models, tmp_path):
    """``classes`` ending in .json is a class name, not a path the server reads."""
    secret = tmp_path / "vocab.json"
    secret.write_text(json.dumps([["red circle"]]))
    with client(ServeSettings(str(serve_models.open_vocab), ",".join(serve_models.classes), ONNX)) as c:
        r = post(c, GOOD, classes=str(secret))
        assert r.status_code == 200 and r.json()["vocabulary"] == [str(secret)]


def test_model_health_openapi_page(serve_models):
    with client(ServeSettings(str(serve_models.open_vocab), ",".join(serve_models.classes), ONNX)) as c:
        model = c.get("/v1/model").json()
        assert model["open_vocabulary"] and model["vocabulary"] == serve_models.classes
        assert model["vocabulary_capacity"] == 8 and model["ran"]["imgsz"] == 160
        assert model["weights"] == "open.onnx"  # a name, not the server's path
        spec = c.get("/openapi.json").json()
        assert "multipart/form-data" in spec["paths"]["/v1/detect"]["post"]["requestBody"]["content"]
        assert c.get("/docs").status_code == 200
        page = c.get("/")
        assert page.status_code == 200 and "<canvas" in page.text and "https://" not in page.text
        assert "fetch(\"/v1/detect\"" in c.get("/static/app.js").text
    with client(ServeSettings(str(serve_models.folded), detector=ONNX)) as c:
        model = c.get("/v1/model").json()
        assert not model["open_vocabulary"] and model["vocabulary"] == serve_models.classes


def test_concurrent_requests_batch(serve_models):
    """16 requests from 8 threads: every answer equals the sequential one, and some shared a batch."""
    with client(ServeSettings(str(serve_models.folded), detector=ONNX, max_batch=8, max_wait_ms=50)) as c:
        data = [Path(p).read_bytes() for p in serve_models.images] * 4
        sequential = [post(c, d).json()["detections"] for d in data]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda d: post(c, d).json(), data))
    for ans, seq in zip(answers, sequential, strict=True):
        assert len(ans["detections"]) == len(seq) and [d["class_id"] for d in ans["detections"]] == [
            d["class_id"] for d in seq]
        np.testing.assert_allclose([d["box"] for d in ans["detections"]], [d["box"] for d in seq], atol=1e-3)
    assert max(a["ran"]["batch_size"] for a in answers) > 1


def test_image_io_helpers_round_trip():
    """The bomb builder makes a PNG Pillow reads as 16000x16000 (what the limit test relies on)."""
    from PIL import Image

    with Image.open(io.BytesIO(bomb_png(2000))) as im:
        assert im.size == (2000, 2000)
