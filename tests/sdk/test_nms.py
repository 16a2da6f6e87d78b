"""NMS: hand-computed cases and agreement with a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest

from sdk.nms import batched_nms, box_iou, nms


def brute_force_nms(boxes, scores, labels, thr, agnostic=False):
    """Textbook greedy NMS with double loops and float64 IoU."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep, dead = [], set()
    for a, i in enumerate(order):
        if i in dead:
            continue
        keep.append(i)
        for j in order[a + 1:]:
            if j in dead or (not agnostic and labels[i] != labels[j]):
                continue
            bi, bj = boxes[i].astype(float), boxes[j].astype(float)
            iw = max(0.0, min(bi[2], bj[2]) - max(bi[0], bj[0]))
            ih = max(0.0, min(bi[3], bj[3]) - max(bi[1], bj[1]))
            inter = iw * ih
            union = (bi[2] - bi[0]) * (bi[3] - bi[1]) + (bj[2] - bj[0]) * (bj[3] - bj[1]) - inter
            if union > 0 and inter / union > thr:
                dead.add(j)
    return keep


def test_iou_hand_computed():
    box = np.array([0, 0, 10, 10], np.float32)
    others = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [10, 10, 20, 20], [0, 0, 5, 5]], np.float32)
    np.testing.assert_allclose(box_iou(box, others), [1.0, 50 / 150, 0.0, 0.25], rtol=1e-6)


def test_nms_hand_computed():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    # box 1 overlaps box 0 with IoU 90/110 = 0.818 > 0.7 -> suppressed; box 3 duplicates box 0
    assert nms(boxes, scores, 0.7).tolist() == [0, 2]
    assert nms(boxes, scores, 0.85).tolist() == [0, 1, 2]  # 0.818 <= 0.85 survives
    labels = np.array([0, 1, 0, 1])
    assert batched_nms(boxes, scores, labels, 0.7).tolist() == [0, 1, 2]  # other class survives
    assert batched_nms(boxes, scores, labels, 0.7, agnostic=True).tolist() == [0, 2]
    assert batched_nms(boxes, scores, labels, 0.7, max_keep=2).tolist() == [0, 1]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("agnostic", [False, True])
def test_matches_brute_force(seed, agnostic):
    rs = np.random.RandomState(seed)
    xy = rs.uniform(0, 200, (150, 2))
    wh = rs.uniform(5, 80, (150, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rs.permutation(150).astype(np.float32) / 150  # distinct scores: a unique answer
    labels = rs.randint(0, 4, 150)
    got = batched_nms(boxes, scores, labels, 0.5, agnostic=agnostic).tolist()
    assert got == brute_force_nms(boxes, scores, labels, 0.5, agnostic)
    assert len(got) < 150  # the case does suppress


def test_empty():
    assert batched_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0), 0.5).size == 0
