"""benchmarks/gpu_check.py runs only when a session is lent a GPU; its --smoke mode runs the same code
on the CPU at toy sizes, here, with the packages the lent machines lack blocked."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# not installed on the lent GPU machines (see the device tool's KINDS.md)
ABSENT_ON_GPU_MACHINES = ("open_clip", "pycocotools", "faster_coco_eval", "onnxslim", "tensorrt")


@pytest.mark.slow
def test_smoke_run_measures_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    code = ("import runpy, sys\n"
            f"for name in {ABSENT_ON_GPU_MACHINES!r}: sys.modules[name] = None\n"
            f"sys.argv = ['gpu_check.py', '--smoke', '--out', {str(out)!r}]\n"
            "runpy.run_path('benchmarks/gpu_check.py', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    assert [(r["size"], r["batch"], r["dtype"]) for r in report["forward"]] == [
        ("tiny", 1, "fp32"), ("tiny", 1, "fp16"), ("tiny", 2, "fp32"), ("tiny", 2, "fp16")]
    assert all(r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["images_per_s"] > 0 for r in report["forward"])
    assert [r["amp"] for r in report["train_step"]] == ["fp16", "bf16"]
    assert all(math.isfinite(v) and v > 0 for r in report["train_step"] for v in r["last_losses"].values())
    rows = report["predict"]["rows"]
    assert [(r["precision"], r["batch"]) for r in rows] == [
        ("fp32 (checkpoint)", 1), ("fp32 (checkpoint)", 2), ("fp16 (checkpoint)", 1), ("fp16 (checkpoint)", 2)]
    assert all(r["e2e_images_per_s"] > 0 and abs(sum(r["stage_share"].values()) - 1) < 1e-9 for r in rows)
    for name in report["predict"]["files"]:
        assert (tmp_path / name).stat().st_size > 0
    par = report["parity"]  # the smoke run's "device" is the CPU: float32 is the reference itself
    assert set(par["cpu_fp32"]["max_rel_diff"].values()) == {0.0}
    assert par["cpu_fp32"]["detections"] == par["cpu_fp32_detections"]
    assert all(0 < d < 0.1 for d in par["cpu_fp16"]["max_rel_diff"].values())
    assert report["cuda_binding"] == "skipped: no CUDA device"
    ort = report["deployment"]["onnxruntime_cpu"]
    assert ort["providers"] == ["CPUExecutionProvider"] and set(ort["max_abs_diff"]) == {"scores", "boxes"}
    assert ort["batch_2"]["images_per_s"] > 0
    assert "skipped" in report["deployment"]["tensorrt"]


def test_a_failing_section_is_recorded_and_the_rest_still_run(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT))
    from benchmarks import gpu_check

    def boom(*_):
        raise RuntimeError("boom")

    monkeypatch.setattr(gpu_check, "forward_throughput", boom)
    monkeypatch.setattr(gpu_check, "train_step", lambda cfg, amp: {"amp": amp})
    monkeypatch.setattr(gpu_check, "predict", lambda cfg, out: {"rows": []})
    monkeypatch.setattr(gpu_check, "parity", lambda cfg: {})
    monkeypatch.setattr(gpu_check, "deployment", lambda cfg: {"tensorrt": "skipped"})
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--smoke", "--out", str(out)]) == 1
    report = json.loads(out.read_text())
    assert "forward" not in report and report["errors"]["forward"].startswith("RuntimeError: boom")
    assert report["train_step"] == [{"amp": "fp16"}, {"amp": "bf16"}]
    assert report["predict"] == {"rows": []} and report["deployment"] == {"tensorrt": "skipped"}
    assert set(report["section_seconds"]) == {"forward", "train_step", "predict", "parity", "cuda_binding",
                                                 "deployment"}
