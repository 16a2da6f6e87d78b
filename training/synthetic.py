"""Generated datasets: coloured shapes on a textured background, in COCO format.

The demo set has four visually distinct classes a tiny model learns quickly on CPU, with non-contiguous
category ids (1, 3, 7, 9) so the id -> label mapping is exercised, a synonym for one class, a data
YAML, and a small grounding file (captions with ``tokens_positive`` spans) over some of the training
images. ``SIX_CLASSES`` adds two shapes (the benchmarks' set); ``OTHER_CLASSES`` with the ``"dark"``
background is a different task in another style (the transfer benchmark's fine-tuning set).
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

# (category id, name, prompts, BGR colour, shape kind); ids are deliberately not 0..n-1
ShapeClass = tuple[int, str, list[str], tuple[int, int, int], int]
CIRCLE, SQUARE, TRIANGLE, STAR, HEXAGON, DIAMOND, CROSS, RING = range(8)
CLASSES: list[ShapeClass] = [
    (1, "red circle", ["red circle", "red disk"], (40, 40, 215), CIRCLE),
    (3, "green square", ["green square"], (50, 185, 40), SQUARE),
    (7, "blue triangle", ["blue triangle"], (210, 90, 30), TRIANGLE),
    (9, "yellow star", ["yellow star"], (30, 215, 225), STAR),
]
SIX_CLASSES: list[ShapeClass] = [*CLASSES, (12, "purple hexagon", ["purple hexagon", "violet hexagon"],
                                            (170, 50, 150), HEXAGON),
                                 (15, "orange cross", ["orange cross", "orange plus sign"], (20, 130, 245), CROSS)]
OTHER_CLASSES: list[ShapeClass] = [
    (2, "cyan ring", ["cyan ring"], (220, 210, 40), RING),
    (4, "magenta diamond", ["magenta diamond"], (200, 40, 220), DIAMOND),
    (6, "white cross", ["white cross"], (235, 235, 235), CROSS),
    (8, "lime hexagon", ["lime hexagon"], (60, 230, 150), HEXAGON),
]
GROUNDING_IMAGES = 8  # training images that also get a caption in annotations/grounding.json

_COLOURS = [("red", "scarlet", (40, 40, 215)), ("green", "emerald", (50, 185, 40)),
            ("blue", "azure", (210, 90, 30)), ("yellow", "golden", (30, 215, 225)),
            ("purple", "violet", (170, 50, 150)), ("orange", "amber", (20, 130, 245))]
_SHAPES = [("circle", "disk", CIRCLE), ("square", "tile", SQUARE), ("triangle", "wedge", TRIANGLE),
           ("star", "pentagram", STAR)]
#: A broad vocabulary (the keep-vocabulary benchmark's pre-training set): 24 colour x shape classes, each
#: told apart only by both words, three prompts per class (name, colour synonym, shape synonym).
VOCAB_CLASSES: list[ShapeClass] = [
    (101 + 4 * ci + si, f"{c} {s}", [f"{c} {s}", f"{c2} {s}", f"{c} {s2}"], bgr, kind)
    for ci, (c, c2, bgr) in enumerate(_COLOURS) for si, (s, s2, kind) in enumerate(_SHAPES)]


def _background(rng: np.random.Generator, h: int, w: int, style: str = "grey") -> np.ndarray:
    """Low-saturation texture: smooth blotches, fine noise and a few lines (BGR uint8); ``"grey"`` or
    ``"dark"`` (darker, with a grid)."""
    if style == "dark":
        img = _background(rng, h, w) // 2
        step = int(rng.integers(16, 40))
        img[::step] = img[:, ::step] = 90
        return img
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
    if kind in (CIRCLE, RING):
        cv2.circle(mask, (round(cx), round(cy)), round(r), 255, -1, cv2.LINE_8)
        if kind == RING:
            cv2.circle(mask, (round(cx), round(cy)), round(r * 0.55), 0, -1, cv2.LINE_8)
        return mask
    if kind == CROSS:  # a plus sign: two bars of a third of the size
        t = max(r / 3, 1.5)
        cv2.rectangle(mask, (round(cx - r), round(cy - t)), (round(cx + r), round(cy + t)), 255, -1)
        cv2.rectangle(mask, (round(cx - t), round(cy - r)), (round(cx + t), round(cy + r)), 255, -1)
        return mask
    if kind == HEXAGON:
        angles, radii = np.arange(6) * np.pi / 3, np.full(6, r)
    elif kind == DIAMOND:
        angles, radii, angle = np.arange(4) * np.pi / 2, np.array([r, r * 0.7, r, r * 0.7]), 0.0
    elif kind == SQUARE:  # axis-aligned: its box is exactly the square
        angles = np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
        radii = np.full(4, r * np.sqrt(2))
        angle = 0.0
    elif kind == TRIANGLE:
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


def _draw_image(rng: np.random.Generator, size: int, classes: list[ShapeClass] = CLASSES, style: str = "grey",
                distractors: list[ShapeClass] | None = None
                ) -> tuple[np.ndarray, list[tuple[int, list[float], list[list[float]]]]]:
    """One image and its objects as (class index, COCO xywh box, COCO polygons). ``distractors``: half
    of the images also get one or two objects of these classes, drawn but not annotated (what a user's
    photos hold besides the classes they label)."""
    h, w = [(size, size), (size, size * 3 // 4), (size * 3 // 4, size)][int(rng.integers(3))]
    img = _background(rng, h, w, style)
    objects: list[tuple[int, list[float], list[list[float]]]] = []
    occupied = np.zeros((h, w), bool)
    n_labelled = int(rng.integers(1, 5))
    n_other = int(rng.integers(1, 3)) * int(rng.random() < 0.5) if distractors else 0
    for k in range(n_labelled + n_other):
        pool = classes if k < n_labelled else distractors
        assert pool is not None
        for _attempt in range(30):  # rejection sampling keeps objects apart, so boxes stay honest
            kind = int(rng.integers(len(pool)))
            r = rng.uniform(0.07, 0.2) * min(h, w)
            cx, cy = rng.uniform(r + 1, w - r - 1), rng.uniform(r + 1, h - r - 1)
            mask = _shape_mask(pool[kind][4], h, w, cx, cy, r, rng.uniform(-0.3, 0.3)) > 0
            if not (cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)[occupied].any():
                break
        else:
            continue
        occupied |= mask
        colour = np.array(pool[kind][3], np.float32) + rng.uniform(-15, 15, 3)
        shade = rng.uniform(0.85, 1.0, size=(h, w, 1))  # mild shading so pixels are not all equal
        img[mask] = np.clip(colour * shade[mask], 0, 255).astype(np.uint8)
        if k >= n_labelled:
            continue
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
                        size: int = 256, seed: int = 0, classes: list[ShapeClass] = CLASSES,
                        style: str = "grey", grounding_images: int = GROUNDING_IMAGES,
                        distractors: list[ShapeClass] | None = None) -> Path:
    """Write the shapes dataset under ``root`` and return the path of its ``data.yaml``.

    Layout: ``train/``, ``val/`` (JPEG, longest side ``size``), ``annotations/{train,val}.json``
    (COCO with boxes and polygons, the ``classes``' category ids), ``annotations/grounding.json``
    (captions over the first ``grounding_images`` training images, ``img_dir: train``),
    ``class_texts.json`` and ``data.yaml``. ``distractors``: unannotated objects of other classes in
    half of the images. The same arguments give the same files.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    categories = [{"id": c[0], "name": c[1], "supercategory": "shape"} for c in classes]
    grounding: dict[str, list] = {"images": [], "annotations": [],
                                  "categories": [{"id": 1, "name": "object"}]}
    ann_id = 1
    for split, count in (("train", num_train), ("val", num_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for k in range(count):
            img, objects = _draw_image(rng, size, classes, style, distractors)
            image_id = k + 1
            file_name = f"{split}_{k:05d}.jpg"
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
            if not ok:
                raise OSError(f"OpenCV could not encode {file_name} as JPEG")
            (root / split / file_name).write_bytes(buf.tobytes())
            images.append({"id": image_id, "file_name": file_name, "height": img.shape[0],
                           "width": img.shape[1]})
            for kind, xywh, segmentation in objects:
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": classes[kind][0],
                                    "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": 0,
                                    "segmentation": segmentation})
                ann_id += 1
            if split == "train" and k < grounding_images and objects:
                caption, spans = _caption([classes[kind][1] for kind, _, _ in objects])
                grounding["images"].append({**images[-1], "caption": caption})
                for (_, xywh, _), span in zip(objects, spans, strict=True):
                    grounding["annotations"].append(
                        {"id": len(grounding["annotations"]) + 1, "image_id": image_id,
                         "category_id": 1, "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": 0,
                         "tokens_positive": [span]})
        _write_json(root / "annotations" / f"{split}.json",
                    {"images": images, "annotations": annotations, "categories": categories})
    _write_json(root / "annotations" / "grounding.json", grounding)
    _write_json(root / "class_texts.json", [c[2] for c in classes])
    config = {"train": {"ann_file": "annotations/train.json", "img_dir": "train"},
              "val": {"ann_file": "annotations/val.json", "img_dir": "val"},
              "class_text_path": "class_texts.json"}
    header = ("# Synthetic shapes (training/synthetic.py). To mix in the grounding captions, make train\n"
              "# a list and add {ann_file: annotations/grounding.json, img_dir: train, type: grounding}.\n")
    yaml_path = root / "data.yaml"
    with atomic_path(yaml_path) as tmp:
        tmp.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return yaml_path


def _coco_splits(data_yaml: Path) -> dict[str, tuple[dict[str, Any], Path]]:
    config = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    root = data_yaml.parent
    return {split: (json.loads((root / config[split]["ann_file"]).read_text(encoding="utf-8")),
                    root / config[split]["img_dir"]) for split in ("train", "val") if split in config}


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        dst.write_bytes(src.read_bytes())


def to_yolo_layout(data_yaml: str | os.PathLike, out: str | os.PathLike, polygons: bool = False) -> Path:
    """The generated COCO dataset of ``data_yaml`` as an Ultralytics dataset: ``out/images/<split>/``,
    ``out/labels/<split>/*.txt`` (normalised boxes, or polygons with ``polygons``) and ``out/data.yaml``
    (``names`` in category-id order). Returns the YAML's path."""
    out = Path(out)
    splits = _coco_splits(Path(data_yaml))
    categories = sorted(splits["train"][0]["categories"], key=lambda c: c["id"])
    label = {c["id"]: k for k, c in enumerate(categories)}
    for split, (coco, img_dir) in splits.items():
        by_image: dict[int, list[str]] = {}
        for a in coco["annotations"]:
            by_image.setdefault(a["image_id"], []).append(_yolo_line(a, label, coco, polygons))
        for img in coco["images"]:
            _link_or_copy(img_dir / img["file_name"], out / "images" / split / img["file_name"])
            txt = out / "labels" / split / Path(img["file_name"]).with_suffix(".txt")
            txt.parent.mkdir(parents=True, exist_ok=True)
            txt.write_text("".join(f"{line}\n" for line in by_image.get(img["id"], [])), encoding="utf-8")
    # an absolute root: Ultralytics resolves a relative ``path`` against its own datasets folder
    config = {"path": str(out.resolve()), "train": "images/train", "val": "images/val",
              "names": [c["name"] for c in categories]}
    (out / "data.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return out / "data.yaml"


def _yolo_line(ann: dict[str, Any], label: dict[int, int], coco: dict[str, Any], polygons: bool) -> str:
    img = next(i for i in coco["images"] if i["id"] == ann["image_id"])
    w, h = img["width"], img["height"]
    if polygons and ann.get("segmentation"):
        pts = np.asarray(ann["segmentation"][0], np.float64).reshape(-1, 2) / [w, h]
        return f"{label[ann['category_id']]} " + " ".join(f"{v:.6f}" for v in pts.ravel())
    x, y, bw, bh = ann["bbox"]
    return f"{label[ann['category_id']]} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}"


def to_voc_layout(data_yaml: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The generated COCO dataset of ``data_yaml`` as a Pascal VOC folder: ``out/JPEGImages/``,
    ``out/Annotations/*.xml`` (1-based pixel boxes) and ``out/ImageSets/Main/{train,val}.txt``. Returns
    ``out``."""
    out = Path(out)
    for split, (coco, img_dir) in _coco_splits(Path(data_yaml)).items():
        names = {c["id"]: c["name"] for c in coco["categories"]}
        by_image: dict[int, list[dict[str, Any]]] = {}
        for a in coco["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        ids = []
        for img in coco["images"]:
            _link_or_copy(img_dir / img["file_name"], out / "JPEGImages" / img["file_name"])
            objects = "".join(
                f"<object><name>{names[a['category_id']]}</name><difficult>0</difficult><bndbox>"
                f"<xmin>{a['bbox'][0] + 1:g}</xmin><ymin>{a['bbox'][1] + 1:g}</ymin>"
                f"<xmax>{a['bbox'][0] + a['bbox'][2]:g}</xmax><ymax>{a['bbox'][1] + a['bbox'][3]:g}</ymax>"
                f"</bndbox></object>" for a in by_image.get(img["id"], []))
            stem = Path(img["file_name"]).stem
            (out / "Annotations").mkdir(parents=True, exist_ok=True)
            (out / "Annotations" / f"{stem}.xml").write_text(
                f"<annotation><filename>{img['file_name']}</filename><size><width>{img['width']}</width>"
                f"<height>{img['height']}</height><depth>3</depth></size>{objects}</annotation>", encoding="utf-8")
            ids.append(stem)
        (out / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    return out
