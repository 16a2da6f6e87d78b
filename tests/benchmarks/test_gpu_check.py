"""benchmarks/gpu_check.py runs only when a session is lent a GPU; its --smoke mode runs the same code
on the CPU at toy sizes, here, with the packages the lent machines lack blocked."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# not installed on the lent GPU machines (see the device tool's KINDS.md)
ABSENT_ON_GPU_MACHINES = ("open_clip", "pycocotools", "faster_coco_eval", "onnxslim", "tensorrt")


@pytest.mark.slow
def test_smoke_run_measures_every_section(tmp_path):
    """gpu_check.sh as the device call runs it, with --smoke, under a sitecustomize that blocks imports."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        f"import sys\nfor name in {ABSENT_ON_GPU_MACHINES!r}:\n    sys.modules[name] = None\n")
    out, copied = tmp_path / "results" / "gpu_check.json", tmp_path / "OUT"
    copied.mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_OUT": str(out), "GPU_CHECK_ARGS": "--smoke",
           "OUT": str(copied), "PYTHONPATH": str(blocker)}
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in copied.iterdir()) == [
        "gpu_check.json", "gpu_predict_torch.json", "gpu_predict_torch.md", "gpu_predict_torch.png"]
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
        assert (out.parent / name).stat().st_size > 0
    par = report["parity"]  # the smoke run's "device" is the CPU: float32 is the reference itself
    assert set(par["cpu_fp32"]["max_rel_diff"].values()) == {0.0}
    assert par["cpu_fp32"]["detections"] == par["cpu_fp32_detections"]
    assert all(0 < d < 0.1 for d in par["cpu_fp16"]["max_rel_diff"].values())
    assert report["finetune"].startswith("skipped: open_clip, pycocotools not installed")
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
    monkeypatch.setattr(gpu_check, "finetune", lambda cfg, out: {})
    monkeypatch.setattr(gpu_check, "deployment", lambda cfg: {"tensorrt": "skipped"})
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--smoke", "--out", str(out)]) == 1
    report = json.loads(out.read_text())
    assert "forward" not in report and report["errors"]["forward"].startswith("RuntimeError: boom")
    assert report["train_step"] == [{"amp": "fp16"}, {"amp": "bf16"}]
    assert report["predict"] == {"rows": []} and report["deployment"] == {"tensorrt": "skipped"}
    assert set(report["section_seconds"]) == {"forward", "train_step", "predict", "parity", "finetune",
                                                 "cuda_binding", "deployment"}


@pytest.mark.slow
def test_finetune_section_runs_the_real_loop(tmp_path):
    """The section the blocked smoke run skips: torchrun (gloo here) + training.finetune, 2 epochs."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import gpu_check

    got = gpu_check.finetune(gpu_check.SMOKE, tmp_path / "gpu_check.json")
    assert [e["epoch"] for e in got["epochs"]] == [1.0, 2.0]
    assert all(e["images_per_s"] > 0 and 0 <= e["mAP"] <= 1 and math.isfinite(e["loss_cls"]) for e in got["epochs"])
    assert "--amp none --device cpu" in got["command"]
    assert (tmp_path / "gpu_finetune_curves.png").stat().st_size > 0


@pytest.mark.slow
def test_finetune_section_falls_back_to_a_plain_run_when_torchrun_fails(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT))
    from benchmarks import gpu_check

    real_run = subprocess.run

    def run(cmd, **kw):
        if "torch.distributed.run" in cmd:  # as NCCL failing in a sandbox would
            return subprocess.CompletedProcess(cmd, 1, "", "NCCL error: unhandled system error")
        return real_run(cmd, **kw)

    monkeypatch.setattr(gpu_check.subprocess, "run", run)
    got = gpu_check.finetune(gpu_check.SMOKE, tmp_path / "gpu_check.json")
    assert "NCCL error" in got["failed"]["torchrun --standalone --nproc_per_node 1"]
    assert got["command"].startswith("python -m training.finetune") and len(got["epochs"]) == 2
