"""Training augmentations and text sampling (numpy + OpenCV), the training and validation datasets.

Each transform takes a :class:`Sample` (image and boxes together) and returns a new one; randomness
comes only from the ``np.random.Generator`` passed in, so a sample is a pure function of
(seed, epoch, index). Boxes are xyxy float32 pixels throughout; box coordinates treat pixel ``i`` as
covering ``[i, i + 1)``, the convention the COCO boxes use.

The chain is the official (mask-refine) fine-tuning pipeline (YOLOWORLD.md 5.4); copy-paste and the
refined boxes use the objects' polygons where the dataset has them (``training.polygons``):

- stage 1: mosaic -> copy-paste -> random affine (crop the 2S canvas to S) -> [mixup with a second
  mosaic + copy-paste + affine] -> blur / median blur / gray / CLAHE (1 % each) -> HSV -> horizontal
  flip -> load text;
- stage 2 (``close_mosaic``, last epochs): letterbox -> random affine -> blur ... -> HSV -> flip ->
  load text.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from sdk.preprocess import PAD_VALUE, LetterboxInfo, letterbox, letterbox_geometry

from . import polygons
from .data import DetectionDataset, Record, RecordSource
from .polygons import Instance


@dataclass
class Sample:
    """An image with its annotations.

    image: (H, W, 3) uint8 BGR. boxes: (K, 4) float32 xyxy pixels. labels: (K,) int64 indices into
    ``texts``. texts: the prompts of each class (one list per class). polygons: per box its rings
    (``training.polygons``) or None, until the random affine has used them; None when there are none.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    texts: list[list[str]]
    polygons: list[Instance | None] | None = None

    @classmethod
    def from_record(cls, image: np.ndarray, record: Record) -> Sample:
        return cls(image, record.boxes, record.labels, record.texts,
                   None if record.polygons is None else list(record.polygons))

    def instances(self) -> list[Instance | None]:
        """Polygons per box (None for each when the sample has none)."""
        return list(self.polygons) if self.polygons is not None else [None] * len(self.boxes.reshape(-1, 4))


def _merge_texts(all_texts: list[list[list[str]]]) -> tuple[list[list[str]], list[np.ndarray | None]]:
    """Union of several class lists; per input, its label -> merged label map (None: unchanged).

    Classes that share a prompt are one class (a grounding phrase "red circle" and a detection
    class ["red circle", "red disk"]): two slots with the same text would make one the other's
    negative.
    """
    first = all_texts[0]
    if all(t is first or t == first for t in all_texts):
        return first, [None] * len(all_texts)
    merged: list[list[str]] = []
    index: dict[str, int] = {}  # prompt -> merged class
    maps = []
    for texts in all_texts:
        m = np.empty(len(texts), np.int64)
        for j, prompts in enumerate(texts):
            known = [index[p] for p in prompts if p in index]
            c = known[0] if known else len(merged)
            if not known:
                merged.append([])
            merged[c].extend(p for p in prompts if p not in index)
            index.update((p, c) for p in prompts if p not in index)
            m[j] = c
        maps.append(m)
    return merged, maps


def _positive(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def _flip_boxes(boxes: np.ndarray, width: float) -> np.ndarray:
    """xyxy ``(K, 4)`` mirrored left-right in an image ``width`` wide: x1' = W - x2, x2' = W - x1."""
    return np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)


def _polygons_or_none(instances: list[Instance | None]) -> list[Instance | None] | None:
    return instances if any(p is not None for p in instances) else None


def mosaic(samples: list[Sample], size: int, rng: np.random.Generator) -> Sample:
    """Four samples on a ``(2*size, 2*size)`` canvas filled with 114 (YOLOv5 mosaic).

    The tiles meet at a centre drawn uniformly in ``[0.5, 1.5] * size`` per axis; each is keep-ratio
    resized to fit ``size`` and placed top-left, top-right, bottom-left, bottom-right of it, cut at the
    canvas edge. Boxes are scaled, shifted and clipped to the canvas; texts are the union of the
    four class lists (classes sharing a prompt merged) with labels remapped (unchanged when all four
    lists are equal).
    """
    if len(samples) != 4:
        raise ValueError(f"mosaic needs 4 samples, got {len(samples)}")
    texts, label_maps = _merge_texts([s.texts for s in samples])
    side = 2 * size
    canvas = np.full((side, side, 3), PAD_VALUE, np.uint8)
    xc = int(rng.uniform(0.5 * size, 1.5 * size))
    yc = int(rng.uniform(0.5 * size, 1.5 * size))
    all_boxes, all_labels, all_polys = [], [], []
    for k, (s, label_map) in enumerate(zip(samples, label_maps, strict=True)):
        h0, w0 = s.image.shape[:2]
        r = min(size / h0, size / w0)
        # int() truncation as the official mosaic; boxes below scale by the size actually reached
        # (the official scales them by r, up to a pixel off the resized image)
        w, h = min(size, max(1, int(w0 * r))), min(size, max(1, int(h0 * r)))
        img = s.image if (h, w) == (h0, w0) else cv2.resize(s.image, (w, h),
                                                            interpolation=cv2.INTER_LINEAR)
        # canvas region (a) of tile k; the left tiles end at xc, the top tiles end at yc
        x1a, x2a = (max(xc - w, 0), xc) if k in (0, 2) else (xc, min(xc + w, side))
        y1a, y2a = (max(yc - h, 0), yc) if k in (0, 1) else (yc, min(yc + h, side))
        # the part of the tile that fell off the canvas is its left (top) side for left (top) tiles
        x1b = w - (x2a - x1a) if k in (0, 2) else 0
        y1b = h - (y2a - y1a) if k in (0, 1) else 0
        canvas[y1a:y2a, x1a:x2a] = img[y1b:y1b + (y2a - y1a), x1b:x1b + (x2a - x1a)]
        dx, dy = x1a - x1b, y1a - y1b
        scale = np.array([w / w0, h / h0, w / w0, h / h0], np.float32)
        all_boxes.append(s.boxes.reshape(-1, 4) * scale + np.array([dx, dy, dx, dy], np.float32))
        all_labels.append(s.labels if label_map is None else label_map[s.labels])
        # polygons are clipped to the canvas, as the official mosaic does (a tile's cut-off part lies
        # beyond the canvas edge, so this is also its visible part)
        all_polys += polygons.affine(s.instances(), (w / w0, h / h0), (dx, dy), (side, side))
    boxes = np.clip(np.concatenate(all_boxes), 0, side).astype(np.float32)
    keep = _positive(boxes)
    labels = np.concatenate(all_labels).astype(np.int64)[keep]
    polys = _polygons_or_none([p for p, k in zip(all_polys, keep, strict=True) if k])
    return Sample(canvas, boxes[keep], labels, texts, polys)


def copy_paste(s: Sample, rng: np.random.Generator, prob: float, ioa_thresh: float = 0.3) -> Sample:
    """Official ``YOLOv5CopyPaste``: objects whose mirrored box covers less than ``ioa_thresh`` of
    every box (its own included) are eligible; ``round(prob * n)`` of the ``n`` eligible ones (with
    polygons) are pasted, through their filled polygons, at their mirrored position, with their
    mirrored boxes and polygons appended."""
    if s.polygons is None or prob <= 0:
        return s
    h, w = s.image.shape[:2]
    boxes = s.boxes.reshape(-1, 4)
    flipped = _flip_boxes(boxes, w)
    iw = (np.minimum(flipped[:, None, 2], boxes[:, 2]) - np.maximum(flipped[:, None, 0], boxes[:, 0])).clip(0)
    ih = (np.minimum(flipped[:, None, 3], boxes[:, 3]) - np.maximum(flipped[:, None, 1], boxes[:, 1])).clip(0)
    ioa = iw * ih / ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + 1e-7)
    eligible = np.flatnonzero((ioa < ioa_thresh).all(axis=1) & np.array([p is not None for p in s.polygons]))
    chosen = np.sort(rng.choice(eligible, round(prob * len(eligible)), replace=False))
    if len(chosen) == 0:
        return s
    # The official fills one canvas-sized mask and copies through its mirror image; the same pixels,
    # object by object within each polygon's extent (no canvas-sized mask, flip or copy per object).
    # Every copy reads the input image, so overlapping pastes agree.
    image = s.image.copy()
    for i in chosen:
        pts = np.concatenate([r.reshape(-1, 2) for r in s.polygons[i]])
        c0, r0 = np.maximum(pts.min(axis=0).astype(int), 0)
        c1, r1 = np.minimum(pts.max(axis=0).astype(int) + 1, [w, h])
        if c1 <= c0 or r1 <= r0:
            continue
        mask = polygons.fill(polygons.affine([s.polygons[i]], (1, 1), (-c0, -r0)), r1 - r0, c1 - c0)
        # destination column w - 1 - x for source column x: the mirrored window, read right to left
        image[r0:r1, w - c1:w - c0][:, ::-1][mask] = s.image[r0:r1, c0:c1][mask]
    return Sample(image, np.concatenate([boxes, flipped[chosen]]).astype(np.float32),
                  np.concatenate([s.labels, s.labels[chosen]]), s.texts,
                  s.polygons + polygons.flip([s.polygons[i] for i in chosen], w))


def random_affine(s: Sample, rng: np.random.Generator, scale: tuple[float, float] = (0.5, 1.5),
                  translate: float = 0.1, border: tuple[int, int] = (0, 0),
                  out_size: int | tuple[int, int] | None = None, min_wh: float = 2,
                  min_area_ratio: float = 0.1, max_aspect: float = 100) -> Sample:
    """Random scale and translation (official config: no rotation, no shear), filled with 114.

    The output is ``(H + 2*border[0], W + 2*border[1])`` (``border`` is (y, x) pixels per side;
    negative crops, e.g. ``(-size/2, -size/2)`` turns the mosaic canvas into ``size``), or
    ``out_size`` ((h, w) or an int) when given. The image centre moves to ``(0.5 +- translate)`` of
    the output. Boxes are mapped, clipped, and dropped as YOLOv5RandomAffine does: width or height
    ``<= min_wh`` px, area below ``min_area_ratio`` of the scaled pre-warp box, aspect
    ``>= max_aspect``. A box with polygons is instead the extent of its resampled, warped polygon
    points inside the output (mask refine, :func:`training.polygons.refined_box`), clipped to
    ``size - 1e-3`` as the official; the polygons end here.
    """
    h, w = s.image.shape[:2]
    if out_size is None:
        out_h, out_w = h + 2 * int(border[0]), w + 2 * int(border[1])
    else:
        out_h, out_w = (out_size, out_size) if isinstance(out_size, int) else out_size
    k = rng.uniform(scale[0], scale[1])
    tx = rng.uniform(0.5 - translate, 0.5 + translate) * out_w
    ty = rng.uniform(0.5 - translate, 0.5 + translate) * out_h
    bx, by = tx - k * w / 2, ty - k * h / 2  # box coordinates: x' = k * x + bx
    # OpenCV maps pixel centres (box coordinate i + 0.5 is pixel i), hence the half-pixel shift that
    # keeps the warped pixels exactly under the warped boxes at every scale.
    m = np.array([[k, 0, bx + 0.5 * (k - 1)], [0, k, by + 0.5 * (k - 1)]], np.float64)
    image = cv2.warpAffine(s.image, m, (out_w, out_h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD_VALUE,) * 3)
    boxes = s.boxes.reshape(-1, 4).astype(np.float64)
    new = boxes * k + np.array([bx, by, bx, by])
    new = np.clip(new, 0, [out_w, out_h, out_w, out_h])
    for i, inst in enumerate(s.instances()):
        if inst is not None:
            new[i] = np.clip(polygons.refined_box(inst, k, (bx, by), out_w, out_h), 0,
                             [out_w - 1e-3, out_h - 1e-3, out_w - 1e-3, out_h - 1e-3])
    w2, h2 = new[:, 2] - new[:, 0], new[:, 3] - new[:, 1]
    w1, h1 = (boxes[:, 2] - boxes[:, 0]) * k, (boxes[:, 3] - boxes[:, 1]) * k
    aspect = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    keep = ((w2 > min_wh) & (h2 > min_wh) & (w2 * h2 / (w1 * h1 + 1e-16) > min_area_ratio)
            & (aspect < max_aspect))
    return Sample(image, new[keep].astype(np.float32), s.labels[keep], s.texts)


def mixup(a: Sample, b: Sample, rng: np.random.Generator, alpha: float = 32.0, beta: float = 32.0) -> Sample:
    """YOLOv5 MixUp of two equally sized samples: ``a * r + b * (1 - r)`` with ``r ~ Beta(32, 32)``
    (about 0.5), truncated to uint8 as the official code does; the boxes of both, texts merged."""
    if a.image.shape != b.image.shape:
        raise ValueError(f"mixup needs equal image shapes, got {a.image.shape} and {b.image.shape}")
    r = rng.beta(alpha, beta)
    image = (a.image * r + b.image * (1 - r)).astype(np.uint8)
    texts, maps = _merge_texts([a.texts, b.texts])
    labels = [x.labels if m is None else m[x.labels] for x, m in zip((a, b), maps, strict=True)]
    return Sample(image, np.concatenate([a.boxes.reshape(-1, 4), b.boxes.reshape(-1, 4)]).astype(np.float32),
                  np.concatenate(labels).astype(np.int64), texts)


def pixel_noise(s: Sample, rng: np.random.Generator, p: float = 0.01) -> Sample:
    """The official albumentations, each applied with probability ``p`` in this order: Blur and
    MedianBlur (kernel 3, 5 or 7), ToGray, CLAHE (clip limit U(1, 4), 8x8 tiles). Like the official
    pipeline, which hands its BGR image to albumentations as if it were RGB, gray and CLAHE's LAB use
    the RGB conversions on BGR pixels. Boxes are unchanged."""
    image = s.image
    draws = rng.random(4)  # always drawn, so later draws do not depend on p
    if draws[0] < p:
        k = int(rng.choice([3, 5, 7]))
        image = cv2.blur(image, (k, k))
    if draws[1] < p:
        image = cv2.medianBlur(image, int(rng.choice([3, 5, 7])))
    if draws[2] < p:
        image = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    if draws[3] < p:
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
        clahe = cv2.createCLAHE(clipLimit=float(rng.uniform(1.0, 4.0)), tileGridSize=(8, 8))
        lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
        image = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    return s if image is s.image else Sample(image, s.boxes, s.labels, s.texts)


def hsv(s: Sample, rng: np.random.Generator, gains: tuple[float, float, float] = (0.015, 0.7, 0.4)
        ) -> Sample:
    """Random hue/saturation/value gains ``1 + U(-1, 1) * gains`` through OpenCV 8-bit HSV LUTs.

    Hue is taken modulo 180 (OpenCV's 8-bit hue range); saturation and value are clipped to 255.
    """
    r = rng.uniform(-1, 1, 3) * np.asarray(gains, np.float64) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(s.image, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float64)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    out = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return Sample(cv2.cvtColor(out, cv2.COLOR_HSV2BGR), s.boxes, s.labels, s.texts)


def hflip(s: Sample, rng: np.random.Generator, p: float = 0.5) -> Sample:
    """Mirror left-right with probability ``p``: x1' = W - x2, x2' = W - x1."""
    if rng.random() >= p:  # always drawn, so later draws do not depend on p
        return s
    w = s.image.shape[1]
    boxes = s.boxes.reshape(-1, 4)
    flipped = _flip_boxes(boxes, w)
    return Sample(np.ascontiguousarray(s.image[:, ::-1]), flipped.astype(np.float32), s.labels, s.texts)


def train_letterbox_geometry(h: int, w: int, size: int, allow_scale_up: bool = True
                             ) -> tuple[tuple[int, int], LetterboxInfo]:
    """Resized (height, width) and :class:`LetterboxInfo` of :func:`letterbox_sample`.

    :func:`sdk.preprocess.letterbox_geometry` (the official test pipeline), plus what the official
    stage-2 ``LetterResize(allow_scale_up=True)`` does on top: when ``int()`` truncation left the
    long side one pixel short, the image is stretched to fill it.
    """
    (rh, rw), info = letterbox_geometry(h, w, size)
    if allow_scale_up and max(rh, rw) < size:
        r2 = min(size / rh, size / rw)
        rh, rw = round(rh * r2), round(rw * r2)  # Python round(), as LetterResize
        _, fitted = letterbox_geometry(rh, rw, size)  # long side == size: only the padding maths
        info = LetterboxInfo(scale_wh=(rw / w, rh / h), pad_tblr=fitted.pad_tblr, orig_hw=(h, w))
    return (rh, rw), info


def letterbox_sample(s: Sample, size: int, allow_scale_up: bool = True) -> Sample:
    """Keep-ratio resize and pad with 114 to ``(size, size)`` (stage 2 / close-mosaic); boxes
    follow. Geometry: :func:`train_letterbox_geometry`; pixels equal :func:`sdk.preprocess.letterbox`
    whenever the geometry does."""
    h, w = s.image.shape[:2]
    (rh, rw), info = train_letterbox_geometry(h, w, size, allow_scale_up)
    if (rh, rw) != letterbox_geometry(h, w, size)[0]:
        image = np.full((size, size, 3), PAD_VALUE, np.uint8)
        interp = cv2.INTER_AREA if rw < w else cv2.INTER_LINEAR
        top, _, left, _ = info.pad_tblr
        image[top:top + rh, left:left + rw] = cv2.resize(s.image, (rw, rh), interpolation=interp)
    else:
        image, info = letterbox(s.image, size)
    boxes = info.boxes_to_input(s.boxes.reshape(-1, 4))
    top, _, left, _ = info.pad_tblr
    polys = None if s.polygons is None else polygons.affine(s.polygons, info.scale_wh, (left, top))
    return Sample(image, boxes, s.labels, s.texts, polys)


def load_text(s: Sample, rng: np.random.Generator, num_texts: int = 80,
              num_neg: int | tuple[int, int] = 80, padding: str = ""
              ) -> tuple[Sample, list[str], np.ndarray]:
    """Sample the text list of one training image (official ``RandomLoadText``).

    Positives are the classes present (a random ``num_texts`` of them if more); negatives are drawn
    from the other classes, at most ``num_neg`` (or a number drawn from the ``(lo, hi)`` range), so
    that positives + negatives <= min(#classes, num_texts). The list is shuffled, one random prompt
    is chosen per class, boxes of classes left out are dropped and labels become positions in the
    list, which is padded with ``padding`` to ``num_texts``.

    Returns (sample with remapped labels and ``texts`` = the chosen prompts, the ``num_texts``
    strings, ``text_mask`` bool ``(num_texts,)`` True for real texts).
    """
    num_classes = len(s.texts)
    present = np.unique(s.labels)
    if len(present) > num_texts:
        present = np.sort(rng.choice(present, num_texts, replace=False))
    n_neg = num_neg if isinstance(num_neg, int) else int(rng.integers(num_neg[0], num_neg[1] + 1))
    n_neg = max(0, min(min(num_classes, num_texts) - len(present), n_neg))
    others = np.setdiff1d(np.arange(num_classes), present)
    negatives = rng.choice(others, n_neg, replace=False) if n_neg else np.zeros(0, np.int64)
    chosen = rng.permutation(np.concatenate([present, negatives]).astype(np.int64))
    position = np.full(num_classes, -1, np.int64)
    position[chosen] = np.arange(len(chosen))
    labels = position[s.labels]
    keep = labels >= 0
    prompts = [s.texts[c][int(rng.integers(len(s.texts[c])))] for c in chosen]
    strings = prompts + [padding] * (num_texts - len(prompts))
    mask = np.arange(num_texts) < len(prompts)
    sample = Sample(s.image, s.boxes.reshape(-1, 4)[keep], labels[keep], [[p] for p in prompts])
    return sample, strings, mask


@dataclass
class TrainTransform:
    """The official training chain for one output image of ``size x size``.

    Stage 1 (``mosaic=True``, four inputs, or eight with mixup): mosaic -> copy_paste ->
    random_affine(border=-size/2) -> [mixup with inputs 5-8 through the same three] -> pixel_noise ->
    hsv -> hflip -> load_text. Stage 2 (one input): letterbox_sample -> random_affine(no border) -> pixel_noise -> hsv
    -> hflip -> load_text. ``affine_scale``: scale range ``1 +- affine_scale`` (official 0.5 for S,
    0.9 for M/L/X). ``mixup_prob``: how often stage 1 mixes in a second mosaic (official 0.15 for
    S/L/X, 0.1 for M); the caller draws it (:meth:`draw_mixup`) to know how many inputs to load.
    ``pixel_noise_prob``: each albumentations step's probability (official 0.01). ``mask_refine``:
    use the samples' polygons (copy-paste after each mosaic with ``copypaste_prob``, official 0.3 for
    S/L/X and 0.1 for M; boxes refined by the affine); False ignores them.
    """

    size: int = 640
    affine_scale: float = 0.5
    num_texts: int = 80
    min_area_ratio: float = 0.1
    mosaic: bool = True
    mixup_prob: float = 0.0
    pixel_noise_prob: float = 0.01
    mask_refine: bool = True
    copypaste_prob: float = 0.0

    @property
    def num_inputs(self) -> int:
        """How many samples ``__call__`` takes without mixup: 4 with mosaic, else 1."""
        return 4 if self.mosaic else 1

    def draw_mixup(self, rng: np.random.Generator) -> bool:
        """Whether this stage-1 sample mixes in a second mosaic (no draw when ``mixup_prob`` is 0)."""
        return self.mixup_prob > 0 and rng.random() < self.mixup_prob

    def _polygons(self, s: Sample) -> Sample:
        if self.mask_refine or s.polygons is None:
            return s
        return Sample(s.image, s.boxes, s.labels, s.texts)

    def _mosaic_affine(self, samples: list[Sample], rng: np.random.Generator) -> Sample:
        s = mosaic([self._polygons(x) for x in samples], self.size, rng)
        return self._affine(copy_paste(s, rng, self.copypaste_prob), rng, -self.size // 2)

    def _affine(self, s: Sample, rng: np.random.Generator, border: int) -> Sample:
        return random_affine(s, rng, scale=(1 - self.affine_scale, 1 + self.affine_scale),
                             border=(border, border), out_size=(self.size, self.size),
                             min_area_ratio=self.min_area_ratio)

    def _finish(self, s: Sample, rng: np.random.Generator) -> tuple[Sample, list[str], np.ndarray]:
        s = hflip(hsv(pixel_noise(s, rng, self.pixel_noise_prob), rng), rng)
        return load_text(s, rng, num_texts=self.num_texts)

    def stage1(self, samples: list[Sample], rng: np.random.Generator
               ) -> tuple[Sample, list[str], np.ndarray]:
        """Mosaic chain: 4 samples (8: the last 4 are mixed in) -> (sample, ``num_texts`` strings,
        text_mask)."""
        if len(samples) not in (4, 8):
            raise ValueError(f"stage 1 takes 4 samples, or 8 with mixup; got {len(samples)}")
        s = self._mosaic_affine(samples[:4], rng)
        if len(samples) == 8:
            s = mixup(s, self._mosaic_affine(samples[4:], rng), rng)
        return self._finish(s, rng)

    def stage2(self, sample: Sample, rng: np.random.Generator) -> tuple[Sample, list[str], np.ndarray]:
        """Close-mosaic chain: 1 sample -> (sample, ``num_texts`` strings, text_mask)."""
        return self._finish(self._affine(letterbox_sample(self._polygons(sample), self.size), rng, 0), rng)

    def __call__(self, samples: list[Sample], rng: np.random.Generator
                 ) -> tuple[Sample, list[str], np.ndarray]:
        if len(samples) != self.num_inputs and not (self.mosaic and len(samples) == 8):
            raise ValueError(f"TrainTransform(mosaic={self.mosaic}) takes {self.num_inputs} samples"
                             f"{' (8 with mixup)' if self.mosaic else ''}, got {len(samples)}")
        return self.stage1(samples, rng) if self.mosaic else self.stage2(samples[0], rng)


def _to_chw_rgb(image_bgr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image_bgr[..., ::-1].transpose(2, 0, 1)))


_cv2_threads_set = False


class TrainDataset(torch.utils.data.Dataset):
    """Augmented training samples; sample ``i`` is a pure function of (seed, epoch, i).

    ``set_epoch`` and ``close_mosaic`` write to shared memory, so DataLoader workers (persistent or
    not) see them for every batch fetched after the call: call them before iterating the epoch.
    """

    def __init__(self, source: RecordSource, transform: TrainTransform, seed: int = 0) -> None:
        self.source = source
        self.transform = transform
        self.seed = seed
        self._state = torch.zeros(2, dtype=torch.int64).share_memory_()  # [epoch, mosaic closed]

    def __len__(self) -> int:
        return len(self.source)

    @property
    def epoch(self) -> int:
        return int(self._state[0])

    @property
    def mosaic_closed(self) -> bool:
        return bool(self._state[1])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random stream (the same for any number of workers)."""
        self._state[0] = int(epoch)

    def close_mosaic(self) -> None:
        """Switch to stage 2 (no mosaic) for the remaining epochs."""
        self._state[1] = 1

    def _sample(self, i: int) -> Sample:
        return Sample.from_record(*self.source.load(i))

    def __getitem__(self, i: int) -> dict:
        """``image`` uint8 (3, S, S) RGB; ``boxes`` float32 (K, 4) xyxy input pixels; ``labels``
        int64 (K,) positions in ``texts``; ``texts`` list of ``num_texts`` str; ``text_mask`` bool
        (num_texts,); ``image_id`` int."""
        global _cv2_threads_set
        if not _cv2_threads_set and torch.utils.data.get_worker_info() is not None:
            # OpenCV's thread pool can deadlock in forked workers and competes with them for cores
            cv2.setNumThreads(0)
            _cv2_threads_set = True
        i = int(i)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if self.transform.mosaic and not self.mosaic_closed:
            others = rng.integers(0, len(self), 3).tolist()
            if self.transform.draw_mixup(rng):  # a second mosaic of 4 random images is mixed in
                others += rng.integers(0, len(self), 4).tolist()
            s, texts, mask = self.transform.stage1([self._sample(j) for j in [i, *others]], rng)
        else:
            s, texts, mask = self.transform.stage2(self._sample(i), rng)
        return {"image": _to_chw_rgb(s.image), "boxes": torch.from_numpy(s.boxes.astype(np.float32)),
                "labels": torch.from_numpy(s.labels.astype(np.int64)), "texts": texts,
                "text_mask": torch.from_numpy(mask), "image_id": self.source.record(i).image_id}


def collate(batch: list[dict]) -> dict:
    """Stack :class:`TrainDataset` items; M = the most boxes of any image (0 when none has one).

    Returns ``images`` uint8 (B, 3, S, S) RGB; ``boxes`` float32 (B, M, 4) xyxy, zero-padded;
    ``labels`` int64 (B, M), -1 padded; ``box_mask`` bool (B, M); ``texts`` B lists of T str;
    ``text_mask`` bool (B, T); ``image_ids`` list of B int.
    """
    m = max(len(item["labels"]) for item in batch)
    boxes = torch.zeros(len(batch), m, 4, dtype=torch.float32)
    labels = torch.full((len(batch), m), -1, dtype=torch.int64)
    box_mask = torch.zeros(len(batch), m, dtype=torch.bool)
    for b, item in enumerate(batch):
        k = len(item["labels"])
        boxes[b, :k] = item["boxes"]
        labels[b, :k] = item["labels"]
        box_mask[b, :k] = True
    return {"images": torch.stack([item["image"] for item in batch]), "boxes": boxes, "labels": labels,
            "box_mask": box_mask, "texts": [list(item["texts"]) for item in batch],
            "text_mask": torch.stack([item["text_mask"] for item in batch]),
            "image_ids": [int(item["image_id"]) for item in batch]}


class ValDataset(torch.utils.data.Dataset):
    """Validation images letterboxed exactly as at inference (:func:`sdk.preprocess.letterbox`)."""

    def __init__(self, dataset: DetectionDataset, size: int) -> None:
        self.dataset = dataset
        self.size = size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        """``image`` uint8 (3, S, S) RGB; ``info`` :class:`LetterboxInfo` (maps boxes back to the
        original image); ``image_id`` int."""
        image, record = self.dataset.load(i)
        boxed, info = letterbox(image, self.size)
        return {"image": _to_chw_rgb(boxed), "info": info, "image_id": record.image_id}


def val_collate(batch: list[dict]) -> dict:
    """``images`` uint8 (B, 3, S, S) RGB, ``infos`` list of LetterboxInfo, ``image_ids`` list of int."""
    return {"images": torch.stack([item["image"] for item in batch]),
            "infos": [item["info"] for item in batch], "image_ids": [item["image_id"] for item in batch]}
