"""COCO box evaluation with pycocotools (optional dependency, imported on use)."""

from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def coco_evaluate(ground_truth: str | os.PathLike | dict[str, Any], results: list[dict[str, Any]],
                  image_ids: list[int] | None = None) -> dict[str, Any]:
    """pycocotools' twelve bbox numbers (keys ``STAT_NAMES``, in [0, 1]) plus ``per_class``
    (category id -> AP). ``results``: COCO entries ``{image_id, category_id, bbox [x, y, w, h],
    score}``; ``image_ids`` restricts evaluation (default: all images of the ground truth)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise ImportError("COCO evaluation needs pycocotools: pip install 'yoloworld-sdk[eval]'") from e
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


__all__ = ["STAT_NAMES", "coco_evaluate", "format_table"]
