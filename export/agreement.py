"""How far a converted model's detections are from the fp32 reference's, through the SDK's own pipeline."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from sdk.nms import pairwise_iou
from sdk.postprocess import postprocess
from sdk.preprocess import preprocess


class Agreement(dict):
    """The :func:`agreement` report: a plain dict (JSON-ready) that prints as one line."""

    def __str__(self) -> str:
        return (f"detections {self['reference_detections']} vs {self['candidate_detections']}, "
                f"matched {self['matched']} ({self['matched_fraction']:.1%}), matched |d score| max "
                f"{self['matched_score_diff_max']:.4f} mean {self['matched_score_diff_mean']:.4f}, "
                f"mean IoU {self['matched_mean_iou']:.4f}, raw max |d score| {self['raw_score_diff_max']:.4f}")


def match_by_iou(a_xyxy: np.ndarray, a_score: np.ndarray, a_cls: np.ndarray, b_xyxy: np.ndarray,
                 b_score: np.ndarray, b_cls: np.ndarray, min_iou: float = 0.9) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching, ``a`` best score first: among the unused ``b`` of the same class with
    IoU >= ``min_iou``, the one with the closest score (then the highest IoU). Boxes are compared after
    clipping, where several detections of a class can share one box (a random model's image-sized
    boxes): the score tells which of them is the partner. Returns ``(i, j, iou)`` pairs."""
    iou = pairwise_iou(a_xyxy, b_xyxy)
    iou[np.asarray(a_cls)[:, None] != np.asarray(b_cls)[None, :]] = -1.0
    a_score, b_score = np.asarray(a_score, np.float64), np.asarray(b_score, np.float64)
    used = np.zeros(len(b_cls), bool)
    pairs = []
    for i in np.argsort(-a_score, kind="stable"):
        candidates = np.flatnonzero(~used & (iou[i] >= min_iou))
        if len(candidates):
            j = int(candidates[np.lexsort((-iou[i, candidates], np.abs(b_score[candidates] - a_score[i])))[0]])
            used[j] = True
            pairs.append((int(i), j, float(iou[i, j])))
    return pairs


def _session(path: str | os.PathLike) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # no cast-insertion chatter for float16 nodes on CPU
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def agreement(reference_onnx: str | os.PathLike, candidate_onnx: str | os.PathLike, images: list[np.ndarray],
              imgsz: int, conf: float = 0.25, iou: float = 0.7, min_iou: float = 0.9, max_det: int = 300
              ) -> Agreement:
    """Run both models with ONNX Runtime (CPU) on BGR uint8 ``images`` through the SDK's preprocess and
    :func:`~sdk.postprocess.postprocess` (raw ``scores``/``boxes`` outputs) and compare.

    ``matched``: detections paired one-to-one with the same class and IoU >= ``min_iou``;
    ``matched_fraction`` = matched / max(reference, candidate) (1.0 when both are empty), so a
    missing and an extra detection both count against it. ``raw_score_diff_max``: max |d| over all
    raw sigmoid scores; ``raw_box_diff_max``: max |d| px over the boxes of anchors whose reference
    score exceeds ``conf``.
    """
    ref, cand = _session(reference_onnx), _session(candidate_onnx)
    n_ref = n_cand = 0
    score_diffs: list[float] = []
    ious: list[float] = []
    raw_score, raw_box = 0.0, 0.0
    for img in images:
        x, infos = preprocess([img], imgsz)
        name = ref.get_inputs()[0].name
        rs, rb = ref.run(["scores", "boxes"], {name: x})
        cs, cb = cand.run(["scores", "boxes"], {cand.get_inputs()[0].name: x})
        rs, rb, cs, cb = (np.asarray(t, np.float32) for t in (rs, rb, cs, cb))
        raw_score = max(raw_score, float(np.abs(rs - cs).max()))
        live = rs[0].max(-1) > conf
        if live.any():
            raw_box = max(raw_box, float(np.abs(rb[0][live] - cb[0][live]).max()))
        a = postprocess({"scores": rs, "boxes": rb}, "raw", infos, conf, iou, max_det)[0]
        b = postprocess({"scores": cs, "boxes": cb}, "raw", infos, conf, iou, max_det)[0]
        n_ref, n_cand = n_ref + len(a[2]), n_cand + len(b[2])
        for i, j, v in match_by_iou(a[0], a[1], a[2], b[0], b[1], b[2], min_iou):
            score_diffs.append(abs(float(a[1][i]) - float(b[1][j])))
            ious.append(v)
    matched = len(ious)
    denom = max(n_ref, n_cand)
    return Agreement(
        images=len(images), reference_detections=n_ref, candidate_detections=n_cand, matched=matched,
        matched_fraction=matched / denom if denom else 1.0,
        matched_score_diff_max=max(score_diffs, default=0.0),
        matched_score_diff_mean=float(np.mean(score_diffs)) if score_diffs else 0.0,
        matched_mean_iou=float(np.mean(ious)) if ious else 1.0,
        raw_score_diff_max=raw_score, raw_box_diff_max=raw_box, conf=conf, iou=iou, min_iou=min_iou)


__all__ = ["Agreement", "agreement", "match_by_iou"]
