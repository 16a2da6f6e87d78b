"""``yoloworld-label`` in one process: labels equal the Detector's, thresholds and box size applied as
asked, every image exactly once across reruns and a killed run, outputs that training reads back."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from labeling import LabelJob, LabelSettings, label_collection
from labeling.cli import label_main, parse_conf
from labeling.engine import LabelStalled, block_count, plan_actors, with_stall_timeout
from labeling.outputs import MergeError, split_of
from labeling.shards import ShardError, read_shards
from sdk import Detector, RuntimeOptions
from sdk.settings import DetectorSettings
from tests.parity import LABEL_BOX_ATOL, LABEL_SCORE_ATOL

ORT1 = dict(backend="onnxruntime", threads=1, imgsz=160, batch_size=4)


def label_settings(model, batch_size: int = 8, threads: int | None = None, **detector) -> LabelSettings:
    """``LabelSettings`` from flat keywords: ``threads`` -> the runtime's, the rest -> ``DetectorSettings``."""
    runtime = RuntimeOptions(intra_op_threads=threads)
    return LabelSettings(str(model), detector=DetectorSettings(runtime=runtime, **detector), batch_size=batch_size)


def job(fx, out: Path, **kw) -> LabelJob:
    model_kw = {**ORT1, **{k: kw.pop(k) for k in list(kw) if k in ORT1 or k == "agnostic"}}
    return LabelJob((str(fx.photos),), str(out), label_settings(fx.model, **model_kw), progress=False, **kw)


def shard_records(out: Path) -> list[dict]:
    return [json.loads(line) for p in sorted((out / "shards").glob("part-*.jsonl"))
            for line in p.read_text().splitlines()]


def coco_labels(out: Path) -> dict[str, list[tuple[list[float], float, int]]]:
    """file path -> [(xyxy, score, class index)] from the COCO output."""
    import yaml

    config = yaml.safe_load((out / "data.yaml").read_text())
    labels = {}
    for split in ("train", "val"):
        if split not in config:
            continue
        coco = json.loads((out / config[split]["ann_file"]).read_text())
        root = (out / config[split]["img_dir"]).resolve()
        by_id = {im["id"]: str(root / im["file_name"]) for im in coco["images"]}
        for path in by_id.values():
            labels[path] = []
        for a in coco["annotations"]:
            x, y, w, h = a["bbox"]
            labels[by_id[a["image_id"]]].append(([x, y, x + w, y + h], a["score"], a["category_id"] - 1))
    return labels


def test_labels_are_the_detectors_detections_filtered_as_asked(label_collection_fixture, tmp_path):
    fx = label_collection_fixture
    conf = (("*", 0.2), (fx.classes[0], 0.35))
    summary = label_collection(job(fx, tmp_path / "out", conf=conf, min_size=20.0))
    assert summary["images"] == len(fx.good) + 1 and summary["failed"] == 1 and summary["labeled_now"] == 65
    assert summary["ran"] == {"imgsz": 160, "imgsz_from": "exported at", "backend": "onnxruntime",
                              "letterbox": "square", "classes": len(fx.classes)}
    assert summary["failed_images"][0][0] == fx.broken
    assert fx.broken in (tmp_path / "out" / "failed.txt").read_text()
    det = Detector(fx.model, backend="onnxruntime", conf=0.2)
    labels = {str(Path(k).resolve()): v for k, v in coco_labels(tmp_path / "out").items()}
    assert sorted(labels) == sorted(str(Path(p).resolve()) for p in fx.good)  # each readable image once
    kept = total = 0
    for path, result in zip(fx.good, det.predict(fx.good), strict=True):
        wanted = [(box, s, c) for box, s, c in zip(result.xyxy.tolist(), result.confidence.tolist(),
                                                   result.class_id.tolist(), strict=True)
                  if s >= (0.35 if c == 0 else 0.2) and min(box[2] - box[0], box[3] - box[1]) >= 20.0]
        got = labels[str(Path(path).resolve())]
        assert len(got) == len(wanted), path
        for (gb, gs, gc), (wb, ws, wc) in zip(sorted(got, key=lambda t: -t[1]), wanted, strict=True):
            assert gc == wc and abs(gs - ws) <= LABEL_SCORE_ATOL
            np.testing.assert_allclose(gb, wb, atol=LABEL_BOX_ATOL)
        kept, total = kept + len(wanted), total + len(result)
    assert 0 < kept < total  # the filters removed some detections and kept others
    assert summary["boxes"] == kept
    assert sum(c["boxes"] for c in summary["per_class"].values()) == kept
    assert (tmp_path / "out" / "contact_sheet.png").stat().st_size > 1000


def test_rerun_does_no_work_and_rethresholds_without_the_model(label_collection_fixture, tmp_path):
    fx = label_collection_fixture
    out = tmp_path / "out"
    first = label_collection(job(fx, out))
    shards = sorted(p.name for p in (out / "shards").iterdir())
    again = label_collection(job(fx, out))
    assert again["labeled_now"] == 0 and again["skipped"] == first["images"]
    assert sorted(p.name for p in (out / "shards").iterdir()) == shards  # nothing new written
    assert again["per_class"] == first["per_class"]
    higher = label_collection(job(fx, out, conf=(("*", 0.5),)))
    assert higher["labeled_now"] == 0 and 0 < higher["boxes"] < first["boxes"]
    with pytest.raises(ShardError, match="0.1 needs a new --out"):
        label_collection(job(fx, out, conf=(("*", 0.1),)))
    with pytest.raises(ShardError, match="imgsz: 160 then, 128 now"):
        label_collection(job(fx, out, imgsz=128))
    with pytest.raises(ValueError, match="exported at 160x160 .*imgsz 320 needs a re-export"):  # before any work
        label_collection(job(fx, out, imgsz=320))


def test_a_changed_image_is_labeled_again(label_collection_fixture, tmp_path):
    import shutil

    fx = label_collection_fixture
    photos = tmp_path / "photos"
    shutil.copytree(fx.photos / "a", photos)
    out = tmp_path / "out"
    settings = label_settings(fx.model, **ORT1)
    assert label_collection(LabelJob((str(photos),), str(out), settings, progress=False))["labeled_now"] == 48
    changed = sorted(photos.iterdir())[5]
    changed.write_bytes(changed.read_bytes())  # same bytes, new mtime: "stat" keys see a change
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    again = label_collection(LabelJob((str(photos),), str(out), settings, progress=False))
    assert again["labeled_now"] == 1 and again["images"] == 48
    assert len(shard_records(out)) == 49  # the old result stays in its shard, unused


def test_killed_run_resumes_with_every_image_exactly_once(label_collection_fixture, tmp_path):
    """SIGKILL the CLI once its first shard is on disk, rerun: every image has one result, the same as an
    uninterrupted run's, and no temporary shard is left."""
    fx = label_collection_fixture
    out = tmp_path / "out"
    args = [str(fx.photos), "--weights", str(fx.model), "--out", str(out), "--imgsz", "160", "--batch-size", "1",
            "--backend", "onnxruntime", "--threads", "1", "--shard-size", "4"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from labeling.cli import label_main; "
                             "sys.exit(label_main(sys.argv[1:]))", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out / "shards").glob("part-*.jsonl")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(shard_records(out))
    assert 0 < done < 65, f"the kill came {'too late' if done else 'before any shard'} ({done} results)"
    assert label_main([*args, "--contact-sheet", "0"]) == 0
    records = shard_records(out)
    assert sorted(r["path"] for r in records) == sorted([*fx.good, fx.broken])  # each image exactly once
    assert not [p for p in (out / "shards").iterdir() if p.name.startswith(".")]  # no temporary file left
    reference = label_collection(job(fx, tmp_path / "reference"))
    assert json.loads((out / "summary.json").read_text())["per_class"] == reference["per_class"]


def run_cli_until(args: list[str], done: int, total: int) -> tuple[subprocess.Popen, str]:
    """Start ``yoloworld-label args`` in a subprocess; return once its progress bar shows ``done`` of
    ``total`` images (or it ended), with what it wrote to stderr so far."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from labeling.cli import label_main; "
                             "sys.exit(label_main(sys.argv[1:]))", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen, deadline = "", time.monotonic() + 180
    while time.monotonic() < deadline:
        char = proc.stderr.read(1)  # tqdm redraws with \r: read by character
        if not char:
            break
        seen += char
        counts = re.findall(rf"(\d+)/{total}", seen[-200:])
        if counts and int(counts[-1]) >= done:
            break
    return proc, seen


def test_sigterm_keeps_the_results_so_far_and_a_rerun_finishes(label_collection_fixture, tmp_path):
    """SIGTERM (what kill and job schedulers send) mid-run, before any shard was due: the results so far
    are flushed as on Ctrl-C, the CLI says so and exits 143; a rerun labels each remaining image once."""
    fx = label_collection_fixture
    out = tmp_path / "out"
    args = [str(fx.photos), "--weights", str(fx.model), "--out", str(out), "--imgsz", "160", "--batch-size", "1",
            "--backend", "onnxruntime", "--threads", "1", "--shard-size", "1000"]
    proc, _ = run_cli_until(args, done=4, total=65)
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.wait(60) == 143, err
    assert "terminated (SIGTERM); the results so far are kept" in err
    first = shard_records(out)
    assert 4 <= len(first) < 65, f"{len(first)} results kept"  # no shard of 1000 was due before the signal
    assert label_main([*args, "--contact-sheet", "0"]) == 0
    records = shard_records(out)
    assert sorted(r["path"] for r in records) == sorted([*fx.good, fx.broken])  # each image exactly once
    assert all(r in records for r in first)  # the kept results are used, not made again


def test_terminate_as_interrupt_defers_a_signal_during_cleanup():
    from labeling.termination import TerminateAsInterrupt, Terminated

    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(Terminated):  # a SIGTERM while consuming: raised where the work is
        with TerminateAsInterrupt() as stop:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # never reached: the handler raises first
            finally:
                stop.defer()
                os.kill(os.getpid(), signal.SIGTERM)  # a second one does not cut the clean-up short
                cleaned.append(True)
    assert cleaned == [True]
    with pytest.raises(Terminated):  # a SIGTERM during the clean-up: raised after it, not in it
        with TerminateAsInterrupt() as stop:
            stop.defer()
            os.kill(os.getpid(), signal.SIGTERM)
            cleaned.append(True)
    assert cleaned == [True, True]
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back

    def own(signum, frame):
        raise RuntimeError("the application's handler")

    signal.signal(signal.SIGTERM, own)
    try:
        with pytest.raises(RuntimeError), TerminateAsInterrupt():  # an application's own handler stays
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, before)


def test_imgsz_unset_is_the_size_the_model_was_exported_at(label_collection_fixture):
    from labeling.cli import label_parser
    from labeling.worker import LabelWorker

    fx = label_collection_fixture
    args = label_parser().parse_args([str(fx.photos), "--weights", str(fx.model), "--out", "x"])
    assert args.imgsz is None
    worker = LabelWorker(label_settings(fx.model, imgsz=args.imgsz, backend="onnxruntime", threads=1))
    assert worker.detector.imgsz == 160  # the fixture's export, not 640
    worker.close()


def test_yolo_output_reads_back_as_the_coco_labels(label_collection_fixture, tmp_path):
    from sdk.datasets import read_yolo

    fx = label_collection_fixture
    coco = label_collection(job(fx, tmp_path / "coco", val_fraction=0.25))
    yolo = label_collection(job(fx, tmp_path / "yolo", val_fraction=0.25, format="yolo"))
    assert coco["boxes"] > 0 and yolo["boxes"] > 0  # the comparisons below hold for no labels too
    assert coco["per_class"] == yolo["per_class"]
    labels = coco_labels(tmp_path / "coco")
    ds = read_yolo(tmp_path / "yolo" / "data.yaml")
    assert sorted(ds.splits) == ["train", "val"]
    assert ds.class_names == fx.classes
    seen = seen_boxes = 0
    for split in ds.splits.values():
        by_id = {im["id"]: im for im in split.coco["images"]}
        boxes: dict[int, list] = {i: [] for i in by_id}
        for a in split.coco["annotations"]:
            boxes[a["image_id"]].append((a["bbox"], a["category_id"] - 1))
        for image_id, im in by_id.items():
            target = str((split.img_dir / im["file_name"]).resolve())
            want = sorted((c, x1, y1, x2 - x1, y2 - y1) for (x1, y1, x2, y2), _, c in labels[target])
            got = sorted((c, *b) for b, c in boxes[image_id])
            assert [g[0] for g in got] == [w[0] for w in want], target
            np.testing.assert_allclose([g[1:] for g in got], [w[1:] for w in want], atol=1e-3)  # 6 digits of 128 px
            seen, seen_boxes = seen + 1, seen_boxes + len(got)
    assert seen == len(fx.good)
    assert seen_boxes == coco["boxes"]  # every label was compared, and there are some (above)
    val = {str((ds.splits["val"].img_dir / im["file_name"]).resolve()) for im in ds.splits["val"].coco["images"]}
    assert val == {p for p in labels if split_of(p, 0.25) == "val"}


def test_training_reads_the_labels(label_collection_fixture, tmp_path):
    from training.data import read_data

    fx = label_collection_fixture
    summary = label_collection(job(fx, tmp_path / "out", val_fraction=0.25))
    data = read_data(tmp_path / "out" / "data.yaml")
    train, val = data.build_train(filter_empty_gt=False, min_size=0), data.build_val()
    assert len(train) + len(val) == len(fx.good) and len(val) > 0
    assert data.class_texts == fx.class_texts
    assert sum(len(train.record(i).boxes) for i in range(len(train))) + sum(
        len(val.record(i).boxes) for i in range(len(val))) == summary["boxes"]


def test_cli_errors_name_what_is_wrong(label_collection_fixture, tmp_path, capsys):
    fx = label_collection_fixture
    base = ["--weights", str(fx.model), "--out", str(tmp_path / "out")]
    assert label_main([str(tmp_path / "missing"), *base]) == 2
    assert "missing' does not exist" in capsys.readouterr().err
    assert label_main([str(fx.photos), *base, "--conf", "unicorn=0.3"]) == 2
    assert "['unicorn']" in capsys.readouterr().err
    assert label_main([str(fx.photos), *base, "--conf", "person=high"]) == 2
    assert "'person=high'" in capsys.readouterr().err
    assert label_main([str(fx.photos), *base, "--classes", "cat,dog"]) == 2  # a folded export's vocabulary is fixed
    assert "the classes ['cat', 'dog'] need another export" in capsys.readouterr().err
    assert label_main([str(fx.photos), *base, "--imgsz", "100"]) == 2  # checked on the driver, before any work
    assert "imgsz must be a positive multiple of 32, got 100" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing made before the inputs were checked
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# two images\n{fx.good[0]}\n\n{fx.good[1]}\nnope.jpg\n")
    assert label_main([str(manifest), *base]) == 2
    assert "1 listed image(s) do not exist" in capsys.readouterr().err


def test_manifest_sources(label_collection_fixture, tmp_path):
    fx = label_collection_fixture
    manifest = tmp_path / "list.txt"
    manifest.write_text("".join(os.path.relpath(p, tmp_path) + "\n" for p in fx.good[:5]))
    summary = label_collection(LabelJob((str(manifest), fx.good[7]), str(tmp_path / "out"),
                                        label_settings(fx.model, **ORT1), progress=False))
    assert summary["images"] == 6


def test_readme_commands_parse():
    """Every ``yoloworld-label`` command the README shows uses flags the CLI has."""
    import re
    import shlex

    from labeling.cli import label_parser

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    commands = re.findall(r"^yoloworld-label .*$", readme, flags=re.M)
    assert len(commands) >= 3
    for line in commands:
        args = label_parser().parse_args(shlex.split(line.split("#")[0])[1:])
        assert args.sources and args.weights and args.out


def test_parse_conf_and_splits():
    assert parse_conf("0.2,person=0.3, red car=0.4") == (("*", 0.2), ("person", 0.3), ("red car", 0.4))
    assert parse_conf("") == (("*", 0.25),)
    paths = [f"/data/img_{i}.jpg" for i in range(2000)]
    share = sum(split_of(p, 0.1) == "val" for p in paths) / len(paths)
    assert 0.08 < share < 0.12 and split_of(paths[0], 0.1) == split_of(paths[0], 0.1)
    assert all(split_of(p, 0.0) == "train" for p in paths)


def test_plan_actors_fits_the_cluster():
    two = {"CPU": 2.0}
    # one actor: 1.5 CPUs booked (half a CPU stays free for Ray Data), both cores as threads
    assert plan_actors(two, [two]) == plan_actors(two, [two], actors=1)
    p = plan_actors(two, [two])
    assert (p.actors, p.num_cpus, p.threads) == (1, 1.5, 2)
    p = plan_actors(two, [two], actors=2)
    assert (p.actors, p.num_cpus, p.threads) == (2, 0.75, 1)
    p = plan_actors(two, [two], actors=4)  # 0.375 -> 0.25 CPU each; all four fit
    assert (p.actors, p.num_cpus, p.threads) == (4, 0.25, 1)
    p = plan_actors(two, [two], actors=3, num_cpus=1.0)  # only two fit at once: no waiting for a third
    assert p.actors == 2
    big = {"CPU": 64.0, "GPU": 8.0}
    p = plan_actors(big, [{"CPU": 32.0, "GPU": 4.0}] * 2, num_gpus=1)
    assert (p.actors, p.num_cpus, p.num_gpus) == (8, 1.0, 1)
    p = plan_actors(big, [{"CPU": 32.0, "GPU": 4.0}] * 2, num_gpus=0.5)
    assert p.actors == 16
    with pytest.raises(Exception, match="no node of this Ray cluster has that many"):
        plan_actors(two, [two], num_gpus=1)
    with pytest.raises(Exception, match="no node of this Ray cluster has that many"):
        plan_actors(two, [two], num_cpus=3)


def test_block_count():
    assert block_count(65, 2) == 9  # 8 images (4 batches) per block
    assert block_count(3, 8) == 1
    assert block_count(1_000_000, 8) == 20_000  # 50 per block: never a million objects in Ray's store
    assert block_count(10_000_000, 8, max_blocks=20_000) == 20_000


def test_stall_timeout_stops_and_keeps_what_arrived():
    def slow():
        yield [{"n": 1}]
        time.sleep(30)
        yield [{"n": 2}]

    got = []
    with pytest.raises(LabelStalled, match=r"no image finished in the last 0.3 s; the pool waits"):
        for batch in with_stall_timeout(slow(), 0.3, lambda: "the pool waits"):
            got.extend(batch)
    assert got == [{"n": 1}]


def test_shards_unreadable_missing_and_duplicate(label_collection_fixture, tmp_path):
    fx = label_collection_fixture
    out = tmp_path / "out"
    label_collection(job(fx, out, shard_size=16))
    shards = sorted((out / "shards").glob("part-*.jsonl"))
    assert len(shards) == 5  # 65 results in shards of 16
    damaged = next(p for p in shards if len(p.read_text().splitlines()) == 16)
    damaged.write_text(damaged.read_text()[:-30])  # a damaged shard: set aside, its images redone
    again = label_collection(job(fx, out))
    assert again["labeled_now"] == 16 and (out / "shards" / (damaged.name + ".bad")).exists()
    index = read_shards(out / "shards")
    assert len(index) == 65
    dup = out / "shards" / "part-zzz-duplicate.jsonl"
    dup.write_text(next(p for p in shards if p != damaged).read_text().splitlines()[0] + "\n")
    with pytest.raises(ShardError, match="has 2 results"):
        label_collection(job(fx, out))
    dup.unlink()
    from labeling.outputs import merge
    from labeling.sources import list_sources

    sources = list_sources([fx.photos])
    index.records.pop(sources[3].path)
    with pytest.raises(MergeError, match=r"1 of 65 images have no result, e\.g\. \['" + sources[3].path):
        merge(sources, index)
