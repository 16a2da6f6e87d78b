"""Datasets and the data YAML: label mapping, every validation error/warning, filters, grounding."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.data import (
    DataError,
    DetectionDataset,
    GroundingDataset,
    MixedDataset,
    describe_data,
    read_data_yaml,
)
from training.synthetic import CLASSES, make_shapes_dataset

H, W = 40, 60  # every crafted image


def _write_image(path: Path, hw: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*hw, 3), 90, np.uint8))


def _coco() -> dict:
    """Two 40x60 images, categories listed out of order with non-contiguous ids 9, 2, 5."""
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                   {"id": 2, "file_name": "sub/b.png", "height": H, "width": W}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 9, "bbox": [1, 2, 10, 20], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [30, 5, 20, 10], "iscrowd": 0},
            {"id": 12, "image_id": 2, "category_id": 5, "bbox": [0, 0, 60, 40]},  # iscrowd omitted
        ],
        "categories": [{"id": 9, "name": "c9"}, {"id": 2, "name": "c2"}, {"id": 5, "name": "c5"}],
    }


TEXTS = [["c2"], ["c5", "five"], ["c9"]]  # ascending category id order


def _write(tmp_path: Path, data: dict | str, name: str = "train.json", images: bool = True) -> Path:
    ann = tmp_path / name
    ann.write_text(data if isinstance(data, str) else json.dumps(data))
    if images and isinstance(data, dict):
        for im in data.get("images", []):
            # only plain names: the path-escape cases must never write outside tmp_path
            if re.fullmatch(r"\w+(/\w+)*\.png", str(im.get("file_name"))) and im.get("height"):
                _write_image(tmp_path / "img" / im["file_name"], (im["height"], im.get("width", W)))
    return ann


def _build(tmp_path: Path, data: dict | str, texts=TEXTS, **kw) -> DetectionDataset:
    return DetectionDataset(_write(tmp_path, data), tmp_path / "img", texts, **kw)


def test_non_contiguous_category_ids_map_to_sorted_labels(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean file warns about nothing
        ds = _build(tmp_path, _coco())
    assert ds.categories == [2, 5, 9]
    assert ds.class_texts == TEXTS and len(ds) == 2 and ds.image_ids == [1, 2]
    r0, r1 = ds.record(0), ds.record(1)
    np.testing.assert_array_equal(r0.labels, [2, 0])  # category 9 -> label 2, category 2 -> label 0
    np.testing.assert_array_equal(r1.labels, [1])
    np.testing.assert_array_equal(r0.boxes, [[1, 2, 11, 22], [30, 5, 50, 15]])  # xywh -> xyxy
    assert r0.boxes.dtype == np.float32 and r0.labels.dtype == np.int64
    assert r0.texts == TEXTS and r1.path == str(tmp_path / "img" / "sub" / "b.png")
    assert not r0.boxes.flags.writeable  # records are shared by every epoch: nobody may edit them
    image, rec = ds.load(1)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8 and rec is r1


def _drop_key(d, key):
    del d[key]


def _set(path, value):
    def mutate(d):
        target = d
        for p in path[:-1]:
            target = target[p]
        if value is None:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return mutate


@pytest.mark.parametrize(
    ("mutate", "texts", "match"),
    [
        # not COCO: the missing key is named
        (lambda d: _drop_key(d, "categories"), TEXTS, r"train\.json: .*'categories' is missing"),
        (lambda d: _drop_key(d, "annotations"), TEXTS, r"'annotations' is missing"),
        # annotation with a category id absent from `categories`: id and annotation named
        (_set(["annotations", 2, "category_id"], 4), TEXTS, r"annotation 12 has category_id 4"),
        # categories vs class texts: both numbers and the ordering rule
        (None, TEXTS[:2], r"3 categories but the class-text list has 2 entries.*sorted ascending"),
        # class-text JSON in the wrong order (category names are other classes' prompts)
        (None, [["c9"], ["c5"], ["c2"]], r"category 2 'c2' has label 0 .* entry 2"),
        # file names must stay inside img_dir
        (_set(["images", 0, "file_name"], "/etc/hosts"), TEXTS, r"file_name '/etc/hosts'.*inside"),
        (_set(["images", 0, "file_name"], "../x.png"), TEXTS, r"file_name '\.\./x\.png'"),
        (_set(["images", 0, "file_name"], "sub/../../x.png"), TEXTS, r"'sub/\.\./\.\./x\.png'"),
        (_set(["images", 0, "file_name"], "..\\x.png"), TEXTS, r"file_name '\.\.\\\\x\.png'"),
        (_set(["images", 0, "file_name"], "C:/x.png"), TEXTS, r"file_name 'C:/x\.png'"),
        # malformed images / annotations name the field and the value
        (_set(["images", 1, "width"], None), TEXTS, r"images\[1\] \(id 2\) has no 'width' field"),
        (_set(["images", 1, "height"], 0), TEXTS, r"image 2 has height 0"),
        (_set(["images", 1, "id"], 1), TEXTS, r"image id 1 appears more than once"),
        (_set(["annotations", 1, "bbox"], [1, 2, 3]), TEXTS, r"annotation 11 has bbox \[1, 2, 3\]"),
        # not a box at all (the rule: malformed is fatal, only empty or outside boxes are dropped)
        (_set(["annotations", 1, "bbox"], [20, 20, -5, 5]), TEXTS, r"annotation 11 has bbox \[20, 20, -5, 5\]; "
                                                                   r"expected finite .* not negative"),
        (_set(["annotations", 1, "bbox"], [float("nan"), 1, 5, 5]), TEXTS, r"annotation 11 has bbox \[nan, 1"),
        (_set(["annotations", 1, "image_id"], 99), TEXTS, r"annotation 11 has image_id 99"),
        (_set(["categories", 1, "id"], 9), TEXTS, r"category ids \[9\] appear more than once"),
        (lambda d: d.update(images=[], annotations=[]), TEXTS,
         r"no images left to train on: the file lists no images"),
    ],
)
def test_invalid_detection_files(tmp_path, mutate, texts, match):
    data = _coco()
    if mutate is not None:
        mutate(data)
    with pytest.raises(DataError, match=match):
        _build(tmp_path, data, texts)


def test_not_json_and_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"train\.json: not valid JSON"):
        _build(tmp_path, "{not json")
    with pytest.raises(DataError, match=r"train\.json: expected a COCO-format object"):
        _build(tmp_path, "[1, 2]")
    with pytest.raises(DataError, match=r"annotation file .*nope\.json' does not exist"):
        DetectionDataset(tmp_path / "nope.json", tmp_path, TEXTS)


def test_missing_images_named_and_counted(tmp_path):
    data = _coco()
    data["images"] = [{"id": i, "file_name": f"m{i}.png", "height": H, "width": W} for i in range(7)]
    data["annotations"] = []
    _write_image(tmp_path / "img" / "m3.png")  # one of the seven exists
    with pytest.raises(DataError) as err:
        DetectionDataset(_write(tmp_path, data, images=False), tmp_path / "img", TEXTS)
    msg = str(err.value)
    assert "train.json: 6 of 7 image files are missing" in msg
    assert all(f"'m{i}.png'" in msg for i in (0, 1, 2, 4, 5)) and "m6.png" not in msg  # first 5
    assert "and 1 more" in msg and "m3.png" not in msg


def test_boxes_clipped_and_dropped_are_counted_and_named(tmp_path):
    data = _coco()
    data["annotations"] = [
        {"id": 1, "image_id": 1, "category_id": 2, "bbox": [10, 10, 5, 5]},  # inside
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [-5, 2, 10, 10]},  # clipped left
        {"id": 3, "image_id": 1, "category_id": 5, "bbox": [55, 30, 10, 20]},  # clipped right/bottom
        {"id": 4, "image_id": 2, "category_id": 9, "bbox": [50, -3, 5, 5]},  # clipped top
        {"id": 5, "image_id": 1, "category_id": 2, "bbox": [70, 5, 5, 5]},  # outside: zero after clip
        {"id": 6, "image_id": 1, "category_id": 2, "bbox": [10, 10, 0, 5]},  # zero width
        {"id": 7, "image_id": 2, "category_id": 2, "bbox": [20, 20, 5, 5.00001]},  # 1e-5 px out: rounding
        {"id": 9, "image_id": 2, "category_id": 5, "bbox": [0, 0, 100, 100], "iscrowd": 1},  # crowd
    ]
    data["images"][1]["height"] = 25
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # findings go into the report, never through warnings
        ds = _build(tmp_path, data, min_size=0)
    assert ds.report.counts == {("clipped", "train"): 3, ("dropped", "train"): 2}
    assert [(f.kind, f.where) for f in ds.report.findings] == [
        ("clipped", "train.json annotation 2"), ("clipped", "train.json annotation 3"),
        ("clipped", "train.json annotation 4"), ("dropped", "train.json annotation 5"),
        ("dropped", "train.json annotation 6")]
    assert ds.report.findings[0].detail == "[-5, 2, 10, 10] -> [0, 2, 5, 10] in the 60x40 (WxH) image"
    np.testing.assert_array_equal(ds.record(0).boxes, [[10, 10, 15, 15], [0, 2, 5, 12], [55, 30, 60, 40]])
    np.testing.assert_array_equal(ds.record(0).labels, [0, 0, 1])
    np.testing.assert_array_equal(ds.record(1).boxes, [[50, 0, 55, 2], [20, 20, 25, 25]])  # crowd box ignored
    np.testing.assert_array_equal(ds.record(1).labels, [2, 0])
    assert ds.summary().ignored == 1 and ds.summary().per_class == {"c2": (2, 3), "c5": (1, 1), "c9": (1, 1)}


def test_training_summary_names_what_was_fixed_and_skipped(tmp_path):
    ds = _yaml_tree(tmp_path)
    data = json.loads((ds / "ann" / "train.json").read_text())
    data["annotations"][0]["bbox"] = [-4, 2, 10, 20]  # annotation 10, clipped
    (ds / "ann" / "train.json").write_text(json.dumps(data))
    (ds / "data.yaml").write_text("train: {ann_file: ann/train.json, img_dir: images}\n"
                                  "val: {ann_file: ann/train.json, img_dir: images}\nclass_text_path: texts.json\n")
    cfg = read_data_yaml(ds / "data.yaml")
    train, val = cfg.build_train(), cfg.build_val()  # min_size 32 skips the 20x100 image in train only
    text = describe_data(cfg, train, val)
    lines = text.splitlines()
    assert lines[0] == "data.yaml: COCO data YAML, 3 classes"
    assert lines[2].split() == ["train", "2", "3", "0", "1", "0", "1"]  # images boxes ignored clipped dropped skipped
    assert lines[3].split() == ["val", "3", "3", "0", "1", "0", "0"]
    assert any(ln.split() == ["c5", "1/1", "1/1"] for ln in lines)
    assert "train: train.json annotation 10: [-4, 2, 10, 20] -> [0, 2, 6, 20]" in text
    assert "train: train.json image 3: 'thin.png' is 20x100 (HxW), shorter side under min_size 32" in text


def test_crowd_only_image_counts_as_empty(tmp_path):
    data = _coco()
    data["annotations"][2]["iscrowd"] = 1  # image 2's only box
    assert len(_build(tmp_path, data)) == 2
    ds = _build(tmp_path, data, filter_empty_gt=True)
    assert ds.image_ids == [1] and len(ds.record(0).boxes) == 2


def test_filter_empty_gt_and_min_size(tmp_path):
    data = _coco()
    data["images"].append({"id": 3, "file_name": "thin.png", "height": 20, "width": 100})
    data["images"].append({"id": 4, "file_name": "empty.png", "height": H, "width": W})
    data["annotations"].append({"id": 13, "image_id": 3, "category_id": 2, "bbox": [1, 1, 5, 5]})
    assert _build(tmp_path, data).image_ids == [1, 2, 4]  # official: keep empty, drop side < 32
    assert _build(tmp_path, data, filter_empty_gt=True).image_ids == [1, 2]
    assert _build(tmp_path, data, min_size=0).image_ids == [1, 2, 3, 4]
    assert _build(tmp_path, data, filter_empty_gt=True, min_size=20).image_ids == [1, 2, 3]
    with pytest.raises(DataError, match=r"no images left to train on: 4 listed, 1 dropped by "
                                        r"filter_empty_gt \(no boxes\), 3 dropped by min_size=50"):
        _build(tmp_path, data, filter_empty_gt=True, min_size=50)


def test_load_rejects_size_mismatch(tmp_path):
    ds = _build(tmp_path, _coco())
    _write_image(tmp_path / "img" / "a.png", (50, W))  # the file no longer matches the json
    with pytest.raises(DataError, match=r"a\.png: the image is 50x60 \(HxW\) but train\.json says 40x60"):
        ds.load(0)


# -- grounding -----------------------------------------------------------------------------------
CAPTION = "a red circle left of a big blue square"


def _span(word: str) -> list[int]:
    start = CAPTION.index(word)
    return [start, start + len(word)]


def _grounding() -> dict:
    return {
        "images": [{"id": 5, "file_name": "g1.png", "height": H, "width": W, "caption": CAPTION},
                   {"id": 6, "file_name": "g2.png", "height": H, "width": W, "caption": "nothing"}],
        "annotations": [
            {"id": 1, "image_id": 5, "bbox": [1, 1, 10, 10], "tokens_positive": [_span("red circle")]},
            # two spans are joined by one space: "blue square"
            {"id": 2, "image_id": 5, "bbox": [20, 5, 10, 10],
             "tokens_positive": [_span("blue"), _span("square")]},
            {"id": 3, "image_id": 5, "bbox": [40, 5, 10, 10], "tokens_positive": [_span("red circle")]},
        ],
    }


def test_grounding_phrases_and_labels(tmp_path):
    ds = GroundingDataset(_write(tmp_path, _grounding()), tmp_path / "img")
    r = ds.record(0)
    assert r.texts == [["red circle"], ["blue square"]]
    np.testing.assert_array_equal(r.labels, [0, 1, 0])
    np.testing.assert_array_equal(r.boxes[1], [20, 5, 30, 15])
    assert ds.record(1).texts == [] and ds.record(1).boxes.shape == (0, 4)  # kept: no filter
    assert GroundingDataset(tmp_path / "train.json", tmp_path / "img", filter_empty_gt=True).image_ids == [5]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (_set(["annotations", 1, "tokens_positive"], [[30, 99]]),
         r"annotation 2 has span \[30, 99\] .* <= 38 \(the caption length\)"),  # past the caption
        (_set(["annotations", 0, "tokens_positive"], []), r"annotation 1 has tokens_positive \[\]"),
        (_set(["annotations", 0, "tokens_positive"], None), r"annotation 1 has tokens_positive None"),
        (_set(["annotations", 0, "tokens_positive"], [[1, 2]]), r"select only whitespace"),
        (_set(["images", 0, "caption"], None), r"image 5 has caption None"),
        (lambda d: _drop_key(d, "annotations"), r"'annotations' is missing"),
    ],
)
def test_invalid_grounding_files(tmp_path, mutate, match):
    data = _grounding()
    mutate(data)
    with pytest.raises(DataError, match=match):
        GroundingDataset(_write(tmp_path, data), tmp_path / "img")


def test_mixed_dataset_indexing(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "g").mkdir()
    det = _build(tmp_path / "d", _coco())
    grd = GroundingDataset(_write(tmp_path / "g", _grounding()), tmp_path / "g" / "img")
    mixed = MixedDataset([det, grd, det])
    assert len(mixed) == 6 and mixed.image_ids == [1, 2, 5, 6, 1, 2]
    assert [mixed.locate(i) for i in range(6)] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert mixed.record(2) is grd.record(0) and mixed.record(3) is grd.record(1)
    assert mixed.record(4) is det.record(0) and mixed.record(-1) is det.record(1)
    image, rec = mixed.load(2)
    assert rec is grd.record(0) and image.shape == (H, W, 3)
    for bad in (6, -7):
        with pytest.raises(IndexError, match=f"index {bad} out of range"):
            mixed.record(bad)
    with pytest.raises(DataError):
        MixedDataset([])


# -- data YAML -----------------------------------------------------------------------------------
def _yaml_tree(tmp_path: Path) -> Path:
    """tmp/ds/{data.yaml, ann/train.json, ann/ground.json, images/, texts.json}."""
    ds = tmp_path / "ds"
    (ds / "ann").mkdir(parents=True)
    data = _coco()
    data["images"].append({"id": 3, "file_name": "thin.png", "height": 20, "width": 100})
    (ds / "ann" / "train.json").write_text(json.dumps(data))
    (ds / "ann" / "ground.json").write_text(json.dumps(_grounding()))
    for im in data["images"] + _grounding()["images"]:
        _write_image(ds / "images" / im["file_name"], (im["height"], im["width"]))
    (ds / "texts.json").write_text(json.dumps(TEXTS))
    return ds


def test_yaml_paths_relative_to_its_folder(tmp_path, monkeypatch):
    ds = _yaml_tree(tmp_path)
    (ds / "data.yaml").write_text(
        "train: {ann_file: ann/train.json, img_dir: images}\n"
        "val: {ann_file: ann/train.json, img_dir: images, type: detection}\n"
        "class_text_path: texts.json\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the YAML, not to the working directory
    cfg = read_data_yaml(Path("..") / "ds" / "data.yaml")
    assert len(cfg.train) == 1 and cfg.train[0].type == "detection"
    assert cfg.train[0].ann_file == (ds / "ann" / "train.json").absolute()
    assert cfg.train[0].img_dir.is_absolute() and cfg.class_texts == TEXTS
    train = cfg.build_train()
    assert isinstance(train, DetectionDataset) and train.image_ids == [1, 2]  # min_size 32 default
    assert cfg.build_train(min_size=0).image_ids == [1, 2, 3]
    assert cfg.build_train(filter_empty_gt=True, min_size=0).image_ids == [1, 2]  # 3 has no box
    assert cfg.build_val().image_ids == [1, 2, 3]  # validation keeps every image


def test_yaml_train_list_builds_mixed(tmp_path):
    ds = _yaml_tree(tmp_path)
    (ds / "data.yaml").write_text(
        "train:\n"
        "  - {ann_file: ann/train.json, img_dir: images}\n"
        "  - {ann_file: ann/ground.json, img_dir: images, type: grounding}\n"
        "class_text_path: texts.json\n")
    cfg = read_data_yaml(ds / "data.yaml")
    assert [e.type for e in cfg.train] == ["detection", "grounding"] and cfg.val is None
    mixed = cfg.build_train()
    assert isinstance(mixed, MixedDataset) and len(mixed) == 4
    assert isinstance(mixed.datasets[1], GroundingDataset)
    with pytest.raises(DataError, match="no 'val:' entry"):
        cfg.build_val()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("train: {ann_file: a.json, img_dir: i}\nclass_text_path: t.json\nnames: [a]\n",
         r"data\.yaml: unknown key\(s\) \['names'\]"),  # typo / unsupported top-level key
        ("train: {ann_file: a.json, img_dir: i, ann-file: b}\nclass_text_path: t.json\n",
         r"train has unknown key\(s\) \['ann-file'\]"),
        ("train: {ann_file: a.json, img_dir: i}\n", r"'class_text_path' is missing"),
        ("train: {ann_file: a.json, img_dir: i, type: segmentation}\n",
         r"train\.type is 'segmentation'"),
        ("train: [{ann_file: a.json}]\n", r"train\[0\]\.img_dir is None"),
        ("val: {ann_file: a.json, img_dir: i}\n", r"'train' key is missing"),
        ("- just a list\n", r"expected a mapping"),
        ("train: {ann_file: a.json, img_dir: i, type: grounding}\n"
         "val: {ann_file: a.json, img_dir: i, type: grounding}\nclass_text_path: t.json\n",
         r"val\.type is 'grounding'"),
        ("train: [unclosed\n", r"cannot read data YAML"),
    ],
)
def test_invalid_yaml(tmp_path, text, match):
    (tmp_path / "data.yaml").write_text(text)
    with pytest.raises(DataError, match=match):
        read_data_yaml(tmp_path / "data.yaml")


def test_grounding_only_yaml_needs_no_class_texts(tmp_path):
    ds = _yaml_tree(tmp_path)
    (ds / "data.yaml").write_text("train: {ann_file: ann/ground.json, img_dir: images, type: grounding}\n")
    cfg = read_data_yaml(ds / "data.yaml")
    assert cfg.class_texts == [] and isinstance(cfg.build_train(min_size=0), GroundingDataset)


# -- the synthetic dataset -----------------------------------------------------------------------
def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_shapes_dataset_is_deterministic_and_valid(tmp_path):
    a = make_shapes_dataset(tmp_path / "a", num_train=6, num_val=2, size=96, seed=3)
    b = make_shapes_dataset(tmp_path / "b", num_train=6, num_val=2, size=96, seed=3)
    c = make_shapes_dataset(tmp_path / "c", num_train=6, num_val=2, size=96, seed=4)
    assert a.name == "data.yaml"
    files_a = _files(a.parent)
    assert files_a == _files(b.parent) and files_a != _files(c.parent)
    assert sum(k.startswith("train/") for k in files_a) == 6 and sum(k.startswith("val/") for k in files_a) == 2

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the generator writes no box that needs fixing
        cfg = read_data_yaml(a)
        train, val = cfg.build_train(min_size=0), cfg.build_val()
    assert train.categories == [1, 3, 7, 9] and len(train) == 6 and len(val) == 2
    assert cfg.class_texts == [c[2] for c in CLASSES]
    assert any(len(p) > 1 for p in cfg.class_texts)  # a synonym
    raw = json.loads((a.parent / "annotations" / "train.json").read_text())
    assert {"id", "image_id", "category_id", "bbox", "area", "iscrowd"} <= set(raw["annotations"][0])
    for i in range(len(train)):
        image, rec = train.load(i)
        assert 1 <= len(rec.boxes) <= 4
        for box, label in zip(rec.boxes, rec.labels, strict=True):
            x1, y1, x2, y2 = box.astype(int)
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
            centre = image[cy - 1:cy + 2, cx - 1:cx + 2].reshape(-1, 3).mean(0)
            # the box centre shows its class's colour (every shape covers its box centre)
            assert np.abs(centre - np.array(CLASSES[label][3])).max() < 45, (i, label, centre)

    ground = GroundingDataset(a.parent / "annotations" / "grounding.json", a.parent / "train", min_size=0)
    assert len(ground) == 6
    for i in range(len(ground)):
        g, d = ground.record(i), train.record(i)
        np.testing.assert_array_equal(g.boxes, d.boxes)  # same image, same boxes ...
        names = [CLASSES[k][1] for k in d.labels]
        assert [g.texts[k][0] for k in g.labels] == names  # ... each box's phrase is its class name
    caption = json.loads((a.parent / "annotations" / "grounding.json").read_text())["images"][0]["caption"]
    assert re.fullmatch(r"a [a-z ]+((, | and | next to )a [a-z ]+)*", caption)

