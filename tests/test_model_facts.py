"""A model carries its facts (input size, class names, prompts) from training into every command, and
evaluation pairs model classes with dataset categories by name, in COCO, YOLO and VOC layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from export.main import main as export_main
from sdk import Detector
from sdk.cli import eval_main, predict_main
from sdk.errors import YoloWorldError
from sdk.evaluation import pair_classes
from sdk.manifest import read_manifest
from training.synthetic import to_voc_layout, to_yolo_layout

TRAINED_IMGSZ = 160  # tests/conftest.py trained_tiny
NAMES = ["red circle", "green square", "blue triangle", "yellow star"]  # the model's classes, in label order


@pytest.fixture(scope="module")
def trained(trained_tiny):
    ckpt, _ = trained_tiny
    data = ckpt.parent.parent / "data"
    return ckpt, data


def evaluate(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / f"metrics_{len(list(tmp_path.glob('metrics_*')))}.json"
    assert eval_main([*args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_checkpoint_records_its_size_and_names(trained):
    ckpt, _ = trained
    det = Detector(ckpt)
    assert (det.imgsz, det.imgsz_from) == (TRAINED_IMGSZ, "trained at")
    assert det.class_names == NAMES
    assert det.describe().startswith(f"imgsz {TRAINED_IMGSZ} (trained at), torch fp32, square letterbox, 4 classes")
    assert Detector(ckpt, imgsz=320).imgsz == 320  # an explicit size still wins


def test_a_checkpoint_without_the_record_keeps_working_at_640(trained, tmp_path):
    ckpt, _ = trained
    data = torch.load(ckpt, weights_only=True)
    for key in ("imgsz", "class_names", "letterbox"):
        data.pop(key)
    old = tmp_path / "old.pt"
    torch.save(data, old)
    det = Detector(old)
    assert (det.imgsz, det.imgsz_from) == (640, "official default") and det.class_names == NAMES


@pytest.mark.slow
@pytest.mark.numeric  # checkpoint (PyTorch) and export (ONNX Runtime) scores compared
def test_eval_export_eval_need_no_size_option(trained, tmp_path):
    ckpt, data = trained
    common = ["--ann", str(data / "annotations" / "val.json"), "--images", str(data / "val")]
    plain = evaluate(tmp_path, *common, "--model", str(ckpt))
    typed = evaluate(tmp_path, *common, "--model", str(ckpt), "--imgsz", str(TRAINED_IMGSZ))
    assert plain["ran"]["imgsz"] == TRAINED_IMGSZ and plain["ran"]["imgsz_from"] == "trained at"
    assert plain["AP"] == typed["AP"] and plain["AP50"] > 0.5
    at_640 = evaluate(tmp_path, *common, "--model", str(ckpt), "--imgsz", "640")
    assert at_640["ran"]["imgsz"] == 640  # (the old default, which the user no longer has to undo)

    onnx = tmp_path / "model.onnx"
    assert export_main(["--weights", str(ckpt), "--output", str(onnx)]) == 0
    manifest = read_manifest(onnx)
    assert manifest.imgsz == (TRAINED_IMGSZ, TRAINED_IMGSZ) and manifest.class_names == NAMES
    exported = evaluate(tmp_path, *common, "--model", str(onnx), "--backend", "onnxruntime", "--square")
    assert exported["ran"]["imgsz"] == TRAINED_IMGSZ and exported["ran"]["imgsz_from"] == "exported at"
    assert abs(exported["AP"] - plain["AP"]) < 0.01, (exported["AP"], plain["AP"])  # fp32 ONNX vs PyTorch
    with pytest.raises(ValueError, match="exported at 160x160"):
        Detector(onnx, imgsz=320, backend="onnxruntime")


def test_predict_says_what_it_ran_with(trained, tmp_path, capsys):
    ckpt, data = trained
    out = tmp_path / "pred"
    assert predict_main([str(data / "val"), "--weights", str(ckpt), "--out", str(out)]) == 0
    assert f"imgsz {TRAINED_IMGSZ} (trained at), torch fp32, square letterbox" in capsys.readouterr().out
    ran = json.loads((out / "predictions.json").read_text())["ran"]
    assert ran["imgsz"] == TRAINED_IMGSZ and ran["backend"] == "torch" and ran["letterbox"] == "square"


# -- pairing by name ----------------------------------------------------------------------------------
def permuted_coco(data: Path, out: Path, order: list[str], rename: dict[str, str] | None = None) -> Path:
    """The COCO data set of ``data`` with category ids renumbered so that sorting by id gives ``order``
    (and names changed by ``rename``): the same boxes under the same names, in another class order."""
    out.mkdir(parents=True)
    new_id = {name: 10 * (k + 1) for k, name in enumerate(order)}
    for split in ("train", "val"):
        coco = json.loads((data / "annotations" / f"{split}.json").read_text())
        name_of = {c["id"]: c["name"] for c in coco["categories"]}
        for a in coco["annotations"]:
            a["category_id"] = new_id[name_of[a["category_id"]]]
        coco["categories"] = [{**c, "id": new_id[c["name"]], "name": (rename or {}).get(c["name"], c["name"])}
                              for c in coco["categories"]]
        (out / f"{split}.json").write_text(json.dumps(coco))
    texts = [[(rename or {}).get(n, n)] for n in order]
    (out / "class_texts.json").write_text(json.dumps(texts))
    (out / "data.yaml").write_text(yaml.safe_dump({
        "train": {"ann_file": "train.json", "img_dir": str(data / "train")},
        "val": {"ann_file": "val.json", "img_dir": str(data / "val")}, "class_text_path": "class_texts.json"}))
    return out / "data.yaml"


@pytest.mark.slow
def test_eval_pairs_classes_by_name_in_every_layout(trained, tmp_path):
    ckpt, data = trained
    reference = evaluate(tmp_path, "--ann", str(data / "annotations" / "val.json"), "--images", str(data / "val"),
                         "--model", str(ckpt))
    assert reference["AP50"] > 0.5  # the model detects (trained_tiny): equal metrics of no detections would pass
    shuffled = permuted_coco(data, tmp_path / "coco", ["yellow star", "blue triangle", "red circle",
                                                       "green square"])
    yolo = to_yolo_layout(shuffled, tmp_path / "yolo")
    assert yaml.safe_load(yolo.read_text())["names"] != NAMES
    voc = to_voc_layout(shuffled, tmp_path / "voc")  # VOC: names sorted, another order again
    for ann, images in ((shuffled.parent / "val.json", str(data / "val")), (yolo, None), (voc, None)):
        got = evaluate(tmp_path, "--ann", str(ann), "--model", str(ckpt), *(["--images", images] if images else []))
        assert got["classes"] == {"paired_by": "name", "paired": 4, "unmatched_model": [],
                                  "unmatched_categories": []}
        assert got["AP"] == pytest.approx(reference["AP"], abs=1e-9), ann
        assert got["per_class"] == pytest.approx(reference["per_class"], abs=1e-9)


@pytest.mark.slow
def test_partial_and_no_overlap(trained, tmp_path, capsys):
    ckpt, data = trained
    order = ["red circle", "green square", "blue triangle", "yellow star"]
    partial = permuted_coco(data, tmp_path / "partial", order, rename={"yellow star": "purple hexagon"})
    got = evaluate(tmp_path, "--ann", str(partial.parent / "val.json"), "--images", str(data / "val"),
                   "--model", str(ckpt))
    assert got["classes"]["unmatched_model"] == ["yellow star"]
    assert got["classes"]["unmatched_categories"] == ["purple hexagon"]
    assert set(got["per_class"]) == {"red circle", "green square", "blue triangle"}  # what both know
    assert "dataset categories the model lacks (not evaluated): ['purple hexagon']" in capsys.readouterr().out

    renamed = {n: f"shape {k}" for k, n in enumerate(order)}
    none = permuted_coco(data, tmp_path / "none", order, rename=renamed)
    args = ["--ann", str(none.parent / "val.json"), "--images", str(data / "val"), "--model", str(ckpt)]
    assert eval_main(args) == 2
    assert "no model class matches a category" in capsys.readouterr().err
    by_position = evaluate(tmp_path, *args, "--classes", ",".join(order))  # the user gives the order
    assert by_position["classes"]["paired_by"] == "position"


def test_pairing_rules():
    cats = [{"id": 5, "name": "Traffic_Light"}, {"id": 2, "name": "car"}, {"id": 9, "name": "person"}]
    p = pair_classes(["car", "traffic light", "dog"], [["car"], ["traffic light"], ["dog", "puppy"]], cats)
    assert p.category_ids == [2, 5, None] and p.unmatched_model == ["dog"] and p.unmatched_categories == ["person"]
    # a prompt pairs a class whose name is not a category, unless another class is named after it
    p = pair_classes(["automobile", "car"], [["automobile", "car"], ["car"]], cats)
    assert p.category_ids == [None, 2]
    p = pair_classes(["automobile"], [["automobile", "car"]], cats)
    assert p.category_ids == [2]
    with pytest.raises(YoloWorldError, match="both named"):
        pair_classes(["car"], [["car"]], [{"id": 1, "name": "car"}, {"id": 2, "name": "Car "}])


def test_predict_searches_subfolders_and_skips_bad_images(trained, tmp_path, capsys):
    ckpt, data = trained
    photos = tmp_path / "photos"
    shutil.copytree(data / "val", photos / "a")
    shutil.copytree(data / "val", photos / "b" / "deeper")  # the same file names, in another folder
    (photos / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "pred"
    assert predict_main([str(photos), "--weights", str(ckpt), "--out", str(out)]) == 2  # stops on it
    assert "broken.jpg" in capsys.readouterr().err and not out.exists()
    assert predict_main([str(photos), "--weights", str(ckpt), "--out", str(out), "--skip-bad"]) == 0
    printed = capsys.readouterr().out
    assert "9 images" in printed and "1 unreadable image(s) skipped" in printed and "broken.jpg" in printed
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg"))
    assert len(written) == 8 and written[0].startswith("a/") and written[-1].startswith("b/deeper/")
    records = json.loads((out / "predictions.json").read_text())["results"]
    assert len(records) == 9 and sum("error" in r for r in records) == 1
