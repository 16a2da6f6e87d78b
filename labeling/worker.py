"""The labeling worker: one ``Detector``, called on batches of ``(path, key)``; the same class runs
in-process and as a Ray Data actor, so both give the same labels.

A result record (one JSON line in a shard) is ``{"path", "key", "hw": [h, w], "boxes": [[x1, y1, x2,
y2], ...] (original-image pixels, 0.001 px), "scores": [...] (1e-5), "classes": [...] (vocabulary
index)}``, or ``{"path", "key", "error": "why"}`` for an image that cannot be read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sdk.detections import Detections
from sdk.settings import DetectorSettings


@dataclass(frozen=True)
class LabelSettings:
    """What every worker needs to build the same ``Detector``.

    class_texts: one prompt list per class (None: the model's own vocabulary). detector: how it runs
    (:class:`~sdk.settings.DetectorSettings`, checked here, on the driver: on Ray the detector is only
    built inside the actors); its ``conf`` is the score floor, the lowest per-class threshold (the
    thresholds themselves apply when the labels are written, so raising one needs no rerun).
    batch_size: images per model call.
    """

    weights: str
    class_texts: tuple[tuple[str, ...], ...] | None = None
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    batch_size: int = 8

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change what a result holds (not how fast it is made): results made under a
        different fingerprint are not mixed into one label set."""
        return {"weights": self.weights,
                "class_texts": [list(t) for t in self.class_texts] if self.class_texts else None,
                **self.detector.result_fields()}


class LabelWorker:
    """Loads the model once; each call labels one batch. ``batch``: ``{"path": (N,) str, "key": (N,) str}``
    (a Ray Data numpy batch) -> ``{"record": (N,) str}``, one JSON record per image, in order (JSON: a
    fixed column type for Ray's blocks). An unreadable image gets an error record; it never fails the batch."""

    def __init__(self, settings: LabelSettings) -> None:
        from sdk.detector import Detector

        classes = [list(t) for t in settings.class_texts] if settings.class_texts else None
        self.settings = settings
        self.detector = Detector.from_settings(settings.weights, classes, settings.detector)

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        records = self.label([str(p) for p in batch["path"]], [str(k) for k in batch["key"]])
        return {"record": np.asarray([json.dumps(r) for r in records], dtype=object)}

    def label(self, paths: list[str], keys: list[str]) -> list[dict[str, Any]]:
        """One result record per image, in order (what :meth:`__call__` sends back as JSON strings)."""
        results = self.detector.predict(paths, batch_size=self.settings.batch_size, skip_bad=True)
        return [to_record(p, k, r) for p, k, r in zip(paths, keys, results, strict=True)]

    def close(self) -> None:
        self.detector.backend.close()


def to_record(path: str, key: str, det: Detections) -> dict[str, Any]:
    """One image's JSON record (see the module docstring)."""
    if "error" in det.data:
        return {"path": path, "key": key, "error": str(det.data["error"])}
    return {"path": path, "key": key, "hw": [int(v) for v in det.data["image_hw"]],
            "boxes": np.round(det.xyxy.astype(np.float64), 3).tolist(),
            "scores": np.round(det.confidence.astype(np.float64), 5).tolist(),
            "classes": det.class_id.astype(int).tolist()}
