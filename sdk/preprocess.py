"""Letterbox and normalisation, numpy + OpenCV; identical to the official YOLO-World test pipeline.

Official pipeline (mmyolo ``YOLOv5KeepRatioResize`` -> ``LetterResize(allow_scale_up=False)``):
keep-ratio resize to fit ``size`` with ``int()`` truncation, INTER_AREA when shrinking and bilinear
when enlarging; pad with 114 centred, the odd pixel going to the bottom/right; BGR -> RGB; / 255.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114


@dataclass(frozen=True)
class LetterboxInfo:
    """How one image was mapped into the network input.

    scale_wh: (sx, sy) input-pixels per original pixel. pad_tblr: (top, bottom, left, right) pixels.
    orig_hw: (height, width) of the original image.
    """

    scale_wh: tuple[float, float]
    pad_tblr: tuple[int, int, int, int]
    orig_hw: tuple[int, int]

    def boxes_to_original(self, xyxy: np.ndarray) -> np.ndarray:
        """Network-input xyxy ``(K, 4)`` -> original-image xyxy (float32, not clipped)."""
        top, _, left, _ = self.pad_tblr
        out = xyxy.astype(np.float32) - np.array([left, top, left, top], np.float32)
        return out / np.array(self.scale_wh * 2, np.float32)

    def boxes_to_input(self, xyxy: np.ndarray) -> np.ndarray:
        """Original-image xyxy ``(K, 4)`` -> network-input xyxy (float32)."""
        top, _, left, _ = self.pad_tblr
        out = xyxy.astype(np.float32) * np.array(self.scale_wh * 2, np.float32)
        return out + np.array([left, top, left, top], np.float32)


def resized_hw(h: int, w: int, size: int) -> tuple[int, int]:
    """The keep-ratio resize of an ``h x w`` image for a ``size`` letterbox: (height, width)."""
    ratio = min(size / max(h, w), size / min(h, w))  # mmyolo _get_rescale_ratio for a square target
    # LetterResize never scales up again; truncation can leave the long side one pixel short.
    return (int(h * ratio), int(w * ratio)) if ratio != 1 else (h, w)


def rect_shape(h: int, w: int, size: int, stride: int = 32) -> tuple[int, int]:
    """The smallest network input (height, width), multiples of ``stride``, that holds an ``h x w``
    image resized for a ``size`` letterbox: the minimal-padding ("rect") shape, e.g. 1280x720 at 640 ->
    (384, 640). The resize is the square letterbox's; only the padding is less."""
    rh, rw = resized_hw(h, w, size)
    return -(-rh // stride) * stride, -(-rw // stride) * stride


def letterbox_geometry(h: int, w: int, size: int, shape: tuple[int, int] | None = None
                       ) -> tuple[tuple[int, int], LetterboxInfo]:
    """Resized (height, width) and the :class:`LetterboxInfo` for an ``h x w`` image letterboxed for
    ``size`` into ``shape`` (height, width; default ``(size, size)``, the official square input)."""
    rh, rw = resized_hw(h, w, size)
    out_h, out_w = shape or (size, size)
    if rh > out_h or rw > out_w:
        raise ValueError(f"a {h}x{w} image resized for {size} is {rh}x{rw}: it does not fit a {out_h}x{out_w} input")
    pad_h, pad_w = out_h - rh, out_w - rw
    top, left = round(pad_h // 2 - 0.1), round(pad_w // 2 - 0.1)
    info = LetterboxInfo(scale_wh=(rw / w, rh / h), pad_tblr=(top, pad_h - top, left, pad_w - left),
                         orig_hw=(h, w))
    return (rh, rw), info


def letterbox(image_bgr: np.ndarray, size: int, out: np.ndarray | None = None, shape: tuple[int, int] | None = None
              ) -> tuple[np.ndarray, LetterboxInfo]:
    """Letterbox one BGR uint8 ``(H, W, 3)`` image for ``size`` into ``shape`` (default ``(size, size)``):
    uint8 ``(*shape, 3)``, still BGR.

    ``out``: optional preallocated uint8 buffer of that shape to write into.
    """
    h, w = image_bgr.shape[:2]
    shape = shape or (size, size)
    (rh, rw), info = letterbox_geometry(h, w, size, shape)
    if (rh, rw) != (h, w):
        # mmcv 'area' when shrinking, 'bilinear' when enlarging (small images are upscaled)
        interp = cv2.INTER_AREA if rw < w else cv2.INTER_LINEAR  # rw < w <=> ratio < 1
        image_bgr = cv2.resize(image_bgr, (rw, rh), interpolation=interp)
    if out is None:
        out = np.empty((*shape, 3), np.uint8)
    top, _, left, _ = info.pad_tblr
    out[...] = PAD_VALUE
    out[top:top + rh, left:left + rw] = image_bgr
    return out, info


def preprocess(images_bgr: list[np.ndarray], size: int, rect: bool = False
               ) -> tuple[np.ndarray, list[LetterboxInfo]]:
    """A batch for the network: float32 ``(B, 3, H, W)``, RGB, values in [0, 1]. ``H = W = size``, or
    with ``rect`` the smallest multiples of 32 that hold every member (:func:`rect_shape`; a batch is
    padded to its largest member)."""
    shape = (size, size)
    if rect and images_bgr:
        shapes = [rect_shape(img.shape[0], img.shape[1], size) for img in images_bgr]
        shape = (max(s[0] for s in shapes), max(s[1] for s in shapes))
    batch = np.empty((len(images_bgr), *shape, 3), np.uint8)
    infos = [letterbox(img, size, out=batch[i], shape=shape)[1] for i, img in enumerate(images_bgr)]
    return to_network_input(batch), infos


def to_network_input(letterboxed_bgr: np.ndarray) -> np.ndarray:
    """uint8 ``(B, H, W, 3)`` BGR -> float32 ``(B, 3, H, W)`` RGB in [0, 1]."""
    # BGR -> RGB and HWC -> CHW in one strided copy, then scale
    chw = np.ascontiguousarray(letterboxed_bgr[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
    chw /= np.float32(255)  # a division, as the official data preprocessor does
    return chw
