"""Decoding and post-processing of head outputs in numpy, shared by every backend.

Same semantics as the official ``predict_by_feat`` (mmyolo YOLOv8 test_cfg): sigmoid scores;
multi-label candidates with score > conf, the best ``pre_nms_topk`` of them; boxes mapped back to the
original image; class-aware NMS; ``max_det`` per image; clipping to the image after NMS.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .nms import batched_nms
from .preprocess import LetterboxInfo

STRIDES = (8, 16, 32)


def anchor_points(size_hw: tuple[int, int], strides: Sequence[int] = STRIDES
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Anchor centres ``(A, 2)`` float32 (x, y) in input pixels and their strides ``(A,)``.

    Level by level (8, 16, 32), row-major with x fastest, centres at ``(i + 0.5) * stride``.
    """
    points, stride_list = [], []
    for s in strides:
        h, w = size_hw[0] // s, size_hw[1] // s
        xs = (np.arange(w, dtype=np.float32) + np.float32(0.5)) * np.float32(s)
        ys = (np.arange(h, dtype=np.float32) + np.float32(0.5)) * np.float32(s)
        gx, gy = np.meshgrid(xs, ys)
        points.append(np.stack((gx.ravel(), gy.ravel()), 1))
        stride_list.append(np.full(h * w, s, np.float32))
    return np.concatenate(points), np.concatenate(stride_list)


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(88+) -> inf -> 0.0, the correct limit
        return (1.0 / (1.0 + np.exp(-x.astype(np.float32)))).astype(np.float32)


def dfl_distances(box_dist: np.ndarray) -> np.ndarray:
    """DFL logits ``(B, 4 * R, H, W)`` -> expected distances ``(B, H*W, 4)`` (l, t, r, b), stride units."""
    b, c, h, w = box_dist.shape
    logits = box_dist.reshape(b, 4, c // 4, h * w).astype(np.float32)
    logits = logits - logits.max(axis=2, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=2, keepdims=True)
    bins = np.arange(c // 4, dtype=np.float32)
    return np.einsum("bsrn,r->bns", p, bins).astype(np.float32)


def decode_head_outputs(cls_logits: Sequence[np.ndarray], box_dists: Sequence[np.ndarray],
                        strides: Sequence[int] = STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Per-level raw head outputs -> ``scores`` ``(B, A, N)`` (sigmoid) and ``boxes`` ``(B, A, 4)``
    xyxy in network-input pixels, anchors ordered level by level, row-major."""
    scores = np.concatenate([sigmoid(c.reshape(c.shape[0], c.shape[1], -1)).transpose(0, 2, 1)
                             for c in cls_logits], axis=1)
    dists = np.concatenate([dfl_distances(d) for d in box_dists], axis=1)  # (B, A, 4)
    h, w = box_dists[0].shape[2] * strides[0], box_dists[0].shape[3] * strides[0]
    points, stride = anchor_points((h, w), strides)
    dists = dists * stride[None, :, None]
    boxes = np.concatenate((points - dists[..., :2], points + dists[..., 2:]), axis=-1)
    return scores, boxes.astype(np.float32)


def postprocess_image(scores: np.ndarray, boxes: np.ndarray, info: LetterboxInfo, conf: float,
                      iou: float, max_det: int, agnostic: bool = False, pre_nms_topk: int = 30000
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image: scores ``(A, C)``, boxes ``(A, 4)`` input xyxy -> (xyxy ``(K, 4)`` in original
    pixels float32, confidence ``(K,)`` float32, class_id ``(K,)`` int64), best first."""
    anchors, labels = np.nonzero(scores > conf)  # multi-label: every (anchor, class) pair
    values = scores[anchors, labels]
    order = np.argsort(-values, kind="stable")[:pre_nms_topk]
    anchors, labels, values = anchors[order], labels[order], values[order]
    xyxy = info.boxes_to_original(boxes[anchors])
    keep = batched_nms(xyxy, values, labels, iou, max_keep=max_det, agnostic=agnostic)
    xyxy, values, labels = xyxy[keep], values[keep], labels[keep].astype(np.int64)
    h, w = info.orig_hw
    np.clip(xyxy[:, 0::2], 0, w, out=xyxy[:, 0::2])
    np.clip(xyxy[:, 1::2], 0, h, out=xyxy[:, 1::2])
    return xyxy, values.astype(np.float32), labels


def unpack_nms_outputs(raw: dict[str, np.ndarray], b: int, info: LetterboxInfo, conf: float, max_det: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image ``b`` of an end-to-end artifact's padded outputs (``num_dets``, ``det_boxes``,
    ``det_scores``, ``det_classes``) -> original-image xyxy, confidence, class_id (best first).
    ``conf``/``max_det`` can only tighten what the graph applied."""
    k = int(np.asarray(raw["num_dets"][b]).reshape(-1)[0])
    scores = raw["det_scores"][b, :k].astype(np.float32)
    keep = np.flatnonzero(scores > conf)[:max_det]
    xyxy = info.boxes_to_original(raw["det_boxes"][b, keep])
    h, w = info.orig_hw
    np.clip(xyxy[:, 0::2], 0, w, out=xyxy[:, 0::2])
    np.clip(xyxy[:, 1::2], 0, h, out=xyxy[:, 1::2])
    return xyxy, scores[keep], raw["det_classes"][b, keep].astype(np.int64)
