"""What a labeling run shows: the summary (counts per class, failures, speed) and a contact sheet of
sampled labeled images to eyeball the thresholds."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sdk.atomic import atomic_path
from sdk.detections import Detections
from sdk.images import read_image

from .outputs import LabelFilter, Merged


def contact_sheet(merged: Merged, class_names: list[str], keep: LabelFilter, path: Path, count: int = 16,
                  tile: int = 320) -> Path | None:
    """A PNG grid of ``count`` images (a stable sample: by a hash of the path) with their labels drawn,
    each fitted into a ``tile`` x ``tile`` cell. None when there is nothing to show."""
    sample = sorted(merged.images, key=lambda item: hashlib.sha256(item[0].path.encode()).digest())[:count]
    if not sample:
        return None
    cells = []
    names = np.asarray(class_names)
    for src, record in sample:
        kept = keep.keep(record)
        det = Detections(np.asarray([b for b, _, _ in kept], np.float32).reshape(-1, 4),
                         np.asarray([s for _, s, _ in kept], np.float32), np.asarray([c for _, _, c in kept], np.int64),
                         names[[c for _, _, c in kept]] if kept else np.zeros(0, dtype=str))
        try:
            image = det.draw(read_image(src.path))
        except Exception:  # changed or removed since it was labeled: a gray cell, not a failed run
            image = np.full((tile, tile, 3), 127, np.uint8)
        cells.append(_fit(image, tile, Path(src.path).name))
    cols = min(4, len(cells))
    rows = -(-len(cells) // cols)
    sheet = np.full((rows * tile, cols * tile, 3), 255, np.uint8)
    for i, cell in enumerate(cells):
        r, c = divmod(i, cols)
        sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = cell
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), sheet):
            raise OSError(f"cannot write the contact sheet {path}")
    return path


def _fit(image: np.ndarray, tile: int, caption: str) -> np.ndarray:
    h, w = image.shape[:2]
    scale = min((tile - 2) / w, (tile - 20) / h)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    cell = np.full((tile, tile, 3), 255, np.uint8)
    cell[18:18 + small.shape[0], 1:1 + small.shape[1]] = small
    cv2.putText(cell, caption[:40], (2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return cell


def summary_text(summary: dict[str, Any]) -> str:
    """The console summary of :func:`labeling.run.label_collection`'s summary dict."""
    lines = [f"{summary['images']} images labeled ({summary['labeled_now']} now, {summary['skipped']} from earlier "
             f"runs), {summary['failed']} unreadable, {summary['boxes']} boxes -> {summary['out']}"]
    if summary["labeled_now"]:
        lines.append(f"  {summary['seconds']:.1f} s, {summary['images_per_s']:.1f} images/s on {summary['ran_on']}")
    width = max((len(n) for n in summary["per_class"]), default=5)
    lines.append(f"  {'class':<{width}}  images   boxes")
    for name, c in summary["per_class"].items():
        lines.append(f"  {name:<{width}}  {c['images']:>6}  {c['boxes']:>6}")
    for path, why in summary["failed_images"][:10]:
        lines.append(f"  unreadable: {path}: {why}")
    if summary["failed"] > 10:
        lines.append(f"  ... and {summary['failed'] - 10} more (failed.txt)")
    return "\n".join(lines)
