"""One settings value for every way a detector is made (``DetectorSettings``), the backends' shared input
check, and the background producer that ``predict_stream`` and labelling share."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import threading
import time

import numpy as np
import pytest

from sdk import Detector, RuntimeOptions
from sdk.backends.base import BackendBase
from sdk.background import in_background
from sdk.cli import add_detector_args, detector_settings
from sdk.errors import YoloWorldError
from sdk.settings import DetectorSettings


def test_settings_fields_are_detector_keywords():
    """``Detector.from_settings`` passes every field: the two lists cannot drift apart."""
    fields = [f.name for f in dataclasses.fields(DetectorSettings)]
    params = [p for p in inspect.signature(Detector.__init__).parameters if p not in ("self", "weights", "classes")]
    assert sorted(fields) == sorted(params)
    defaults = inspect.signature(Detector.__init__).parameters
    for f in dataclasses.fields(DetectorSettings):
        default = f.default if f.default is not dataclasses.MISSING else None  # runtime: None -> RuntimeOptions()
        assert defaults[f.name].default == default, f.name


@pytest.mark.parametrize(("kw", "message"), [
    ({"imgsz": 100}, "imgsz must be a positive multiple of 32, got 100"),
    ({"conf": 1.0}, r"conf must be in \[0, 1\), got 1.0"),
    ({"iou": 0.0}, r"iou must be in \(0, 1\], got 0.0"),
    ({"max_det": 0}, "max_det must be >= 1, got 0"),
    ({"backend": "tflite"}, "backend must be one of .* got 'tflite'"),
    ({"prompt_merge": "sum"}, "prompt_merge must be one of .* got 'sum'"),
])
def test_settings_name_the_bad_field(kw, message):
    with pytest.raises(ValueError, match=message):
        DetectorSettings(**kw)


def test_with_thresholds_keeps_the_rest_and_validates():
    s = DetectorSettings(imgsz=320, conf=0.3, agnostic=True)
    t = s.with_thresholds(conf=0.5, max_det=10)
    assert (t.conf, t.iou, t.max_det, t.imgsz, t.agnostic) == (0.5, 0.7, 10, 320, True)
    assert s.with_thresholds() == s
    with pytest.raises(ValueError, match="conf must be"):
        s.with_thresholds(conf=-0.1)


def test_command_line_options_become_the_settings():
    p = argparse.ArgumentParser()
    add_detector_args(p)
    args = p.parse_args(["--imgsz", "320", "--conf", "0.4", "--iou", "0.5", "--max-det", "7", "--agnostic",
                         "--prompt-merge", "mean", "--backend", "onnxruntime", "--precision", "bf16", "--square",
                         "--threads", "1", "--device", "cpu"])
    assert detector_settings(args) == DetectorSettings(
        device="cpu", imgsz=320, conf=0.4, iou=0.5, max_det=7, agnostic=True, prompt_merge="mean",
        backend="onnxruntime", rect=False, runtime=RuntimeOptions(precision="bf16", intra_op_threads=1))
    assert detector_settings(p.parse_args([]), conf=0.001) == DetectorSettings(conf=0.001)


class _Checked(BackendBase):
    name = "fake"

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {"n": np.asarray(images.shape[0])}


@pytest.mark.parametrize(("images", "message"), [
    (np.zeros((1, 3, 64, 64), np.float64), r"float32 \(B, 3, H, W\) .* got float64 \(1, 3, 64, 64\)"),
    (np.zeros((3, 64, 64), np.float32), r"got float32 \(3, 64, 64\)"),
    (np.zeros((1, 64, 64, 3), np.float32), r"got float32 \(1, 64, 64, 3\)"),
    (np.zeros((1, 3, 64, 48), np.float32), r"multiples of 32; got \(1, 3, 64, 48\)"),
    ([[0.0]], "got list"),
])
def test_every_backend_checks_its_input(images, message):
    backend = _Checked()
    with pytest.raises(YoloWorldError, match=message):
        backend.infer(images)
    assert backend.calls == 0
    assert int(backend.infer(np.zeros((2, 3, 64, 96), np.float32))["n"]) == 2
    assert backend.calls == 1 and backend.last_infer_ms > 0 and backend.infer_ms_total == backend.last_infer_ms


def test_background_yields_in_order_then_raises_the_producers_error():
    def produce():
        yield from range(5)
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in in_background(produce(), 2, "test"):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_background_stops_its_producer_when_the_consumer_stops():
    produced = []

    def produce():
        for i in range(10_000):
            produced.append(i)
            yield i

    items = in_background(produce(), 2, "test")
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    time.sleep(0.5)
    count = len(produced)
    assert count < 10  # at most what the queue held and one waiting to be put
    time.sleep(0.3)
    assert len(produced) == count and not any(t.name == "test" for t in threading.enumerate())


def test_background_timeout_raises_the_callers_error():
    def slow():
        yield 1
        time.sleep(5)
        yield 2

    items = in_background(slow(), 1, "test", timeout=0.3, on_timeout=lambda: RuntimeError("stalled"))
    assert next(items) == 1
    with pytest.raises(RuntimeError, match="stalled"):
        next(items)
