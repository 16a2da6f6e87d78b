"""From shards to training data: the merge (every source image exactly once), the label filters
(per-class score thresholds, minimum box size), and the COCO / YOLO writers.

COCO: ``DIR/annotations/<split>.json`` (``file_name`` relative to the images' common folder, category
ids 1..N in class order, ``score`` kept on each annotation), ``DIR/class_texts.json`` and ``DIR/data.yaml``
(``python -m training.finetune --data DIR/data.yaml``). YOLO: ``DIR/<split>/images/...`` (links to the
images, copies where links fail), ``DIR/<split>/labels/....txt`` and ``DIR/data.yaml`` (Ultralytics
layout; also read by ``--data``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sdk.atomic import atomic_write_text, staged_dir
from sdk.errors import YoloWorldError

from .shards import ShardIndex
from .sources import SourceImage, common_root


class MergeError(YoloWorldError):
    """Source images without a result; the message names them."""


@dataclass(frozen=True)
class LabelFilter:
    """Which detections become labels: ``conf[c]`` per class index, boxes at least ``min_size`` pixels
    wide and high."""

    conf: tuple[float, ...]
    min_size: float = 0.0

    def keep(self, record: dict[str, Any]) -> list[tuple[list[float], float, int]]:
        """``(xyxy, score, class)`` of the record's detections that pass."""
        out = []
        for box, score, cls in zip(record["boxes"], record["scores"], record["classes"], strict=True):
            if score >= self.conf[cls] and min(box[2] - box[0], box[3] - box[1]) >= self.min_size:
                out.append((box, score, cls))
        return out


@dataclass
class Merged:
    """Each source image's result in source order; ``failed``: ``(path, error)`` of unreadable images."""

    images: list[tuple[SourceImage, dict[str, Any]]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def merge(sources: list[SourceImage], index: ShardIndex) -> Merged:
    """One result per source image, or :class:`MergeError` naming those without one (and
    ``ShardError`` for an image with several)."""
    out, missing = Merged(), []
    for src in sources:
        record = index.result(src.path, src.key)
        if record is None:
            missing.append(src.path)
        elif "error" in record:
            out.failed.append((src.path, record["error"]))
        else:
            out.images.append((src, record))
    if missing:
        raise MergeError(f"{len(missing)} of {len(sources)} images have no result, e.g. {missing[:5]}; "
                         f"rerun the same command to label them")
    return out


def split_of(path: str, val_fraction: float) -> str:
    """``"val"`` for a stable ``val_fraction`` of paths (by a hash of the path, so reruns and other
    machines agree), else ``"train"``."""
    h = int.from_bytes(hashlib.sha256(path.encode("utf-8")).digest()[:8], "big") / 2.0**64
    return "val" if h < val_fraction else "train"


def write_coco(merged: Merged, class_texts: list[list[str]], keep: LabelFilter, out: Path,
               val_fraction: float) -> dict[str, Any]:
    """The COCO files and data YAML; returns the per-split COCO dicts."""
    root = common_root([src.path for src, _ in merged.images])
    cats = [{"id": k + 1, "name": texts[0]} for k, texts in enumerate(class_texts)]
    splits: dict[str, dict[str, Any]] = {}
    for src, record in merged.images:
        empty = {"images": [], "annotations": [], "categories": cats}
        coco = splits.setdefault(split_of(src.path, val_fraction), empty)
        image_id = len(coco["images"]) + 1
        h, w = record["hw"]
        coco["images"].append({"id": image_id, "file_name": os.path.relpath(src.path, root).replace(os.sep, "/"),
                               "width": w, "height": h})
        for (x1, y1, x2, y2), score, cls in keep.keep(record):
            bw, bh = x2 - x1, y2 - y1
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "category_id": cls + 1, "bbox": [x1, y1, bw, bh],
                                        "area": round(bw * bh, 3), "iscrowd": 0, "score": score})
    config: dict[str, Any] = {}
    for name in [s for s in ("train", "val") if s in splits]:
        atomic_write_text(out / "annotations" / f"{name}.json", json.dumps(splits[name]))
        config[name] = {"ann_file": f"annotations/{name}.json", "img_dir": os.path.relpath(root, os.path.abspath(out))}
    for stale in {"train", "val"} - set(splits):
        (out / "annotations" / f"{stale}.json").unlink(missing_ok=True)
    config["class_text_path"] = "class_texts.json"
    atomic_write_text(out / "class_texts.json", json.dumps(class_texts, indent=1))
    atomic_write_text(out / "data.yaml", yaml.safe_dump(config, sort_keys=False))
    return splits


def write_yolo(merged: Merged, class_texts: list[list[str]], keep: LabelFilter, out: Path,
               val_fraction: float) -> dict[str, int]:
    """The YOLO folders and data YAML (written into a staging folder, then swapped in); returns the
    number of images per split."""
    root = common_root([src.path for src, _ in merged.images])
    counts: dict[str, int] = {}
    with staged_dir(out / "yolo") as stage:
        for src, record in merged.images:
            split = split_of(src.path, val_fraction)
            rel = Path(os.path.relpath(src.path, root))
            image, label = stage / split / "images" / rel, (stage / split / "labels" / rel).with_suffix(".txt")
            image.parent.mkdir(parents=True, exist_ok=True)
            label.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(src.path, image)
            h, w = record["hw"]
            lines = [f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                     for (x1, y1, x2, y2), _, cls in keep.keep(record)]
            label.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            counts[split] = counts.get(split, 0) + 1
        shutil.rmtree(out / "yolo", ignore_errors=True)  # the previous label set, replaced as a whole
    config: dict[str, object] = {"path": "yolo", **{s: f"{s}/images" for s in ("train", "val") if s in counts},
              "names": {k: texts[0] for k, texts in enumerate(class_texts)}}
    atomic_write_text(out / "class_texts.json", json.dumps(class_texts, indent=1))
    atomic_write_text(out / "data.yaml", yaml.safe_dump(config, sort_keys=False))
    return counts


def _link_or_copy(src: str, dst: Path) -> None:
    try:
        os.symlink(src, dst)
    except OSError:  # file systems without links (some Windows set-ups, some mounts)
        shutil.copy2(src, dst)


def class_counts(merged: Merged, class_names: list[str], keep: LabelFilter) -> dict[str, dict[str, int]]:
    """Class name -> ``{"images", "boxes"}`` in the written labels."""
    counts = {n: {"images": 0, "boxes": 0} for n in class_names}
    for _, record in merged.images:
        kept = [cls for _, _, cls in keep.keep(record)]
        for cls in set(kept):
            counts[class_names[cls]]["images"] += 1
        for cls in kept:
            counts[class_names[cls]]["boxes"] += 1
    return counts
