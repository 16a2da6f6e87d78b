"""Greedy non-maximum suppression in numpy, with mmcv's ``nms``/``batched_nms`` semantics.

IoU uses plain ``(x2 - x1) * (y2 - y1)`` areas (no +1) in float32; a box is suppressed when its IoU with a
kept box of its own class is > the threshold; equal scores keep their input order (a stable sort).
Class-aware NMS compares labels instead of shifting boxes by ``label * (max + 1)`` as mmcv does below
10000 boxes: with 1203 classes those float32 offsets reach ~770k, where float32 resolves 1/16 px, and a
box reaching more than ``max + 1`` left of the image could meet another class's. mmcv's other branch
(a loop over classes) makes the same decisions as the label comparison.

Two implementations make the same decisions with the same float32 IoU arithmetic, so they return the
same indices bit for bit:

- :func:`batched_nms_reference` / :func:`nms_reference`: the textbook loop, one IoU row per kept box
  over every remaining candidate (the test oracle).
- :func:`batched_nms` / :func:`nms`: no Python loop per box (issue 23). Candidates are taken in score
  order in chunks (1024, then doubling) until ``max_keep`` boxes are kept: greedy NMS of a prefix is the
  prefix of greedy NMS, so most candidates at a low ``conf`` are never looked at. In a chunk, the pairs
  that can overlap above the threshold come from a sort along x1 (IoU > t needs
  ``|x1_a - x1_b| < (1 - t) / t * min(w_a, w_b)``, since 2-D IoU <= the IoU of the x intervals); their IoU
  decides the suppression edges, and the greedy outcome is the unique fixed point of "kept = not
  suppressed by a kept predecessor", found by a few vectorised sweeps (one per link of the longest
  suppression chain).

Not OpenCV's ``cv2.dnn.NMSBoxesBatched`` (measured on 5.1): two zero-area boxes get IoU 1 there (the
loop: 0), IoU is computed in double, every candidate of every class is compared with every kept one
(7 s for 30000 scattered boxes), and ``top_k`` changed meaning between 4.x and 5.x.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

FIRST_CHUNK = 1024  # candidates looked at first; the next chunks double
PAIR_BUDGET = 1 << 21  # candidate pairs per block before it is split (memory: ~50 bytes a pair)
# a block of more than 64 boxes with more than 64 candidate pairs a box is split too: its first half's kept
# boxes then suppress most of the second half more cheaply than all its pairs are checked (dense clusters
# of large boxes: 25 % faster on a trained model's candidates at conf 0.001, no slower elsewhere)
DENSE_PAIRS_PER_BOX, DENSE_MIN_BLOCK = 64, 64
MAX_SWEEPS = 32  # fixed-point sweeps per block before it is split (only chains of suppressions need more)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box ``(4,)`` with ``(K, 4)`` boxes -> ``(K,)`` float32; 0 where the union is empty
    (as in :func:`pairwise_iou`; mmcv's 0/0 is NaN, which suppresses nothing either)."""
    xx1 = np.maximum(box[0], boxes[:, 0])
    yy1 = np.maximum(box[1], boxes[:, 1])
    xx2 = np.minimum(box[2], boxes[:, 2])
    yy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.maximum(xx2 - xx1, 0) * np.maximum(yy2 - yy1, 0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), np.float32(0)).astype(np.float32, copy=False)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` float64 of xyxy boxes ``(Na, 4)`` and ``(Nb, 4)``; 0 where the union
    is empty. For matching detection sets; :func:`box_iou` is the NMS's own one-against-many float32 form."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms_reference(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
                  max_keep: int | None = None) -> np.ndarray:
    """Indices of kept boxes, highest score first (the loop; see :func:`nms`)."""
    return batched_nms_reference(boxes, scores, np.zeros(len(scores), np.int64), iou_threshold, max_keep)


def batched_nms_reference(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float,
                          max_keep: int | None = None, agnostic: bool = False) -> np.ndarray:
    """The textbook greedy loop behind :func:`batched_nms` (same arguments, same result): the oracle."""
    if max_keep is not None and max_keep <= 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-scores, kind="stable")
    boxes = boxes.astype(np.float32, copy=False)
    labels = np.zeros(len(scores), np.int64) if agnostic else np.asarray(labels)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if max_keep is not None and len(keep) >= max_keep:
            break
        rest = order[1:]
        order = rest[~((box_iou(boxes[i], boxes[rest]) > iou_threshold) & (labels[rest] == labels[i]))]
    return np.asarray(keep, dtype=np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Indices of kept boxes, highest score first. boxes ``(K, 4)`` xyxy float32, scores ``(K,)``.

    ``max_keep`` stops after that many: exact, because greedy NMS keeps boxes in score order.

    Example:
        >>> b = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], np.float32)
        >>> nms(b, np.array([0.9, 0.8, 0.7], np.float32), 0.7).tolist()
        [0, 2]
    """
    return batched_nms(boxes, scores, np.zeros(len(scores), np.int64), iou_threshold, max_keep, agnostic=True)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float,
                max_keep: int | None = None, agnostic: bool = False) -> np.ndarray:
    """Class-aware NMS (boxes of different ``labels`` never suppress each other) or agnostic.

    Args:
        boxes: ``(K, 4)`` xyxy (compared in float32).
        scores: ``(K,)``; ties keep their input order.
        labels: ``(K,)`` integer class ids.
        iou_threshold: suppress at IoU > this.
        max_keep: stop after this many kept boxes (exact: greedy NMS keeps boxes in score order).
        agnostic: ignore ``labels``.

    Returns:
        ``(k,)`` int64 indices into ``boxes``, best first; equal to :func:`batched_nms_reference`'s.
    """
    scores = np.asarray(scores)
    n = len(scores)
    if n == 0 or (max_keep is not None and max_keep <= 0):
        return np.zeros(0, np.int64)
    if not iou_threshold >= 0:  # negative or NaN: IoU 0 suppresses, or nothing does; the loop's business
        return batched_nms_reference(boxes, scores, labels, iou_threshold, max_keep, agnostic)
    sweep = _Sweep(_Geometry(boxes, None if agnostic else labels, iou_threshold), iou_threshold)
    limit = n if max_keep is None else max_keep
    for chunk in _ranked_chunks(scores, FIRST_CHUNK):
        sweep.add(chunk)
        if sweep.count >= limit:
            break
    return sweep.kept()[:limit]


class _Geometry:
    """Per box, filled for the candidates a sweep reaches (lazily: at a low ``conf`` most never are):
    ``x1, y1, x2, y2, area`` float32 (the loop's arithmetic), ``label`` int64, ``key`` float64 = x1 within a
    per-class band (a sort along x1 never mixes classes), ``reach`` float64 = how far right of this box's x1
    another's x1 may lie with their IoU still above the threshold, ``valid`` = positive, finite width,
    height and area (the rest have IoU 0 with every box)."""

    def __init__(self, boxes: np.ndarray, labels: np.ndarray | None, iou_threshold: float) -> None:
        xyxy = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self.x1, self.y1, self.x2, self.y2 = (np.ascontiguousarray(xyxy[:, c]) for c in range(4))
        n = len(xyxy)
        self.label = np.zeros(n, np.int64) if labels is None else np.asarray(labels).astype(np.int64)
        finite = np.isfinite(self.x1) & np.isfinite(self.x2)
        self.lo = float(np.min(self.x1, where=finite, initial=np.inf)) if finite.any() else 0.0
        span = float(np.max(self.x2, where=finite, initial=-np.inf)) - self.lo if finite.any() else 0.0
        self.band = 2 * span + 1  # a key + its reach (<= its width <= span) stays inside its class's band
        # IoU > t needs dx1 < (1 - t) / t * min width, and dx1 < the left box's width (an overlap); t is
        # lowered by 1e-4 for float32 IoU rounding; the absolute term covers float64 key rounding
        t = iou_threshold * (1 - 1e-4)
        self.factor = 1.0 if t <= 0.5 else (1 - t) / t
        self.slack = 1e-9 * (1 + abs(self.lo) + self.band * (1 + float(np.abs(self.label).max(initial=0))))
        self.area, self.key, self.reach = np.empty(n, np.float32), np.empty(n), np.empty(n)
        self.valid = np.zeros(n, bool)

    def fill(self, idx: np.ndarray) -> None:
        """Compute the per-box fields of boxes ``idx``."""
        with np.errstate(over="ignore", invalid="ignore"):  # inf / NaN boxes: invalid, as in the loop
            w, h = self.x2[idx] - self.x1[idx], self.y2[idx] - self.y1[idx]
            area = w * h
        self.area[idx] = area
        self.valid[idx] = (w > 0) & (area > 0) & (area < np.inf)
        self.key[idx] = self.label[idx] * self.band + (self.x1[idx].astype(np.float64) - self.lo)
        self.reach[idx] = w.astype(np.float64) * self.factor + self.slack


def _ranked_chunks(scores: np.ndarray, first: int) -> Iterator[np.ndarray]:
    """Positions in score order (``argsort(-scores, kind="stable")``), in chunks of ``first``, then
    doubling; only the chunks asked for are sorted (a partition finds each)."""
    n = len(scores)
    if n <= 2 * first or np.isnan(scores).any():  # NaN sorts last in the loop's order: sort all
        order = np.argsort(-scores, kind="stable")
        start, size = 0, first
        while start < n:
            yield order[start:start + size]
            start, size = start + size, 2 * size
        return
    rest, size = np.arange(n), first
    while rest.size > size:
        values = scores[rest]
        kth = np.partition(values, len(values) - size)[len(values) - size]  # the size-th largest
        best = values > kth
        best[np.flatnonzero(values == kth)[:size - int(np.count_nonzero(best))]] = True  # ties: earlier first
        head, rest = rest[best], rest[~best]
        yield head[np.argsort(-scores[head], kind="stable")]
        size *= 2
    yield rest[np.argsort(-scores[rest], kind="stable")]


def _expand(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(r, c)`` for every row r and every c in ``[lo[r], hi[r])`` -> (rows, cols) int64."""
    counts = np.maximum(hi - lo, 0)
    rows = np.repeat(np.arange(len(lo)), counts)
    starts = np.cumsum(counts) - counts
    cols = np.arange(int(counts.sum())) + np.repeat(lo - starts, counts)
    return rows, cols


class _Sweep:
    """Greedy NMS fed candidates in score order, a chunk at a time; remembers what it kept."""

    def __init__(self, g: _Geometry, iou_threshold: float) -> None:
        self.g, self.thr = g, iou_threshold
        self.parts: list[np.ndarray] = []
        self.kept_valid = np.zeros(0, np.int64)  # kept boxes that can suppress, in score order
        self.count = 0

    def kept(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, np.int64)

    def add(self, chunk: np.ndarray) -> None:
        """Decide ``chunk`` (positions, in score order, after every earlier chunk)."""
        self.g.fill(chunk)
        valid = self.g.valid[chunk]
        keep = ~valid  # boxes without area overlap nothing: always kept
        local = np.flatnonzero(valid)
        local = local[~self._suppressed_by(self.kept_valid, chunk[local])]
        decided = self._resolve(chunk[local])
        keep[local[decided]] = True
        self.parts.append(chunk[keep])
        self.kept_valid = np.concatenate((self.kept_valid, chunk[local[decided]]))
        self.count += int(keep.sum())

    def _iou_above(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """IoU(i, j) > threshold for pairs of the same class, ``i`` ranked before ``j``: the loop's
        float32 operations in the loop's order, so both decide identically."""
        g = self.g
        inter = (np.maximum(np.minimum(g.x2[i], g.x2[j]) - np.maximum(g.x1[i], g.x1[j]), 0)
                 * np.maximum(np.minimum(g.y2[i], g.y2[j]) - np.maximum(g.y1[i], g.y1[j]), 0))
        union = self.g.area[i] + self.g.area[j] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), np.float32(0)).astype(np.float32, copy=False)
        return (iou > self.thr) & (self.g.label[i] == self.g.label[j])

    def _suppressed_by(self, kept: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Which of ``cand`` (valid, ranked after every ``kept``) a kept box suppresses -> bool mask.
        A reach holds for the box with the smaller x1, so each side searches the other to its right."""
        out = np.zeros(len(cand), bool)
        if not (len(kept) and len(cand)):
            return out
        g = self.g
        k_order, c_order = np.argsort(g.key[kept], kind="stable"), np.argsort(g.key[cand], kind="stable")
        k_keys, c_keys = g.key[kept][k_order], g.key[cand][c_order]
        k_rows, c_cols = _expand(np.searchsorted(c_keys, k_keys, "left"),
                                 np.searchsorted(c_keys, k_keys + g.reach[kept][k_order], "right"))
        c_rows, k_cols = _expand(np.searchsorted(k_keys, c_keys, "left"),
                                 np.searchsorted(k_keys, c_keys + g.reach[cand][c_order], "right"))
        i = np.concatenate((k_order[k_rows], k_order[k_cols]))  # into kept
        j = np.concatenate((c_order[c_cols], c_order[c_rows]))  # into cand
        out[j[self._iou_above(kept[i], cand[j])]] = True
        return out

    def _resolve(self, block: np.ndarray) -> np.ndarray:
        """Greedy NMS among ``block`` (valid, in score order, none suppressed by an earlier kept box)
        -> keep mask. Blocks with too many pairs or too long a suppression chain are split in two."""
        m = len(block)
        if m <= 1:
            return np.ones(m, bool)
        edges = self._edges(block)
        if edges is not None:
            keep = _fixed_point(m, *edges, MAX_SWEEPS if m > MAX_SWEEPS else m + 1)
            if keep is not None:
                return keep
        half = m // 2
        first = self._resolve(block[:half])
        second = block[half:]
        rest = np.flatnonzero(~self._suppressed_by(block[:half][first], second))
        keep2 = np.zeros(len(second), bool)
        keep2[rest] = self._resolve(second[rest])
        return np.concatenate((first, keep2))

    def _edges(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Suppression edges (src, dst), block-local, src ranked first; None above ``PAIR_BUDGET``."""
        order = np.argsort(self.g.key[block], kind="stable")
        keys = self.g.key[block][order]
        lo = np.arange(1, len(block) + 1)
        hi = np.searchsorted(keys, keys + self.g.reach[block][order], "right")
        pairs = int(np.maximum(hi - lo, 0).sum())
        if pairs > PAIR_BUDGET or (len(block) > DENSE_MIN_BLOCK and pairs > DENSE_PAIRS_PER_BOX * len(block)):
            return None
        rows, cols = _expand(lo, hi)
        a, b = order[rows], order[cols]
        src, dst = np.minimum(a, b), np.maximum(a, b)
        hit = self._iou_above(block[src], block[dst])
        return src[hit], dst[hit]


def _fixed_point(m: int, src: np.ndarray, dst: np.ndarray, max_sweeps: int) -> np.ndarray | None:
    """Greedy outcome of ``m`` boxes with suppression edges ``src -> dst`` (src ranked first): the unique
    ``keep`` with ``keep[j] == no kept src points at j``. Sweeps from all-kept; a box is final one sweep
    after its predecessors, so this converges after (longest chain + 1) sweeps. None if not by then."""
    keep = np.ones(m, bool)
    for _ in range(max_sweeps + 1):
        suppressed = np.zeros(m, bool)
        suppressed[dst[keep[src]]] = True
        if np.array_equal(~suppressed, keep):
            return keep
        keep = ~suppressed
    return None
