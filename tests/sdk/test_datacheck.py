"""sdk.datacheck: the one rule (what is fatal, what is fixed) on its own: image ends, the box rule, the made
split, likely typos, the report and its summary."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sdk.datacheck import (
    CLIP_TOLERANCE_PX,
    MAX_LISTED,
    DataError,
    DataReport,
    Finding,
    SplitSummary,
    check_images,
    clip_xyxy,
    fix_boxes,
    format_summary,
    hold_out,
    image_problem,
    likely_typos,
)


def _encoded(ext: str) -> bytes:
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


JPEG, PNG, WEBP, BMP = (_encoded(e) for e in (".jpg", ".png", ".webp", ".bmp"))


@pytest.mark.parametrize(("name", "data", "problem"), [
    ("whole.jpg", JPEG, None),
    ("cut.jpg", JPEG[: int(len(JPEG) * 0.6)], "truncated JPEG (no end-of-image marker FFD9)"),  # issue 21
    ("padded.jpg", JPEG + b"\0" * 200, None),  # bytes after FFD9 (some writers pad): the whole file is searched
    ("cut-padded.jpg", JPEG[: len(JPEG) // 2] + b"\0" * 200, "truncated JPEG (no end-of-image marker FFD9)"),
    ("whole.png", PNG, None),
    ("cut.png", PNG[:-20], "truncated PNG (no IEND chunk)"),
    ("whole.webp", WEBP, None),
    ("cut.webp", WEBP[:-10], f"truncated WebP ({len(WEBP) - 10} of {len(WEBP)} bytes)"),
    ("whole.bmp", BMP, None),
    ("cut.bmp", BMP[:100], f"truncated BMP (100 of {len(BMP)} bytes)"),
    ("empty.jpg", b"", "an empty file"),
    ("text.jpg", b"not an image at all", "not an image file OpenCV can decode"),
    ("gone.jpg", None, "missing"),
])
def test_image_problem(tmp_path, name, data, problem):
    if data is not None:
        (tmp_path / name).write_bytes(data)
    assert image_problem(tmp_path / name) == problem


def test_check_images_names_missing_and_corrupt_with_their_labels(tmp_path):
    paths = [tmp_path / "sub" / f"{k}.jpg" for k in range(9)]
    (tmp_path / "sub").mkdir()
    for k, p in enumerate(paths):
        if k != 0:
            p.write_bytes(JPEG if k > 2 else JPEG[:500])
    check_images(paths[3:], "x.yaml (train)", tmp_path)  # whole files: nothing raised
    with pytest.raises(DataError) as err:
        check_images(paths, "x.yaml (train)", tmp_path, [f"labels/{k}.txt" for k in range(9)])
    assert str(err.value) == (
        f"x.yaml (train): 1 of 9 image files are missing from {str(tmp_path)!r}: 'sub/0.jpg' (labels/0.txt); "
        "2 of 9 image files are truncated or corrupt: 'sub/1.jpg' (labels/1.txt): truncated JPEG (no end-of-image "
        "marker FFD9), 'sub/2.jpg' (labels/2.txt): truncated JPEG (no end-of-image marker FFD9) (replace them, "
        "or remove them and their labels)")


@pytest.mark.parametrize(("xyxy", "out", "keep", "clipped"), [
    ([10, 10, 20, 20], [10, 10, 20, 20], True, False),  # inside
    ([-5, 10, 20, 20], [0, 10, 20, 20], True, True),  # reaches past the left edge
    ([50, 30, 70, 45], [50, 30, 64, 40], True, True),  # past right and bottom
    ([10, 10, 64 + CLIP_TOLERANCE_PX / 2, 20], [10, 10, 64, 20], True, False),  # rounding: clamped, no finding
    ([70, 10, 80, 20], [64, 10, 64, 20], False, False),  # wholly outside: dropped
    ([10, 10, 10, 20], [10, 10, 10, 20], False, False),  # zero width: dropped
])
def test_clip_xyxy(xyxy, out, keep, clipped):
    got, k, c = clip_xyxy(np.array([xyxy], np.float64), np.array([64, 40]))
    np.testing.assert_allclose(got[0], out)
    assert (bool(k[0]), bool(c[0])) == (keep, clipped)


def test_fix_boxes_clamps_in_place_and_records_origins():
    anns = [{"bbox": [-10.0, 0.0, 20.0, 10.0], "area": 200.0}, {"bbox": [100.0, 0.0, 5.0, 5.0], "area": 25.0},
            {"bbox": [1.0, 1.0, 2.0, 2.0], "area": 4.0}]
    report = DataReport()
    kept = fix_boxes(anns, ["a.txt line 1", "a.txt line 2", "a.txt line 3"], (64, 40), report, "train")
    assert kept == [{"bbox": [0.0, 0.0, 10.0, 10.0], "area": 100.0}, {"bbox": [1.0, 1.0, 2.0, 2.0], "area": 4.0}]
    assert report.findings == [
        Finding("clipped", "train", "a.txt line 1", "[-10, 0, 20, 10] -> [0, 0, 10, 10] in the 64x40 (WxH) image"),
        Finding("dropped", "train", "a.txt line 2", "[100, 0, 5, 5] has no area inside the 64x40 (WxH) image")]


@pytest.mark.parametrize(("n", "val"), [
    (0, []), (1, []),  # nothing to hold out: one image stays train
    (2, [1]), (9, [8]),  # fewer than 10: the last one
    (10, [9]), (25, [9, 19]),  # every 10th
])
def test_hold_out(n, val):
    train, got = hold_out(list(range(n)))
    assert got == val and train == [k for k in range(n) if k not in val]


@pytest.mark.parametrize(("counts", "typos"), [
    ({"red circle": 40, "red cirle": 1}, {"red cirle": "red circle"}),  # issue 21
    ({"Dog": 3, "dog": 30}, {"Dog": "dog"}),  # case
    ({"car": 10, "cat": 10, "chair": 4}, {}),  # Pascal VOC's closest names are not flagged
    ({"class1": 5, "class2": 5}, {"class2": "class1"}),  # equally used: flagged (classes.txt settles it)
])
def test_likely_typos(counts, typos):
    assert likely_typos(counts) == typos


def test_report_counts_everything_names_the_first_few_and_merges():
    a, b = DataReport(), DataReport()
    for k in range(MAX_LISTED + 3):
        a.add(Finding("clipped", "train", f"a.txt line {k}", "d"))
    b.add(Finding("clipped", "val", "b.txt line 1", "d"))
    b.add(Finding("dropped", "train", "c.txt line 2", "d"), number=4)
    merged = a.merged(b)
    assert merged.count("clipped") == MAX_LISTED + 4 and merged.count("clipped", "val") == 1
    assert merged.count("dropped", "train") == 4 and len(merged.findings) == MAX_LISTED + 2
    text = format_summary("t: yolo, 1 classes", {"train": SplitSummary(3, 5, 1, {"cat": (3, 5)})}, merged)
    assert text.splitlines()[2].split() == ["train", "3", "5", "1", str(MAX_LISTED + 3), "4", "0"]
    assert f"boxes clipped to their image: {MAX_LISTED + 4} (train {MAX_LISTED + 3}, val 1):" in text
    assert "      ... and 3 more" in text and "train: a.txt line 0: d" in text
