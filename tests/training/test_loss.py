"""Losses against hand-computed values and against the official implementation's."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from official_format import head_outputs  # tests/fixtures, on the path through tests/builders.py

from sdk.model import HeadOutputs
from training.loss import YoloWorldLoss, dfl_loss

pytestmark = pytest.mark.numeric  # float comparisons across kernels: CI reruns these (Makefile)


def outputs(b=1, t=2, cls_value=0.0, dist_bin=None, size=32):
    """Head outputs for a size x size input: levels 4x4, 2x2, 1x1 (21 anchors)."""
    cls, dists = [], []
    for s in (8, 16, 32):
        n = size // s
        cls.append(torch.full((b, t, n, n), cls_value, requires_grad=True))
        d = torch.zeros(b, 64, n, n)
        if dist_bin is not None:
            d = d - 50.0
            for side in range(4):
                d[:, side * 16 + dist_bin] = 50.0  # all mass on one bin
        dists.append(d.requires_grad_())
    return HeadOutputs(cls, dists)


def test_dfl_hand_computed():
    logits = torch.zeros(3, 16)  # uniform: CE = ln 16 to any bin
    assert dfl_loss(logits, torch.tensor([2.5, 0.0, 14.99])).tolist() == pytest.approx([math.log(16)] * 3)
    peaked = torch.full((1, 16), -1e4)
    peaked[0, 3] = 0.0
    # target 3.25: 0.75 * CE(bin 3) + 0.25 * CE(bin 4) = 0.75 * 0 + 0.25 * 1e4
    assert float(dfl_loss(peaked, torch.tensor([3.25]))) == pytest.approx(0.25 * 1e4, rel=1e-5)


def test_classification_only_without_gts():
    out = outputs(b=2, t=3, cls_value=0.0)
    loss = YoloWorldLoss()
    total, parts = loss(out, torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, 4),
                        torch.zeros(2, 0, dtype=torch.bool))
    # every (anchor, text) pair is a negative: BCE(0, 0) = ln 2; 21 anchors x 3 texts x 2 images;
    # normalised by max(sum of targets, 1) = 1; x weight 0.5; x images per process 2
    expected = 21 * 3 * 2 * math.log(2) * 0.5 * 2
    assert float(parts["cls"]) == pytest.approx(expected, rel=1e-6)
    assert float(parts["box"]) == 0 and float(parts["dfl"]) == 0
    total.backward()  # the graph reaches the box branch too (DDP needs every parameter used)
    assert out.box_dists[0].grad is not None


def test_one_gt_hand_computed():
    """Every side's distribution is half on bin 0, half on bin 1 (expected distance 0.5 stride), so
    the stride-8 anchor at (12, 12) predicts [8, 8, 16, 16]. That GT contains only this anchor's
    centre (stride-16/32 centres at 8, 16, 24 lie on its border, not strictly inside)."""
    out = outputs(t=2, cls_value=0.0)
    for d in out.box_dists:
        with torch.no_grad():
            d.fill_(-1e4)
            for side in range(4):
                d[:, side * 16:side * 16 + 2] = 0.0
    gt = torch.tensor([[[8.0, 8.0, 16.0, 16.0]]])
    _, parts = YoloWorldLoss()(out, torch.zeros(1, 1, dtype=torch.long), gt, torch.ones(1, 1, dtype=torch.bool))
    # one positive with target 1.0 (best anchor of its GT, overlap ~1): sum of targets = 1
    # cls: BCE(0, 0) = BCE(0, 1) = ln 2 for all 21 anchors x 2 texts, x 0.5
    assert float(parts["cls"]) == pytest.approx(21 * 2 * math.log(2) * 0.5, rel=1e-5)
    assert float(parts["box"]) == pytest.approx(0.0, abs=1e-5)  # 7.5 * (1 - CIoU(GT, GT))
    # DFL: target 0.5 per side -> 0.5 * CE(bin 0) + 0.5 * CE(bin 1) = ln 2; 4 sides x 0.375
    assert float(parts["dfl"]) == pytest.approx(4 * math.log(2) * 0.375, rel=1e-5)


def test_scaling_by_batch_and_world_size():
    out = outputs(b=2, t=2, cls_value=0.3)
    args = (torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool))
    one = YoloWorldLoss(world_size=1)(out, *args)[0]
    four = YoloWorldLoss(world_size=4)(out, *args)[0]
    assert float(four.detach()) == pytest.approx(4 * float(one.detach()), rel=1e-6)


def test_padded_text_masking():
    out = outputs(b=1, t=4, cls_value=0.0)
    args = (torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.bool))
    mask = torch.tensor([[True, True, False, False]])
    full = YoloWorldLoss()(out, *args, text_mask=mask)[1]["cls"]
    masked = YoloWorldLoss(mask_padded_texts=True)(out, *args, text_mask=mask)[1]["cls"]
    assert float(masked) == pytest.approx(float(full) / 2, rel=1e-6)


GOLDEN_LOSS = json.loads((Path(__file__).parents[1] / "fixtures" / "golden_loss.json").read_text())


@pytest.mark.parametrize("name", sorted(GOLDEN_LOSS["cases"]))
def test_equals_the_official_head_loss(name):
    """The official YOLOWorldHead.loss_by_feat (assigner, BCE, CIoU, DFL, normalisation, text masks) on
    the same raw head outputs and boxes; golden values from the official code (fixture's header).
    Measured: equal to within 1e-7 relative."""
    case = GOLDEN_LOSS["cases"][name]
    cls, dists = head_outputs(case["seed"], case["batch"], case["texts"], case["imgsz"])
    out = HeadOutputs([torch.from_numpy(c) for c in cls], [torch.from_numpy(d) for d in dists])
    rows = torch.tensor(case["gt_rows"], dtype=torch.float32).reshape(-1, 6)
    per_image = [rows[rows[:, 0] == i] for i in range(case["batch"])]
    m = max(1, max(len(r) for r in per_image))
    labels = torch.zeros(case["batch"], m, dtype=torch.long)
    boxes = torch.zeros(case["batch"], m, 4)
    mask = torch.zeros(case["batch"], m, dtype=torch.bool)
    for i, r in enumerate(per_image):
        labels[i, :len(r)], boxes[i, :len(r)], mask[i, :len(r)] = r[:, 1].long(), r[:, 2:], True
    text_mask = torch.tensor(case["text_mask"]).bool() if case["text_mask"] else None
    _, parts = YoloWorldLoss(mask_padded_texts=text_mask is not None)(out, labels, boxes, mask, text_mask)
    ref = case["official"]
    got = {"loss_cls": float(parts["cls"]), "loss_bbox": float(parts["box"]), "loss_dfl": float(parts["dfl"])}
    assert got == pytest.approx(ref, rel=1e-5, abs=1e-6)
