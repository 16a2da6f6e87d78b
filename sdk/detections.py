"""``Detections``: one image's results as numpy arrays (field names as in supervision)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections of one image, best first.

    xyxy: ``(K, 4)`` float32 boxes in original-image pixels (x1, y1, x2, y2).
    confidence: ``(K,)`` float32 scores in [0, 1]. class_id: ``(K,)`` int64 index into the
    vocabulary. class_name: ``(K,)`` str. data: extras (``source``, ``image_hw``, ``speed_ms``).

    Example:
        >>> det = Detections.empty()
        >>> len(det)
        0
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    class_name: np.ndarray
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.xyxy)
        if self.xyxy.shape != (k, 4) or self.confidence.shape != (k,) or self.class_id.shape != (k,) \
                or self.class_name.shape != (k,):
            raise ValueError(f"inconsistent shapes: xyxy {self.xyxy.shape}, confidence "
                             f"{self.confidence.shape}, class_id {self.class_id.shape}, "
                             f"class_name {self.class_name.shape}")

    @classmethod
    def empty(cls, **data: Any) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                   np.zeros(0, dtype=str), dict(data))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> Detections:
        """Boolean mask, slice or index array -> a new ``Detections`` (with a copy of ``data``: changing one
        result's extras never changes another's)."""
        if isinstance(index, (int, np.integer)):
            index = [index]
        return Detections(self.xyxy[index], self.confidence[index], self.class_id[index],
                          self.class_name[index], dict(self.data))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Detections) and np.array_equal(self.xyxy, other.xyxy)
                and np.array_equal(self.confidence, other.confidence)
                and np.array_equal(self.class_id, other.class_id)
                and np.array_equal(self.class_name, other.class_name))

    __hash__ = None  # type: ignore[assignment]

    def to_coco(self, image_id: int, category_ids: list[int] | None = None) -> list[dict[str, Any]]:
        """COCO results entries (``bbox`` as [x, y, w, h]); ``category_ids[class_id]`` maps the
        vocabulary order to dataset category ids (default: class_id itself)."""
        out = []
        for (x1, y1, x2, y2), score, cid in zip(self.xyxy.tolist(), self.confidence.tolist(),
                                                self.class_id.tolist(), strict=True):
            out.append({"image_id": int(image_id),
                        "category_id": int(category_ids[cid]) if category_ids else int(cid),
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"boxes_xyxy", "confidence", "class_id", "class_name"}`` lists."""
        return {"boxes_xyxy": self.xyxy.tolist(), "confidence": self.confidence.tolist(),
                "class_id": self.class_id.tolist(), "class_name": self.class_name.tolist()}

    def to_supervision(self) -> Any:
        """A ``supervision.Detections`` (needs the ``supervision`` package)."""
        import supervision as sv  # optional dependency, imported on use

        return sv.Detections(xyxy=self.xyxy, confidence=self.confidence,
                             class_id=self.class_id, data={"class_name": self.class_name})

    def draw(self, image_bgr: np.ndarray, thickness: int = 2) -> np.ndarray:
        """A copy of ``image_bgr`` (uint8 ``(H, W, 3)``) with boxes and ``name score`` labels."""
        canvas = np.ascontiguousarray(image_bgr).copy()
        for (x1, y1, x2, y2), score, cid, name in zip(
                self.xyxy.round().astype(int).tolist(), self.confidence.tolist(),
                self.class_id.tolist(), self.class_name.tolist(), strict=True):
            color = _color(cid)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
            label = f"{name} {score:.2f}"
            (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            ty = max(y1, th + 4)
            cv2.rectangle(canvas, (x1, ty - th - 4), (x1 + tw + 2, ty), color, -1)
            cv2.putText(canvas, label, (x1 + 1, ty - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (255, 255, 255), 1, cv2.LINE_AA)
        return canvas


def _color(class_id: int) -> tuple[int, int, int]:
    rs = np.random.RandomState(class_id * 7919 + 17)
    return tuple(int(c) for c in rs.randint(40, 220, 3))  # type: ignore[return-value]
