"""Datasets in the layouts users already have: Ultralytics/YOLO YAML and Pascal VOC, read into COCO form,
validated line by line, converted by yoloworld-data, evaluated by yoloworld-eval, trained on."""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np
import pytest
import yaml

from sdk.cli import data_main, eval_main
from sdk.datasets import DataError, class_counts, label_path, read_dataset, read_voc, read_yolo
from training.data import read_data, read_data_yaml
from training.synthetic import make_shapes_dataset, to_voc_layout, to_yolo_layout


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    coco_yaml = make_shapes_dataset(root / "coco", num_train=8, num_val=4, size=128, seed=0)
    return {"coco": coco_yaml, "yolo": to_yolo_layout(coco_yaml, root / "yolo"),
            "yolo_poly": to_yolo_layout(coco_yaml, root / "yolo_poly", polygons=True),
            "voc": to_voc_layout(coco_yaml, root / "voc"), "root": root}


def _copy_yolo(shapes, dest):
    """A private copy of the YOLO dataset whose data.yaml points at the copy (its ``path`` is absolute)."""
    import shutil

    shutil.copytree(shapes["yolo"].parent, dest)
    config = yaml.safe_load((dest / "data.yaml").read_text())
    (dest / "data.yaml").write_text(yaml.safe_dump({**config, "path": str(dest)}))
    return dest


def _reference(shapes, split):
    return json.loads((shapes["coco"].parent / "annotations" / f"{split}.json").read_text())


def test_yolo_and_voc_give_the_coco_boxes(shapes):
    for key, tol in (("yolo", 1e-4 * 128), ("yolo_poly", 1e-4 * 128), ("voc", 0.0)):
        ds = read_dataset(shapes[key])
        assert ds.format == key.split("_")[0] and set(ds.splits) == {"train", "val"}
        for split in ("train", "val"):
            ref, got = _reference(shapes, split), ds.splits[split].coco
            assert [(i["file_name"], i["height"], i["width"]) for i in got["images"]] == \
                [(i["file_name"], i["height"], i["width"]) for i in ref["images"]]
            ref_names = {c["id"]: c["name"] for c in ref["categories"]}
            got_names = {c["id"]: c["name"] for c in got["categories"]}
            assert [ref_names[a["category_id"]] for a in ref["annotations"]] == \
                [got_names[a["category_id"]] for a in got["annotations"]]
            np.testing.assert_allclose([a["bbox"] for a in got["annotations"]],
                                       [a["bbox"] for a in ref["annotations"]], atol=tol + 1e-9)
    # YOLO keeps the YAML's class order (category-id order here); VOC sorts the names, as VOC does
    assert read_dataset(shapes["yolo"]).class_names == ["red circle", "green square", "blue triangle", "yellow star"]
    assert read_dataset(shapes["voc"]).class_names == ["blue triangle", "green square", "red circle", "yellow star"]
    poly = read_dataset(shapes["yolo_poly"]).splits["train"].coco["annotations"][0]
    assert len(poly["segmentation"][0]) >= 6  # polygons are kept for the mask-refine augmentations


def test_yolo_yaml_variants(shapes, tmp_path):
    root = shapes["yolo"].parent
    (root / "train_list.txt").write_text("".join(f"./images/train/{p.name}\n"
                                                 for p in sorted((root / "images" / "train").iterdir())[:3]))
    variants = [{"path": str(root), "train": "train_list.txt", "val": ["images/val"],
                 "names": {0: "red circle", 1: "green square", 2: "blue triangle", 3: "yellow star"}, "nc": 4}]
    (tmp_path / "v.yaml").write_text(yaml.safe_dump(variants[0]))
    ds = read_yolo(tmp_path / "v.yaml")
    assert len(ds.splits["train"].coco["images"]) == 3 and len(ds.splits["val"].coco["images"]) == 4
    assert ds.class_names[1] == "green square"
    assert label_path(root / "images" / "train" / "a.jpg") == root / "labels" / "train" / "a.txt"
    # an image without a label file is a background image
    (root / "labels" / "val" / "val_00000.txt").rename(root / "moved.txt")
    try:
        assert not [a for a in read_yolo(shapes["yolo"]).splits["val"].coco["annotations"] if a["image_id"] == 1]
    finally:
        (root / "moved.txt").rename(root / "labels" / "val" / "val_00000.txt")


@pytest.mark.parametrize(("line", "message"), [
    ("0 0.5 0.5 0.2", "expected 'class x_center y_center width height'"),
    ("0 0.5 0.5 0.2 0.2 0.3", "expected 'class x_center y_center width height'"),
    ("one 0.5 0.5 0.2 0.2", "is not numbers"),
    ("7 0.5 0.5 0.2 0.2", "class '7' is not one of the 4 class indices 0..3"),
    ("1.5 0.5 0.5 0.2 0.2", "class '1.5' is not one of"),
    ("0 0.5 0.5 -0.2 0.2", "width -0.2 and height 0.2 must not be negative"),
    ("0 0.5 nan 0.2 0.2", "5 finite numbers"),
])
def test_bad_yolo_lines_are_named_by_file_and_line(shapes, tmp_path, line, message):
    root = _copy_yolo(shapes, tmp_path / "yolo")
    label = root / "labels" / "val" / "val_00002.txt"
    label.write_text(label.read_text() + line + "\n")
    n = len(label.read_text().splitlines())
    with pytest.raises(DataError, match=f"labels/val/val_00002.txt line {n}: .*{message}"):
        read_yolo(root / "data.yaml")


def test_bad_yaml_and_voc_files_are_named(shapes, tmp_path):
    root = shapes["yolo"].parent
    base = {"path": str(root), "train": "images/train"}
    cases = [({**base, "names": []}, "names is \\[\\]"),
             ({**base, "names": ["a"], "nc": 2}, "nc is 2 but names lists 1"),
             ({**base, "train": "nowhere", "names": ["a"]}, "train: 'nowhere' .* is neither an image folder"),
             ({"path": str(root), "val": "images/val", "names": ["a"]}, "the 'train' key is missing"),
             ({**base, "names": {0: "a", 2: "b"}}, "names keys are \\[0, 2\\]; expected the class indices 0..1")]
    for k, (config, message) in enumerate(cases):
        (tmp_path / f"{k}.yaml").write_text(yaml.safe_dump(config))
        with pytest.raises(DataError, match=f"{k}.yaml: {message}"):
            read_yolo(tmp_path / f"{k}.yaml")
    import shutil

    voc = tmp_path / "voc"
    shutil.copytree(shapes["voc"], voc)
    xml = voc / "Annotations" / "val_00001.xml"
    good = xml.read_text()
    no_box = good.replace("<bndbox>", "<bbox>").replace("</bndbox>", "</bbox>")
    for bad, message in [(good.replace("<xmin>", "<xmin>x"), "object\\[0\\]/bndbox/<xmin> is 'x"),
                         (no_box, "object\\[0\\]/<bndbox> is missing"),
                         (good[:40], "not valid XML"),
                         (good.replace("<width>", "<width>-"), "size/<width> -\\d+ and size/<height> \\d+ must be")]:
        xml.write_text(bad)
        with pytest.raises(DataError, match=f"val_00001.xml: {message}"):
            read_voc(voc)
    xml.unlink()
    with pytest.raises(DataError, match="val_00001.xml does not exist \\(listed in ImageSets/Main\\)"):
        read_voc(voc)


def test_voc_difficult_is_ignored_and_without_imagesets_a_val_split_is_made(shapes, tmp_path):
    import shutil

    voc = tmp_path / "voc"
    shutil.copytree(shapes["voc"], voc)
    xml = voc / "Annotations" / "val_00001.xml"
    xml.write_text(xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1))
    val = read_voc(voc).splits["val"]
    crowd = [a for a in val.coco["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["image_id"] == 2
    assert sum(n for _, n in class_counts(val).values()) == len(val.coco["annotations"]) - 1
    shutil.rmtree(voc / "ImageSets")
    ds = read_voc(voc)
    assert [len(ds.splits[s].coco["images"]) for s in ds.splits] == [11, 1]  # every 10th of 12 annotations
    assert ds.report.count("split made", "val") == 1


def test_training_reads_every_layout_and_clips_outside_boxes(shapes, tmp_path):
    for key in ("yolo", "voc"):
        data = read_data(shapes[key])
        assert len(data.build_train(min_size=0)) == 8 and len(data.build_val()) == 4
        assert data.val.ground_truth()["categories"][0]["id"] == 1
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps([["red circle", "red disk"], ["green square"], ["blue triangle"], ["yellow star"]]))
    assert read_data(shapes["yolo"], texts).class_texts[0] == ["red circle", "red disk"]
    texts.write_text(json.dumps([["a"]]))
    with pytest.raises(DataError, match="lists 1 classes but data.yaml has 4"):
        read_data(shapes["yolo"], texts)
    root = _copy_yolo(shapes, tmp_path / "yolo")
    label = root / "labels" / "train" / "train_00000.txt"
    label.write_text(label.read_text() + "1 0.98 0.5 0.2 0.2\n")  # reaches 0.08 past the right edge
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # counted in the report, not warned
        data = read_data(root / "data.yaml")
        data.build_train(min_size=0)
    assert data.report.counts == {("clipped", "train"): 1}
    assert data.report.findings[0].where == f"labels/train/train_00000.txt line {len(label.read_text().splitlines())}"


def test_yoloworld_data_converts_and_counts(shapes, tmp_path, capsys):
    out = tmp_path / "converted"
    assert data_main([str(shapes["yolo"]), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "data.yaml: yolo, 4 classes" and "fixed" not in "\n".join(lines)
    ds = read_dataset(shapes["yolo"])
    train, val = class_counts(ds.splits["train"]), class_counts(ds.splits["val"])
    assert lines[2].split()[:2] == ["train", "8"] and lines[3].split()[:2] == ["val", "4"]
    assert lines[2].split()[2] == str(sum(b for _, b in train.values()))
    (ti, tb), (vi, vb) = train["yellow star"], val["yellow star"]
    assert ["yellow", "star", f"{ti}/{tb}", f"{vi}/{vb}"] in [ln.split() for ln in lines]
    data = read_data_yaml(out / "data.yaml")  # a training data YAML, images where they were
    assert len(data.build_train(min_size=0)) == 8 and data.class_texts[0] == ["red circle"]
    assert data_main([str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml' does not exist" in capsys.readouterr().err


def test_yoloworld_eval_reads_yolo_and_voc(shapes, tmp_path, capsys):
    """Ground-truth boxes submitted as results score AP 1.0 through either layout."""
    for key in ("yolo", "voc"):
        gt = read_dataset(shapes[key]).splits["val"].coco
        results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
                   for a in gt["annotations"]]
        (tmp_path / "r.json").write_text(json.dumps(results))
        assert eval_main(["--ann", str(shapes[key]), "--results", str(tmp_path / "r.json"),
                          "--json", str(tmp_path / "m.json")]) == 0
        assert json.loads((tmp_path / "m.json").read_text())["AP"] == pytest.approx(1.0)
    assert eval_main(["--ann", str(shapes["yolo"]), "--split", "test", "--results", str(tmp_path / "r.json")]) == 2
    assert "has no 'test' split" in capsys.readouterr().err


def test_finetune_on_a_yolo_dataset(shapes, tmp_path):
    from training.finetune import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["--data", str(shapes["yolo"]), "--model", "tiny", "--imgsz", "128", "--epochs", "1",
                     "--batch-size", "4", "--max-steps-per-epoch", "1", "--output", str(tmp_path / "run")]) == 0
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert recorded["num_texts"] == 4 and recorded["lr"] == pytest.approx(1e-3)
    assert recorded["schedule"]["steps_per_epoch"] == 1 and recorded["schedule"]["peak_lr"] == pytest.approx(1e-3)
    # the file is a --config again: the schedule section is read past
    from training.config import add_arguments, resolve

    args = add_arguments(argparse.ArgumentParser()).parse_args(
        ["--config", str(tmp_path / "run" / "config.yaml")])
    assert resolve(args).lr == pytest.approx(1e-3)
