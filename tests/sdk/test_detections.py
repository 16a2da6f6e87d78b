"""``Detections``: shapes, slicing (with its own extras), equality, COCO / dict export, drawing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sdk import Detections


def _dets() -> Detections:
    return Detections(np.array([[10, 20, 50, 60], [0, 0, 5, 8], [30, 30, 90, 70]], np.float32),
                      np.array([0.9, 0.6, 0.3], np.float32), np.array([2, 0, 2], np.int64),
                      np.array(["dog", "person", "dog"]), {"source": "a.jpg", "image_hw": (100, 120)})


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"inconsistent shapes: xyxy \(2, 4\), confidence \(3,\)"):
        Detections(np.zeros((2, 4), np.float32), np.zeros(3, np.float32), np.zeros(2, np.int64),
                   np.array(["a", "b"]))
    empty = Detections.empty(source="x")
    assert len(empty) == 0 and empty.xyxy.shape == (0, 4) and empty.data == {"source": "x"}
    assert empty.to_coco(image_id=1) == [] and empty.draw(np.zeros((4, 4, 3), np.uint8)).sum() == 0


def test_indexing_keeps_rows_together_and_copies_the_extras():
    d = _dets()
    dogs = d[d.class_id == 2]
    assert dogs.class_name.tolist() == ["dog", "dog"] and dogs.confidence.tolist() == pytest.approx([0.9, 0.3])
    np.testing.assert_array_equal(dogs.xyxy, d.xyxy[[0, 2]])
    assert d[1].class_name.tolist() == ["person"] and len(d[1:]) == 2 and d[np.array([2, 0])].confidence[0] == \
        pytest.approx(0.3)
    dogs.data["note"] = "changed"  # a slice's extras are its own
    assert "note" not in d.data and dogs.data["source"] == "a.jpg"
    assert d == _dets() and d != d[:2] and d != "not detections"
    with pytest.raises(TypeError):
        hash(d)


def test_coco_and_dict_by_hand():
    d = _dets()
    coco = d.to_coco(image_id=7, category_ids=[1, 3, 18])
    assert coco[0] == {"image_id": 7, "category_id": 18, "bbox": [10.0, 20.0, 40.0, 40.0],
                       "score": pytest.approx(0.9)}
    assert [c["category_id"] for c in coco] == [18, 1, 18]
    assert d.to_coco(image_id=7)[1]["category_id"] == 0  # no mapping: the class index itself
    as_dict = json.loads(json.dumps(d.to_dict()))  # JSON-ready
    assert as_dict["boxes_xyxy"][2] == [30, 30, 90, 70] and as_dict["class_name"] == ["dog", "person", "dog"]


def test_draw_copies_and_marks_each_box():
    d = _dets()
    image = np.full((100, 120, 3), 127, np.uint8)
    drawn = d.draw(image)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (image == 127).all()  # the input is left alone
    for x1, _, x2, y2 in d.xyxy.astype(int):
        assert (drawn[y2, x1:x2 + 1] != 127).any(axis=-1).all()  # the bottom edge is painted
    assert (drawn[45, 70] == 127).all()  # inside a box, away from its label: untouched


def test_supervision_adapter():
    sv = pytest.importorskip("supervision")
    out = _dets().to_supervision()
    assert isinstance(out, sv.Detections) and out.class_id.tolist() == [2, 0, 2]
