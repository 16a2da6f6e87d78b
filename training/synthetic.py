"""A generated demo dataset: coloured shapes on a textured background, in COCO format.

Four visually distinct classes a tiny model learns quickly on CPU, with non-contiguous category ids
(1, 3, 7, 9) so the id -> label mapping is exercised, a synonym for one class, a data YAML, and a
small grounding file (captions with ``tokens_positive`` spans) over some of the training images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from sdk.atomic import atomic_path

# (category id, name, prompts, BGR colour); ids are deliberately not 0..3
CLASSES: list[tuple[int, str, list[str], tuple[int, int, int]]] = [
    (1, "red circle", ["red circle", "red disk"], (40, 40, 215)),
    (3, "green square", ["green square"], (50, 185, 40)),
    (7, "blue triangle", ["blue triangle"], (210, 90, 30)),
    (9, "yellow star", ["yellow star"], (30, 215, 225)),
]
GROUNDING_IMAGES = 8  # training images that also get a caption in annotations/grounding.json


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Grey, low-saturation texture: smooth blotches, fine noise and a few lines (BGR uint8)."""
    coarse = rng.uniform(70, 180, size=(6, 6)).astype(np.float32)
    smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(smooth[..., None] + rng.normal(0, 8, size=(h, w, 3)), 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        shade = int(rng.integers(60, 200))
        cv2.line(img, p1, p2, (shade, shade, shade), int(rng.integers(1, 3)), cv2.LINE_AA)
    return img


def _shape_mask(kind: int, h: int, w: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """uint8 (h, w) mask of one shape of radius ``r`` centred at (cx, cy)."""
    mask = np.zeros((h, w), np.uint8)
    if kind == 0:  # circle
        cv2.circle(mask, (round(cx), round(cy)), round(r), 255, -1, cv2.LINE_8)
        return mask
    if kind == 1:  # square (axis-aligned: its box is exactly the square)
        angles = np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
        radii = np.full(4, r * np.sqrt(2))
        angle = 0.0
    elif kind == 2:  # triangle
        angles = np.array([-0.5, 1 / 6, 5 / 6]) * np.pi
        radii = np.full(3, r)
    else:  # five-pointed star
        angles = -0.5 * np.pi + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
    angles = angles + angle
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    if kind == 1:
        pts = np.clip(pts, [cx - r, cy - r], [cx + r, cy + r])
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255, cv2.LINE_8)
    return mask


def _polygon(mask: np.ndarray, x1: int, y1: int, x2: int, y2: int) -> list[list[float]]:
    """COCO ``segmentation`` of a mask: its outer contour through the boundary pixels' centres,
    stretched (by at most one pixel) so that its extent is the box ``[x1, x2) x [y1, y2)``, as a
    COCO box is its polygon's extent."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    pts = max(contours, key=len).reshape(-1, 2).astype(np.float64)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pts = np.array([x1, y1]) + (pts - lo) / np.maximum(hi - lo, 1e-9) * np.array([x2 - x1, y2 - y1])
    return [np.round(pts, 2).ravel().tolist()]


def _draw_image(rng: np.random.Generator, size: int
                ) -> tuple[np.ndarray, list[tuple[int, list[float], list[list[float]]]]]:
    """One image and its objects as (class index, COCO xywh box, COCO polygons)."""
    h, w = [(size, size), (size, size * 3 // 4), (size * 3 // 4, size)][int(rng.integers(3))]
    img = _background(rng, h, w)
    objects: list[tuple[int, list[float], list[list[float]]]] = []
    occupied = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(30):  # rejection sampling keeps objects apart, so boxes stay honest
            kind = int(rng.integers(len(CLASSES)))
            r = rng.uniform(0.07, 0.2) * min(h, w)
            cx, cy = rng.uniform(r + 1, w - r - 1), rng.uniform(r + 1, h - r - 1)
            mask = _shape_mask(kind, h, w, cx, cy, r, rng.uniform(-0.3, 0.3)) > 0
            if not (cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)[occupied].any():
                break
        else:
            continue
        occupied |= mask
        colour = np.array(CLASSES[kind][3], np.float32) + rng.uniform(-15, 15, 3)
        shade = rng.uniform(0.85, 1.0, size=(h, w, 1))  # mild shading so pixels are not all equal
        img[mask] = np.clip(colour * shade[mask], 0, 255).astype(np.uint8)
        ys, xs = np.nonzero(mask)
        x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        objects.append((kind, [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                        _polygon(mask, x1, y1, x2, y2)))
    return img, objects


def _write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data), encoding="utf-8")


def _caption(names: list[str]) -> tuple[str, list[list[int]]]:
    """'a red circle next to a blue triangle' style caption and each name's [start, end) span."""
    caption, spans = "", []
    for k, name in enumerate(names):
        if k:
            caption += " next to " if len(names) == 2 else (" and " if k == len(names) - 1 else ", ")
        caption += "a "
        spans.append([len(caption), len(caption) + len(name)])
        caption += name
    return caption, spans


def make_shapes_dataset(root: str | os.PathLike, num_train: int = 64, num_val: int = 16,
                        size: int = 256, seed: int = 0) -> Path:
    """Write the shapes dataset under ``root`` and return the path of its ``data.yaml``.

    Layout: ``train/``, ``val/`` (JPEG, longest side ``size``), ``annotations/{train,val}.json``
    (COCO with boxes and polygons, category ids 1, 3, 7, 9), ``annotations/grounding.json``
    (captions over the first training images, ``img_dir: train``), ``class_texts.json`` and
    ``data.yaml``. The same seed gives the same files.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    categories = [{"id": cid, "name": name, "supercategory": "shape"} for cid, name, _, _ in CLASSES]
    grounding: dict[str, list] = {"images": [], "annotations": [],
                                  "categories": [{"id": 1, "name": "object"}]}
    ann_id = 1
    for split, count in (("train", num_train), ("val", num_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for k in range(count):
            img, objects = _draw_image(rng, size)
            image_id = k + 1
            file_name = f"{split}_{k:05d}.jpg"
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
            if not ok:
                raise OSError(f"OpenCV could not encode {file_name} as JPEG")
            (root / split / file_name).write_bytes(buf.tobytes())
            images.append({"id": image_id, "file_name": file_name, "height": img.shape[0],
                           "width": img.shape[1]})
            for kind, xywh, segmentation in objects:
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": CLASSES[kind][0],
                                    "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": 0,
                                    "segmentation": segmentation})
                ann_id += 1
            if split == "train" and k < GROUNDING_IMAGES:
                caption, spans = _caption([CLASSES[kind][1] for kind, _, _ in objects])
                grounding["images"].append({**images[-1], "caption": caption})
                for (_, xywh, _), span in zip(objects, spans, strict=True):
                    grounding["annotations"].append(
                        {"id": len(grounding["annotations"]) + 1, "image_id": image_id,
                         "category_id": 1, "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": 0,
                         "tokens_positive": [span]})
        _write_json(root / "annotations" / f"{split}.json",
                    {"images": images, "annotations": annotations, "categories": categories})
    _write_json(root / "annotations" / "grounding.json", grounding)
    _write_json(root / "class_texts.json", [prompts for _, _, prompts, _ in CLASSES])
    config = {"train": {"ann_file": "annotations/train.json", "img_dir": "train"},
              "val": {"ann_file": "annotations/val.json", "img_dir": "val"},
              "class_text_path": "class_texts.json"}
    header = ("# Synthetic shapes (training/synthetic.py). To mix in the grounding captions, make train\n"
              "# a list and add {ann_file: annotations/grounding.json, img_dir: train, type: grounding}.\n")
    yaml_path = root / "data.yaml"
    with atomic_path(yaml_path) as tmp:
        tmp.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return yaml_path
