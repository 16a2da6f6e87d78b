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


@pytest.mark.parametrize(
    ("hw", "size", "shape", "pad_tblr"),
    [
        ((720, 1280), 640, (384, 640), (12, 12, 0, 0)),  # a 16:9 photo: 640x360 resized, 24 rows of padding
        ((1080, 810), 640, (640, 480), (0, 0, 0, 0)),  # 480 is a multiple of 32: no padding at all
        ((200, 120), 160, (160, 96), (0, 0, 0, 0)),
        ((70, 100), 160, (128, 160), (8, 8, 0, 0)),  # enlarged to 112x160, padded to 128
        ((33, 250), 160, (32, 160), (5, 6, 0, 0)),  # 21 rows -> 32; the odd pixel goes to the bottom
        ((154, 100), 640, (640, 416), (0, 1, 0, 1)),  # 639x415 after int() truncation
        ((640, 640), 640, (640, 640), (0, 0, 0, 0)),
    ],
)
def test_rect_geometry_hand_computed(hw, size, shape, pad_tblr):
    """The minimal-padding shape: the square letterbox's resize, padded to multiples of 32 only."""
    from sdk.preprocess import rect_shape

    assert rect_shape(*hw, size) == shape
    resized, info = letterbox_geometry(*hw, size, shape)
    assert resized == letterbox_geometry(*hw, size)[0]  # the same resize as the square path
    assert info.pad_tblr == pad_tblr and info.scale_wh == letterbox_geometry(*hw, size)[1].scale_wh


@pytest.mark.parametrize("size", [160, 640])
def test_rect_boxes_map_back_for_every_shape(size):
    """For every aspect ratio: a filled rectangle drawn on the original is found, in the rect
    letterbox, where ``boxes_to_input`` puts it, and maps back onto itself (within the resize's pixel)."""
    import cv2

    from sdk.preprocess import rect_shape

    rs = np.random.RandomState(0)
    for h, w in [(s, 1000) for s in range(40, 1001, 80)] + [(1000, s) for s in range(40, 1001, 80)] + [(37, 41)]:
        img = np.zeros((h, w, 3), np.uint8)
        x0, y0 = int(rs.randint(0, w // 2)), int(rs.randint(0, h // 2))
        x1, y1 = x0 + max(8, w // 3), y0 + max(8, h // 3)
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), -1)
        out, info = letterbox(img, size, shape=rect_shape(h, w, size))
        assert out.shape[:2] == rect_shape(h, w, size) and all(d % 32 == 0 for d in out.shape[:2])
        ys, xs = np.nonzero(out[..., 0] > 127)
        found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
        expected = info.boxes_to_input(np.array([[x0, y0, x1, y1]], np.float32))
        np.testing.assert_allclose(found, expected, atol=1.5)  # resampling blurs the edge by a pixel
        sx, sy = info.scale_wh
        np.testing.assert_allclose(info.boxes_to_original(found), [[x0, y0, x1, y1]], atol=1.5 / min(sx, sy))
        np.testing.assert_allclose(info.boxes_to_original(expected), [[x0, y0, x1, y1]], atol=1e-3 * max(h, w))


def test_rect_batch_pads_to_its_largest_member(images):
    """``preprocess(rect=True)``: one input shape per batch, the largest member's; each image keeps the
    square path's resize."""
    from sdk.preprocess import rect_shape

    batch, infos = preprocess(images, 160, rect=True)
    shapes = [rect_shape(*img.shape[:2], 160) for img in images]
    assert batch.shape[2:] == (max(s[0] for s in shapes), max(s[1] for s in shapes))
    for img, info in zip(images, infos, strict=True):
        assert info.scale_wh == letterbox_geometry(*img.shape[:2], 160)[1].scale_wh
