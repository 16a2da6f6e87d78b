"""DFL decoding, anchors and per-image post-processing: hand-computed inputs, and the fast path equal to
the plain reference (full sort, NMS loop) bit for bit on random score tensors."""

from __future__ import annotations

import numpy as np
import pytest

from sdk.postprocess import (
    anchor_points,
    decode_head_outputs,
    dfl_distances,
    postprocess_image,
    postprocess_image_reference,
    select_candidates,
    sigmoid,
)
from sdk.preprocess import LetterboxInfo


def test_anchor_points_order():
    points, strides = anchor_points((64, 64))
    assert points.shape == (64 + 16 + 4, 2)
    np.testing.assert_array_equal(points[:3], [[4, 4], [12, 4], [20, 4]])  # x fastest
    np.testing.assert_array_equal(points[8], [4, 12])  # second row of the stride-8 level
    np.testing.assert_array_equal(points[64], [8, 8])  # first stride-16 anchor
    np.testing.assert_array_equal(points[-1], [48, 48])
    assert strides[0] == 8 and strides[64] == 16 and strides[-1] == 32


def test_dfl_expectation():
    dist = np.full((1, 64, 1, 1), -1e4, np.float32)
    dist[0, 3, 0, 0] = 0.0  # left: all mass on bin 3
    dist[0, 16 + 2, 0, 0] = dist[0, 16 + 4, 0, 0] = 0.0  # top: half on 2, half on 4 -> 3
    dist[0, 32:48, 0, 0] = 0.0  # right: uniform over 0..15 -> 7.5
    dist[0, 48 + 15, 0, 0] = 0.0  # bottom: bin 15
    np.testing.assert_allclose(dfl_distances(dist)[0, 0], [3, 3, 7.5, 15], atol=1e-5)


def test_decode_boxes_and_scores():
    cls = [np.zeros((1, 2, 8, 8), np.float32), np.zeros((1, 2, 4, 4), np.float32),
           np.zeros((1, 2, 2, 2), np.float32)]
    cls[0][0, 1, 0, 1] = 2.0
    dists = [np.full((1, 64, s, s), -1e4, np.float32) for s in (8, 4, 2)]
    for d in dists:
        d[:, [1, 16 + 1, 32 + 2, 48 + 2]] = 0.0  # l = t = 1, r = b = 2 (stride units)
    scores, boxes = decode_head_outputs(cls, dists)
    assert scores.shape == (1, 84, 2) and boxes.shape == (1, 84, 4)
    np.testing.assert_allclose(scores[0, 1], [0.5, 1 / (1 + np.exp(-2))], rtol=1e-6)
    np.testing.assert_allclose(boxes[0, 1], [12 - 8, 4 - 8, 12 + 16, 4 + 16])  # anchor (12, 4)
    np.testing.assert_allclose(boxes[0, 64], [8 - 16, 8 - 16, 8 + 32, 8 + 32])  # stride 16


def test_postprocess_image_hand_computed():
    info = LetterboxInfo(scale_wh=(0.5, 0.5), pad_tblr=(10, 10, 0, 0), orig_hw=(100, 200))
    boxes = np.array([[0, 10, 20, 30], [1, 10, 21, 30], [50, 50, 60, 60], [-10, 0, 200, 200]], np.float32)
    scores = np.array([[0.9, 0.0], [0.8, 0.3], [0.0005, 0.002], [0.0, 0.6]], np.float32)
    xyxy, conf, cls = postprocess_image(scores, boxes, info, conf=0.001, iou=0.7, max_det=300)
    # candidates: (0,c0) .9, (1,c0) .8 [suppressed by 0], (3,c1) .6, (1,c1) .3, (2,c1) .002
    np.testing.assert_allclose(conf, [0.9, 0.6, 0.3, 0.002], rtol=1e-6)
    assert cls.tolist() == [0, 1, 1, 1]
    np.testing.assert_allclose(xyxy[0], [0, 0, 40, 40])  # (x - 0) / 0.5, (y - 10) / 0.5
    np.testing.assert_allclose(xyxy[1], [0, 0, 200, 100])  # clipped after NMS to the image
    _xyxy2, conf2, _ = postprocess_image(scores, boxes, info, conf=0.5, iou=0.7, max_det=1)
    np.testing.assert_allclose(conf2, [0.9], rtol=1e-6)


def sigmoid_expression(x):
    """The formula as first written: the fast in-place sigmoid must equal it bit for bit."""
    return (1.0 / (1.0 + np.exp(-x.astype(np.float32)))).astype(np.float32)


def test_sigmoid_bit_equal_to_expression():
    rs = np.random.RandomState(0)
    edges = [0, -0.0, 88.8, -88.8, 104, -104, np.inf, -np.inf]
    x = np.concatenate([rs.normal(0, 8, 100_003), edges]).astype(np.float32)
    strided = x.reshape(1, -1, 3)[:, ::2]  # a non-contiguous view as well
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(sigmoid(x), sigmoid_expression(x))
        np.testing.assert_array_equal(sigmoid(strided), sigmoid_expression(strided))


def assert_same(a, b):
    """Two ImageDetections bit-equal, same order."""
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def random_head(rs, anchors, classes, spread):
    """Scores ``(A, C)`` float32 with ties (a coarse grid plus saturated 1.0s) and boxes ``(A, 4)`` of
    detector-like clusters in a 640 x 384 input."""
    logits = rs.normal(-4, spread, (anchors, classes))
    scores = sigmoid(np.round(logits * 4) / 4)
    scores[rs.rand(anchors, classes) < 0.001] = 1.0
    centers = rs.uniform(0, 640, (max(1, anchors // 30), 2))[rs.randint(0, max(1, anchors // 30), anchors)]
    wh = rs.uniform(4, 300, (anchors, 2))
    xy = centers + rs.normal(0, 6, (anchors, 2))
    return scores, np.concatenate([xy - wh / 2, xy + wh / 2], 1).astype(np.float32)


@pytest.mark.parametrize(("anchors", "classes", "conf", "topk", "agnostic"), [
    (84, 2, 0.001, 30000, False),  # few candidates
    (5040, 80, 0.25, 30000, False),  # deployment settings
    (5040, 80, 0.001, 30000, False),  # evaluation: ~300k candidates cut to 30000 (the sampled threshold)
    (5040, 80, 0.001, 30000, True),
    (2000, 1203, 0.01, 30000, False),  # a large vocabulary
    (400, 80, 0.001, 777, False),  # a cut inside a run of tied scores
    (300, 3, 0.9999, 5, False),  # saturated scores only
])
def test_postprocess_image_equals_reference(anchors, classes, conf, topk, agnostic):
    rs = np.random.RandomState(anchors + classes)
    scores, boxes = random_head(rs, anchors, classes, spread=3.0)
    info = LetterboxInfo(scale_wh=(0.5, 0.5), pad_tblr=(12, 12, 0, 0), orig_hw=(720, 1280))
    got = postprocess_image(scores, boxes, info, conf, 0.7, 300, agnostic, topk)
    assert_same(got, postprocess_image_reference(scores, boxes, info, conf, 0.7, 300, agnostic, topk))
    assert len(got.confidence) > 0


def test_candidates_top_k_ties_by_position():
    # 10 candidates all scoring 0.5 and two better ones: the best 5 are the two and the first three ties
    scores = np.zeros((6, 2), np.float32)
    scores[:5] = 0.5
    scores[5] = [0.9, 0.7]
    anchors, labels, values = select_candidates(scores, 0.1, 5)
    assert list(zip(anchors.tolist(), labels.tolist(), strict=True)) == [(0, 0), (0, 1), (1, 0), (5, 0), (5, 1)]
    np.testing.assert_array_equal(values, np.float32([0.5, 0.5, 0.5, 0.9, 0.7]))


def test_candidates_sampled_threshold_falls_back():
    # 200k tied candidates: the sampled threshold passes none of them, so the exact selection runs on all
    scores = np.full((2500, 80), 0.5, np.float32)
    anchors, labels, _ = select_candidates(scores, 0.001, 1000)
    np.testing.assert_array_equal(anchors * 80 + labels, np.arange(1000))


def test_decode_unchanged_by_the_in_place_writes():
    rs = np.random.RandomState(0)
    cls = [rs.normal(0, 4, (2, 3, s, s)).astype(np.float32) for s in (8, 4, 2)]
    dists = [rs.normal(0, 2, (2, 64, s, s)).astype(np.float32) for s in (8, 4, 2)]
    scores, _ = decode_head_outputs(cls, dists)
    expected = np.concatenate([sigmoid_expression(c.reshape(2, 3, -1)).transpose(0, 2, 1) for c in cls], axis=1)
    np.testing.assert_array_equal(scores, expected)
