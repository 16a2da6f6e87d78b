"""Instance polygons (COCO ``segmentation``) for the official mask-refine augmentations.

The official fine-tuning configs load each object's polygons and use them twice: copy-paste pastes a
mirrored copy of an object through its filled polygon, and the random affine recomputes every box
from the object's warped polygon instead of warping the box (``YOLOv5RandomAffine`` with masks: each
ring resampled to 1000 points, the box is the extent of the points inside the output image). A box
then hugs what is left of the object after a crop, instead of keeping a corner of empty canvas.

Boxes are read from ``bbox`` as given; the official loader recomputes them from the polygons
(``mask2bbox``), the same box to about a pixel for COCO, whose boxes are their polygons' extents.

An instance is a tuple of rings, each a float64 ``(2n,)`` array ``x1, y1, x2, y2, ...`` in the same
pixel coordinates as the boxes (COCO: pixel ``i`` covers ``[i, i + 1)``); ``None`` for an object
without polygons (RLE or no ``segmentation``), whose box is then warped as a box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

Instance = tuple[np.ndarray, ...]
RESAMPLE = 1000  # points per ring before warping (official resample_num)


def parse_segmentation(seg: Any) -> Instance | None:
    """COCO polygons -> rings; None for RLE (a dict) or no polygons. A ring needs >= 3 finite points;
    anything else raises ``ValueError`` saying what was expected."""
    if seg is None or isinstance(seg, dict) or (isinstance(seg, list) and not seg):
        return None
    if not isinstance(seg, list):
        raise ValueError(f"segmentation {seg!r:.60} is neither a list of polygons nor RLE")
    rings = []
    for ring in seg:
        if (not isinstance(ring, list) or len(ring) < 6 or len(ring) % 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ring)):
            raise ValueError(f"segmentation polygon {str(ring)[:60]} is not [x1, y1, x2, y2, ...] with at "
                             f"least 3 points")
        arr = np.asarray(ring, np.float64)
        if not np.isfinite(arr).all():
            raise ValueError(f"segmentation polygon {str(ring)[:60]} has non-finite coordinates")
        rings.append(arr)
    return tuple(rings)


def affine(instances: Sequence[Instance | None], scale: tuple[float, float], shift: tuple[float, float],
           clip_wh: tuple[float, float] | None = None) -> list[Instance | None]:
    """``x' = sx * x + dx``, ``y' = sy * y + dy`` for every ring, then clipped to ``[0, W] x [0, H]``
    when ``clip_wh`` is given (the official mosaic clips polygons to its canvas)."""
    out: list[Instance | None] = []
    for inst in instances:
        if inst is None:
            out.append(None)
            continue
        rings = []
        for ring in inst:
            r = ring.copy()
            r[0::2] = r[0::2] * scale[0] + shift[0]
            r[1::2] = r[1::2] * scale[1] + shift[1]
            if clip_wh is not None:
                r[0::2] = r[0::2].clip(0, clip_wh[0])
                r[1::2] = r[1::2].clip(0, clip_wh[1])
            rings.append(r)
        out.append(tuple(rings))
    return out


def flip(instances: Sequence[Instance | None], width: float) -> list[Instance | None]:
    """Mirror left-right in an image ``width`` wide: ``x' = width - x``."""
    return affine(instances, (-1.0, 1.0), (width, 0.0))


def resample(ring: np.ndarray, n: int = RESAMPLE) -> np.ndarray:
    """The closed ring as ``n`` points ``(n, 2)``, evenly spaced in vertex index (official
    ``resample_masks``: linear interpolation between consecutive vertices)."""
    pts = ring.reshape(-1, 2)
    pts = np.concatenate([pts, pts[:1]])
    t = np.linspace(0, len(pts) - 1, n)
    idx = np.arange(len(pts))
    return np.stack([np.interp(t, idx, pts[:, 0]), np.interp(t, idx, pts[:, 1])], axis=1)


def refined_box(inst: Instance, scale: float, shift: tuple[float, float], width: float, height: float
                ) -> np.ndarray:
    """xyxy of the resampled, scaled and shifted rings' points that land inside ``[0, W] x [0, H]``;
    zeros when none does (the box filter then drops it). As the official ``segment2box``, a ring
    whose inside points all have x == 0 counts as having none (it tests ``any(x)``)."""
    kept = []
    for ring in inst:
        pts = resample(ring) * scale + np.asarray(shift)
        pts = pts[(pts[:, 0] >= 0) & (pts[:, 1] >= 0) & (pts[:, 0] <= width) & (pts[:, 1] <= height)]
        if (pts[:, 0] != 0).any():
            kept.append(pts)
    if not kept:
        return np.zeros(4)
    pts = np.concatenate(kept)
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


def fill(instances: Sequence[Instance], height: int, width: int) -> np.ndarray:
    """bool ``(height, width)``: the instances' filled rings (coordinates truncated to int, as the
    official copy-paste draws them)."""
    mask = np.zeros((height, width), np.uint8)
    for inst in instances:
        cv2.drawContours(mask, [r.reshape(-1, 1, 2).astype(np.int32) for r in inst], -1, 1, cv2.FILLED)
    return mask.astype(bool)
