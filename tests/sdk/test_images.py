"""Image sources: paths, folders, arrays and videos -> validated BGR uint8, with errors that name them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sdk import ImageError
from sdk.images import expand_sources, iter_frames, load, read_image, to_bgr


def test_expand_sources(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt", "c.webp"):
        (tmp_path / name).write_bytes(b"x")
    array = np.zeros((2, 2, 3), np.uint8)
    got = expand_sources([tmp_path, str(tmp_path / "notes.txt"), array])
    assert got[:3] == [str(tmp_path / n) for n in ("a.JPG", "b.png", "c.webp")]  # sorted, images only
    assert got[3] == str(tmp_path / "notes.txt") and got[4] is array  # files as given, arrays as they are
    with pytest.raises(ImageError, match="missing.jpg' does not exist"):
        expand_sources(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="unsupported image source of type float"):
        expand_sources([1.5])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="empty' holds no images"):
        expand_sources(tmp_path / "empty")


def test_to_bgr_conversions_by_hand():
    gray = np.array([[0, 255]], np.uint8)
    np.testing.assert_array_equal(to_bgr(gray), [[[0, 0, 0], [255, 255, 255]]])
    bgra = np.array([[[1, 2, 3, 4]]], np.uint8)
    np.testing.assert_array_equal(to_bgr(bgra), [[[1, 2, 3]]])
    deep = np.array([[[0, 257, 65535]]], np.uint16)
    np.testing.assert_array_equal(to_bgr(deep), [[[0, 1, 255]]])  # 16-bit / 257
    np.testing.assert_array_equal(to_bgr(gray[:, :, None]), to_bgr(gray))
    for bad, match in [(np.zeros((2, 2, 3), np.float32), "expected dtype uint8"),
                       (np.zeros((2, 2, 2), np.uint8), r"expected shape \(H, W, 3\)"),
                       (np.zeros((0, 2, 3), np.uint8), "empty image"), ([1, 2], "expected a numpy array")]:
        with pytest.raises(ImageError, match=match):
            to_bgr(bad, name="thing")


def test_read_and_load(tmp_path):
    img = np.random.RandomState(0).randint(0, 255, (5, 7, 3)).astype(np.uint8)
    path = tmp_path / "ünïcode.png"  # imdecode: non-ASCII paths work
    cv2.imwrite(str(tmp_path / "plain.png"), img)
    (tmp_path / "plain.png").rename(path)
    np.testing.assert_array_equal(read_image(path), img)
    arr, name = load(str(path), 3)
    np.testing.assert_array_equal(arr, img)
    assert name == str(path)
    arr, name = load(img, 4)
    assert name == "array#4" and arr is img
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 no")
    (tmp_path / "zero.png").write_bytes(b"")
    for bad in ("broken.jpg", "zero.png"):
        with pytest.raises(ImageError, match=f"cannot decode image .*{bad}"):
            read_image(tmp_path / bad)


def test_iter_frames_from_images_and_a_video(tmp_path):
    frames = [np.full((16, 16, 3), v, np.uint8) for v in (0, 100, 200)]
    got = list(iter_frames(iter(frames)))
    assert [n for _, n in got] == ["array#0", "array#1", "array#2"]
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (16, 16))
    for f in frames:
        writer.write(f)
    writer.release()
    video = list(iter_frames(str(tmp_path / "clip.avi")))
    assert [n for _, n in video] == [f"{tmp_path / 'clip.avi'}#{i}" for i in range(3)]
    assert [int(f.mean()) for f, _ in video] == pytest.approx([0, 100, 200], abs=3)  # MJPG rounding
    with pytest.raises(ImageError, match="cannot open video source"):
        list(iter_frames(str(tmp_path / "missing.mp4")))
