"""NMS: hand-computed cases, the loop against a brute-force reference, and the loop-free NMS against the loop.

The loop-free :func:`sdk.nms.batched_nms` computes every IoU with the loop's float32 operations in the loop's
order, so the edge where float rounding could flip a decision (an IoU within rounding of the threshold)
has width zero: the kept indices must equal :func:`sdk.nms.batched_nms_reference`'s exactly, order
included. The random sets put IoUs exactly on the threshold, ties and degenerate boxes in on purpose.
"""

from __future__ import annotations

import numpy as np
import pytest

import sdk.nms as nms_module
from sdk.nms import batched_nms, batched_nms_reference, box_iou, nms, nms_reference


def brute_force_nms(boxes, scores, labels, thr, agnostic=False):
    """Textbook greedy NMS with double loops and float64 IoU."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep, dead = [], set()
    for a, i in enumerate(order):
        if i in dead:
            continue
        keep.append(i)
        for j in order[a + 1:]:
            if j in dead or (not agnostic and labels[i] != labels[j]):
                continue
            bi, bj = boxes[i].astype(float), boxes[j].astype(float)
            iw = max(0.0, min(bi[2], bj[2]) - max(bi[0], bj[0]))
            ih = max(0.0, min(bi[3], bj[3]) - max(bi[1], bj[1]))
            inter = iw * ih
            union = (bi[2] - bi[0]) * (bi[3] - bi[1]) + (bj[2] - bj[0]) * (bj[3] - bj[1]) - inter
            if union > 0 and inter / union > thr:
                dead.add(j)
    return keep


def both(boxes, scores, labels, thr, max_keep=None, agnostic=False):
    """The loop-free NMS's kept indices, after checking they equal the loop's."""
    got = batched_nms(boxes, scores, labels, thr, max_keep, agnostic)
    ref = batched_nms_reference(boxes, scores, labels, thr, max_keep, agnostic)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, ref)
    return got.tolist()


def test_iou_hand_computed():
    box = np.array([0, 0, 10, 10], np.float32)
    others = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [10, 10, 20, 20], [0, 0, 5, 5]], np.float32)
    np.testing.assert_allclose(box_iou(box, others), [1.0, 50 / 150, 0.0, 0.25], rtol=1e-6)


def test_nms_hand_computed():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    # box 1 overlaps box 0 with IoU 90/110 = 0.818 > 0.7 -> suppressed; box 3 duplicates box 0
    assert nms(boxes, scores, 0.7).tolist() == nms_reference(boxes, scores, 0.7).tolist() == [0, 2]
    assert nms(boxes, scores, 0.85).tolist() == [0, 1, 2]  # 0.818 <= 0.85 survives
    labels = np.array([0, 1, 0, 1])
    assert both(boxes, scores, labels, 0.7) == [0, 1, 2]  # other class survives
    assert both(boxes, scores, labels, 0.7, agnostic=True) == [0, 2]
    assert both(boxes, scores, labels, 0.7, max_keep=2) == [0, 1]
    assert both(boxes, scores, labels, 0.7, max_keep=0) == []


@pytest.mark.parametrize(("boxes", "scores", "thr", "expected"), [
    # equal scores: the earlier index ranks first and suppresses its duplicate
    ([[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.5], 0.7, [0]),
    ([[20, 0, 30, 10], [0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.5, 0.5], 0.7, [0, 1]),
    # IoU exactly 0.5 (50 / 100) at threshold 0.5 is not above it: both kept; just below 0.5: suppressed
    ([[0, 0, 10, 10], [0, 0, 10, 5]], [0.9, 0.8], 0.5, [0, 1]),
    ([[0, 0, 10, 10], [0, 0, 10, 5]], [0.9, 0.8], 0.4999, [0]),
    # IoU 7 / 10 against threshold 0.7: float32(7/10) == float32(0.7), not above: kept
    ([[0, 0, 10, 1], [0, 0, 7, 1]], [0.9, 0.8], 0.7, [0, 1]),
    # zero-area boxes (a point, a horizontal and a vertical segment, duplicated) have IoU 0 with
    # everything: never suppress, never suppressed
    ([[5, 5, 5, 5], [5, 5, 5, 5], [0, 5, 10, 5], [0, 5, 10, 5], [5, 0, 5, 10], [0, 0, 10, 10]],
     [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], 0.1, [0, 1, 2, 3, 4, 5]),
    # inverted boxes (x2 < x1) likewise, even one duplicating a real box's corners in reverse
    ([[10, 10, 0, 0], [0, 0, 10, 10], [10, 10, 0, 0]], [0.9, 0.8, 0.7], 0.1, [0, 1, 2]),
])
def test_hand_computed_edges(boxes, scores, thr, expected):
    boxes, scores = np.array(boxes, np.float32), np.array(scores, np.float32)
    assert both(boxes, scores, np.zeros(len(boxes), np.int64), thr) == expected


def test_class_1202_decided_on_its_own_coordinates():
    # IoU(a, b) = 10000 / 14285.0006 = 0.700035 > 0.7: b is suppressed. The float32 offset trick
    # (boxes + 1202 * (640 + 1) = 770482) rounds b's y2 to 1/16 px and gets 0.699913: b would survive.
    boxes = np.array([[100, 100, 200, 200], [100, 100, 200, 242.85], [0, 0, 640, 640]], np.float32)
    scores = np.array([0.9, 0.8, 0.1], np.float32)
    labels = np.array([1202, 1202, 0])
    assert both(boxes, scores, labels, 0.7) == [0, 2]
    shifted = boxes + (labels * np.float32(641)).astype(np.float32)[:, None]
    assert box_iou(boxes[0], boxes[1:2])[0] > 0.7 >= box_iou(shifted[0], shifted[1:2])[0]  # why it matters


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("agnostic", [False, True])
def test_matches_brute_force(seed, agnostic):
    rs = np.random.RandomState(seed)
    xy = rs.uniform(0, 200, (150, 2))
    wh = rs.uniform(5, 80, (150, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rs.permutation(150).astype(np.float32) / 150  # distinct scores: a unique answer
    labels = rs.randint(0, 4, 150)
    got = both(boxes, scores, labels, 0.5, agnostic=agnostic)
    assert got == brute_force_nms(boxes, scores, labels, 0.5, agnostic)
    assert len(got) < 150  # the case does suppress


def random_candidates(rs: np.random.RandomState, n: int, classes: int, thr: float):
    """``n`` detector-like candidates: jittered copies of a few objects (dense suppression), scores on a
    coarse grid (many ties), ~2 % degenerate boxes (zero width or height, inverted), and pairs whose
    float32 IoU is exactly the threshold."""
    objects = max(1, n // 40)
    base_xy = rs.uniform(-50, 1300, (objects, 2))
    base_wh = rs.uniform(2, 400, (objects, 2))
    which = rs.randint(0, objects, n)
    xy = base_xy[which] + rs.normal(0, 0.08, (n, 2)) * base_wh[which]
    wh = base_wh[which] * np.exp(rs.normal(0, 0.15, (n, 2)))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    bad = rs.rand(n) < 0.02
    boxes[bad, 2 + rs.randint(0, 2, int(bad.sum()))] = boxes[bad, rs.randint(0, 2, int(bad.sum()))]
    flip = rs.rand(n) < 0.005
    boxes[flip] = boxes[flip][:, [2, 3, 0, 1]]
    # exact-threshold pairs: a box and a copy whose width is scaled so that IoU == float32(thr) exactly
    for i in rs.randint(0, n - 1, max(1, n // 50)) if n > 1 else []:
        b = boxes[i].copy()
        b[2] = b[0] + (b[2] - b[0]) * np.float32(thr)
        if box_iou(boxes[i], b[None])[0] == np.float32(thr):
            boxes[i + 1] = b
    scores = (rs.randint(1, 60, n) / 60).astype(np.float32)
    labels = rs.randint(0, classes, n)
    labels[: n // 3] = labels[0]  # one crowded class
    return boxes, scores, labels


@pytest.mark.parametrize(("n", "classes", "max_keep", "thr"), [
    (1, 1, None, 0.7),  # one box
    (2, 1, None, 0.5),
    (37, 3, None, 0.7),
    (500, 1, None, 0.5),  # one class, dense
    (2500, 80, 300, 0.7),  # past the first chunk
    (3000, 1203, None, 0.7),  # a large vocabulary, no cap
    (6000, 80, None, 0.65),  # several chunks, every candidate decided
    (30000, 80, 300, 0.7),  # evaluation settings
    (30000, 1203, 300, 0.7),
    (30000, 1, 300, 0.0),  # any overlap suppresses
])
def test_equals_loop_on_random_sets(n, classes, max_keep, thr):
    rs = np.random.RandomState(n + classes)
    boxes, scores, labels = random_candidates(rs, n, classes, thr)
    kept = both(boxes, scores, labels, thr, max_keep)
    assert len(kept) == len(set(kept))
    if n >= 500:
        assert len(kept) < n  # suppression happened


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("budget", "dense"), [(40, 64), (1 << 21, 1)])  # split by pair budget / by density
def test_equals_loop_when_blocks_split(monkeypatch, seed, budget, dense):
    """Tiny chunks, pair budget, density limit and sweep cap: every split path (long chains too)."""
    monkeypatch.setattr(nms_module, "FIRST_CHUNK", 16)
    monkeypatch.setattr(nms_module, "PAIR_BUDGET", budget)
    monkeypatch.setattr(nms_module, "DENSE_PAIRS_PER_BOX", dense)
    monkeypatch.setattr(nms_module, "DENSE_MIN_BLOCK", 4)
    monkeypatch.setattr(nms_module, "MAX_SWEEPS", 2)
    rs = np.random.RandomState(seed)
    boxes, scores, labels = random_candidates(rs, 1500, 3, 0.6)
    both(boxes, scores, labels, 0.6)
    both(boxes, scores, labels, 0.6, max_keep=100)


def test_chain_of_suppressions():
    # each box overlaps the next by IoU 0.8 and the one after by 0.64: kept alternate (0, 2, 4, ...),
    # a suppression chain as long as the set, which needs one sweep per link
    n = 400
    x = np.arange(n, dtype=np.float32) * np.float32(10 / 9)
    boxes = np.stack([x, np.zeros(n, np.float32), x + 10, np.full(n, 10, np.float32)], 1)
    scores = np.linspace(1, 0.5, n).astype(np.float32)
    assert both(boxes, scores, np.zeros(n, np.int64), 0.7) == list(range(0, n, 2))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the loop's float32 overflow on purpose
def test_non_finite_and_odd_inputs():
    boxes = np.array([[0, 0, 10, 10], [np.nan, 0, 10, 10], [0, 0, np.inf, 10], [-np.inf, 0, 10, 10],
                      [0, 0, 10, 10], [1e30, 1e30, 3e38, 3e38]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], np.float32)
    labels = np.zeros(6, np.int64)
    assert both(boxes, scores, labels, 0.5) == [0, 1, 2, 3, 5]
    assert both(boxes, np.array([0.1, np.nan, 0.5, 0.2, 0.3, 0.0], np.float32), labels, 0.5) == [2, 4, 3, 5, 1]
    assert both(boxes, scores.astype(np.float64), labels, 0.5) == [0, 1, 2, 3, 5]
    assert both(boxes, scores, labels, -0.1) == [0]  # a negative threshold: IoU 0 suppresses too


def test_empty():
    assert batched_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0), 0.5).size == 0
    assert batched_nms_reference(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0), 0.5).size == 0
