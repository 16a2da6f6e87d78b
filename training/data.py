"""Fine-tuning datasets: COCO-format detection, mdetr/GoldG-style grounding, their mix, the data YAML.

Every check runs when a dataset is built, before any training step, and a problem is reported once
per dataset with counts, naming the file, the field and the value:

- not COCO (a required key missing), malformed images/annotations, duplicate ids: :class:`DataError`;
- ``file_name`` that is absolute or escapes ``img_dir`` with ``..``: :class:`DataError`;
- image files missing on disk, truncated or corrupt (``sdk.datacheck.check_images``): one
  :class:`DataError` naming the first few and the total;
- an annotation whose ``category_id`` is not in ``categories``: :class:`DataError`;
- number of categories != number of class-text entries: :class:`DataError`;
- a bbox with non-finite values or a negative width or height: :class:`DataError`;
- boxes reaching outside their image are clipped, boxes with no area inside it are dropped, images
  left out by ``filter_empty_gt`` / ``min_size`` skipped: each counted, the first few named by
  annotation or image id, in the dataset's ``report`` (``sdk.datacheck``: the one rule for every
  layout), which :func:`describe_data` prints with the per-split table;
- ``iscrowd=1`` annotations are ignored (COCO convention);
- ``segmentation`` polygons are kept for the mask-refine augmentations (RLE or none: the box alone);
  a malformed polygon is a :class:`DataError`;
- no image left after ``filter_empty_gt`` / ``min_size``: :class:`DataError`.

Labels follow the official ``MultiModalDataset``: label ``i`` is the ``i``-th category id in ascending
order, and the class-text JSON lists prompts in that order.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Union

import numpy as np
import yaml

from sdk.datacheck import DataReport, Finding, SplitSummary, check_images, clip_xyxy, format_summary
from sdk.datasets import DataError, detect_format, read_dataset
from sdk.images import read_image
from sdk.vocabulary import read_class_texts

from .polygons import Instance, parse_segmentation

DatasetType = Literal["detection", "grounding"]


@dataclass(frozen=True)
class Record:
    """One image and its annotations, before augmentation.

    boxes: (K, 4) float32 xyxy in original-image pixels, clipped to the image, every box of positive
    size. labels: (K,) int64 indices into ``texts``. texts: prompts per class of this record (all
    dataset classes for detection, the record's unique phrases for grounding). Arrays are read-only.
    polygons: per box its ``segmentation`` rings (``training.polygons``; None for a box without),
    or None when no box of the record has any.
    """

    image_id: int
    path: str
    boxes: np.ndarray
    labels: np.ndarray
    texts: list[list[str]]
    polygons: tuple[Instance | None, ...] | None = None


class RecordSource(Protocol):
    """What :class:`training.transforms.TrainDataset` needs from a dataset."""

    image_ids: list[int]

    def __len__(self) -> int: ...

    def record(self, i: int) -> Record: ...

    def load(self, i: int) -> tuple[np.ndarray, Record]: ...


def _read_json(path: Path, required: Sequence[str]) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"annotation file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read annotation file {str(path)!r}: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path.name}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path.name}: expected a COCO-format object with keys {list(required)}, "
                        f"got a JSON {type(data).__name__}")
    for key in required:
        if key not in data:
            raise DataError(f"{path.name}: not a COCO-format file: the key {key!r} is missing "
                            f"(expected {', '.join(map(repr, required))})")
        if not isinstance(data[key], list):
            raise DataError(f"{path.name}: {key!r} must be a list, got {type(data[key]).__name__}")
    return data


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _stays_inside(file_name: str) -> bool:
    """True for a relative path that cannot leave its folder (POSIX and Windows separators)."""
    p = file_name.replace("\\", "/")
    if p.startswith("/") or (len(p) > 1 and p[1] == ":"):  # absolute, or a Windows drive
        return False
    norm = posixpath.normpath(p)
    return norm not in (".", "..") and not norm.startswith("../")


@dataclass(frozen=True)
class _Image:
    image_id: int
    file_name: str
    height: int
    width: int
    raw: dict[str, Any]


class _CocoImages:
    """Parsing and validation shared by detection and grounding files; subclasses say what a label is."""

    _required_keys: tuple[str, ...] = ("images", "annotations")

    def __init__(self, ann_file: str | os.PathLike, img_dir: str | os.PathLike, filter_empty_gt: bool,
                 min_size: int, coco: dict[str, Any] | None = None, split: str = "train") -> None:
        """``coco``: the annotations already in memory (a converted YOLO or VOC split); ``ann_file`` then
        only names them in messages. ``split``: how ``report`` files this set's findings."""
        self.ann_file = Path(ann_file)
        self.img_dir = Path(img_dir)
        self.name = self.ann_file.name
        self.split = split
        self.report = DataReport()
        self.n_crowd = 0  # crowd annotations, ignored
        data = _read_json(self.ann_file, self._required_keys) if coco is None else coco
        self._prepare(data)
        images = self._parse_images(data["images"])
        img_idx, keys, xywh, segs, ann_ids = self._parse_annotations(data["annotations"], images)
        boxes, valid = self._clean_boxes(img_idx, xywh, images, ann_ids)

        # group the surviving boxes per image, keeping annotation order
        img_idx, boxes = img_idx[valid], boxes[valid]
        keys = [k for k, v in zip(keys, valid, strict=True) if v]
        segs = [g for g, v in zip(segs, valid, strict=True) if v]
        order = np.argsort(img_idx, kind="stable")
        starts = np.searchsorted(img_idx[order], np.arange(len(images) + 1))
        self._records: list[Record] = []
        self._hw: list[tuple[int, int]] = []
        n_empty = n_small = 0
        for j, image in enumerate(images):
            sel = order[starts[j]:starts[j + 1]]
            empty = filter_empty_gt and len(sel) == 0
            small = not empty and min(image.height, image.width) < min_size
            if empty or small:
                n_empty, n_small = n_empty + empty, n_small + small
                detail = (f"{image.file_name!r} has no boxes (filter_empty_gt)" if empty else
                          f"{image.file_name!r} is {image.height}x{image.width} (HxW), shorter side under "
                          f"min_size {min_size}")
                self.report.add(Finding("skipped", split, f"{self.name} image {image.image_id}", detail))
                continue
            texts, labels = self._texts_and_labels([keys[k] for k in sel])
            b = boxes[sel]
            b.setflags(write=False)
            labels.setflags(write=False)
            polys = tuple(segs[k] for k in sel)
            self._records.append(Record(image.image_id, str(self.img_dir / image.file_name), b, labels,
                                        texts, polys if any(p is not None for p in polys) else None))
            self._hw.append((image.height, image.width))
        if not self._records:
            detail = (f"{len(images)} listed, {n_empty} dropped by filter_empty_gt (no boxes), "
                      f"{n_small} dropped by min_size={min_size} (shorter side smaller)"
                      if images else "the file lists no images")
            raise DataError(f"{self.name}: no images left to train on: {detail}")
        self.image_ids = [r.image_id for r in self._records]
        self._check_files_exist()

    # -- subclass hooks --------------------------------------------------------------------------
    def _prepare(self, data: dict[str, Any]) -> None:
        """Read whatever the labels need (categories) before the annotations are parsed."""

    def _label_key(self, ann: dict[str, Any], ann_id: Any, image: _Image) -> Any:
        raise NotImplementedError

    def _texts_and_labels(self, keys: list[Any]) -> tuple[list[list[str]], np.ndarray]:
        raise NotImplementedError

    # -- shared parsing --------------------------------------------------------------------------
    def _parse_images(self, raw_images: list[Any]) -> list[_Image]:
        images, seen = [], set()
        for k, img in enumerate(raw_images):
            if not isinstance(img, dict):
                raise DataError(f"{self.name}: images[{k}] is a {type(img).__name__}, not an object")
            for key in ("id", "file_name", "height", "width"):
                if key not in img:
                    raise DataError(f"{self.name}: images[{k}] (id {img.get('id')!r}) has no {key!r} "
                                    f"field")
            image_id, file_name = img["id"], img["file_name"]
            if not _is_int(image_id):
                raise DataError(f"{self.name}: images[{k}] has id {image_id!r}; expected an integer")
            if image_id in seen:
                raise DataError(f"{self.name}: image id {image_id} appears more than once")
            seen.add(image_id)
            for key in ("height", "width"):
                if not _is_int(img[key]) or img[key] <= 0:
                    raise DataError(f"{self.name}: image {image_id} has {key} {img[key]!r}; expected a "
                                    f"positive integer")
            if not isinstance(file_name, str) or not file_name.strip():
                raise DataError(f"{self.name}: image {image_id} has file_name {file_name!r}")
            if not _stays_inside(file_name):
                raise DataError(f"{self.name}: image {image_id} has file_name {file_name!r}, which "
                                f"is absolute or leaves img_dir {str(self.img_dir)!r}; file names "
                                f"must be relative paths inside img_dir")
            images.append(_Image(int(image_id), file_name, int(img["height"]), int(img["width"]), img))
        return images

    def _parse_annotations(self, raw_anns: list[Any], images: list[_Image]
                           ) -> tuple[np.ndarray, list[Any], np.ndarray, list[Instance | None], list[Any]]:
        """(image index (N,) int64, label keys, xywh (N, 4) float64, polygons, annotation ids) of the
        non-crowd annotations."""
        index = {im.image_id: j for j, im in enumerate(images)}
        img_idx, keys, xywh, segs, ids = [], [], [], [], []
        for k, ann in enumerate(raw_anns):
            if not isinstance(ann, dict):
                raise DataError(f"{self.name}: annotations[{k}] is a {type(ann).__name__}, not an "
                                f"object")
            ann_id = ann.get("id", f"#{k}")
            image_id = ann.get("image_id")
            if image_id not in index:
                raise DataError(f"{self.name}: annotation {ann_id} has image_id {image_id!r}, which "
                                f"is not in 'images'")
            image = images[index[image_id]]
            key = self._label_key(ann, ann_id, image)  # validated even for crowd annotations
            if ann.get("iscrowd", 0):
                self.n_crowd += 1
                continue
            bbox = ann.get("bbox")
            if (not isinstance(bbox, list) or len(bbox) != 4
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
                raise DataError(f"{self.name}: annotation {ann_id} has bbox {bbox!r}; expected "
                                f"[x, y, width, height] numbers")
            if not all(map(math.isfinite, bbox)) or bbox[2] < 0 or bbox[3] < 0:  # zero size: dropped below
                raise DataError(f"{self.name}: annotation {ann_id} has bbox {bbox!r}; expected finite "
                                f"[x, y, width, height] with width and height not negative")
            try:
                segs.append(parse_segmentation(ann.get("segmentation")))
            except ValueError as e:
                raise DataError(f"{self.name}: annotation {ann_id}: {e}") from None
            img_idx.append(index[image_id])
            keys.append(key)
            xywh.append(bbox)
            ids.append(ann_id)
        return (np.asarray(img_idx, np.int64), keys,
                np.asarray(xywh, np.float64).reshape(-1, 4), segs, ids)

    def _clean_boxes(self, img_idx: np.ndarray, xywh: np.ndarray, images: list[_Image], ann_ids: list[Any]
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The box rule (``sdk.datacheck.clip_xyxy``): (xyxy (N, 4) float32 clamped to the image, keep
        (N,) bool); each clip or drop goes into ``report`` under its annotation id."""
        wh = np.array([(im.width, im.height) for im in images], np.float64).reshape(-1, 2)[img_idx]
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        out, keep, clipped = clip_xyxy(xyxy, wh)
        for k in np.flatnonzero(clipped | ~keep):
            w, h = wh[k].astype(int).tolist()
            where = f"{self.name} annotation {ann_ids[k]}"
            box = "[" + ", ".join(f"{v:.5g}" for v in xywh[k]) + "]"
            if keep[k]:
                x1, y1, x2, y2 = out[k].tolist()
                detail = f"{box} -> [{x1:.5g}, {y1:.5g}, {x2 - x1:.5g}, {y2 - y1:.5g}] in the {w}x{h} (WxH) image"
                self.report.add(Finding("clipped", self.split, where, detail))
            else:
                self.report.add(Finding("dropped", self.split, where, f"{box} has no area inside the {w}x{h} "
                                                                      f"(WxH) image"))
        return np.where(keep[:, None], out, 0).astype(np.float32), keep

    def _check_files_exist(self) -> None:
        check_images([Path(r.path) for r in self._records], self.name, self.img_dir)

    # -- public API ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    def summary(self) -> SplitSummary:
        """What is used, after the filters: images, boxes, ignored crowd boxes, per class counts."""
        return SplitSummary(len(self._records), sum(len(r.boxes) for r in self._records), self.n_crowd,
                            self._per_class())

    def _per_class(self) -> dict[str, tuple[int, int]]:
        return {}  # grounding phrases are no fixed classes

    def record(self, i: int) -> Record:
        """Annotations of image ``i`` (no pixels)."""
        return self._records[i]

    def load(self, i: int) -> tuple[np.ndarray, Record]:
        """(BGR uint8 (H, W, 3) image, its record); the image must have the size the file states."""
        rec = self._records[i]
        image = read_image(rec.path)
        if image.shape[:2] != self._hw[i]:
            h, w = self._hw[i]
            raise DataError(f"{rec.path}: the image is {image.shape[0]}x{image.shape[1]} (HxW) but "
                            f"{self.name} says {h}x{w}; its boxes would be misplaced (EXIF rotation?)")
        return image, rec


class DetectionDataset(_CocoImages):
    """A COCO-format detection JSON with a class-text list (the official ``MultiModalDataset``).

    ``categories``: COCO category ids in label order (ascending; need not be contiguous).
    ``class_texts[label]``: the prompts of that class. ``filter_empty_gt`` drops images without boxes;
    ``min_size`` drops images whose shorter side is below it (official: False, 32).
    """

    _required_keys = ("images", "annotations", "categories")

    def __init__(self, ann_file: str | os.PathLike, img_dir: str | os.PathLike,
                 class_texts: list[list[str]], filter_empty_gt: bool = False, min_size: int = 32,
                 coco: dict[str, Any] | None = None, split: str = "train") -> None:
        self.class_texts = [list(p) for p in class_texts]
        super().__init__(ann_file, img_dir, filter_empty_gt, min_size, coco, split)

    def _per_class(self) -> dict[str, tuple[int, int]]:
        n = len(self.categories)
        labels = np.concatenate([r.labels for r in self._records])
        image = np.repeat(np.arange(len(self._records)), [len(r.labels) for r in self._records])
        boxes = np.bincount(labels, minlength=n)
        images = np.bincount(np.unique(image * n + labels) % n, minlength=n)  # each (image, class) once
        return {self.class_names[k]: (int(images[k]), int(boxes[k])) for k in range(n)}

    def _prepare(self, data: dict[str, Any]) -> None:
        cats = data["categories"]
        ids = []
        for k, c in enumerate(cats):
            if not isinstance(c, dict) or not _is_int(c.get("id")):
                raise DataError(f"{self.name}: categories[{k}] is {c!r}; expected an object with an "
                                f"integer 'id'")
            ids.append(int(c["id"]))
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise DataError(f"{self.name}: category ids {dup} appear more than once")
        self.categories = sorted(ids)
        self._label_of = {cid: label for label, cid in enumerate(self.categories)}
        if len(self.categories) != len(self.class_texts):
            raise DataError(f"{self.name} has {len(self.categories)} categories but the class-text "
                            f"list has {len(self.class_texts)} entries; the class-text JSON must list "
                            f"one prompt list per category, in the order of the category ids sorted "
                            f"ascending")
        # A category name that is another class's prompt means the class-text JSON is out of order:
        # every box would be trained against the wrong text (official pain point: #146, #582).
        names = {int(c["id"]): c.get("name") for c in cats}
        # the summary's names, which checkpoints record and evaluation pairs classes by (a nameless
        # category: its first prompt)
        self.class_names = [n if isinstance(n := names[cid], str) and n.strip() else self.class_texts[label][0]
                            for label, cid in enumerate(self.categories)]
        for label, cid in enumerate(self.categories):
            name = names[cid]
            if isinstance(name, str) and name not in self.class_texts[label]:
                other = [j for j, p in enumerate(self.class_texts) if name in p]
                if other:
                    raise DataError(f"{self.name}: category {cid} {name!r} has label {label} "
                                    f"(ids sorted ascending) but is class-text entry {other[0]} "
                                    f"({self.class_texts[label]!r} is at position {label}); order the "
                                    f"class-text JSON by ascending category id")

    def _label_key(self, ann: dict[str, Any], ann_id: Any, image: _Image) -> int:
        cid = ann.get("category_id")
        if not _is_int(cid) or cid not in self._label_of:
            raise DataError(f"{self.name}: annotation {ann_id} has category_id {cid!r}, which is not "
                            f"in 'categories' (ids {self.categories[:20]}"
                            f"{' ...' if len(self.categories) > 20 else ''})")
        return self._label_of[cid]

    def _texts_and_labels(self, keys: list[Any]) -> tuple[list[list[str]], np.ndarray]:
        # one shared list for every record: mosaic recognises identical vocabularies by identity
        return self.class_texts, np.asarray(keys, np.int64).reshape(-1)


class GroundingDataset(_CocoImages):
    """mdetr/GoldG-style grounding JSON: images carry ``caption``, annotations ``tokens_positive``.

    A box's phrase is the caption substrings of its ``[start, end)`` spans joined by ``" "``; a
    record's ``texts`` are its unique phrases (each a one-prompt list, in order of first appearance)
    and its labels index them. ``categories`` is not needed.
    """

    def __init__(self, ann_file: str | os.PathLike, img_dir: str | os.PathLike,
                 filter_empty_gt: bool = False, min_size: int = 32, split: str = "train") -> None:
        super().__init__(ann_file, img_dir, filter_empty_gt, min_size, split=split)

    def _label_key(self, ann: dict[str, Any], ann_id: Any, image: _Image) -> str:
        caption = image.raw.get("caption")
        if not isinstance(caption, str):
            raise DataError(f"{self.name}: image {image.image_id} has caption {caption!r}; a grounding "
                            f"file needs a caption string per image")
        spans = ann.get("tokens_positive")
        if not isinstance(spans, list) or not spans:
            raise DataError(f"{self.name}: annotation {ann_id} has tokens_positive {spans!r}; expected "
                            f"a non-empty list of [start, end] character spans into the caption")
        parts = []
        for span in spans:
            if (not isinstance(span, list) or len(span) != 2 or not all(map(_is_int, span))
                    or not 0 <= span[0] < span[1] <= len(caption)):
                raise DataError(f"{self.name}: annotation {ann_id} has span {span!r} in tokens_positive; "
                                f"expected [start, end] with 0 <= start < end <= {len(caption)} (the "
                                f"caption length)")
            parts.append(caption[span[0]:span[1]])
        phrase = " ".join(parts).strip()
        if not phrase:
            raise DataError(f"{self.name}: annotation {ann_id} has tokens_positive {spans!r}, which "
                            f"select only whitespace of the caption {caption!r}")
        return phrase

    def _texts_and_labels(self, keys: list[Any]) -> tuple[list[list[str]], np.ndarray]:
        unique = list(dict.fromkeys(keys))
        label_of = {p: i for i, p in enumerate(unique)}
        return [[p] for p in unique], np.array([label_of[k] for k in keys], np.int64)


AnyDataset = Union[DetectionDataset, GroundingDataset, "MixedDataset"]


class MixedDataset:
    """Several datasets end to end: index ``i`` maps into the part that holds it.

    ``image_ids`` are the parts' ids concatenated (they may repeat across parts).
    """

    def __init__(self, datasets: Sequence[RecordSource]) -> None:
        if not datasets:
            raise DataError("MixedDataset needs at least one dataset")
        self.datasets = list(datasets)
        self._ends = list(np.cumsum([len(d) for d in self.datasets]).tolist())
        self.image_ids = [i for d in self.datasets for i in d.image_ids]

    def __len__(self) -> int:
        return self._ends[-1]

    def locate(self, i: int) -> tuple[int, int]:
        """(part index, index inside that part) of global index ``i`` (negative counts from the end)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a MixedDataset of {n} images")
        i %= n
        part = bisect.bisect_right(self._ends, i)
        return part, i - (self._ends[part - 1] if part else 0)

    def record(self, i: int) -> Record:
        part, j = self.locate(i)
        return self.datasets[part].record(j)

    def load(self, i: int) -> tuple[np.ndarray, Record]:
        part, j = self.locate(i)
        return self.datasets[part].load(j)


# -- data YAML -----------------------------------------------------------------------------------
_ENTRY_KEYS = {"ann_file", "img_dir", "type"}
_TOP_KEYS = {"train", "val", "class_text_path"}


@dataclass(frozen=True)
class DatasetEntry:
    """One annotation file and its image folder (absolute paths after :func:`read_data_yaml`), or a
    converted YOLO / VOC split held in memory (``coco``; ``ann_file`` then names it in messages)."""

    ann_file: Path
    img_dir: Path
    type: DatasetType = "detection"
    coco: dict[str, Any] | None = None

    def ground_truth(self) -> dict[str, Any] | Path:
        """What ``sdk.evaluation.coco_evaluate`` takes: the annotation file or the converted split."""
        return self.coco if self.coco is not None else self.ann_file


@dataclass(frozen=True)
class DataConfig:
    """The data YAML, resolved: training parts, the validation set and the class texts."""

    train: list[DatasetEntry]
    val: DatasetEntry | None
    class_texts: list[list[str]]
    report: DataReport = field(default_factory=DataReport)  # what reading a YOLO / VOC layout fixed
    title: str = ""  # the summary's first line: file, layout, classes

    def _build(self, entry: DatasetEntry, filter_empty_gt: bool, min_size: int
               ) -> DetectionDataset | GroundingDataset:
        if entry.type == "grounding":
            return GroundingDataset(entry.ann_file, entry.img_dir, filter_empty_gt, min_size)
        return DetectionDataset(entry.ann_file, entry.img_dir, self.class_texts, filter_empty_gt,
                                min_size, entry.coco, "train")

    def build_train(self, filter_empty_gt: bool = False, min_size: int = 32) -> AnyDataset:
        """The training dataset: one part as is, several as a :class:`MixedDataset`."""
        parts = [self._build(e, filter_empty_gt, min_size) for e in self.train]
        return parts[0] if len(parts) == 1 else MixedDataset(parts)

    def build_val(self) -> DetectionDataset:
        """The validation set, unfiltered (every image is evaluated, as in the official test mode)."""
        if self.val is None:
            raise DataError("the data YAML has no 'val:' entry")
        return DetectionDataset(self.val.ann_file, self.val.img_dir, self.class_texts,
                                filter_empty_gt=False, min_size=0, coco=self.val.coco, split="val")


def _entry(value: Any, where: str, root: Path, source: str) -> DatasetEntry:
    if not isinstance(value, dict):
        raise DataError(f"{source}: {where} must be a mapping with ann_file and img_dir, got {value!r}")
    unknown = sorted(set(value) - _ENTRY_KEYS)
    if unknown:
        raise DataError(f"{source}: {where} has unknown key(s) {unknown}; expected "
                        f"{sorted(_ENTRY_KEYS)}")
    for key in ("ann_file", "img_dir"):
        if not isinstance(value.get(key), str) or not value[key]:
            raise DataError(f"{source}: {where}.{key} is {value.get(key)!r}; expected a path")
    kind = value.get("type", "detection")
    if kind not in ("detection", "grounding"):
        raise DataError(f"{source}: {where}.type is {kind!r}; expected 'detection' or 'grounding'")
    return DatasetEntry(root / Path(value["ann_file"]).expanduser(),
                        root / Path(value["img_dir"]).expanduser(), kind)


def read_data_yaml(path: str | os.PathLike) -> DataConfig:
    """Read a data YAML; relative paths are relative to the YAML's folder.

    Keys: ``train`` (one ``{ann_file, img_dir, type}`` mapping or a list of them; ``type`` is
    ``detection`` (default) or ``grounding``), ``val`` (optional, detection), ``class_text_path``
    (required when any part is a detection set).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"data YAML {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DataError(f"cannot read data YAML {str(path)!r}: {e}") from None
    source, root = path.name, Path(os.path.abspath(path.parent))  # abspath also folds ".."
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a mapping with keys {sorted(_TOP_KEYS)}, got "
                        f"{type(data).__name__}")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise DataError(f"{source}: unknown key(s) {unknown}; expected {sorted(_TOP_KEYS)}")
    if not data.get("train"):
        raise DataError(f"{source}: the 'train' key is missing or empty")
    raw_train = data["train"] if isinstance(data["train"], list) else [data["train"]]
    train = [_entry(v, f"train[{k}]" if isinstance(data["train"], list) else "train", root, source)
             for k, v in enumerate(raw_train)]
    val = _entry(data["val"], "val", root, source) if data.get("val") is not None else None
    if val is not None and val.type != "detection":
        raise DataError(f"{source}: val.type is {val.type!r}; evaluation needs a detection set")
    needs_texts = val is not None or any(e.type == "detection" for e in train)
    text_path = data.get("class_text_path")
    if text_path is None:
        if needs_texts:
            raise DataError(f"{source}: 'class_text_path' is missing; detection sets need a class-text "
                            f"JSON (one prompt list per category, ascending category id)")
        class_texts: list[list[str]] = []
    elif not isinstance(text_path, str):
        raise DataError(f"{source}: class_text_path is {text_path!r}; expected a path")
    else:
        class_texts = read_class_texts(root / Path(text_path).expanduser())
    return DataConfig(train, val, class_texts, title=f"{source}: COCO data YAML, {len(class_texts)} classes")


def read_data(path: str | os.PathLike, class_texts: str | os.PathLike | None = None) -> DataConfig:
    """``--data``: a data YAML of COCO files (:func:`read_data_yaml`), an Ultralytics dataset YAML or a
    Pascal VOC folder (``sdk.datasets``; converted in memory). ``class_texts``: a class-text JSON that
    replaces the dataset's prompts (default: the data YAML's ``class_text_path``, or the YOLO/VOC class
    names, one prompt each)."""
    if detect_format(path) == "coco":
        data = read_data_yaml(path)
    else:
        ds = read_dataset(path)
        entry = {split: DatasetEntry(Path(s.source), s.img_dir, "detection", s.coco) for split, s in ds.splits.items()}
        data = DataConfig([entry["train"]], entry.get("val"), ds.class_texts(), ds.report,
                          f"{ds.source}: {ds.format}, {len(ds.class_names)} classes")
    if class_texts is not None:
        texts = read_class_texts(class_texts)
        if data.class_texts and len(texts) != len(data.class_texts):
            raise DataError(f"{class_texts} lists {len(texts)} classes but {Path(path).name} has "
                            f"{len(data.class_texts)}; one prompt list per class, in class order")
        data = DataConfig(data.train, data.val, texts, data.report, data.title)
    return data


def split_summary(dataset: AnyDataset) -> SplitSummary:
    """:meth:`DetectionDataset.summary` of a dataset or of every part of a :class:`MixedDataset`, added."""
    parts = dataset.datasets if isinstance(dataset, MixedDataset) else [dataset]
    sums = [p.summary() for p in parts]
    per_class: dict[str, tuple[int, int]] = {}
    for s in sums:
        for name, (images, boxes) in s.per_class.items():
            before = per_class.get(name, (0, 0))
            per_class[name] = (before[0] + images, before[1] + boxes)
    return SplitSummary(sum(s.images for s in sums), sum(s.boxes for s in sums), sum(s.ignored for s in sums),
                        per_class)


def describe_data(data: DataConfig, train_set: AnyDataset, val_set: DetectionDataset | None) -> str:
    """The summary training prints once at start (``sdk.datacheck.format_summary``): per split images,
    boxes and per-class counts, and what reading the layout and building the sets fixed, named."""
    sets = {"train": train_set, **({"val": val_set} if val_set is not None else {})}
    parts = [p for ds in sets.values() for p in (ds.datasets if isinstance(ds, MixedDataset) else [ds])]
    report = data.report.merged(*(p.report for p in parts))
    return format_summary(data.title or "data", {split: split_summary(ds) for split, ds in sets.items()}, report)
