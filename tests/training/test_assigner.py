"""Task-aligned assigner on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from training.assigner import TaskAlignedAssigner
from training.boxes import ciou

pytestmark = pytest.mark.numeric  # float comparisons across kernels: CI reruns these (Makefile)

POINTS = torch.tensor([[5.0, 5.0], [15.0, 5.0], [25.0, 5.0], [5.0, 15.0]])  # 4 anchors


def run(pred_boxes, scores, gt_labels, gt_boxes, gt_mask, topk=2):
    return TaskAlignedAssigner(topk=topk)(pred_boxes[None], scores[None], POINTS, gt_labels[None],
                                          gt_boxes[None], gt_mask[None])


def test_single_gt_topk_and_normalisation():
    gt = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    pred = torch.tensor([[0, 0, 20, 20], [0, 0, 20, 20], [0, 0, 20, 20], [0, 0, 10, 10]], dtype=torch.float32)
    scores = torch.zeros(4, 2)
    scores[:, 1] = torch.tensor([0.9, 0.4, 0.99, 0.1])
    r = run(pred, scores, torch.tensor([1]), gt, torch.tensor([True]))
    # anchor 2's centre (25, 5) is outside the GT: never positive despite the best score.
    # metrics t = s^0.5 * u^6: anchor 0 0.9487, anchor 1 0.6325, anchor 3 ~1e-5 -> top-2 = {0, 1}
    assert r.fg_mask[0].tolist() == [True, True, False, False]
    assert r.labels[0, :2].tolist() == [1, 1]
    # targets scaled so the best anchor's equals the GT's best overlap (1.0): 1.0 and 0.4^.5/0.9^.5
    torch.testing.assert_close(r.scores[0, :, 1], torch.tensor([1.0, math.sqrt(0.4 / 0.9), 0, 0]),
                               atol=1e-5, rtol=0)
    assert r.scores[0, :, 0].abs().sum() == 0
    torch.testing.assert_close(r.boxes[0, 0], gt[0])


def test_anchor_claimed_by_two_gts_keeps_best_overlap():
    gts = torch.tensor([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 12.0, 12.0]])
    pred = torch.tensor([[0, 0, 11, 11], [0, 0, 20, 20], [20, 0, 30, 10], [0, 8, 10, 20]], dtype=torch.float32)
    scores = torch.full((4, 3), 0.5)
    r = run(pred, scores, torch.tensor([0, 2]), gts, torch.tensor([True, True]), topk=4)
    # anchor 0 (5, 5) is inside both GTs; its box [0,0,11,11] overlaps GT 1 (IoU 121/144) more
    # than GT 0 (IoU 121/400), so it is assigned to GT 1 (class 2)
    assert r.fg_mask[0, 0] and r.labels[0, 0] == 2
    torch.testing.assert_close(r.boxes[0, 0], gts[1])
    assert r.labels[0, 1] == 0  # anchor 1 (15, 5) lies only in GT 0
    assert not r.fg_mask[0, 2]  # (25, 5) in no GT


def test_padding_gts_and_empty_images():
    gt = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    pred = torch.tensor([[0, 0, 20, 20]] * 4, dtype=torch.float32)
    scores = torch.full((4, 2), 0.5)
    r = run(pred, scores, torch.tensor([1]), gt, torch.tensor([False]))
    assert not r.fg_mask.any() and r.scores.sum() == 0
    empty = TaskAlignedAssigner()(pred[None], scores[None], POINTS, torch.zeros(1, 0, dtype=torch.long),
                                  torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.bool))
    assert not empty.fg_mask.any() and empty.scores.shape == (1, 4, 2)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),  # identical
        ([0, 0, 2, 2], [4, 0, 6, 2], -16 / 40),  # disjoint: rho^2 = 16, enclosing diagonal^2 = 40
        ([0, 0, 10, 10], [0, 0, 5, 5], 0.25 - 12.5 / 200),  # nested, same aspect (v = 0)
        # aspect term: v = 4/pi^2 (atan 1 - atan 2)^2, alpha = v / (v - IoU + 1)
        ([0, 0, 2, 2], [0, 0, 2, 4], None),
    ],
)
def test_ciou_hand_computed(a, b, expected):
    got = float(ciou(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)))
    if expected is None:
        iou, rho2, c2 = 0.5, 1.0, 4 + 16
        v = 4 / math.pi**2 * (math.atan(0.5) - math.atan(1.0)) ** 2
        expected = iou - rho2 / c2 - v / (v - iou + 1) * v
    assert got == pytest.approx(expected, abs=1e-6)
