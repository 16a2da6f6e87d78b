"""The labeling worker: one ``Detector``, called on batches of ``(path, key)``; the same class runs
in-process and as a Ray Data actor, so both give the same labels.

A result record (one JSON line in a shard) is ``{"path", "key", "hw": [h, w], "boxes": [[x1, y1, x2,
y2], ...] (original-image pixels, 0.001 px), "scores": [...] (1e-5), "classes": [...] (vocabulary
index)}``, or ``{"path", "key", "error": "why"}`` for an image that cannot be read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from sdk.detections import Detections


@dataclass(frozen=True)
class LabelSettings:
    """What every worker needs to build the same ``Detector``.

    class_texts: one prompt list per class (None: the model's own vocabulary). conf: the detector's score
    floor, the lowest per-class threshold (the thresholds themselves apply when the labels are written,
    so raising one needs no rerun). threads: inference threads per worker (None: the runtime's default).
    imgsz / backend / precision / rect: as ``Detector``'s (None: the model's own size; automatic).
    """

    weights: str
    class_texts: tuple[tuple[str, ...], ...] | None = None
    imgsz: int | None = None
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    agnostic: bool = False
    prompt_merge: str = "first"
    backend: str | None = None
    precision: str | None = None
    rect: bool | None = None
    half: bool = False
    device: str = "cpu"
    batch_size: int = 8
    threads: int | None = None

    def __post_init__(self) -> None:
        from sdk.detector import check_detector_settings

        # here, on the driver: on Ray the Detector is only built inside the actors
        check_detector_settings(self.imgsz, self.conf, self.iou, self.max_det)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change what a result holds (not how fast it is made): results made under a
        different fingerprint are not mixed into one label set."""
        skip = {"device", "batch_size", "threads"}
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        out["class_texts"] = [list(t) for t in self.class_texts] if self.class_texts else None
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LabelWorker:
    """Loads the model once; each call labels one batch. ``batch``: ``{"path": (N,) str, "key": (N,) str}``
    (a Ray Data numpy batch) -> ``{"record": (N,) str}``, one JSON record per image, in order (JSON: a
    fixed column type for Ray's blocks). An unreadable image gets an error record; it never fails the batch."""

    def __init__(self, settings: LabelSettings | dict) -> None:
        from sdk.backends.base import RuntimeOptions
        from sdk.detector import Detector

        s = settings if isinstance(settings, LabelSettings) else LabelSettings(**settings)
        classes = [list(t) for t in s.class_texts] if s.class_texts else None
        self.settings = s
        self.detector = Detector(s.weights, classes=classes, device=s.device, imgsz=s.imgsz, conf=s.conf,
                                 iou=s.iou, max_det=s.max_det, agnostic=s.agnostic,
                                 prompt_merge=s.prompt_merge,  # type: ignore[arg-type]
                                 backend=s.backend,  # type: ignore[arg-type]
                                 rect=s.rect, runtime=RuntimeOptions(
                                     precision=s.precision, half=s.half, intra_op_threads=s.threads))  # type: ignore[arg-type]

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
