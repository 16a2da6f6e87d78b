"""Augmentations keep every box on its object; text sampling; determinism across workers; collate.

The box checks draw each object as a filled rectangle of its own hue (full saturation, on grey), so
the object is recognisable after any transform, HSV jitter included (hue moves by at most 1.5 %,
grey stays grey), and compare each output box with the pixels of its object.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from sdk.preprocess import PAD_VALUE, letterbox, letterbox_geometry
from training.data import read_data_yaml
from training.synthetic import make_shapes_dataset
from training.transforms import (
    Sample,
    TrainDataset,
    TrainTransform,
    ValDataset,
    collate,
    hflip,
    hsv,
    letterbox_sample,
    load_text,
    mixup,
    mosaic,
    pixel_noise,
    random_affine,
    train_letterbox_geometry,
    val_collate,
)

HUES = [0, 22, 45, 67, 90, 112, 135, 157]  # OpenCV 8-bit hue (0..179), one per object


def _bgr(hue: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in cv2.cvtColor(np.array([[[hue, 255, 255]]], np.uint8), cv2.COLOR_HSV2BGR)[0, 0])


def make_sample(hw: tuple[int, int], rects: list[tuple[int, int, int, int]], first: int = 0) -> Sample:
    """Grey image with object ``first + j`` drawn as rectangle j (xyxy); class j's text is 'obj<id>'."""
    rng = np.random.default_rng(len(rects) + first)
    grey = rng.integers(100, 140, size=(*hw, 1), dtype=np.uint8)  # a little texture, no colour
    image = np.repeat(grey, 3, axis=2)
    for j, (x1, y1, x2, y2) in enumerate(rects):
        image[y1:y2, x1:x2] = _bgr(HUES[first + j])
    boxes = np.array(rects, np.float32).reshape(-1, 4)
    return Sample(image, boxes, np.arange(len(rects), dtype=np.int64),
                  [[f"obj{first + j}"] for j in range(len(rects))])


def four_samples() -> list[Sample]:
    return [make_sample((120, 160), [(10, 20, 50, 70), (90, 60, 150, 110)], 0),
            make_sample((160, 100), [(5, 5, 45, 60), (40, 90, 95, 150)], 2),
            make_sample((90, 90), [(10, 10, 40, 40), (50, 45, 85, 85)], 4),
            make_sample((140, 140), [(0, 0, 60, 40), (70, 70, 140, 140)], 6)]  # touching the edges


def object_mask(image: np.ndarray, obj: int) -> np.ndarray:
    """Pixels at least about half covered by the object (interpolation blends edges with grey)."""
    h, s, _ = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    d = np.abs(h.astype(int) - HUES[obj])
    loose = (np.minimum(d, 180 - d) <= 6) & (s >= 30)
    if not loose.any():
        return loose
    # A blend with grey keeps the hue and lowers saturation; ~0.65 of the interior's saturation is
    # half coverage whatever gain the HSV jitter applied (the LUT scales saturation).
    return loose & (s >= 0.65 * np.percentile(s[loose], 90))


def check_boxes(s: Sample, tol: float = 1.0) -> set[int]:
    """Every box covers its object: >90 % of its pixels are the object's, and the object's visible
    pixels have the box as bounding box within ``tol`` px. Returns the objects that have a box."""
    seen = set()
    assert s.boxes.dtype == np.float32 and s.labels.dtype == np.int64
    assert len(s.boxes) == len(s.labels)
    for box, label in zip(s.boxes, s.labels, strict=True):
        obj = int(s.texts[label][0][3:])
        assert obj not in seen, "one box per object"
        seen.add(obj)
        mask = object_mask(s.image, obj)
        x1, y1, x2, y2 = box
        inner = mask[int(np.ceil(y1)) + 1:int(y2) - 1, int(np.ceil(x1)) + 1:int(x2) - 1]
        if inner.size:
            assert inner.mean() > 0.9, (obj, box, inner.mean())
        ys, xs = np.nonzero(mask)
        assert len(xs), (obj, box)
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box, atol=tol,
                                   err_msg=f"object {obj}")
    return seen


def visible_objects(image: np.ndarray, min_pixels: int = 30) -> set[int]:
    return {k for k in range(len(HUES)) if object_mask(image, k).sum() >= min_pixels}


# -- mosaic --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_mosaic_boxes_follow_objects(seed):
    out = mosaic(four_samples(), 96, np.random.default_rng(seed))
    assert out.image.shape == (192, 192, 3) and out.image.dtype == np.uint8
    assert sorted(t[0] for t in out.texts) == [f"obj{k}" for k in range(8)]  # union of the 4 lists
    boxed = check_boxes(out)
    assert visible_objects(out.image) <= boxed  # mosaic only clips: nothing visible loses its box
    assert (out.boxes >= 0).all() and (out.boxes <= 192).all()


def test_mosaic_hand_computed_placement():
    size = 64
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    samples = [Sample(np.full((size, size, 3), c, np.uint8), np.array([[0, 0, size, size]], np.float32),
                      np.array([0]), [["x"]]) for c in colours]
    for seed in range(4):
        out = mosaic(samples, size, np.random.default_rng(seed))
        draw = np.random.default_rng(seed)
        xc, yc = int(draw.uniform(32, 96)), int(draw.uniform(32, 96))
        # the four tiles meet at (xc, yc): tile 0 ends there, 1 is to its right, 2 below, 3 diagonal
        assert tuple(out.image[yc - 1, xc - 1]) == colours[0] and tuple(out.image[yc - 1, xc]) == colours[1]
        assert tuple(out.image[yc, xc - 1]) == colours[2] and tuple(out.image[yc, xc]) == colours[3]
        expected = [[max(xc - size, 0), max(yc - size, 0), xc, yc],
                    [xc, max(yc - size, 0), min(xc + size, 128), yc],
                    [max(xc - size, 0), yc, xc, min(yc + size, 128)],
                    [xc, yc, min(xc + size, 128), min(yc + size, 128)]]
        np.testing.assert_array_equal(out.boxes, expected)
        assert out.texts is samples[0].texts and out.labels.tolist() == [0, 0, 0, 0]  # same vocabulary
        covered = (out.image != PAD_VALUE).any(axis=2)  # the rest of the canvas is 114
        assert covered.sum() == (min(xc + size, 128) - max(xc - size, 0)) * (
            min(yc + size, 128) - max(yc - size, 0))


def test_mosaic_tile_size_truncates_like_the_official():
    """A 90x35 image into 64: ratio 0.711, height 24.9 -> 24 rows (int(), as the official Mosaic)."""
    tile = Sample(np.full((35, 90, 3), 200, np.uint8), np.array([[0, 0, 90, 35]], np.float32), np.array([0]),
                  [["x"]])
    rng = np.random.default_rng(0)
    out = mosaic([tile] * 4, 64, rng)
    draw = np.random.default_rng(0)
    xc, yc = int(draw.uniform(32, 96)), int(draw.uniform(32, 96))
    np.testing.assert_array_equal(out.boxes[3], [xc, yc, min(xc + 64, 128), min(yc + 24, 128)])
    assert (out.image[yc:yc + 24, xc] == 200).all() and (out.image[yc + 24:, xc] == PAD_VALUE).all()


def test_mosaic_merges_classes_that_share_a_prompt():
    def tile(texts, boxes, labels):
        return Sample(np.full((32, 32, 3), 50, np.uint8), np.array(boxes, np.float32),
                      np.array(labels, np.int64), texts)

    whole, halves = [[0, 0, 32, 32]], [[0, 0, 16, 32], [16, 0, 32, 32]]
    samples = [tile([["red circle", "red disk"]], whole, [0]),  # a detection vocabulary
               tile([["red circle"]], whole, [0]),  # grounding phrases
               tile([["blue square"]], whole, [0]),
               tile([["red disk"], ["blue square"]], halves, [0, 1])]
    out = mosaic(samples, 32, np.random.default_rng(0))
    assert out.texts == [["red circle", "red disk"], ["blue square"]]
    assert out.labels.tolist() == [0, 0, 1, 0, 1] and len(out.boxes) == 5


# -- random affine -------------------------------------------------------------------------------
def test_affine_identity_crop_and_box_filter():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(100, 100, 3), dtype=np.uint8)
    boxes = np.array([[20, 20, 40, 50],  # -> [-5, -5, 15, 25] clipped to [0, 0, 15, 25]: 62.5 % kept
                      [10, 10, 28, 28],  # -> [0, 0, 3, 3]: 9 / 324 of its area < 0.1: dropped
                      [60, 30, 61.5, 40],  # 1.5 px wide <= 2: dropped
                      [30, 30, 70, 34],  # aspect 10 >= max_aspect 5: dropped
                      [40, 40, 60, 50]], np.float32)  # inside: shifted by -25
    s = Sample(image, boxes, np.arange(5), [[str(k)] for k in range(5)])
    out = random_affine(s, rng, scale=(1, 1), translate=0, border=(-25, -25), max_aspect=5)
    np.testing.assert_array_equal(out.image, image[25:75, 25:75])  # scale 1: an exact crop
    np.testing.assert_allclose(out.boxes, [[0, 0, 15, 25], [15, 15, 35, 25]])
    assert out.labels.tolist() == [0, 4]
    assert len(random_affine(s, rng, scale=(1, 1), translate=0, border=(-25, -25),
                             min_area_ratio=0.7, max_aspect=5).boxes) == 1  # 62.5 % < 70 %: dropped


def test_affine_scale_two_maps_pixels_under_boxes():
    s = make_sample((40, 40), [(15, 15, 25, 25)])
    for k, expected in ((2, [10, 10, 30, 30]), (3, [5, 5, 35, 35])):  # x' = k x + 20 - 20 k
        out = random_affine(s, np.random.default_rng(0), scale=(k, k), translate=0)
        np.testing.assert_allclose(out.boxes, [expected])
        check_boxes(out, tol=0)  # exact: pixel centres and box edges are warped alike
    out = random_affine(s, np.random.default_rng(0), scale=(0.5, 0.5), translate=0, out_size=(30, 50))
    np.testing.assert_allclose(out.boxes, [[22.5, 12.5, 27.5, 17.5]])  # x' = x / 2 + 25 - 10
    assert out.image.shape == (30, 50, 3) and (out.image[0, 0] == PAD_VALUE).all()


@pytest.mark.parametrize("seed", range(6))
def test_affine_boxes_follow_objects(seed):
    base = mosaic(four_samples(), 96, np.random.default_rng(seed))
    out = random_affine(base, np.random.default_rng(seed), border=(-48, -48))
    assert out.image.shape == (96, 96, 3)
    check_boxes(out)


# -- flip, hsv, letterbox ------------------------------------------------------------------------
def test_hflip_hand_computed():
    s = make_sample((50, 100), [(10, 20, 30, 40)])
    out = hflip(s, np.random.default_rng(0), p=1.0)
    np.testing.assert_array_equal(out.boxes, [[70, 20, 90, 40]])
    np.testing.assert_array_equal(out.image, s.image[:, ::-1])
    check_boxes(out, tol=0)
    assert hflip(s, np.random.default_rng(0), p=0.0) is s
    flips = [hflip(s, np.random.default_rng(k)).boxes[0, 0] == 70 for k in range(200)]
    assert 70 < sum(flips) < 130  # p = 0.5


def test_hsv_keeps_objects_and_grey_and_wraps_hue():
    s = make_sample((60, 80), [(5, 5, 30, 40), (40, 10, 75, 55)], first=3)
    for seed in range(5):
        out = hsv(s, np.random.default_rng(seed))
        assert out.boxes is s.boxes and out.labels is s.labels
        check_boxes(out, tol=0)
        grey = out.image[58, 2].astype(int)  # a background pixel: saturation 0 stays 0
        assert abs(grey[0] - grey[1]) <= 1 and abs(grey[1] - grey[2]) <= 1
    # hue is taken modulo 180: find a draw whose hue gain pushes hue 170 past 180
    image = cv2.cvtColor(np.full((4, 4, 3), (170, 255, 255), np.uint8), cv2.COLOR_HSV2BGR)
    seed = next(k for k in range(100) if np.random.default_rng(k).uniform(-1, 1, 3)[0] > 0.5)
    gain = np.random.default_rng(seed).uniform(-1, 1, 3)[0] * 0.2 + 1
    out = hsv(Sample(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), []),
              np.random.default_rng(seed), gains=(0.2, 0, 0))
    hue = cv2.cvtColor(out.image, cv2.COLOR_BGR2HSV)[0, 0, 0]
    assert 170 * gain > 180 and abs(int(hue) - (170 * gain) % 180) <= 2


@pytest.mark.parametrize(
    ("hw", "size"),
    [((120, 160), 96), ((160, 100), 128), ((50, 30), 96), ((154, 100), 640)],
)
def test_letterbox_sample_uses_sdk_geometry(hw, size):
    h, w = hw
    s = make_sample(hw, [(2, 3, int(w * 0.4), int(h * 0.45)), (int(w * 0.6), int(h * 0.5), w - 2, h - 3)])
    (rh, rw), info = letterbox_geometry(*hw, size)
    out = letterbox_sample(s, size, allow_scale_up=False)
    np.testing.assert_array_equal(out.image, letterbox(s.image, size)[0])
    np.testing.assert_allclose(out.boxes, info.boxes_to_input(s.boxes), atol=1e-4)
    check_boxes(out, tol=1.5)
    up = letterbox_sample(s, size)  # official stage 2: allow_scale_up=True
    check_boxes(up, tol=1.5)
    if max(rh, rw) == size:  # nothing to scale up: identical to the test pipeline
        np.testing.assert_array_equal(up.image, out.image)


def test_letterbox_scale_up_fills_truncated_pixel():
    # (154, 100) at 640: int() truncation gives 639 x 415; LetterResize(allow_scale_up=True) then
    # stretches to 640 x round(415 * 640 / 639) = 640 x 416, padded 112 left and right
    assert letterbox_geometry(154, 100, 640)[0] == (639, 415)
    (rh, rw), info = train_letterbox_geometry(154, 100, 640)
    assert (rh, rw) == (640, 416) and info.pad_tblr == (0, 0, 112, 112)
    assert train_letterbox_geometry(154, 100, 640, allow_scale_up=False)[1] == letterbox_geometry(154, 100, 640)[1]
    s = Sample(np.full((154, 100, 3), 200, np.uint8), np.array([[0, 0, 100, 154]], np.float32),
               np.array([0]), [["x"]])
    out = letterbox_sample(s, 640)
    np.testing.assert_allclose(out.boxes, [[112, 0, 528, 640]], atol=1e-3)
    assert (out.image[:, 112:528] == 200).all() and (out.image[:, :112] == PAD_VALUE).all()
    assert (out.image[:, 528:] == PAD_VALUE).all()


# -- load_text -----------------------------------------------------------------------------------
def _text_sample(labels, texts) -> Sample:
    n = len(labels)
    boxes = np.stack([np.arange(n), np.zeros(n), np.arange(n) + 1, np.ones(n)], 1).astype(np.float32)
    return Sample(np.zeros((4, 4, 3), np.uint8), boxes, np.asarray(labels, np.int64), texts)


def test_load_text_keeps_positives_remaps_and_pads():
    texts = [["a"], ["b", "b2"], ["c"], ["d"], ["e"]]
    s = _text_sample([1, 3, 1], texts)
    orders = set()
    for seed in range(30):
        out, strings, mask = load_text(s, np.random.default_rng(seed), num_texts=8)
        assert len(strings) == 8 and strings[5:] == ["", "", ""]
        assert mask.dtype == bool and mask.tolist() == [True] * 5 + [False] * 3
        assert set(strings[:5]) - {"b", "b2"} == {"a", "c", "d", "e"}  # every class once
        # boxes kept in order; each label now points at its class's prompt
        assert [strings[k] for k in out.labels] in (["b", "d", "b"], ["b2", "d", "b2"])
        np.testing.assert_array_equal(out.boxes, s.boxes)
        assert out.texts == [[t] for t in strings[:5]]
        orders.add(tuple(strings[:5]))
    assert len(orders) > 10  # shuffled


def test_load_text_synonyms_and_padding_value():
    s = _text_sample([0], [["b", "b2"]])
    prompts = {load_text(s, np.random.default_rng(k), num_texts=3, padding="<pad>")[1][0] for k in range(40)}
    assert prompts == {"b", "b2"}  # one random prompt per class
    _, strings, mask = load_text(s, np.random.default_rng(0), num_texts=3, padding="<pad>")
    assert strings[1:] == ["<pad>", "<pad>"] and mask.tolist() == [True, False, False]


def test_load_text_positives_always_in_list():
    texts = [[f"c{k}"] for k in range(100)]
    s = _text_sample([7, 42, 99, 42], texts)
    for seed in range(20):
        out, strings, mask = load_text(s, np.random.default_rng(seed), num_texts=80, num_neg=80)
        assert mask.all() and len(set(strings)) == 80  # 3 positives + 77 negatives, no padding
        assert {"c7", "c42", "c99"} <= set(strings)
        assert [strings[k] for k in out.labels] == ["c7", "c42", "c99", "c42"]
    _, strings, mask = load_text(s, np.random.default_rng(0), num_texts=80, num_neg=1)
    assert mask.sum() == 4 and {"c7", "c42", "c99"} <= set(strings[:4])  # 3 positives + 1 negative


def test_load_text_more_present_classes_than_slots_drops_their_boxes():
    texts = [[f"c{k}"] for k in range(6)]
    s = _text_sample([0, 1, 2, 3, 4, 5, 0, 5], texts)
    kept_sets = set()
    for seed in range(20):
        out, strings, mask = load_text(s, np.random.default_rng(seed), num_texts=3)
        assert mask.tolist() == [True] * 3 and len(set(strings)) == 3  # positives only, no negatives
        original = [texts[k][0] for k in s.labels]
        expected = [(b, t) for b, t in zip(s.boxes.tolist(), original, strict=True) if t in strings]
        assert [(b, strings[k]) for b, k in zip(out.boxes.tolist(), out.labels, strict=True)] == expected
        kept_sets.add(frozenset(strings))
    assert len(kept_sets) > 5  # a random subset of the present classes


def test_load_text_without_classes():
    out, strings, mask = load_text(_text_sample([], []), np.random.default_rng(0), num_texts=4)
    assert strings == [""] * 4 and not mask.any() and out.boxes.shape == (0, 4) and out.texts == []


# -- the full chain ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_train_transform_boxes_follow_objects(seed):
    transform = TrainTransform(size=96, affine_scale=0.5, num_texts=12, pixel_noise_prob=0.0)
    s1, strings, mask = transform(four_samples(), np.random.default_rng(seed))
    assert s1.image.shape == (96, 96, 3) and len(strings) == 12 and mask.sum() == 8
    check_boxes(s1)
    transform.mosaic = False
    s2, strings, mask = transform([four_samples()[seed]], np.random.default_rng(seed))
    assert s2.image.shape == (96, 96, 3) and mask.sum() == 2 and strings[2:] == [""] * 10
    check_boxes(s2)
    with pytest.raises(ValueError, match="takes 1 samples, got 4"):
        transform(four_samples(), np.random.default_rng(seed))


def test_mixup_hand_computed():
    a = Sample(np.full((4, 6, 3), 100, np.uint8), np.array([[0, 0, 2, 2]], np.float32), np.array([1]),
               [["cat"], ["dog"]])
    b = Sample(np.full((4, 6, 3), 201, np.uint8), np.array([[1, 1, 5, 3], [2, 0, 4, 4]], np.float32),
               np.array([0, 1]), [["bus"], ["cat"]])
    r = np.random.default_rng(5).beta(32.0, 32.0)
    out = mixup(a, b, np.random.default_rng(5))
    assert 0.3 < r < 0.7 and (out.image == int(100 * r + 201 * (1 - r))).all()  # truncated, as official
    np.testing.assert_array_equal(out.boxes, [[0, 0, 2, 2], [1, 1, 5, 3], [2, 0, 4, 4]])
    assert out.texts == [["cat"], ["dog"], ["bus"]]  # b's "cat" is a's class 0
    assert [out.texts[k] for k in out.labels] == [["dog"], ["bus"], ["cat"]]
    with pytest.raises(ValueError, match="equal image shapes"):
        mixup(a, Sample(np.zeros((5, 6, 3), np.uint8), b.boxes, b.labels, b.texts), np.random.default_rng(0))


def test_mixup_in_the_chain_adds_the_second_mosaics_boxes():
    """Eight inputs: the same rng gives the same first mosaic, and the second one's boxes are added."""
    rng = np.random.default_rng(1)
    plain, _, _ = TrainTransform(size=96, num_texts=16, pixel_noise_prob=0.0)(four_samples(), rng)
    mixed, strings, _ = TrainTransform(size=96, num_texts=16, mixup_prob=1.0, pixel_noise_prob=0.0)(
        four_samples() + four_samples()[::-1], np.random.default_rng(1))
    assert mixed.image.shape == (96, 96, 3) and len(mixed.boxes) > len(plain.boxes)
    assert sorted(strings[:8]) == sorted(f"obj{k}" for k in range(8))  # one class list: texts merged
    with pytest.raises(ValueError, match="4 samples, or 8 with mixup"):
        TrainTransform().stage1(four_samples()[:3], np.random.default_rng(0))


def test_mixup_off_draws_nothing():
    rng, ref = np.random.default_rng(7), np.random.default_rng(7)
    assert not TrainTransform(mixup_prob=0.0).draw_mixup(rng)
    assert rng.random() == ref.random()  # the stream is where it was: outputs without mixup are unchanged


@pytest.mark.parametrize("step", range(4))
def test_pixel_noise_each_step(step):
    """With p = 1 every step runs; a generator whose first four draws pick one step isolates it."""
    s = make_sample((64, 64), [(10, 10, 40, 40)])
    s.image[::2] = 30  # stripes: blurs change them
    draws = np.ones(4)
    draws[step] = 0.0

    class Rng:  # the first call gives the four step draws, the rest come from a real generator
        def __init__(self):
            self.real, self.first = np.random.default_rng(0), True

        def random(self, n=None):
            if self.first:
                self.first = False
                return draws
            return self.real.random(n)

        def __getattr__(self, name):
            return getattr(self.real, name)

    out = pixel_noise(s, Rng(), p=0.5)
    np.testing.assert_array_equal(out.boxes, s.boxes)
    if step == 0:
        assert any(np.array_equal(out.image, cv2.blur(s.image, (k, k))) for k in (3, 5, 7))
    elif step == 1:
        assert any(np.array_equal(out.image, cv2.medianBlur(s.image, k)) for k in (3, 5, 7))
    elif step == 2:
        gray = cv2.cvtColor(s.image, cv2.COLOR_RGB2GRAY)  # RGB weights on BGR pixels, as the official
        assert all(np.array_equal(out.image[..., c], gray) for c in range(3))
    else:
        assert not np.array_equal(out.image, s.image) and out.image.shape == s.image.shape
    assert pixel_noise(s, np.random.default_rng(0), p=0.0) is s


def test_train_transform_keeps_most_boxes():
    # a filter that silently dropped everything would pass the per-box checks
    transform = TrainTransform(size=96, num_texts=8)
    kept = sum(len(transform(four_samples(), np.random.default_rng(k))[0].boxes) for k in range(10))
    assert kept >= 30  # 10 draws x 8 objects; the mosaic crop hides about half


# -- datasets, determinism, collate ----------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    yaml_path = make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=3, size=96)
    return read_data_yaml(yaml_path)


def _train_dataset(shapes, seed=0, mixup_prob=0.0) -> TrainDataset:
    return TrainDataset(shapes.build_train(min_size=0), TrainTransform(size=64, num_texts=6, mixup_prob=mixup_prob),
                        seed=seed)


def test_dataset_mixup_loads_a_second_mosaic(shapes):
    plain, mixed = _train_dataset(shapes), _train_dataset(shapes, mixup_prob=1.0)
    n_plain = sum(len(plain[i]["boxes"]) for i in range(len(plain)))
    n_mixed = sum(len(mixed[i]["boxes"]) for i in range(len(mixed)))
    assert n_mixed > 1.5 * n_plain  # about twice the objects
    assert _same(mixed[2], mixed[2])  # still a function of (seed, epoch, index)


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def test_train_item_contract(shapes):
    ds = _train_dataset(shapes)
    item = ds[3]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 64, 64)
    k = len(item["labels"])
    assert item["boxes"].dtype == torch.float32 and item["boxes"].shape == (k, 4)
    assert item["labels"].dtype == torch.int64 and item["text_mask"].dtype == torch.bool
    assert len(item["texts"]) == 6 and item["text_mask"].shape == (6,)
    assert item["text_mask"].sum() == 4  # the four shape classes, then padding
    assert item["image_id"] == ds.source.record(3).image_id
    assert (item["labels"] < item["text_mask"].sum()).all()


def test_sample_is_a_function_of_seed_epoch_index(shapes):
    a, b = _train_dataset(shapes), _train_dataset(shapes)
    assert _same(a[2], b[2])  # two instances, same seed
    assert not _same(a[2], a[3])
    before = a[2]
    a.set_epoch(1)
    assert a.epoch == 1 and not _same(before, a[2])
    b.set_epoch(1)
    assert _same(a[2], b[2])
    assert not _same(_train_dataset(shapes, seed=1)[2], _train_dataset(shapes, seed=0)[2])
    a.close_mosaic()
    assert a.mosaic_closed and not _same(a[2], b[2])


def _epochs(ds: TrainDataset, loader) -> list[list[dict]]:
    out = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        if epoch == 2:
            ds.close_mosaic()
        out.append(list(loader))
    return out


def test_workers_give_the_same_batches(shapes):
    ds0, ds2 = _train_dataset(shapes), _train_dataset(shapes)
    serial = _epochs(ds0, torch.utils.data.DataLoader(ds0, batch_size=3, collate_fn=collate))
    # persistent workers keep their own copy of the dataset: epoch and stage must still reach them
    loader = torch.utils.data.DataLoader(ds2, batch_size=3, collate_fn=collate, num_workers=2,
                                         persistent_workers=True)
    parallel = _epochs(ds2, loader)
    for e in range(3):
        assert len(serial[e]) == len(parallel[e]) == 3
        for a, b in zip(serial[e], parallel[e], strict=True):
            assert _same(a, b)
    assert not _same(serial[0][0], serial[1][0])  # a new epoch draws new augmentations
    assert serial[2][0]["images"].shape == (3, 3, 64, 64)


def test_mixed_detection_and_grounding_source(shapes, tmp_path):
    # grounding phrases and detection classes meet in one mosaic: texts are merged, labels remapped
    from training.data import GroundingDataset, MixedDataset

    root = shapes.train[0].ann_file.parent.parent
    grounding = GroundingDataset(root / "annotations" / "grounding.json", root / "train", min_size=0)
    ds = TrainDataset(MixedDataset([shapes.build_train(min_size=0), grounding]),
                      TrainTransform(size=64, num_texts=8), seed=0)
    prompts = {p for ps in shapes.class_texts for p in ps}
    n_boxes = 0
    for i in range(len(ds)):
        item = ds[i]
        real = [t for t, m in zip(item["texts"], item["text_mask"].tolist(), strict=True) if m]
        assert len(real) == len(set(real)) and set(real) <= prompts  # phrases are the class names
        assert (item["labels"] < len(real)).all()
        n_boxes += len(item["labels"])
    assert len(ds) == 16 and n_boxes > 0


def test_collate_pads_boxes_and_labels():
    def item(k: int, image_id: int) -> dict:
        return {"image": torch.full((3, 8, 8), image_id, dtype=torch.uint8),
                "boxes": torch.arange(4 * k, dtype=torch.float32).reshape(k, 4) + 1,
                "labels": torch.arange(k), "texts": [f"t{image_id}", ""],
                "text_mask": torch.tensor([True, False]), "image_id": image_id}

    batch = collate([item(2, 1), item(0, 2), item(3, 3)])
    assert batch["images"].shape == (3, 3, 8, 8) and batch["images"].dtype == torch.uint8
    assert batch["boxes"].shape == (3, 3, 4) and batch["labels"].shape == (3, 3)
    assert batch["box_mask"].tolist() == [[True, True, False], [False] * 3, [True] * 3]
    assert batch["labels"].tolist() == [[0, 1, -1], [-1, -1, -1], [0, 1, 2]]
    assert (batch["boxes"][~batch["box_mask"]] == 0).all()
    torch.testing.assert_close(batch["boxes"][2], item(3, 3)["boxes"])
    assert batch["texts"] == [["t1", ""], ["t2", ""], ["t3", ""]] and batch["image_ids"] == [1, 2, 3]
    assert batch["text_mask"].shape == (3, 2) and batch["text_mask"].dtype == torch.bool
    empty = collate([item(0, 1), item(0, 2)])
    assert empty["boxes"].shape == (2, 0, 4) and empty["labels"].shape == (2, 0)


def test_val_dataset_letterboxes_like_inference(shapes):
    val = shapes.build_val()
    ds = ValDataset(val, 64)
    items = [ds[i] for i in range(len(ds))]
    for i, it in enumerate(items):
        image, rec = val.load(i)
        boxed, info = letterbox(image, 64)
        torch.testing.assert_close(it["image"], torch.from_numpy(boxed[..., ::-1].transpose(2, 0, 1).copy()))
        assert it["info"] == info and it["image_id"] == rec.image_id
    batch = val_collate(items)
    assert batch["images"].shape == (3, 3, 64, 64) and batch["images"].dtype == torch.uint8
    assert batch["image_ids"] == val.image_ids and len(batch["infos"]) == 3
