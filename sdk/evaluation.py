"""COCO box evaluation with pycocotools, or faster-coco-eval (same numbers, faster); both optional
dependencies, imported on use."""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import YoloWorldError

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _evaluator(name: str) -> tuple[Any, Any]:
    """(COCO, COCOeval) classes of ``"pycocotools"`` or ``"faster-coco-eval"``."""
    try:
        if name == "faster-coco-eval":
            from faster_coco_eval import COCO, COCOeval_faster

            return COCO, COCOeval_faster
        if name == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval

            return COCO, COCOeval
    except ImportError as e:
        raise ImportError(f"COCO evaluation with {name} needs it installed: pip install {name} "
                          "(pycocotools comes with 'yoloworld-sdk[eval]')") from e
    raise ValueError(f"unknown COCO evaluator {name!r}: expected 'pycocotools' or 'faster-coco-eval'")


def coco_evaluate(ground_truth: str | os.PathLike | dict[str, Any], results: list[dict[str, Any]],
                  image_ids: list[int] | None = None, evaluator: str = "pycocotools",
                  category_ids: list[int] | None = None) -> dict[str, Any]:
    """pycocotools' twelve bbox numbers (keys ``STAT_NAMES``, in [0, 1]) plus ``per_class``
    (category id -> AP). ``results``: COCO entries ``{image_id, category_id, bbox [x, y, w, h],
    score}``; ``image_ids`` / ``category_ids`` restrict evaluation (default: all images and categories
    of the ground truth). ``evaluator``: ``"pycocotools"`` or ``"faster-coco-eval"`` (its C++ port, the
    same numbers)."""
    COCO, COCOeval = _evaluator(evaluator)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ground_truth if isinstance(ground_truth, dict) else json.loads(
            open(ground_truth, encoding="utf-8").read())
        gt.createIndex()
        if not results:
            return {**{k: 0.0 for k in STAT_NAMES}, "per_class": {}}
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        if category_ids is not None:
            ev.params.catIds = sorted(category_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out: dict[str, Any] = {k: float(v) for k, v in zip(STAT_NAMES, ev.stats, strict=True)}
    precision = ev.eval["precision"]  # (iou, recall, class, area, maxdet)
    per_class = {}
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        per_class[int(cat)] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    out["per_class"] = per_class
    return out


def format_table(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{k} {metrics[k]:.3f}" for k in STAT_NAMES[:6])




_RESULT_FIELDS = {"image_id": (int,), "category_id": (int,), "bbox": (list, tuple), "score": (int, float)}


def validate_results(results: object, source: str = "results") -> list[dict[str, Any]]:
    """A COCO results list, checked entry by entry (the error names the entry and the field)."""
    if not isinstance(results, list):
        raise YoloWorldError(f"{source}: expected a JSON list of detections, got {type(results).__name__}")
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise YoloWorldError(f"{source}: entry {i} is {type(r).__name__}, expected an object")
        for name, types in _RESULT_FIELDS.items():
            if name not in r:
                raise YoloWorldError(f"{source}: entry {i} has no '{name}' (needs image_id, category_id, "
                                     f"bbox [x, y, w, h], score)")
            if not isinstance(r[name], types) or isinstance(r[name], bool):
                raise YoloWorldError(f"{source}: entry {i} field '{name}' is {r[name]!r}")
        if len(r["bbox"]) != 4 or not all(isinstance(v, (int, float)) for v in r["bbox"]):
            raise YoloWorldError(f"{source}: entry {i} field 'bbox' is {r['bbox']!r}, expected [x, y, w, h]")
    return results


def normalize_name(name: str) -> str:
    """A class name as names are compared: case, surrounding and repeated whitespace, ``_`` and ``-`` ignored."""
    return " ".join(name.replace("_", " ").replace("-", " ").casefold().split())


@dataclass(frozen=True)
class ClassPairing:
    """Model classes paired with dataset categories by name.

    ``category_ids[k]``: the category id of model class k, or None where no category has its name (or one
    of its prompts); ``unmatched_model`` / ``unmatched_categories``: names on one side only."""

    category_ids: list[int | None]
    unmatched_model: list[str]
    unmatched_categories: list[str]
    by_position: bool = False  # paired by order (``--classes`` with no name in common)

    @property
    def paired(self) -> list[int]:
        return [c for c in self.category_ids if c is not None]

    def describe(self) -> str:
        n, total = len(self.paired), len(self.category_ids)
        how = "by position (--classes order)" if self.by_position else "by name"
        line = f"classes paired {how}: {n} of {total} model classes with {n} dataset categories"
        if self.unmatched_model:
            line += f"; model classes not in the dataset (their detections dropped): {self.unmatched_model[:10]}"
        if self.unmatched_categories:
            line += f"; dataset categories the model lacks (not evaluated): {self.unmatched_categories[:10]}"
        return line


def pair_classes(names: list[str], prompts: list[list[str]], categories: list[dict[str, Any]],
                 source: str = "the dataset", by_position: bool = False) -> ClassPairing:
    """Pair model classes (``names[k]``, with ``prompts[k]`` as synonyms) with ``categories`` (COCO
    ``{id, name}``) by :func:`normalize_name`; a class's own name wins over another class's prompt.

    No name in common raises, unless ``by_position`` (the user gave the order): then class k is the k-th
    category by ascending id, and both lists must be as long."""
    cats = sorted(categories, key=lambda c: c["id"])
    by_name: dict[str, int] = {}
    for c in cats:
        key = normalize_name(str(c.get("name", "")))
        if key in by_name:
            raise YoloWorldError(f"{source}: categories {by_name[key]} and {c['id']} are both named {c.get('name')!r}")
        by_name[key] = int(c["id"])
    ids: list[int | None] = [by_name.get(normalize_name(n)) for n in names]
    for k, synonyms in enumerate(prompts):  # then prompts, for categories no class is named after
        if ids[k] is None:
            taken = set(ids)
            free = (by_name[t] for t in map(normalize_name, synonyms) if t in by_name and by_name[t] not in taken)
            ids[k] = next(free, None)
    if not any(i is not None for i in ids):
        if by_position and len(names) == len(cats):
            return ClassPairing([int(c["id"]) for c in cats], [], [], by_position=True)
        raise YoloWorldError(
            f"no model class matches a category of {source} by name: model {names[:10]}, dataset "
            f"{[c.get('name') for c in cats][:10]}; pass --classes (a class-text JSON in the order of the "
            f"category ids) to pair them by position")
    used = set(ids)
    return ClassPairing(ids, [n for n, i in zip(names, ids, strict=True) if i is None],
                        [str(c.get("name")) for c in cats if int(c["id"]) not in used])


def evaluate_detector(detector: Any, ann: dict[str, Any], images_dir: str | os.PathLike,
                      category_ids: list[int | None], batch_size: int = 8, progress: bool = True,
                      evaluator: str = "pycocotools") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run ``detector`` over every image of the COCO ``ann`` (files under ``images_dir``) and score it.

    ``category_ids[k]`` is the dataset id of vocabulary class k (:func:`pair_classes`); classes mapped to
    None are dropped, and only the categories some class maps to are evaluated. Returns (results, metrics)."""
    from pathlib import Path

    from tqdm import tqdm

    root = Path(images_dir).resolve()
    records = []
    for img in ann.get("images", []):
        path = (root / str(img["file_name"])).resolve()
        if root not in path.parents:
            raise YoloWorldError(f"image file_name {img['file_name']!r} escapes the image folder {root}")
        records.append((int(img["id"]), str(path)))
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(records), unit="img", disable=not progress)
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        for (image_id, _), det in zip(chunk, detector.predict([p for _, p in chunk], batch_size=batch_size),
                                      strict=True):
            keep = np.array([category_ids[c] is not None for c in det.class_id.tolist()], bool)
            results.extend(det[keep].to_coco(image_id, category_ids) if len(det) else [])
        bar.update(len(chunk))
    bar.close()
    paired = [c for c in category_ids if c is not None]
    cats = None if len(paired) == len(ann.get("categories", [])) else paired
    return results, coco_evaluate(ann, results, evaluator=evaluator, category_ids=cats)


__all__ = ["STAT_NAMES", "ClassPairing", "coco_evaluate", "evaluate_detector", "format_table", "normalize_name",
           "pair_classes", "validate_results"]
