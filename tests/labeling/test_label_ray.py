"""``yoloworld-label --ray`` on a local Ray (2 CPUs): the same labels as in-process, every image exactly
once after an actor is killed mid-run and the run repeated, and no work on a rerun after completion.
Skipped where Ray is not installed (the ``.[ray]`` extra)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from labeling import LabelJob, label_collection
from tests.labeling.test_label import label_settings
from tests.parity import LABEL_BOX_ATOL, LABEL_SCORE_ATOL

ray = pytest.importorskip("ray")

SETTINGS = dict(backend="onnxruntime", threads=1, imgsz=160, batch_size=2)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def records(out: Path) -> dict[str, dict]:
    """path -> record; fails on an image with two records."""
    found: dict[str, dict] = {}
    for shard in sorted((out / "shards").glob("part-*.jsonl")):
        for line in shard.read_text().splitlines():
            r = json.loads(line)
            assert r["path"] not in found, f"{r['path']} has two results"
            found[r["path"]] = r
    return found


def assert_same_records(a: dict[str, dict], b: dict[str, dict]) -> int:
    """The same labels image by image (to the records' rounding); returns how many boxes were compared, for
    the caller to require some: two runs that label nothing compare equal."""
    assert sorted(a) == sorted(b)
    boxes = 0
    for path, ra in a.items():
        rb = b[path]
        assert ("error" in ra) == ("error" in rb), path
        if "error" in ra:
            continue
        assert ra["classes"] == rb["classes"], path
        np.testing.assert_allclose(ra["scores"], rb["scores"], atol=LABEL_SCORE_ATOL)
        np.testing.assert_allclose(np.reshape(ra["boxes"], (-1, 4)), np.reshape(rb["boxes"], (-1, 4)),
                                   atol=LABEL_BOX_ATOL)
        boxes += len(ra["scores"])
    return boxes


def test_ray_gives_the_in_process_labels_and_a_rerun_does_no_work(local_ray, label_collection_fixture, tmp_path):
    fx = label_collection_fixture
    settings = label_settings(fx.model, conf=0.1, **SETTINGS)
    here = label_collection(LabelJob((str(fx.photos),), str(tmp_path / "here"), settings, progress=False))
    on_ray = label_collection(LabelJob((str(fx.photos),), str(tmp_path / "ray"), settings, ray="local", actors=2,
                                       shard_size=8, progress=False))
    assert on_ray["ran_on"].startswith("Ray (2 actor(s), each 0.75 CPU")
    assert on_ray["labeled_now"] == here["labeled_now"] == 65 and on_ray["failed"] == 1
    assert assert_same_records(records(tmp_path / "ray"), records(tmp_path / "here")) > 0 and here["boxes"] > 0
    assert on_ray["per_class"] == here["per_class"]
    shards = sorted(p.name for p in (tmp_path / "ray" / "shards").iterdir())
    again = label_collection(LabelJob((str(fx.photos),), str(tmp_path / "ray"), settings, ray="local", progress=False))
    assert again["labeled_now"] == 0 and again["ran_on"] == "-"  # nothing to do: Ray not even asked
    assert sorted(p.name for p in (tmp_path / "ray" / "shards").iterdir()) == shards


def _actor_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"MapWorker(MapBatches(LabelWorker))" in cmd:
                pids.append(int(entry))
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the actor's process through /proc")
def test_killed_actor_then_rerun_gives_every_image_exactly_once(local_ray, label_collection_fixture, tmp_path):
    fx = label_collection_fixture
    photos = tmp_path / "photos"  # 6 x the collection (links), so the run lasts long enough to kill an actor in
    for k in range(6):
        (photos / f"copy{k}").mkdir(parents=True)
        for p in [*fx.good, fx.broken]:
            os.symlink(p, photos / f"copy{k}" / f"{Path(p).parent.name}_{Path(p).name}")
    settings = label_settings(fx.model, **{**SETTINGS, "batch_size": 1})
    job = LabelJob((str(photos),), str(tmp_path / "out"), settings, ray="local", actors=2, shard_size=4,
                   stall_timeout=120, progress=False)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["summary"] = label_collection(job)
        except Exception as e:  # a run may fail when its actor dies; the rerun must finish it
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while not list((tmp_path / "out" / "shards").glob("part-*.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.02)
    victims = _actor_pids()
    assert victims, "no labeling actor found"
    os.kill(victims[0], signal.SIGKILL)
    done_at_kill = len(records(tmp_path / "out"))
    thread.join(300)
    assert not thread.is_alive()
    assert 0 < done_at_kill < 6 * 65, f"the kill came after {done_at_kill} results"
    # Ray Data restarts a killed actor and retries its batch, so the run usually finishes by itself
    before = len(records(tmp_path / "out"))
    assert "summary" in outcome or before < 6 * 65, outcome
    again = label_collection(job)
    assert again["images"] == 6 * 65 and again["failed"] == 6
    got = records(tmp_path / "out")  # fails on any image with two results
    assert sorted(got) == sorted(str(p) for p in photos.rglob("*.jpg"))  # and every image has one
    assert again["labeled_now"] == 6 * 65 - before
    reference = records_by_name(label_collection_fixture, tmp_path / "reference")
    compared = 0
    for path, r in got.items():
        compared += assert_same_records({"x": r}, {"x": {**reference[Path(path).name], "path": path, "key": r["key"]}})
    assert compared > 0  # not only images without labels


def records_by_name(fx, out: Path) -> dict[str, dict]:
    """In-process records of the collection, by the link names the kill test gives them."""
    settings = label_settings(fx.model, **{**SETTINGS, "batch_size": 1})
    label_collection(LabelJob((str(fx.photos),), str(out), settings, progress=False))
    return {f"{Path(p).parent.name}_{Path(p).name}": r for p, r in records(out).items()}


def test_sigterm_on_ray_keeps_the_results_and_a_rerun_finishes(label_collection_fixture, tmp_path):
    """The CLI with --ray (its own local Ray, or the one already running here) sent SIGTERM mid-run: the
    results received are flushed, Ray is let go, it exits 143; a rerun gives every image one result."""
    from labeling.cli import label_main
    from tests.labeling.test_label import run_cli_until

    fx = label_collection_fixture
    out = tmp_path / "out"
    args = [str(fx.photos), "--weights", str(fx.model), "--out", str(out), "--imgsz", "160", "--batch-size", "1",
            "--backend", "onnxruntime", "--threads", "1", "--shard-size", "1000", "--ray", "--actors", "1",
            "--contact-sheet", "0"]
    proc, _ = run_cli_until(args, done=4, total=65)
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.wait(120) == 143, err[-3000:]
    assert "terminated (SIGTERM); the results so far are kept" in err
    kept = records(out)  # fails on an image with two results
    assert 4 <= len(kept) < 65, f"{len(kept)} results kept"
    assert label_main(args) == 0
    got = records(out)
    assert sorted(got) == sorted([*fx.good, fx.broken])  # every image exactly once
    assert all(got[p] == r for p, r in kept.items())  # the kept results are used, not made again
