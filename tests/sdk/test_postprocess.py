"""DFL decoding, anchors and per-image post-processing on hand-computed inputs."""

from __future__ import annotations

import numpy as np

from sdk.postprocess import anchor_points, decode_head_outputs, dfl_distances, postprocess_image
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
