"""The real command under torchrun (2 CPU processes, gloo): validation, best.pt, Ctrl-C, resume, failures.

Every run sets a 20 s process-group timeout, so a collective that only some ranks reach fails the test
in seconds instead of hanging it.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builders import free_port

from sdk.model.checkpoint import load_checkpoint_with_meta
from training.synthetic import make_shapes_dataset

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

#: What a user types, at a size that trains in seconds; loader workers, batch and schedule are the defaults.
ARGS = ["--model", "tiny", "--imgsz", "128", "--batch-size", "4", "--val-interval", "1", "--dist-timeout", "20"]


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=16, num_val=8, size=128, seed=0)


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
            str(free_port()), "-m", "training.finetune", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def read_log(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def count(text: str, phrase: str) -> int:
    return text.replace("\r", "\n").count(phrase)


def test_validates_stops_on_ctrl_c_and_resumes(data_yaml, tmp_path):
    out = tmp_path / "run"
    # torchrun in its own process group, which Ctrl-C in a terminal signals as a whole
    proc = subprocess.Popen(torchrun(*ARGS, "--data", str(data_yaml), "--epochs", "40", "--output", str(out)),
                            cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # two validations done (the first one improved)
        if (out / "metrics.csv").exists() and len(read_log(out)) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    os.killpg(proc.pid, signal.SIGINT)
    log, _ = proc.communicate(timeout=60)
    assert count(log, "SIGINT: saving at the next step") == 1, log[-3000:]  # printed by rank 0 alone
    assert count(log, "stopped ") == 1 and "continue with --resume" in log, log[-3000:]
    assert "forcefully exiting" not in log, log[-3000:]  # every rank stopped within torchrun's grace period
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.yaml", "last.pt", "metrics.csv"]
    rows = read_log(out)
    assert len(rows) >= 2 and all(0.0 <= float(r["mAP"]) <= 1.0 for r in rows)
    _, meta = load_checkpoint_with_meta(out / "last.pt")
    state = meta["train"]["state"]
    assert state["epoch"] == len(rows) and state["global_step"] == 2 * state["epoch"] + state["step_in_epoch"]

    # --resume under torchrun runs on to a new epoch count and finishes
    epochs = state["epoch"] + 1
    done = subprocess.run(torchrun(*ARGS, "--data", str(data_yaml), "--epochs", str(epochs), "--output", str(out),
                                   "--resume"), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert count(done.stdout, "done: ") == 1
    assert [int(r["epoch"]) for r in read_log(out)] == list(range(1, epochs + 1))
    _, meta = load_checkpoint_with_meta(out / "last.pt")
    assert meta["train"]["state"]["epoch"] == epochs and meta["train"]["state"]["step_in_epoch"] == 0
    assert meta["train"]["state"]["global_step"] == 2 * epochs
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.yaml", "curves.png", "last.pt",
                                                      "metrics.csv", "summary.json"]


def test_a_failure_on_startup_stops_every_rank_with_one_message(data_yaml, tmp_path):
    res = subprocess.run(torchrun(*ARGS, "--data", str(data_yaml), "--output", str(tmp_path / "none"), "--resume"),
                         cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert count(res.stderr, "--resume: ") == 1 and "last.pt does not exist" in res.stderr, res.stderr[-3000:]


WORKER = """
import sys, time
import torch
from training import distributed as D
D.init_distributed("cpu", timeout_s=2)
D.at("training epoch 2, step 7")
if D.rank() == 1:
    time.sleep(5)  # stuck elsewhere: rank 0's collective waits for it
    sys.exit(0)
try:
    D.any_rank(False)
except RuntimeError as e:
    print("FAILURE:", D.describe_failure(e), flush=True)
"""


def test_a_collective_that_times_out_names_the_rank_and_step(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), str(script)]
    res = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60)
    line = next(x for x in res.stdout.splitlines() if x.startswith("FAILURE:"))
    assert "rank 0: a collective timed out after 2 s while training epoch 2, step 7" in line, line
    assert "--dist-timeout" in line
