"""Named tolerances and a detection-set matcher shared by parity tests."""

from __future__ import annotations

import numpy as np

# Official-vs-ours, float32 CPU (OFFICIAL_ON_CPU.md section 7: summation order only).
LOGITS_REL = 1e-3  # of the largest reference magnitude
BOXES_REL = 5e-3  # DFL outputs, amplified by the softmax
TEXT_ATOL = 1e-5


def max_rel_diff(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max |ref|."""
    return float(np.abs(np.asarray(got) - ref).max() / max(np.abs(ref).max(), 1e-12))


def match_detections(a_xyxy, a_score, a_cls, b_xyxy, b_score, b_cls, box_atol: float,
                     score_atol: float) -> int:
    """Greedy order-insensitive matching: same class, every box coordinate within ``box_atol``
    and score within ``score_atol``. Returns how many of ``a`` found a partner in ``b``."""
    used = np.zeros(len(b_cls), bool)
    matched = 0
    for box, score, cls in zip(a_xyxy, a_score, a_cls, strict=True):
        ok = (~used & (b_cls == cls) & (np.abs(b_score - score) <= score_atol)
              & (np.abs(b_xyxy - box).max(axis=1) <= box_atol))
        if ok.any():
            j = int(np.flatnonzero(ok)[np.argmin(np.abs(b_score[ok] - score))])
            used[j] = True
            matched += 1
    return matched


def assert_same_detections(a, b, box_atol: float = 1e-2, score_atol: float = 1e-4) -> None:
    """Two ``Detections`` hold the same set (near-tied scores may swap places)."""
    assert len(a) == len(b), (len(a), len(b))
    n = match_detections(a.xyxy, a.confidence, a.class_id, b.xyxy, b.confidence, b.class_id,
                         box_atol, score_atol)
    assert n == len(a), f"{len(a) - n} of {len(a)} detections have no partner"
