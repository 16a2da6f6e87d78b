"""Every file the SDK writes gets the permissions a plain ``open()`` gives under the user's umask, and a
run that fails leaves nothing half-made and names an output path it cannot create."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.cli import main as bench_main
from export.main import main as export_main
from sdk.cli import eval_main, predict_main
from training.finetune import main as finetune_main
from training.synthetic import make_shapes_dataset


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in sorted(root.rglob("*"))}


@pytest.mark.slow
@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_every_written_file_follows_the_umask(tmp_path, mask):
    """Training outputs, exports and sidecars, a Triton repository, an INT8 calibration cache,
    predictions, evaluation JSON and benchmark reports, all made under ``mask``."""
    old = os.umask(mask)
    try:
        data = make_shapes_dataset(tmp_path / "data", num_train=8, num_val=4, size=96, seed=0)
        run, out = tmp_path / "run", tmp_path / "out"
        assert finetune_main(["--model", "tiny", "--data", str(data), "--imgsz", "96", "--epochs", "1",
                              "--batch-size", "4", "--total-batch-size", "4", "--workers", "0", "--num-texts", "4",
                              "--min-size", "0", "--max-steps-per-epoch", "1", "--val-interval", "1",
                              "--output", str(run)]) == 0
        base = ["--weights", str(run / "last.pt"), "--imgsz", "96"]
        out.mkdir()
        assert export_main([*base, "--output", str(out / "m.onnx"), "--verify-tolerance", "10"]) == 0
        assert export_main([*base, "--output", str(out / "q.onnx"), "--precision", "int8", "--calib-images",
                            str(data.parent / "val"), "--calib-cache", str(out / "calib.json"),
                            "--verify-tolerance", "10"]) == 0
        assert export_main([*base, "--engine", "triton", "--output", str(out / "repo"),
                            "--verify-tolerance", "10"]) == 0
        assert predict_main([str(data.parent / "val"), "--weights", str(out / "m.onnx"),
                             "--out", str(out / "pred")]) == 0
        assert eval_main(["--ann", str(data.parent / "annotations" / "val.json"), "--model",
                          str(out / "m.onnx"), "--images", str(data.parent / "val"), "--json",
                          str(out / "metrics.json"), "--results-out", str(out / "results.json")]) == 0
        assert bench_main([str(out / "m.onnx"), "--batch", "1", "--count", "2", "--warmup", "0", "--repeats", "1",
                           "--out", str(out / "bench" / "bench.json")]) == 0
    finally:
        os.umask(old)
    written = {**{f"run/{k}": v for k, v in _modes(run).items()}, **{f"out/{k}": v for k, v in _modes(out).items()}}
    for name in ("run/last.pt", "run/best.pt", "run/metrics.csv", "run/config.yaml", "run/summary.json",
                 "run/curves.png", "out/m.onnx", "out/m.onnx.json", "out/q.onnx", "out/q.onnx.json", "out/calib.json",
                 "out/repo/yoloworld/config.pbtxt", "out/repo/yoloworld/1/model.onnx", "out/pred/predictions.json",
                 "out/metrics.json", "out/results.json", "out/bench/bench.json", "out/bench/bench.md"):
        assert name in written, (name, sorted(written))
    for name, m in written.items():
        expected = 0o777 & ~mask if (tmp_path / name).is_dir() else 0o666 & ~mask
        assert m == expected, f"{name}: {oct(m)} != {oct(expected)}"


def test_failed_predict_leaves_no_output_folder(tiny_checkpoints, tmp_path, capsys):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    cv2.imwrite(str(tmp_path / "good.png"), np.full((64, 64, 3), 128, np.uint8))
    args = ["--weights", str(tiny_checkpoints["v2"]), "--classes", "person", "--imgsz", "64"]
    for sources in ([tmp_path / "bad.jpg"], [tmp_path / "good.png", tmp_path / "bad.jpg"]):
        assert predict_main([*map(str, sources), *args, "--out", str(tmp_path / "o1" / "sub"),
                             "--batch-size", "1"]) == 2
        assert "bad.jpg" in capsys.readouterr().err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jpg", "good.png"]  # no o1/, no staging
    assert predict_main([str(tmp_path / "good.png"), *args, "--out", str(tmp_path / "o1" / "sub")]) == 0
    assert sorted(p.name for p in (tmp_path / "o1" / "sub").iterdir()) == ["good.png", "predictions.json"]


@pytest.mark.parametrize("where", ["proc", "under_a_file"])
def test_uncreatable_outputs_are_one_line_errors(tiny_checkpoints, tmp_path, capsys, where):
    (tmp_path / "file.txt").write_text("x")
    cv2.imwrite(str(tmp_path / "img.png"), np.full((64, 64, 3), 128, np.uint8))
    bad = Path("/proc/yoloworld-test") if where == "proc" else tmp_path / "file.txt" / "out"
    weights = ["--weights", str(tiny_checkpoints["v2"])]
    runs = {
        "yoloworld-predict": lambda: predict_main([str(tmp_path / "img.png"), *weights, "--classes", "a",
                                                   "--imgsz", "64", "--out", str(bad)]),
        "yoloworld-export": lambda: export_main([*weights, "--classes", "a", "--imgsz", "64",
                                                 "--output", str(bad / "m.onnx")]),
        "training.finetune": lambda: finetune_main(["--model", "tiny", "--data", str(tmp_path / "nope.yaml"),
                                                    "--output", str(bad)]),
        "yoloworld-eval": lambda: eval_main(["--ann", str(tmp_path / "gt.json"), "--results", str(tmp_path / "r.json"),
                                             "--json", str(bad / "metrics.json")]),
    }
    for prog, call in runs.items():
        assert call() == 2, prog
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"{prog}: error:") and len(err.splitlines()) == 1, (prog, err)
        assert str(bad) in err, (prog, err)
    with pytest.raises(SystemExit):
        bench_main([str(tmp_path / "m.onnx"), "--out", str(bad / "bench.json")])
    assert str(bad) in capsys.readouterr().err
