"""``DetectService``: the model behind the app (one ``Detector`` and its :class:`~serving.batcher.Batcher`),
and the JSON a detection answers with."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from sdk.detections import Detections
from sdk.errors import ImageError, VocabularyError
from sdk.vocabulary import Vocabulary

from .batcher import Batcher, Busy, Job, Outcome
from .forms import ClientError, DetectRequest, check_request, decode_image, parse_classes
from .settings import ServeSettings


class DetectService:
    """Opens ``settings.weights`` (or takes an opened ``detector``) and answers detect requests through
    the batcher. ``close`` answers what was submitted, then stops."""

    def __init__(self, settings: ServeSettings, detector: Any = None) -> None:
        if detector is None:
            from sdk.detector import Detector

            detector = Detector.from_settings(settings.weights, settings.classes, settings.detector)
        self.settings, self.detector = settings, detector
        ran = detector.ran_with()
        self.ran = {k: ran[k] for k in ("backend", "precision", "imgsz", "imgsz_from", "letterbox")}
        self.default_vocabulary: Vocabulary = detector.vocabulary
        manifest = detector.backend.manifest
        self.open_vocabulary = bool(detector.backend.open_vocabulary)
        self.capacity = manifest.vocab_capacity if manifest is not None and manifest.open_vocabulary else None
        self.max_batch = settings.batch_limit(self.ran["backend"])
        self.batcher = Batcher(detector, self.max_batch, settings.max_wait_ms, settings.max_queue)

    def close(self) -> None:
        self.batcher.close()
        self.detector.backend.close()

    def facts(self) -> dict[str, Any]:
        """``GET /v1/model``: what runs, the default vocabulary, what a request may change, the limits."""
        s, d, v = self.settings, self.settings.detector, self.default_vocabulary
        return {"weights": Path(s.weights).name, "describe": self.detector.describe(), "ran": self.ran,
                "open_vocabulary": self.open_vocabulary, "vocabulary_capacity": self.capacity,
                "vocabulary": v.names, "prompts": [list(p) for p in v.prompts], "prompt_merge": v.merge,
                "defaults": {"conf": d.conf, "iou": d.iou, "max_det": d.max_det},
                "batching": {"max_batch": self.max_batch, "max_wait_ms": s.max_wait_ms, "max_queue": s.max_queue},
                "limits": {"max_pixels": s.max_pixels, "max_body_bytes": s.max_body_bytes,
                           "max_classes": s.max_classes, "max_prompt_chars": s.max_prompt_chars}}

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "pending": self.batcher.pending}

    def check(self, form: dict[str, Any]) -> DetectRequest:
        """The form's fields checked (everything but the image's content first: a bad threshold is
        refused without decoding), then the image decoded."""
        if "image" not in form:
            raise ClientError(400, "missing the file field 'image' (multipart/form-data)", "image")
        if not isinstance(form["image"], bytes):
            raise ClientError(400, "image: expected a file part (filename=...), got a text field", "image")
        d = self.settings.detector
        conf, iou, max_det = check_request(form, (d.conf, d.iou, d.max_det))
        vocabulary = self.vocabulary_for(form.get("classes"))
        t0 = time.perf_counter()
        image = decode_image(form["image"], self.settings.max_pixels)
        return DetectRequest(image, conf, iou, max_det, vocabulary, (time.perf_counter() - t0) * 1e3)

    def vocabulary_for(self, classes: Any) -> Vocabulary | None:
        """A request's ``classes`` field -> its vocabulary (None: the default one)."""
        if classes is None or not (classes.strip() if isinstance(classes, (str, bytes)) else classes):
            return None
        if not self.open_vocabulary:
            names = ", ".join(self.default_vocabulary.names)
            raise ClientError(400, f"classes: this model has its vocabulary folded in ({names}); it detects only "
                                   f"those classes. Serve a checkpoint or an open-vocabulary export "
                                   f"(yoloworld-export --open-vocab) for other classes", "classes")
        vocab = parse_classes(classes, self.settings)
        if self.capacity and len(vocab.model_texts()) > self.capacity:
            raise ClientError(400, f"classes: {len(vocab)} classes need {len(vocab.model_texts())} text slots "
                                   f"(prompt merge {vocab.merge!r}) but this model holds {self.capacity}", "classes")
        return None if vocab == self.default_vocabulary else vocab

    async def detect(self, request: DetectRequest) -> dict[str, Any]:
        """Run ``request`` through the batcher; the JSON answer (see :func:`answer`)."""
        t0 = time.perf_counter()
        job = Job(request.image_bgr, request.vocabulary, request.conf, request.iou, request.max_det)
        try:
            outcome = await asyncio.wrap_future(self.batcher.submit(job))
        except Busy as e:
            raise ClientError(503, f"the server is busy: {e}; retry later") from None
        except VocabularyError as e:
            raise ClientError(400, f"classes: {e}", "classes") from None
        except ImageError as e:
            raise ClientError(400, f"image: {e}", "image") from None
        names = (request.vocabulary or self.default_vocabulary).names
        return answer(outcome, request, names, self.ran, (time.perf_counter() - t0) * 1e3)


def answer(outcome: Outcome, request: DetectRequest, names: list[str], ran: dict[str, Any], wait_ms: float
           ) -> dict[str, Any]:
    """The JSON of one detection: ``detections`` (``box`` xyxy in original-image pixels, ``score``,
    ``class_id``, ``class_name``), ``image_size``, ``vocabulary`` (the class names ``class_id`` indexes),
    ``ran`` (backend, precision, input size, letterbox; the batch it ran in) and ``times_ms`` per stage."""
    det: Detections = outcome.detections
    h, w = request.image_bgr.shape[:2]
    speed = det.data.get("speed_ms", {})
    times = {"decode": request.decode_ms, "queue": outcome.queue_ms, "vocabulary": outcome.vocabulary_ms,
             **{k: float(v) for k, v in speed.items()}}
    times["total"] = request.decode_ms + wait_ms
    detections = [{"box": [float(v) for v in box], "score": float(score), "class_id": int(cid),
                   "class_name": str(name)}
                  for box, score, cid, name in zip(det.xyxy, det.confidence, det.class_id, det.class_name,
                                                   strict=True)]
    return {"detections": detections, "image_size": {"width": w, "height": h}, "vocabulary": names,
            "ran": {**ran, "backend": det.data.get("backend", ran["backend"]),
                    "precision": det.data.get("precision", ran["precision"]), "batch_size": outcome.batch_size,
                    "conf": request.conf, "iou": request.iou, "max_det": request.max_det},
            "times_ms": times}
