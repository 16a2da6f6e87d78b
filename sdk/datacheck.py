"""The one data check behind ``yoloworld-data``, training and ``yoloworld-eval``: what stops, what is fixed.

One rule decides. A finding is **fatal** (:class:`DataError`, raised before any conversion, training
step or evaluation; it names the file and line, XML element or annotation id, the first few of each
kind and how many) when the files do not say what was meant, so any repair would be a guess that
changes what is learned or measured:

- an image listed but missing, or truncated / corrupt (:func:`image_problem`: the file's end marker,
  checked for every image without decoding it). A corrupt image is not skipped: its labels would be
  lost without anyone deciding so, and a user's few hundred images are all meant to be used;
- a label line, XML element or annotation that does not parse: not numbers, non-finite values, a
  negative width or height, a class index or category id that is not defined;
- a VOC class name that is not in ``classes.txt``, or without one, a name that looks like a
  misspelling of another (:func:`likely_typos`): a silent extra class is a wrong class count;
- a dataset YAML without ``names``, a ``train`` or ``val`` entry whose folder does not exist.

A finding is **fixed and counted** when one repair keeps everything labelled inside the image:

- a box reaching outside its image by :data:`CLIP_TOLERANCE_PX` or more is clipped to it (less is
  rounding in the label file, clamped without a finding);
- a box with no area inside its image (wholly outside, or zero width or height) is dropped;
- a missing ``val`` split is made from ``train`` (:func:`hold_out`: every 10th image, no randomness);
- a ``test`` entry whose folder does not exist is ignored (only train and val are used);
- training only: images left out by ``filter_empty_gt`` / ``min_size`` are counted as skipped.

Fixed findings go into a :class:`DataReport` (counts per split, the first few named), printed once with
the per-split table by :func:`format_summary`; nothing goes through ``warnings``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from .errors import YoloWorldError

FixKind = Literal["clipped", "dropped", "skipped", "split made", "ignored"]
FIX_TEXT: dict[FixKind, str] = {
    "clipped": "boxes clipped to their image",
    "dropped": "boxes dropped (no area inside their image)",
    "skipped": "images skipped",
    "split made": "splits made",
    "ignored": "entries ignored",
}
MAX_LISTED = 5  # how many offending items a message, or each kind of finding in a report, names
CLIP_TOLERANCE_PX = 0.1  # labels written with 6 decimals overshoot an edge they touch by ~1e-6 of the size
VAL_EVERY = 10  # a made val split holds every 10th image
TYPO_CUTOFF = 0.8  # difflib ratio: 'red cirle' / 'red circle' 0.95; no two Pascal VOC classes reach 0.8
_TAIL_BYTES = 64  # an end marker plus the few padding bytes some writers append after it
T = TypeVar("T")


class DataError(YoloWorldError):
    """A dataset, annotation file or data YAML that cannot be used; the message names it."""


@dataclass(frozen=True)
class Finding:
    """One fixed or ignored thing. ``where``: ``file line N`` (YOLO), ``file object[k]`` (VOC, k-th
    ``<object>``), ``file annotation ID`` (COCO) or ``file image ID`` (COCO, training's filters)."""

    kind: FixKind
    split: str
    where: str
    detail: str


@dataclass(frozen=True)
class DataReport:
    """The fixed findings of one dataset: how many of each kind per split, and the first few, named.

    Frozen: the fields are never rebound; the readers fill the dict and the list as they go.
    """

    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, split) -> number
    findings: list[Finding] = field(default_factory=list)  # the first MAX_LISTED per (kind, split)

    def add(self, finding: Finding, number: int = 1) -> None:
        """Count ``number`` findings like ``finding``; keep it to print while its kind has few."""
        key = (finding.kind, finding.split)
        if self.counts.get(key, 0) < MAX_LISTED:
            self.findings.append(finding)
        self.counts[key] = self.counts.get(key, 0) + number

    def count(self, kind: FixKind, split: str | None = None) -> int:
        """Findings of ``kind`` in ``split`` (every split: None)."""
        return sum(n for (k, s), n in self.counts.items() if k == kind and split in (None, s))

    def merged(self, *others: DataReport) -> DataReport:
        """This report and ``others`` as one (counts added, named findings kept up to the limit)."""
        out = DataReport()
        shown: dict[tuple[str, str], int] = {}
        for report in (self, *others):
            for f in report.findings:
                if shown.get((f.kind, f.split), 0) < MAX_LISTED:
                    out.findings.append(f)
                    shown[(f.kind, f.split)] = shown.get((f.kind, f.split), 0) + 1
            for key, n in report.counts.items():
                out.counts[key] = out.counts.get(key, 0) + n
        return out


def listing(items: Sequence[str], limit: int = MAX_LISTED) -> str:
    """``a, b, c and 4 more``: the first ``limit`` items and how many are left."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def display_path(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """``path`` relative to ``root`` when inside it (POSIX separators), else as given."""
    rel = os.path.relpath(path, root)
    return Path(rel).as_posix() if not rel.startswith("..") else str(path)


# -- images --------------------------------------------------------------------------------------------
MISSING = "missing"


def image_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a whole image file, or None.

    Checked from the file's ends, not by decoding (a few reads per image, fine for COCO-size sets): a
    JPEG must hold its end-of-image marker FFD9 after its last start-of-scan (a cut file has none; the
    whole file is read only when the last 64 bytes lack it, e.g. data appended after the image), a PNG
    its IEND chunk, WebP and BMP the size their header states. Other formats are decoded. Damage inside
    a file that keeps its end (flipped bits) is not found.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
    except FileNotFoundError:
        return MISSING
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if size == 0:
        return "an empty file"
    if head.startswith(b"\xff\xd8"):
        if b"\xff\xd9" in tail:
            return None
        data = Path(path).read_bytes()
        whole = data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda") >= 0  # scan data never holds FF D9
        return None if whole else "truncated JPEG (no end-of-image marker FFD9)"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return None if b"IEND" in tail or b"IEND" in Path(path).read_bytes() else "truncated PNG (no IEND chunk)"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        declared = int.from_bytes(head[4:8], "little") + 8
        return None if size >= declared else f"truncated WebP ({size} of {declared} bytes)"
    if head[:2] == b"BM":
        declared = int.from_bytes(head[2:6], "little")  # 0 from some writers: no size to compare
        return None if size >= declared else f"truncated BMP ({size} of {declared} bytes)"
    import cv2

    image = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_UNCHANGED)
    return None if image is not None else "not an image file OpenCV can decode"


def check_images(paths: Sequence[Path], source: str, folder: Path, origins: Sequence[str] | None = None) -> None:
    """Every image exists and is whole (:func:`image_problem`), else one :class:`DataError` naming the
    first few missing and corrupt files (relative to ``folder``, with ``origins[i]``: the label that
    lists image ``i``) and how many there are."""
    with ThreadPoolExecutor(max_workers=min(16, 2 * (os.cpu_count() or 1))) as pool:  # I/O-bound
        problems = list(pool.map(image_problem, paths))
    missing: list[str] = []
    corrupt: list[str] = []
    for k, why in enumerate(problems):
        if why is None:
            continue
        name = repr(display_path(paths[k], folder)) + (f" ({origins[k]})" if origins else "")
        if why == MISSING:
            missing.append(name)
        else:
            corrupt.append(f"{name}: {why}")
    parts = []
    if missing:
        parts.append(f"{len(missing)} of {len(paths)} image files are missing from {str(folder)!r}: "
                     f"{listing(missing)}")
    if corrupt:
        parts.append(f"{len(corrupt)} of {len(paths)} image files are truncated or corrupt: {listing(corrupt)} "
                     f"(replace them, or remove them and their labels)")
    if parts:
        raise DataError(f"{source}: " + "; ".join(parts))


# -- boxes ---------------------------------------------------------------------------------------------
def clip_xyxy(xyxy: np.ndarray, size_wh: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The box rule on (N, 4) float xyxy pixel boxes in images of (N, 2) or (2,) (width, height).

    Returns (boxes (N, 4) float64 clamped to ``[0, W] x [0, H]``, keep (N,) bool: some area left inside,
    clipped (N,) bool: kept and moved by :data:`CLIP_TOLERANCE_PX` or more, a finding).
    """
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    wh = np.broadcast_to(np.asarray(size_wh, np.float64).reshape(-1, 2), (len(xyxy), 2))
    out = np.clip(xyxy, 0, np.concatenate([wh, wh], axis=1))
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    clipped = keep & (np.abs(out - xyxy) >= CLIP_TOLERANCE_PX).any(axis=1)
    return out, keep, clipped


def _box(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):.5g}" for v in values) + "]"


def fix_boxes(annotations: list[dict[str, Any]], origins: Sequence[str], size_wh: tuple[int, int],
              report: DataReport, split: str) -> list[dict[str, Any]]:
    """The box rule on one image's converted annotations (COCO ``bbox`` [x, y, w, h] pixels): boxes are
    clamped in place (and their ``area``), the kept ones returned; each clip or drop is recorded in
    ``report`` under ``origins[i]``."""
    if not annotations:
        return []
    xywh = np.array([a["bbox"] for a in annotations], np.float64)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    out, keep, clipped = clip_xyxy(xyxy, np.array(size_wh))
    image = f"the {size_wh[0]}x{size_wh[1]} (WxH) image"
    for k in np.flatnonzero(~keep | (out != xyxy).any(axis=1)).tolist():
        ann = annotations[k]
        before = ann["bbox"]
        if not keep[k]:
            report.add(Finding("dropped", split, origins[k], f"{_box(before)} has no area inside {image}"))
            continue
        x1, y1, x2, y2 = out[k].tolist()
        ann["bbox"], ann["area"] = [x1, y1, x2 - x1, y2 - y1], (x2 - x1) * (y2 - y1)
        if clipped[k]:
            report.add(Finding("clipped", split, origins[k], f"{_box(before)} -> {_box(ann['bbox'])} in {image}"))
    return [a for a, k in zip(annotations, keep, strict=True) if k]


# -- classes and splits --------------------------------------------------------------------------------
def likely_typos(object_counts: Mapping[str, int]) -> dict[str, str]:
    """Class name -> the name it probably misspells: another name at least as frequent (ties: the
    earlier name in sorted order is the original) that difflib rates :data:`TYPO_CUTOFF` or closer,
    ignoring case."""
    out = {}
    for name, n in object_counts.items():
        more = {m.casefold(): m for m, c in object_counts.items() if m != name and (c, name) > (n, m)}
        close = difflib.get_close_matches(name.casefold(), list(more), n=1, cutoff=TYPO_CUTOFF)
        if close:
            out[name] = more[close[0]]
    return out


def hold_out(items: Sequence[T]) -> tuple[list[T], list[T]]:
    """(train, val) of a set without a val split: val is every 10th item (the 10th, 20th, ...), or the
    last one of fewer than 10; one item stays train. Deterministic: the same list gives the same split."""
    val_at = set(range(VAL_EVERY - 1, len(items), VAL_EVERY)) or ({len(items) - 1} if len(items) > 1 else set())
    return ([x for k, x in enumerate(items) if k not in val_at], [x for k, x in enumerate(items) if k in val_at])


# -- the summary ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitSummary:
    """What one split trains or evaluates on: images, boxes used, ignored boxes (crowd / VOC difficult)
    and, per class name, (images holding it, its boxes)."""

    images: int
    boxes: int
    ignored: int
    per_class: dict[str, tuple[int, int]]


def summarize_coco(coco: Mapping[str, Any]) -> SplitSummary:
    """The :class:`SplitSummary` of a COCO dict (categories in id order; crowd boxes counted as ignored)."""
    names = {c["id"]: c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])}
    images: dict[int, set[int]] = {cid: set() for cid in names}
    boxes = dict.fromkeys(names, 0)
    ignored = 0
    for a in coco["annotations"]:
        if a.get("iscrowd", 0):
            ignored += 1
        else:
            images[a["category_id"]].add(a["image_id"])
            boxes[a["category_id"]] += 1
    return SplitSummary(len(coco["images"]), sum(boxes.values()), ignored,
                        {names[cid]: (len(images[cid]), boxes[cid]) for cid in names})


def format_summary(title: str, summaries: Mapping[str, SplitSummary], report: DataReport) -> str:
    """The table printed once by ``yoloworld-data`` and at the start of training: per split images, boxes
    and fixes, per class images/boxes, then every kind of fix with its first few findings, named."""
    made = {s for (k, s) in report.counts if k == "split made"}
    kinds: tuple[FixKind, ...] = ("clipped", "dropped", "skipped")
    lines = [title, f"  {'split':<8}{'images':>8}{'boxes':>9}{'ignored':>9}" + "".join(f"{k:>9}" for k in kinds)]
    for split, s in summaries.items():
        lines.append(f"  {split:<8}{s.images:>8}{s.boxes:>9}{s.ignored:>9}"
                     + "".join(f"{report.count(k, split):>9}" for k in kinds)
                     + ("  (made from train)" if split in made else ""))
    names = list(dict.fromkeys(n for s in summaries.values() for n in s.per_class))
    if names:
        header = "per class (images/boxes)"
        width = max(len(header) - 2, *map(len, names))
        lines.append(f"  {header:<{width + 2}}" + "".join(f"{s:>14}" for s in summaries))
        for name in names:
            cells = (f"{s.per_class[name][0]}/{s.per_class[name][1]}" if name in s.per_class else "-"
                     for s in summaries.values())
            lines.append(f"    {name:<{width}}" + "".join(f"{c:>14}" for c in cells))
    if report.counts:
        lines.append("  fixed or noted (the data is used as shown here; correct the files to silence these):")
    for kind, text in FIX_TEXT.items():
        per_split = {s: n for (k, s), n in report.counts.items() if k == kind}
        if not per_split:
            continue
        lines.append(f"    {text}: {sum(per_split.values())} (" + ", ".join(f"{s} {n}" for s, n in per_split.items())
                     + "):")
        shown = [f for f in report.findings if f.kind == kind]
        lines += [f"      {f.split}: {f.where}: {f.detail}" for f in shown]
        if len(shown) < sum(per_split.values()):
            lines.append(f"      ... and {sum(per_split.values()) - len(shown)} more")
    return "\n".join(lines)


__all__ = ["CLIP_TOLERANCE_PX", "MAX_LISTED", "DataError", "DataReport", "Finding", "FixKind", "SplitSummary",
           "check_images", "clip_xyxy", "display_path", "fix_boxes", "format_summary", "hold_out", "image_problem",
           "likely_typos", "listing", "summarize_coco"]
