"""Greedy non-maximum suppression in numpy, matching mmcv's ``nms``/``batched_nms`` semantics.

IoU uses plain ``(x2 - x1) * (y2 - y1)`` areas; a box is suppressed when IoU > threshold. Class-aware
NMS separates classes by mmcv's coordinate-offset trick, so one greedy pass serves all classes.
"""

from __future__ import annotations

import numpy as np


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box ``(4,)`` with ``(K, 4)`` boxes -> ``(K,)`` float32; 0 where the union is empty
    (as in :func:`pairwise_iou`; mmcv's 0/0 is NaN, which suppresses nothing either)."""
    xx1 = np.maximum(box[0], boxes[:, 0])
    yy1 = np.maximum(box[1], boxes[:, 1])
    xx2 = np.minimum(box[2], boxes[:, 2])
    yy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.maximum(xx2 - xx1, 0) * np.maximum(yy2 - yy1, 0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), np.float32(0)).astype(np.float32, copy=False)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` float64 of xyxy boxes ``(Na, 4)`` and ``(Nb, 4)``; 0 where the union
    is empty. For matching detection sets; :func:`box_iou` is the NMS's own one-against-many float32 form."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        max_keep: int | None = None) -> np.ndarray:
    """Indices of kept boxes, highest score first. boxes ``(K, 4)`` xyxy float32, scores ``(K,)``.

    ``max_keep`` stops after that many: exact, because greedy NMS keeps boxes in score order.
    """
    order = np.argsort(-scores, kind="stable")
    boxes = boxes.astype(np.float32, copy=False)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if max_keep is not None and len(keep) >= max_keep:
            break
        rest = order[1:]
        order = rest[~(box_iou(boxes[i], boxes[rest]) > iou_threshold)]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float,
                max_keep: int | None = None, agnostic: bool = False) -> np.ndarray:
    """Class-aware NMS (boxes of different ``labels`` never suppress each other) or agnostic."""
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64)
    boxes = boxes.astype(np.float32, copy=False)
    if not agnostic:
        offset = labels.astype(np.float32) * (boxes.max() + np.float32(1))
        boxes = boxes + offset[:, None]
    return nms(boxes, scores, iou_threshold, max_keep)
