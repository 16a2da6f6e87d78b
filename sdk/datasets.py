"""Detection datasets in the layouts users already have, read into COCO form (numpy, OpenCV, YAML only).

- **COCO**: an annotation JSON and its image folder (what the rest of the project reads natively).
- **Ultralytics / YOLO**: a dataset YAML with ``path`` (the root; relative to the YAML's folder, else to
  the working directory; default the YAML's folder), ``train`` / ``val`` (or ``validation``) / ``test``
  (each an image folder, searched recursively, a ``.txt`` list of image paths, or a list of those,
  relative to ``path``) and ``names`` (a list, or a mapping from class index to name). Roboflow's export
  (no ``path``, ``train: ../train/images`` beside the YAML): an entry starting with ``../`` that does not
  exist is looked for without it. Each image's labels are ``labels/.../<stem>.txt`` beside
  ``images/.../`` (the last ``images`` folder of the path becomes ``labels``), one object per line:
  ``class x_center y_center width height`` normalised to [0, 1], or a polygon ``class x1 y1 x2 y2 ...``
  (kept as a COCO ``segmentation``); no label file means no objects.
- **Pascal VOC**: a folder with ``Annotations/*.xml``, ``JPEGImages/`` and ``ImageSets/Main/<split>.txt``
  (``train``, ``val``, ``trainval``, ``test``; without ``ImageSets`` every annotation is listed). Class
  names come from ``classes.txt`` in the folder (one a line, in label order) when there is one, else
  from the XML objects, sorted (VOC's own class order is alphabetical); 1-based pixel boxes become COCO
  ``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]``; ``difficult`` objects become ``iscrowd``
  (ignored by training and by the COCO evaluation, as VOC ignores them).

Class ``k`` (label order) has COCO category id ``k + 1``. Every dataset goes through ``sdk.datacheck``
(its docstring has the rule): what cannot be used is a :class:`DataError` naming the file and line (or
XML element); boxes reaching outside their image are clipped, boxes without area inside it dropped, a
missing val split made, each counted in :attr:`Dataset.report`.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2

from .datacheck import (
    VAL_EVERY,
    DataError,
    DataReport,
    Finding,
    check_images,
    display_path,
    fix_boxes,
    format_summary,
    hold_out,
    likely_typos,
    listing,
    summarize_coco,
)
from .images import IMAGE_SUFFIXES

Format = Literal["coco", "yolo", "voc"]
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One split in COCO form: ``coco`` has ``images`` (``file_name`` relative to ``img_dir``),
    ``annotations`` (``bbox`` [x, y, w, h] pixels, inside the image) and ``categories`` (ids 1..N in
    label order)."""

    coco: dict[str, Any]
    img_dir: Path
    source: str  # for messages: "coco8.yaml (val)"


@dataclass(frozen=True)
class Dataset:
    """A dataset read from any supported layout, with what the check fixed (``report``)."""

    format: Format
    class_names: list[str]
    splits: dict[str, Split] = field(default_factory=dict)
    report: DataReport = field(default_factory=DataReport)
    source: str = ""  # the YAML or folder, for the summary's title

    def class_texts(self) -> list[list[str]]:
        """One prompt list per class: its name."""
        return [[n] for n in self.class_names]

    def describe(self) -> str:
        """The summary table (``sdk.datacheck.format_summary``): per split and class, and every fix."""
        title = f"{self.source}: {self.format}, {len(self.class_names)} classes"
        table = format_summary(title, {s: summarize_coco(v.coco) for s, v in self.splits.items()}, self.report)
        return table + "\n  images in: " + "; ".join(f"{s} {v.img_dir}" for s, v in self.splits.items())


def detect_format(path: str | os.PathLike) -> Format:
    """``voc`` for a folder with ``Annotations/``; ``coco`` for a COCO JSON or this project's data YAML
    (``train`` holds mappings with ``ann_file``); ``yolo`` for an Ultralytics dataset YAML. A YAML that
    is Ultralytics-like (``path`` / ``train`` / ``val`` image folders) but has no ``names`` is a
    :class:`DataError` saying so."""
    path = Path(path)
    if path.is_dir():
        if (path / "Annotations").is_dir():
            return "voc"
        raise DataError(f"{path} is a folder without Annotations/: expected a Pascal VOC folder "
                        f"(Annotations/, JPEGImages/, ImageSets/Main/), a dataset YAML or a COCO JSON")
    if path.suffix.lower() == ".json":
        return "coco"
    data = _read_yaml(path)
    if not isinstance(data, dict) or _is_coco_yaml(data):
        return "coco"  # training.data.read_data_yaml says what is wrong with it
    if "names" in data:
        return "yolo"
    if "nc" in data or any(isinstance(data.get(k), (str, list)) for k in ("path", "train", "val", "test")):
        raise DataError(f"{path.name}: no 'names': an Ultralytics dataset YAML (path, train and val image "
                        f"folders) needs names, a list of class names (names: [cat, dog]) or a mapping index "
                        f"-> name (names: {{0: cat, 1: dog}}); YOLO-World's prompts are the class names, so "
                        f"nc alone is not enough. (This project's COCO data YAML has train: {{ann_file: ..., "
                        f"img_dir: ...}} entries instead.)")
    return "coco"


def _is_coco_yaml(data: dict[str, Any]) -> bool:
    train = data.get("train")
    entries = train if isinstance(train, list) else [train, data.get("val")]
    return "class_text_path" in data or any(isinstance(e, dict) for e in entries)


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"dataset file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DataError(f"cannot read {str(path)!r}: {e}") from None


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) as the training and inference readers see the image (EXIF orientation applied)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"image {str(path)!r} cannot be read (missing, corrupt or not an image)")
    return img.shape[0], img.shape[1]


def _sizes(paths: list[Path]) -> list[tuple[int, int]]:
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # OpenCV decodes without the GIL
        return list(pool.map(image_size, paths))


# -- Ultralytics / YOLO --------------------------------------------------------------------------------
def read_yolo(yaml_path: str | os.PathLike) -> Dataset:
    """An Ultralytics dataset YAML and its ``labels/*.txt`` (see the module docstring)."""
    yaml_path = Path(yaml_path)
    data = _read_yaml(yaml_path)
    src = yaml_path.name
    if not isinstance(data, dict):
        raise DataError(f"{src}: expected a mapping with path, train, val and names")
    names = _yolo_names(data.get("names"), src)
    if "nc" in data and data["nc"] != len(names):
        raise DataError(f"{src}: nc is {data['nc']!r} but names lists {len(names)} classes")
    root = _yolo_root(data.get("path"), yaml_path, src)
    if not data.get("train"):
        raise DataError(f"{src}: the 'train' key is missing or empty")
    report = DataReport()
    lists = {}
    for split in SPLITS:
        entry = data.get(split) or (data.get("validation") if split == "val" else None)
        if not entry:
            continue
        if split == "test" and not all(_resolve(e, root).exists() for e in _as_list(entry)):
            report.add(Finding("ignored", "test", src, f"test: {entry!r} does not exist under {root}; ignored "
                                                       f"(only train and val are used)"))
            continue
        lists[split] = _yolo_images(entry, root, f"{src}: {split}")
    if "val" not in lists:
        lists = _made_val(lists, report, src, "the YAML has no val")
    splits = {split: _yolo_split(images, names, root, f"{src} ({split})", split, report)
              for split, images in lists.items()}
    return Dataset("yolo", names, splits, report, src)


def _made_val(lists: dict[str, list[Any]], report: DataReport, where: str, why: str) -> dict[str, list[Any]]:
    """``lists`` with a val split made from train (``sdk.datacheck.hold_out``), recorded in ``report``."""
    train, val = hold_out(lists["train"])
    if not val:
        return lists
    report.add(Finding("split made", "val", where, f"{why}: val is every {VAL_EVERY}th training image "
                                                    f"({len(val)}), train the other {len(train)}"))
    return {"train": train, "val": val, **{k: v for k, v in lists.items() if k != "train"}}


def _yolo_root(value: Any, yaml_path: Path, src: str) -> Path:
    """``path`` relative to the YAML's folder, else to the working directory (where Ultralytics' own
    examples resolve ``path: ../datasets/coco8``); no ``path``: the YAML's folder."""
    base = Path(os.path.abspath(yaml_path.parent))
    if not value:
        return base
    p = Path(str(value)).expanduser()
    tried = [p] if p.is_absolute() else [base / p, Path.cwd() / p]
    for candidate in tried:
        if candidate.is_dir():
            return Path(os.path.abspath(candidate))
    raise DataError(f"{src}: path {str(value)!r} is not a folder (tried {', '.join(map(str, tried))})")


def _yolo_names(names: Any, src: str) -> list[str]:
    if isinstance(names, dict):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise DataError(f"{src}: names keys are {keys[:10]}; expected the class indices 0..{len(keys) - 1}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise DataError(f"{src}: names is {names!r}; expected a non-empty list of class names or a mapping "
                        f"index -> name")
    return [n.strip() for n in names]


def _as_list(entry: Any) -> list[Any]:
    return entry if isinstance(entry, list) else [entry]


def _resolve(entry: Any, root: Path) -> Path:
    """An entry's path under ``root``. Roboflow writes ``train: ../train/images`` into a YAML that sits
    in the dataset folder: a ``../`` entry not found from ``root`` is looked for without the ``../``."""
    p = Path(os.path.abspath(root / Path(str(entry)).expanduser()))
    if p.exists() or not str(entry).startswith("../"):
        return p
    inside = Path(os.path.abspath(root / str(entry)[3:]))
    return inside if inside.exists() else p


def _yolo_images(entry: Any, root: Path, where: str) -> list[Path]:
    images: list[Path] = []
    for e in _as_list(entry):
        if not isinstance(e, str):
            raise DataError(f"{where} entry {e!r}: expected an image folder or a .txt list of images")
        p = _resolve(e, root)
        if p.is_dir():
            images += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file() and p.suffix.lower() == ".txt":
            lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
            images += [Path(os.path.abspath(p.parent / ln if ln.startswith("./") else root / ln)) for ln in lines]
        else:
            raise DataError(f"{where}: {e!r} ({p}) is neither an image folder nor a .txt list of images")
    if not images:
        raise DataError(f"{where}: no images found in {entry!r}")
    return images


def label_path(image: Path) -> Path:
    """``.../images/a/b.jpg`` -> ``.../labels/a/b.txt`` (the last ``images`` component)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")  # labels beside the images


def _yolo_split(images: list[Path], names: list[str], root: Path, source: str, split: str,
                report: DataReport) -> Split:
    check_images(images, source, root)  # before decoding: a cut JPEG must not reach libjpeg's nameless warning
    img_dir = Path(os.path.commonpath([str(p.parent) for p in images]))
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": _categories(names)}
    for image_id, (path, (h, w)) in enumerate(zip(images, _sizes(images), strict=True), start=1):
        coco["images"].append({"id": image_id, "file_name": path.relative_to(img_dir).as_posix(), "height": h,
                               "width": w})
        label = label_path(path)
        anns, origins = _yolo_labels(label, display_path(label, root), len(names), w, h)
        for ann in fix_boxes(anns, origins, (w, h), report, split):
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id, **ann})
    return Split(coco, img_dir, source)


def _yolo_labels(path: Path, name: str, nc: int, w: int, h: int) -> tuple[list[dict[str, Any]], list[str]]:
    """(COCO annotations in pixels, unclipped; ``name line N`` of each)."""
    if not path.is_file():
        return [], []  # a background image
    out, origins = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{name} line {n}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise DataError(f"{where}: {line.strip()!r} is not numbers; expected 'class x_center y_center width "
                            f"height' (normalised) or a polygon 'class x1 y1 x2 y2 ...'") from None
        if len(values) < 5 or (len(values) > 5 and (len(values) - 1) % 2) or not all(map(math.isfinite, values)):
            raise DataError(f"{where}: {line.strip()!r}; expected 'class x_center y_center width height' "
                            f"(5 finite numbers) or a polygon 'class x1 y1 x2 y2 x3 y3 ...' (at least 3 points)")
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < nc:
            raise DataError(f"{where}: class {fields[0]!r} is not one of the {nc} class indices 0..{nc - 1}")
        if len(values) == 5:
            cx, cy, bw, bh = values[1:]
            if bw < 0 or bh < 0:  # zero is an empty box (dropped); negative is not a box at all
                raise DataError(f"{where}: width {bw} and height {bh} must not be negative")
            out.append({"category_id": int(cls) + 1, "bbox": [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h],
                        "area": bw * w * bh * h, "iscrowd": 0})
        else:
            xs, ys = [v * w for v in values[1::2]], [v * h for v in values[2::2]]  # 3+ points (7+ numbers)
            x0, y0 = min(xs), min(ys)
            poly = [c for xy in zip(xs, ys, strict=True) for c in xy]
            out.append({"category_id": int(cls) + 1, "bbox": [x0, y0, max(xs) - x0, max(ys) - y0],
                        "segmentation": [poly], "area": (max(xs) - x0) * (max(ys) - y0), "iscrowd": 0})
        origins.append(where)
    return out, origins


def _categories(names: list[str]) -> list[dict[str, Any]]:
    return [{"id": k + 1, "name": n} for k, n in enumerate(names)]


# -- Pascal VOC ----------------------------------------------------------------------------------------
def read_voc(root: str | os.PathLike) -> Dataset:
    """A Pascal VOC folder (see the module docstring)."""
    root = Path(os.path.abspath(root))
    ann_dir, img_dir = root / "Annotations", root / "JPEGImages"
    if not ann_dir.is_dir():
        raise DataError(f"{root}: no Annotations/ folder; expected a Pascal VOC folder")
    if not img_dir.is_dir():
        raise DataError(f"{root}: no JPEGImages/ folder; expected a Pascal VOC folder")
    report = DataReport()
    ids = _voc_ids(root, ann_dir, report)
    parsed = {split: [_voc_xml(ann_dir / f"{i}.xml") for i in items] for split, items in ids.items()}
    names = _voc_names(root, parsed)
    label = {n: k + 1 for k, n in enumerate(names)}
    splits = {split: _voc_split(records, names, label, img_dir, f"{root.name} ({split})", split, report)
              for split, records in parsed.items()}
    return Dataset("voc", names, splits, report, root.name)


def _voc_ids(root: Path, ann_dir: Path, report: DataReport) -> dict[str, list[str]]:
    """Image ids per split from ``ImageSets/Main`` (or every annotation), a val split made if none."""
    sets = root / "ImageSets" / "Main"
    ids: dict[str, list[str]] = {}
    if sets.is_dir():
        for split, files in (("train", ("train.txt", "trainval.txt")), ("val", ("val.txt",)), ("test", ("test.txt",))):
            f = next((sets / n for n in files if (sets / n).is_file()), None)
            if f is not None:
                ids[split] = [ln.split()[0] for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if "val" in ids and not (sets / "train.txt").is_file():  # trainval.txt holds the val images too
            val = set(ids["val"])
            ids["train"] = [i for i in ids.get("train", []) if i not in val]
    else:
        ids["train"] = sorted(p.stem for p in ann_dir.glob("*.xml"))
    if not ids.get("train"):
        raise DataError(f"{root}: no training images (ImageSets/Main/train.txt or trainval.txt, or "
                        f"Annotations/*.xml without ImageSets)")
    if "val" in ids:
        return ids
    why = "ImageSets/Main has no val.txt" if sets.is_dir() else "there is no ImageSets/Main"
    return _made_val(ids, report, f"{root.name}/ImageSets/Main", why)


def _voc_names(root: Path, parsed: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Class names: ``classes.txt`` (every XML name must be in it) or the XML names, sorted; a name close
    to a more frequent one is a likely misspelling, a :class:`DataError`."""
    counts: Counter[str] = Counter()
    first: dict[str, str] = {}
    for records in parsed.values():
        for rec in records:
            for k, o in enumerate(rec["objects"]):
                counts[o["name"]] += 1
                first.setdefault(o["name"], f"{rec['xml']} object[{k}]")
    listed = root / "classes.txt"
    if listed.is_file():
        names = [ln.strip() for ln in listed.read_text(encoding="utf-8").splitlines() if ln.strip()]
        unknown = [n for n in counts if n not in names]
        if unknown:
            raise DataError(f"{root.name}: {len(unknown)} class name(s) of the XML are not in classes.txt: "
                            + listing([f"{n!r} ({first[n]}{_near(n, names)})" for n in unknown]))
        return names
    if not counts:
        raise DataError(f"{root}: no <object> in any annotation")
    typos = likely_typos(counts)
    if typos:
        found = [f"{n!r} ({counts[n]} object(s), first {first[n]}) looks like a misspelling of {m!r} "
                 f"({counts[m]} objects)" for n, m in typos.items()]
        raise DataError(f"{root.name}: {listing(found)}; a misspelt name would train as an extra class. Correct "
                        f"the <name>, or if these are different classes, list every class in "
                        f"{root / 'classes.txt'} (one name a line, in label order)")
    return sorted(counts)


def _near(name: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _voc_split(records: list[dict[str, Any]], names: list[str], label: dict[str, int], img_dir: Path,
               source: str, split: str, report: DataReport) -> Split:
    check_images([img_dir / r["file_name"] for r in records], source, img_dir, [r["xml"] for r in records])
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": _categories(names)}
    for image_id, rec in enumerate(records, start=1):
        coco["images"].append({"id": image_id, "file_name": rec["file_name"], "height": rec["height"],
                               "width": rec["width"]})
        anns, origins = [], []
        for k, o in enumerate(rec["objects"]):
            x1, y1, x2, y2 = o["box"]
            anns.append({"category_id": label[o["name"]], "bbox": [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1],
                         "area": (x2 - x1 + 1) * (y2 - y1 + 1), "iscrowd": int(o["difficult"])})
            origins.append(f"{rec['xml']} object[{k}]")
        for ann in fix_boxes(anns, origins, (rec["width"], rec["height"]), report, split):
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id, **ann})
    return Split(coco, img_dir, source)


def _voc_xml(path: Path) -> dict[str, Any]:
    try:
        tree = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist (listed in ImageSets/Main)") from None
    except ET.ParseError as e:
        raise DataError(f"{path}: not valid XML: {e}") from None

    def text(node: ET.Element, tag: str, where: str) -> str:
        child = node.find(tag)
        if child is None or child.text is None or not child.text.strip():
            raise DataError(f"{path}: {where}<{tag}> is missing or empty")
        return child.text.strip()

    def number(node: ET.Element, tag: str, where: str) -> float:
        raw = text(node, tag, where)
        try:
            v = float(raw)
        except ValueError:
            raise DataError(f"{path}: {where}<{tag}> is {raw!r}; expected a number") from None
        if not math.isfinite(v):
            raise DataError(f"{path}: {where}<{tag}> is {raw!r}; expected a finite number")
        return v

    size = tree.find("size")
    if size is None:
        raise DataError(f"{path}: <size> is missing")
    w, h = int(number(size, "width", "size/")), int(number(size, "height", "size/"))
    if w <= 0 or h <= 0:
        raise DataError(f"{path}: size/<width> {w} and size/<height> {h} must be positive")
    objects = []
    for k, obj in enumerate(tree.findall("object")):
        where = f"object[{k}]/"
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{path}: {where}<bndbox> is missing")
        coords = [number(box, t, where + "bndbox/") for t in ("xmin", "ymin", "xmax", "ymax")]
        if coords[2] < coords[0] or coords[3] < coords[1]:
            raise DataError(f"{path}: {where}bndbox has xmax < xmin or ymax < ymin ({coords})")
        diff = obj.find("difficult")
        objects.append({"name": text(obj, "name", where), "box": coords,
                        "difficult": diff is not None and (diff.text or "0").strip() == "1"})
    return {"file_name": text(tree, "filename", ""), "width": w, "height": h, "objects": objects,
            "xml": f"{path.parent.name}/{path.name}"}


# -- any layout ----------------------------------------------------------------------------------------
def read_dataset(path: str | os.PathLike) -> Dataset:
    """A YOLO YAML or VOC folder (see :func:`detect_format`; COCO data YAMLs are read by ``training.data``)."""
    fmt = detect_format(path)
    if fmt == "yolo":
        return read_yolo(path)
    if fmt == "voc":
        return read_voc(path)
    raise DataError(f"{path} is COCO (a COCO JSON, or a data YAML whose train entries have ann_file): training "
                    f"reads it as it is; this reads Ultralytics dataset YAMLs and Pascal VOC folders")


def class_counts(split: Split) -> dict[str, tuple[int, int]]:
    """Class name -> (images, boxes) of ``split`` (crowd/difficult boxes not counted)."""
    return summarize_coco(split.coco).per_class


def write_coco(dataset: Dataset, out: str | os.PathLike, class_texts: list[list[str]] | None = None) -> Path:
    """``out/annotations/<split>.json``, ``out/class_texts.json`` and ``out/data.yaml`` (the training data
    YAML; image folders stay where they are, referenced relative to ``out``). Returns the data YAML."""
    import yaml

    from .atomic import atomic_write_text

    out = Path(out)
    texts = class_texts or dataset.class_texts()
    entries = {}
    for split, s in dataset.splits.items():
        atomic_write_text(out / "annotations" / f"{split}.json", json.dumps(s.coco))
        entries[split] = {"ann_file": f"annotations/{split}.json",
                          "img_dir": os.path.relpath(s.img_dir, os.path.abspath(out))}
    atomic_write_text(out / "class_texts.json", json.dumps(texts, indent=1))
    config = {"train": entries["train"], **({"val": entries["val"]} if "val" in entries else {}),
              "class_text_path": "class_texts.json"}
    return atomic_write_text(out / "data.yaml", yaml.safe_dump(config, sort_keys=False))


__all__ = ["SPLITS", "DataError", "Dataset", "Split", "class_counts", "detect_format", "image_size", "label_path",
           "read_dataset", "read_voc", "read_yolo", "write_coco"]
