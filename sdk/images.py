"""Image sources for ``predict``: paths, folders and arrays -> validated BGR uint8 arrays."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from .errors import ImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
ImageSource = Union[str, os.PathLike, np.ndarray]


def expand_sources(source: ImageSource | Iterable[ImageSource]) -> list[str | np.ndarray]:
    """A flat list of image paths and arrays; folders are expanded to the images in them and in their
    subfolders (sorted by path)."""
    if isinstance(source, (str, os.PathLike, np.ndarray)):
        items: list = [source]
    elif isinstance(source, Iterable):
        items = list(source)
    else:
        items = [source]  # rejected below with a clear message
    out: list[str | np.ndarray] = []
    for item in items:
        if isinstance(item, np.ndarray):
            out.append(item)
            continue
        if not isinstance(item, (str, os.PathLike)):
            raise ImageError(f"unsupported image source of type {type(item).__name__}; expected a "
                             f"path, a folder or a numpy BGR image")
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                raise ImageError(f"folder {str(path)!r} holds no images "
                                 f"({', '.join(sorted(IMAGE_SUFFIXES))})")
            out.extend(str(p) for p in files)
        elif path.is_file():
            out.append(str(path))
        else:
            raise ImageError(f"image {str(path)!r} does not exist")
    return out


def to_bgr(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate an array as an image; grayscale and BGRA become BGR, 16-bit becomes 8-bit."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ImageError(f"{name}: expected dtype uint8 (BGR, 0-255), got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"{name}: expected shape (H, W, 3) BGR, (H, W) gray or (H, W, 4) BGRA, "
                         f"got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"{name}: empty image of shape {image.shape}")
    return image


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a file as BGR uint8 (via ``cv2.imdecode``, so non-ASCII paths work)."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"cannot read image {str(path)!r}: {e.strerror}") from None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageError(f"cannot decode image {str(path)!r}: not an image file or corrupt")
    return to_bgr(image, name=str(path))


def load(item: str | np.ndarray, index: int) -> tuple[np.ndarray, str]:
    """(BGR image, source name) for one expanded source."""
    if isinstance(item, np.ndarray):
        return to_bgr(item, name=f"image #{index}"), f"array#{index}"
    return read_image(item), item


def iter_frames(source: ImageSource | Iterable[ImageSource] | int) -> Iterator[tuple[np.ndarray, str]]:
    """(BGR frame, name) pairs from a video file or camera index (OpenCV), or from images: a path,
    a folder, an array or an iterable of them (read lazily, one at a time)."""
    if isinstance(source, int) or (isinstance(source, (str, os.PathLike))
                                   and Path(source).suffix.lower() in VIDEO_SUFFIXES):
        cap = cv2.VideoCapture(source if isinstance(source, int) else str(source))
        if not cap.isOpened():
            raise ImageError(f"cannot open video source {source!r}")
        try:
            index = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    return
                yield to_bgr(frame, name=f"{source}#{index}"), f"{source}#{index}"
                index += 1
        finally:
            cap.release()
    items = [source] if isinstance(source, (str, os.PathLike, np.ndarray)) else source
    index = 0
    for item in items:
        for expanded in expand_sources(item):
            yield load(expanded, index)
            index += 1
