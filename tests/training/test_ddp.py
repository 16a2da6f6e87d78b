"""Two-process DDP (gloo, CPU, launched by torchrun) == one process on the combined batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from builders import free_port

pytestmark = pytest.mark.numeric  # float comparisons across kernels: CI reruns these (Makefile)

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path: Path, nproc: int, *mode: str) -> dict[str, torch.Tensor]:
    out = tmp_path / f"grads_{nproc}{''.join(mode)}.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, str(WORKER), str(out), *mode]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(free_port()), str(WORKER), str(out), *mode]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    return torch.load(out, weights_only=True)


@pytest.mark.slow
def test_two_process_gradients_equal_combined_batch(tmp_path):
    single = run(tmp_path, 1)
    double = run(tmp_path, 2)
    assert single.keys() == double.keys() and len(single) > 100
    worst = max(float((single[k] - double[k]).abs().max() / single[k].abs().max().clamp(min=1e-12))
                for k in single)
    assert worst < 1e-4, worst  # float summation order only


@pytest.mark.slow
def test_two_process_prompt_tuning_gradients_equal_combined_batch(tmp_path):
    """--mode prompt has no DDP (the model is frozen): the class embeddings' gradients are averaged by hand."""
    single = run(tmp_path, 1, "prompt")["prompts"]
    double = run(tmp_path, 2, "prompt")["prompts"]
    assert single.abs().max() > 0
    assert float((single - double).abs().max() / single.abs().max()) < 1e-4  # float summation order only
