"""Issue 21: every kind of bad data a user met, through yoloworld-data, training (read_data + the dataset builders)
and yoloworld-eval: what is fatal names the file and line (or XML element) and exits 2 / raises DataError; what is
fixed (clipped or dropped boxes, a made val split, an absent test folder) is counted and named in one summary."""

from __future__ import annotations

import json
import shutil
import warnings

import cv2
import pytest
import yaml

from sdk.cli import data_main, eval_main
from sdk.datasets import DataError, read_dataset
from training.data import describe_data, read_data
from training.synthetic import make_shapes_dataset, to_voc_layout, to_yolo_layout

NAMES = ["red circle", "green square", "blue triangle", "yellow star"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_data")
    coco_yaml = make_shapes_dataset(root / "coco", num_train=8, num_val=4, size=128, seed=0)
    return {"coco": coco_yaml.parent, "yolo": to_yolo_layout(coco_yaml, root / "yolo").parent,
            "voc": to_voc_layout(coco_yaml, root / "voc")}


def _copy(shapes, layout, dest):
    """A private copy (the fixture's YOLO / VOC images are hard links to the COCO ones); YOLO's ``path`` follows."""
    shutil.copytree(shapes[layout], dest)
    if layout == "yolo":
        config = yaml.safe_load((dest / "data.yaml").read_text())
        (dest / "data.yaml").write_text(yaml.safe_dump({**config, "path": str(dest)}))
    return dest


def _source(layout, root):
    return root if layout == "voc" else root / "data.yaml"


def _no_warnings_build(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # findings go into the report, never through warnings
        data = read_data(path)
        train, val = data.build_train(min_size=0), data.build_val()
    return data, train, val


# -- fatal: named, exit 2 / DataError ---------------------------------------------------------------------
@pytest.mark.parametrize(("layout", "image"), [
    ("yolo", "images/train/train_00003.jpg"),  # yoloworld-data and training via sdk.datasets
    ("voc", "JPEGImages/train_00003.jpg"),
    ("coco", "train/train_00003.jpg"),  # the training data YAML: DetectionDataset's own check
])
def test_truncated_jpeg_is_fatal_and_named(shapes, tmp_path, capsys, layout, image):
    root = _copy(shapes, layout, tmp_path / layout)
    data = (root / image).read_bytes()
    (root / image).write_bytes(data[: int(len(data) * 0.6)])  # a download cut at 60 %
    message = r"1 of \d+ image files are truncated or corrupt: '.*train_00003.jpg'.*: truncated JPEG \(no end-of-image"
    with pytest.raises(DataError, match=message):
        read_data(_source(layout, root)).build_train(min_size=0)
    if layout == "coco":
        return
    assert data_main([str(_source(layout, root))]) == 2
    err = capsys.readouterr().err
    assert "train_00003.jpg" in err and "truncated JPEG" in err and "Premature end" not in err
    (tmp_path / "r.json").write_text("[]")
    assert eval_main(["--ann", str(_source(layout, root)), "--split", "train", "--results",
                      str(tmp_path / "r.json")]) == 2
    assert "truncated JPEG" in capsys.readouterr().err


def test_voc_image_listed_but_missing_is_fatal_and_named(shapes, tmp_path, capsys):
    root = _copy(shapes, "voc", tmp_path / "voc")
    (root / "JPEGImages" / "train_00003.jpg").unlink()
    (root / "JPEGImages" / "val_00001.jpg").unlink()
    with pytest.raises(DataError, match=r"voc \(train\): 1 of 8 image files are missing from .*JPEGImages': "
                                        r"'train_00003.jpg' \(Annotations/train_00003.xml\)"):
        read_data(root)
    assert data_main([str(root)]) == 2
    assert "'train_00003.jpg' (Annotations/train_00003.xml)" in capsys.readouterr().err
    shutil.copy(shapes["voc"] / "JPEGImages" / "train_00003.jpg", root / "JPEGImages")  # only val's is missing now
    (tmp_path / "r.json").write_text("[]")
    assert eval_main(["--ann", str(root), "--results", str(tmp_path / "r.json")]) == 2
    assert "'val_00001.jpg' (Annotations/val_00001.xml)" in capsys.readouterr().err


@pytest.mark.parametrize("config", [
    {"path": ".", "train": "images/train", "val": "images/val"},  # names forgotten
    {"train": "images/train", "val": "images/val", "nc": 4},  # nc alone: the prompts are the names
])
def test_yaml_without_names_says_it_needs_names(shapes, tmp_path, capsys, config):
    root = _copy(shapes, "yolo", tmp_path / "yolo")
    (root / "data.yaml").write_text(yaml.safe_dump(config))
    message = r"data\.yaml: no 'names': an Ultralytics dataset YAML .* needs names, a list of class names"
    with pytest.raises(DataError, match=message):
        read_data(root / "data.yaml")
    assert data_main([str(root / "data.yaml")]) == 2
    err = capsys.readouterr().err
    assert "no 'names'" in err and "unknown key" not in err and "is COCO" not in err


def _misspell(root, wrong="red cirle"):
    """Rename one 'red circle' object: returns (xml name, object index)."""
    for xml in sorted((root / "Annotations").glob("*.xml")):
        text = xml.read_text()
        if "<name>red circle</name>" in text:
            k = text[: text.index("<name>red circle</name>")].count("<object>") - 1
            xml.write_text(text.replace("<name>red circle</name>", f"<name>{wrong}</name>", 1))
            return xml.name, k
    raise AssertionError("no red circle")


def test_misspelt_voc_class_is_fatal_with_the_near_name(shapes, tmp_path, capsys):
    root = _copy(shapes, "voc", tmp_path / "voc")
    xml, k = _misspell(root)
    message = (rf"'red cirle' \(1 object\(s\), first Annotations/{xml} object\[{k}\]\) looks like a misspelling "
               rf"of 'red circle' \(5 objects\).*extra class.*classes\.txt")
    with pytest.raises(DataError, match=message):
        read_dataset(root)
    with pytest.raises(DataError, match=message):
        read_data(root)
    assert data_main([str(root)]) == 2
    assert f"Annotations/{xml} object[{k}]" in capsys.readouterr().err
    # both real classes: classes.txt says so (and gives the label order)
    (root / "classes.txt").write_text("\n".join([*NAMES, "red cirle"]) + "\n")
    assert read_dataset(root).class_names == [*NAMES, "red cirle"]
    # a name outside classes.txt is fatal too, with the near name suggested
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")
    with pytest.raises(DataError, match=rf"not in classes.txt: 'red cirle' \(Annotations/{xml} object\[{k}\]; "
                                        rf"did you mean 'red circle'\?\)"):
        read_dataset(root)


# -- fixed and counted: named once in the summary, never through warnings --------------------------------------
def test_outside_boxes_are_clipped_or_dropped_named_and_written_clipped(shapes, tmp_path, capsys):
    root = _copy(shapes, "yolo", tmp_path / "yolo")
    label = root / "labels" / "train" / "train_00001.txt"
    n = len(label.read_text().splitlines())
    label.write_text(label.read_text() + "0 0.1 0.5 0.5 0.2\n"  # reaches past the left edge: clipped
                     "3 1.5 0.5 0.2 0.2\n"  # wholly right of the image: dropped
                     "1 0.5 0.5 0 0.1\n")  # zero width: dropped
    h, w = cv2.imread(str(root / "images" / "train" / "train_00001.jpg")).shape[:2]
    out = tmp_path / "converted"
    assert data_main([str(root / "data.yaml"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "boxes clipped to their image: 1 (train 1)" in printed
    assert f"train: labels/train/train_00001.txt line {n + 1}: [-{0.15 * w:.5g}, " in printed
    assert "boxes dropped (no area inside their image): 2 (train 2)" in printed
    assert f"labels/train/train_00001.txt line {n + 2}: [{1.4 * w:.5g}" in printed
    assert f"labels/train/train_00001.txt line {n + 3}: " in printed
    coco = json.loads((out / "annotations" / "train.json").read_text())
    boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == 2]
    assert len(boxes) == n + 1  # the dropped two are not written
    assert boxes[-1] == pytest.approx([0, 0.4 * h, 0.35 * w, 0.2 * h], abs=1e-3)  # the clipped box, written clipped
    assert all(x >= 0 and y >= 0 and x + bw <= w + 1e-9 and y + bh <= h + 1e-9 for x, y, bw, bh in boxes)
    # training: the same fixes, counted once, no raw warning, named in the summary it prints
    data, train, val = _no_warnings_build(root / "data.yaml")
    assert data.report.count("clipped", "train") == 1 and data.report.count("dropped", "train") == 2
    summary = describe_data(data, train, val)
    assert f"labels/train/train_00001.txt line {n + 1}" in summary and "boxes clipped to their image: 1" in summary


def test_negative_yolo_width_is_fatal_zero_is_dropped(shapes, tmp_path):
    root = _copy(shapes, "yolo", tmp_path / "yolo")
    label = root / "labels" / "val" / "val_00000.txt"
    n = len(label.read_text().splitlines())
    label.write_text(label.read_text() + "0 0.5 0.5 -0.1 0.1\n")
    with pytest.raises(DataError, match=rf"labels/val/val_00000.txt line {n + 1}: width -0.1 and height 0.1 must "
                                        rf"not be negative"):
        read_dataset(root / "data.yaml")


@pytest.mark.parametrize("layout", ["voc", "yolo"])
def test_missing_val_split_is_made_every_10th_image_and_said(shapes, tmp_path, capsys, layout):
    root = _copy(shapes, layout, tmp_path / layout)
    if layout == "voc":
        shutil.rmtree(root / "ImageSets")  # 12 annotations, no split lists
        where, train_n, val_names = "voc/ImageSets/Main", 11, ["val_00001.jpg"]  # sorted ids: the 10th
    else:
        config = yaml.safe_load((root / "data.yaml").read_text())
        del config["val"]
        (root / "data.yaml").write_text(yaml.safe_dump(config))
        where, train_n, val_names = "data.yaml", 7, ["train_00007.jpg"]  # fewer than 10: the last one
    ds = read_dataset(_source(layout, root))
    assert [im["file_name"] for im in ds.splits["val"].coco["images"]] == val_names
    assert len(ds.splits["train"].coco["images"]) == train_n
    assert read_dataset(_source(layout, root)).splits["val"].coco == ds.splits["val"].coco  # deterministic
    assert data_main([str(_source(layout, root))]) == 0
    printed = capsys.readouterr().out
    assert "(made from train)" in printed and f"val: {where}: " in printed and "every 10th training image" in printed
    data, train, val = _no_warnings_build(_source(layout, root))
    assert len(train) == train_n and len(val) == 1 and "(made from train)" in describe_data(data, train, val)


# -- layouts that must load as they are ---------------------------------------------------------------------------
def test_roboflow_export_loads_and_its_absent_test_folder_is_ignored(shapes, tmp_path, capsys):
    root = tmp_path / "roboflow"
    for split, folder in (("train", "train"), ("val", "valid")):
        for kind in ("images", "labels"):
            shutil.copytree(shapes["yolo"] / kind / split, root / folder / kind)
    (root / "data.yaml").write_text(  # as Roboflow writes it: paths from a folder above, no path:, no test/
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 4\n"
        f"names: {json.dumps(NAMES)}\n\nroboflow:\n  workspace: me\n  project: shapes\n  version: 1\n")
    ds = read_dataset(root / "data.yaml")
    assert set(ds.splits) == {"train", "val"} and ds.class_names == NAMES
    assert ds.splits["train"].img_dir == root / "train" / "images"
    assert ds.report.count("ignored", "test") == 1
    assert data_main([str(root / "data.yaml")]) == 0
    assert "test: data.yaml: test: '../test/images' does not exist" in capsys.readouterr().out
    _, train, val = _no_warnings_build(root / "data.yaml")
    assert len(train) == 8 and len(val) == 4


def test_ultralytics_layouts_load_as_they_are(shapes, tmp_path, monkeypatch):
    dataset = tmp_path / "datasets" / "shapes8"
    for kind in ("images", "labels"):
        shutil.copytree(shapes["yolo"] / kind, dataset / kind)
    (tmp_path / "cfg").mkdir()
    coco8_style = {"path": "../datasets/shapes8", "train": "images/train", "val": "images/val", "test": None,
                   "names": dict(enumerate(NAMES)), "download": "https://example.invalid/shapes8.zip"}
    (tmp_path / "cfg" / "a.yaml").write_text(yaml.safe_dump(coco8_style))
    # Ultralytics resolves a relative path: from the working directory too; "validation" is its alias of val
    (tmp_path / "cfg" / "b.yaml").write_text(yaml.safe_dump(
        {**coco8_style, "path": "datasets/shapes8", "validation": "images/val", "val": None}))
    monkeypatch.chdir(tmp_path)
    for name in ("a.yaml", "b.yaml"):
        ds = read_dataset(tmp_path / "cfg" / name)
        assert [len(ds.splits[s].coco["images"]) for s in ("train", "val")] == [8, 4]
        assert not ds.report.counts and ds.class_names == NAMES  # nothing to fix, nothing made
