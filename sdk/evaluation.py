"""COCO box evaluation with pycocotools, or faster-coco-eval (same numbers, faster); both optional
dependencies, imported on use."""

from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any

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
                  image_ids: list[int] | None = None, evaluator: str = "pycocotools") -> dict[str, Any]:
    """pycocotools' twelve bbox numbers (keys ``STAT_NAMES``, in [0, 1]) plus ``per_class``
    (category id -> AP). ``results``: COCO entries ``{image_id, category_id, bbox [x, y, w, h],
    score}``; ``image_ids`` restricts evaluation (default: all images of the ground truth).
    ``evaluator``: ``"pycocotools"`` or ``"faster-coco-eval"`` (its C++ port, the same numbers)."""
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
    return results  # type: ignore[return-value]


def evaluate_detector(detector: Any, ann: dict[str, Any], images_dir: str | os.PathLike,
                      category_ids: list[int], batch_size: int = 8, progress: bool = True,
                      evaluator: str = "pycocotools") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run ``detector`` over every image of the COCO ``ann`` (files under ``images_dir``) and score it.

    ``category_ids[k]`` is the dataset id of vocabulary class k. Returns (results, metrics)."""
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
            results.extend(det.to_coco(image_id, category_ids))
        bar.update(len(chunk))
    bar.close()
    return results, coco_evaluate(ann, results, evaluator=evaluator)


__all__ = ["STAT_NAMES", "coco_evaluate", "evaluate_detector", "format_table", "validate_results"]
