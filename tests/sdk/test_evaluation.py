"""COCO evaluation: identical to pycocotools run directly; results-file validation; the CLI."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from sdk.cli import eval_main
from sdk.evaluation import STAT_NAMES, coco_evaluate, validate_results

# 3 images (image 3 has no ground truth), categories 1, 5, 9 (9 has no ground truth, non-contiguous ids)
GT = {
    "images": [{"id": i, "file_name": f"{i}.png", "height": 100, "width": 120} for i in (1, 2, 3)],
    "categories": [{"id": 1, "name": "cat"}, {"id": 5, "name": "dog"}, {"id": 9, "name": "bird"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 40], "area": 1200, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 5, "bbox": [50, 20, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 5, "bbox": [5, 5, 90, 80], "area": 7200, "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [60, 60, 10, 10], "area": 100, "iscrowd": 0},
    ],
}
DT = [
    {"image_id": 1, "category_id": 1, "bbox": [11, 9, 30, 41], "score": 0.9},  # good
    {"image_id": 1, "category_id": 5, "bbox": [70, 30, 40, 40], "score": 0.8},  # IoU ~0.33
    {"image_id": 2, "category_id": 5, "bbox": [5, 5, 90, 80], "score": 0.7},  # exact
    {"image_id": 2, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.95},  # false positive
    {"image_id": 3, "category_id": 9, "bbox": [1, 1, 10, 10], "score": 0.6},  # on the empty image
]


def pycocotools_direct(gt, dt, max_dets=None):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = json.loads(json.dumps(gt))
        g.createIndex()
        e = COCOeval(g, g.loadRes(json.loads(json.dumps(dt))), "bbox")
        if max_dets:
            e.params.maxDets = max_dets
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e.stats


def test_equals_pycocotools_direct():
    ours = coco_evaluate(GT, DT)
    ref = pycocotools_direct(GT, DT)
    np.testing.assert_array_equal([ours[k] for k in STAT_NAMES], ref)
    assert 0 < ours["AP"] < 1 and ours["AP50"] >= ours["AP75"] > 0
    assert ours["per_class"][9] == -1.0  # no ground truth for "bird"
    assert ours["per_class"][5] > 0 and set(ours["per_class"]) == {1, 5, 9}


def test_faster_coco_eval_gives_the_same_numbers(tmp_path):
    pytest.importorskip("faster_coco_eval", reason="faster-coco-eval is optional (installed with the dev extra)")
    ref = coco_evaluate(GT, DT)
    fast = coco_evaluate(GT, DT, evaluator="faster-coco-eval")
    np.testing.assert_allclose([fast[k] for k in STAT_NAMES], [ref[k] for k in STAT_NAMES], atol=1e-12)
    assert fast["per_class"] == pytest.approx(ref["per_class"], abs=1e-12)
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    (tmp_path / "dt.json").write_text(json.dumps(DT))
    assert eval_main(["--ann", str(tmp_path / "gt.json"), "--results", str(tmp_path / "dt.json"),
                      "--evaluator", "faster-coco-eval", "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["AP"] == pytest.approx(ref["AP"], abs=1e-12)
    with pytest.raises(ValueError, match="unknown COCO evaluator 'cocoapi'"):
        coco_evaluate(GT, DT, evaluator="cocoapi")


def _twelve_of_one_class():
    """One image, twelve separate cats, each detected exactly (scores 0.9 down to 0.35)."""
    gt = {"images": [{"id": 1, "file_name": "1.png", "height": 200, "width": 300}],
          "categories": [{"id": 1, "name": "cat"}],
          "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": [20 * k, 10, 15, 15],
                           "area": 225, "iscrowd": 0} for k in range(12)]}
    dt = [{"image_id": 1, "category_id": 1, "bbox": [20 * k, 10, 15, 15], "score": 0.9 - 0.05 * k}
          for k in range(12)]
    return gt, dt


def test_official_maxdets_setting_gives_the_standard_numbers():
    """The official configs evaluate with mmdet's CocoMetric(proposal_nums=(100, 1, 10)), which sets
    pycocotools' maxDets to [100, 1, 10]. pycocotools sorts maxDets in evaluate(), so that is the
    standard protocol: the official COCO tables compare directly with yoloworld-eval. Twelve exact
    detections of one class on one image tell the two apart (10 kept per class would give 84/101)."""
    gt, dt = _twelve_of_one_class()
    for g, d in ((GT, DT), (gt, dt)):
        ours = coco_evaluate(g, d)
        np.testing.assert_array_equal(pycocotools_direct(g, d, max_dets=[100, 1, 10]), [ours[k] for k in STAT_NAMES])
    assert coco_evaluate(gt, dt)["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("results", "match"),
    [
        ({"a": 1}, "expected a JSON list"),
        ([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}], "entry 0 has no 'category_id'"),
        ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 0.5}], r"entry 0 field 'bbox'"),
        ([DT[0], {"image_id": "x", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}],
         "entry 1 field 'image_id'"),
    ],
)
def test_results_validation(results, match):
    from sdk import YoloWorldError

    with pytest.raises(YoloWorldError, match=match):
        validate_results(results, "r.json")


def test_cli_results_file(tmp_path, capsys):
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    (tmp_path / "dt.json").write_text(json.dumps(DT))
    assert eval_main(["--ann", str(tmp_path / "gt.json"), "--results", str(tmp_path / "dt.json"),
                      "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert list(metrics)[:12] == list(STAT_NAMES)
    np.testing.assert_allclose([metrics[k] for k in STAT_NAMES], pycocotools_direct(GT, DT))
    assert metrics["per_class"]["bird"] == -1.0
    assert "(no ground truth)" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text(json.dumps([{"image_id": 1}]))
    assert eval_main(["--ann", str(tmp_path / "gt.json"), "--results", str(tmp_path / "bad.json")]) == 2
    assert "entry 0 has no 'category_id'" in capsys.readouterr().err


def test_cli_runs_a_model(tiny_checkpoints, images, tmp_path):
    """End to end on the PyTorch backend with the dataset's category names as the vocabulary."""
    import cv2

    gt = {"images": [], "annotations": [], "categories": [{"id": 3, "name": "person"}, {"id": 7, "name": "dog"}]}
    for i, img in enumerate(images[:3]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), img)
        h, w = img.shape[:2]
        gt["images"].append({"id": i + 1, "file_name": f"{i}.png", "height": h, "width": w})
        gt["annotations"].append({"id": i + 1, "image_id": i + 1, "category_id": 3, "bbox": [2, 2, w / 2, h / 2],
                                  "area": w * h / 4, "iscrowd": 0})
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    assert eval_main(["--ann", str(tmp_path / "gt.json"), "--model", str(tiny_checkpoints["v2"]),
                      "--images", str(tmp_path), "--imgsz", "160", "--json", str(tmp_path / "m.json"),
                      "--results-out", str(tmp_path / "r.json")]) == 0
    results = json.loads((tmp_path / "r.json").read_text())
    assert results and {r["category_id"] for r in results} <= {3, 7}
    metrics = json.loads((tmp_path / "m.json").read_text())
    np.testing.assert_allclose([metrics[k] for k in STAT_NAMES], pycocotools_direct(gt, results))
