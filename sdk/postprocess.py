"""Decoding and post-processing of head outputs in numpy, shared by every backend.

Same semantics as the official ``predict_by_feat`` (mmyolo YOLOv8 test_cfg): sigmoid scores;
multi-label candidates with score > conf, the best ``pre_nms_topk`` of them; boxes mapped back to the
original image; class-aware NMS; ``max_det`` per image; clipping to the image after NMS.

:func:`postprocess_image` selects the candidates with a partition instead of sorting all of them and
runs the loop-free :func:`~sdk.nms.batched_nms`; :func:`postprocess_image_reference` is the plain
version (full stable sort, the NMS loop), equal to it bit for bit and kept as the test oracle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from .nms import batched_nms, batched_nms_reference
from .preprocess import LetterboxInfo

STRIDES = (8, 16, 32)


class ImageDetections(NamedTuple):
    """One image's detections: xyxy ``(K, 4)`` float32 in original-image pixels, confidence ``(K,)``
    float32, class_id ``(K,)`` int64; best first."""

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray


def postprocess(raw: dict[str, np.ndarray], form: str, infos: Sequence[LetterboxInfo], conf: float, iou: float,
                max_det: int, agnostic: bool = False,
                class_scores: Callable[[np.ndarray], np.ndarray] | None = None) -> list[ImageDetections]:
    """Per image detections from what a model returned, by its output form (``sdk.backends.base``):
    ``"head"`` (per-level ``cls_logits_{i}`` / ``box_dists_{i}``: decoded here), ``"raw"`` (``scores``,
    ``boxes``), ``"nms"`` / ``"trt_nms"`` (NMS ran in the graph; ``conf`` and ``max_det`` can only
    tighten it). ``infos``: each image's letterbox. ``class_scores`` maps the model's score columns
    ``(..., T)`` to the classes ``(..., C)`` (prompt merging, an open-vocabulary export's padding);
    None: they are the classes. Every backend, training's validation and the export's check use this."""
    if form in ("nms", "trt_nms"):
        return [unpack_nms_outputs(raw, b, info, conf, max_det) for b, info in enumerate(infos)]
    if form == "raw":
        scores, boxes = raw["scores"], raw["boxes"]
    elif form == "head":
        n = len(STRIDES)
        scores, boxes = decode_head_outputs([raw[f"cls_logits_{i}"] for i in range(n)],
                                            [raw[f"box_dists_{i}"] for i in range(n)])
    else:
        raise ValueError(f"unknown output form {form!r}; expected 'head', 'raw', 'nms' or 'trt_nms'")
    if class_scores is not None:
        scores = class_scores(scores)
    return [postprocess_image(scores[b], boxes[b], info, conf, iou, max_det, agnostic) for b, info in enumerate(infos)]


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
    """``1 / (1 + exp(-x))`` in float32, in one buffer (the same float32 operations as the expression)."""
    y = np.negative(x, dtype=np.float32)
    with np.errstate(over="ignore"):  # exp(88+) -> inf -> 0.0, the correct limit
        np.exp(y, out=y)
    np.add(y, np.float32(1), out=y)
    return np.divide(np.float32(1), y, out=y)


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
    b, n = cls_logits[0].shape[:2]
    scores = np.empty((b, sum(c.shape[2] * c.shape[3] for c in cls_logits), n), np.float32)  # (B, A, N)
    start = 0
    for c in cls_logits:  # written in place: the (A, N) transpose of 1203 classes is 24 MB a copy
        size = c.shape[2] * c.shape[3]
        scores[:, start:start + size] = sigmoid(c.reshape(b, n, size)).transpose(0, 2, 1)
        start += size
    dists = np.concatenate([dfl_distances(d) for d in box_dists], axis=1)  # (B, A, 4)
    h, w = box_dists[0].shape[2] * strides[0], box_dists[0].shape[3] * strides[0]
    points, stride = anchor_points((h, w), strides)
    dists = dists * stride[None, :, None]
    boxes = np.concatenate((points - dists[..., :2], points + dists[..., 2:]), axis=-1)
    return scores, boxes.astype(np.float32)


def postprocess_image(scores: np.ndarray, boxes: np.ndarray, info: LetterboxInfo, conf: float,
                      iou: float, max_det: int, agnostic: bool = False, pre_nms_topk: int = 30000
                      ) -> ImageDetections:
    """One image: scores ``(A, C)``, boxes ``(A, 4)`` input xyxy -> its detections, best first.

    Equal to :func:`postprocess_image_reference` bit for bit, without sorting every candidate or a
    Python loop per kept box.
    """
    anchors, labels, values = select_candidates(scores, conf, pre_nms_topk)  # in (anchor, class) order
    # per-box arithmetic: mapping every anchor once equals mapping each candidate's copy, and is cheaper
    # when there are more candidates than anchors (multi-label at a low conf)
    many = len(anchors) > len(boxes)
    xyxy = info.boxes_to_original(boxes)[anchors] if many else info.boxes_to_original(boxes[anchors])
    keep = batched_nms(xyxy, values, labels, iou, max_keep=max_det, agnostic=agnostic)
    return ImageDetections(_clip(xyxy[keep], info.orig_hw), values[keep].astype(np.float32),
                           labels[keep].astype(np.int64))


def postprocess_image_reference(scores: np.ndarray, boxes: np.ndarray, info: LetterboxInfo, conf: float,
                                iou: float, max_det: int, agnostic: bool = False, pre_nms_topk: int = 30000
                                ) -> ImageDetections:
    """:func:`postprocess_image` written plainly: every candidate sorted, the NMS loop (the oracle)."""
    anchors, labels = np.nonzero(scores > conf)  # multi-label: every (anchor, class) pair
    values = scores[anchors, labels]
    order = np.argsort(-values, kind="stable")[:pre_nms_topk]
    anchors, labels, values = anchors[order], labels[order], values[order]
    xyxy = info.boxes_to_original(boxes[anchors])
    keep = batched_nms_reference(xyxy, values, labels, iou, max_keep=max_det, agnostic=agnostic)
    return ImageDetections(_clip(xyxy[keep], info.orig_hw), values[keep].astype(np.float32),
                           labels[keep].astype(np.int64))


def select_candidates(scores: np.ndarray, conf: float, topk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (anchor, class) pairs of ``scores`` ``(A, C)`` above ``conf``, the best ``topk`` of them (ties:
    the earlier pair) -> anchors ``(K,)`` int64, classes ``(K,)`` int64, scores ``(K,)``, in (anchor, class)
    order, not by score. The set the reference's stable sort cuts at ``topk`` (>= 1), found by partitions."""
    mask = scores > conf  # the reference's own comparison (a Python float conf compares in float32)
    count = int(np.count_nonzero(mask))
    if count > topk:
        narrowed = _narrow(scores, mask, topk)
        if narrowed is not None:
            mask = narrowed
    flat = np.flatnonzero(mask)
    anchors, labels = np.divmod(flat, scores.shape[1])
    values = scores[anchors, labels]
    if len(values) > topk:
        kth = np.partition(values, len(values) - topk)[len(values) - topk]  # the topk-th largest
        best = values > kth
        best[np.flatnonzero(values == kth)[:topk - int(np.count_nonzero(best))]] = True
        anchors, labels, values = anchors[best], labels[best], values[best]
    return anchors, labels, values


def _narrow(scores: np.ndarray, mask: np.ndarray, topk: int, sample: int = 16384) -> np.ndarray | None:
    """``mask`` narrowed to scores above a threshold that a random sample puts near the 1.5 * topk-th
    largest, when at least ``topk`` pass it (then every one of the best ``topk`` does); else None. Saves
    partitioning every candidate when most pass ``conf`` (0.001 on 1203 classes: millions)."""
    if mask.size < 8 * sample:
        return None
    rows, cols = np.divmod(np.random.default_rng(0).integers(0, mask.size, sample), mask.shape[1])
    drawn = np.sort(scores[rows, cols])
    t = drawn[max(len(drawn) - int(1.5 * topk * len(drawn) / mask.size) - 1, 0)]
    narrowed = mask & (scores > t)
    return narrowed if int(np.count_nonzero(narrowed)) >= topk else None


def unpack_nms_outputs(raw: dict[str, np.ndarray], b: int, info: LetterboxInfo, conf: float, max_det: int
                       ) -> ImageDetections:
    """Image ``b`` of an end-to-end artifact's padded outputs (``num_dets``, ``det_boxes``,
    ``det_scores``, ``det_classes``) -> its detections (best first).
    ``conf``/``max_det`` can only tighten what the graph applied."""
    k = int(np.asarray(raw["num_dets"][b]).reshape(-1)[0])
    scores = raw["det_scores"][b, :k].astype(np.float32)
    keep = np.flatnonzero(scores > conf)[:max_det]
    xyxy = _clip(info.boxes_to_original(raw["det_boxes"][b, keep]), info.orig_hw)
    return ImageDetections(xyxy, scores[keep], raw["det_classes"][b, keep].astype(np.int64))


def _clip(xyxy: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Boxes clipped to the image, in place (after NMS, as the official pipeline does)."""
    np.clip(xyxy[:, 0::2], 0, hw[1], out=xyxy[:, 0::2])
    np.clip(xyxy[:, 1::2], 0, hw[0], out=xyxy[:, 1::2])
    return xyxy
