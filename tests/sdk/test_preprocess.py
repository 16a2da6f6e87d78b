"""Letterbox against hand-computed official (mmyolo) geometry, and its inverse."""

from __future__ import annotations

import numpy as np
import pytest

from sdk.preprocess import PAD_VALUE, letterbox, letterbox_geometry, preprocess


@pytest.mark.parametrize(
    ("hw", "size", "resized_hw", "pad_tblr"),
    [
        ((1080, 810), 640, (640, 480), (0, 0, 80, 80)),  # the official bus.jpg case
        ((640, 640), 640, (640, 640), (0, 0, 0, 0)),  # identity
        ((200, 120), 160, (160, 96), (0, 0, 32, 32)),  # shrink, left/right padding
        ((70, 100), 160, (112, 160), (24, 24, 0, 0)),  # enlarge (bilinear), top/bottom padding
        ((33, 250), 160, (21, 160), (69, 70, 0, 0)),  # odd padding: the extra pixel goes to bottom
        ((154, 100), 640, (639, 415), (0, 1, 112, 113)),  # int() truncation leaves 639, not 640
    ],
)
def test_geometry_matches_official(hw, size, resized_hw, pad_tblr):
    got_hw, info = letterbox_geometry(*hw, size)
    assert got_hw == resized_hw
    assert info.pad_tblr == pad_tblr
    assert info.scale_wh == (resized_hw[1] / hw[1], resized_hw[0] / hw[0])
    assert info.orig_hw == hw


def test_letterbox_pixels(images):
    img = images[1]  # 200 x 120 -> resized to 160 x 96, 32 px bars left and right
    out, _info = letterbox(img, 160)
    assert out.shape == (160, 160, 3) and out.dtype == np.uint8
    assert (out[:, :32] == PAD_VALUE).all() and (out[:, 128:] == PAD_VALUE).all()
    import cv2

    np.testing.assert_array_equal(out[:, 32:128], cv2.resize(img, (96, 160), interpolation=cv2.INTER_AREA))


def test_preprocess_rgb_scaled(images):
    batch, infos = preprocess(images[:2], 160)
    assert batch.shape == (2, 3, 160, 160) and batch.dtype == np.float32
    lb, _ = letterbox(images[0], 160)
    np.testing.assert_array_equal(batch[0], lb[..., ::-1].transpose(2, 0, 1).astype(np.float32) / 255)
    assert [i.orig_hw for i in infos] == [(160, 160), (200, 120)]


@pytest.mark.parametrize("hw", [(1080, 810), (70, 100), (33, 250), (154, 100)])
def test_box_round_trip(hw):
    _, info = letterbox_geometry(*hw, 640)
    boxes = np.array([[0, 0, hw[1], hw[0]], [3.5, 7.25, 20, 30]], np.float32)
    np.testing.assert_allclose(info.boxes_to_original(info.boxes_to_input(boxes)), boxes, atol=1e-3)
    # the full image maps onto the unpadded region of the input
    top, bottom, left, right = info.pad_tblr
    np.testing.assert_allclose(info.boxes_to_input(boxes[:1])[0],
                               [left, top, 640 - right, 640 - bottom], atol=1e-3)
