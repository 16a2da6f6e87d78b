"""``yoloworld-bench``: the report's numbers are consistent, the files are written, bad settings fail."""

from __future__ import annotations

import importlib.util
import json

import pytest

from bench.cli import STAGES, main, stats_ms, synthetic_bgr


def test_stats_ms_hand_computed():
    assert stats_ms([0.003, 0.001, 0.002, 0.010]) == pytest.approx({"min": 1.0, "median": 2.5, "max": 10.0})


def test_synthetic_images_are_reproducible_and_varied():
    a, b = synthetic_bgr(4, 7, 160), synthetic_bgr(4, 7, 160)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert len({x.shape for x in a}) > 1 and all(x.dtype.name == "uint8" and x.shape[2] == 3 for x in a)


def test_bench_cli_on_an_exported_model(tiny_checkpoints, tmp_path, capsys):
    from export.onnx_export import export_onnx
    from sdk.backends.torch import encode_texts
    from sdk.model import load_checkpoint
    from sdk.vocabulary import Vocabulary

    model = load_checkpoint(tiny_checkpoints["v2"])
    vocab = Vocabulary.from_any(["person", "car"])
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(model, vocab, vocab.embeddings(lambda t: encode_texts(model, None, t)), onnx_path, imgsz=160,
                log=lambda *_: None, dynamic_hw=True)
    out = tmp_path / "res" / "bench.json"
    openvino = importlib.util.find_spec("openvino") is not None
    assert main([str(onnx_path), "--batch", "1", "3", "--count", "4", "--warmup", "0", "--repeats", "2",
                 "--threads", "1", "--backend", "onnxruntime", *(["openvino"] if openvino else []),
                 "--precision", "fp32", "bf16", "--letterbox", "rect", "square", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["environment"]["device"] == "cpu" and "onnxruntime" in report["environment"]
    assert report["settings"]["runtime"]["intra_op_threads"] == 1
    # ONNX Runtime: rect, square; OpenVINO: fp32 and bf16 (the --precision rows), each rect and square
    settings = [(r["backend"], r["precision"], r["letterbox"], r["batch"]) for r in report["results"]]
    expected = [("onnxruntime", "fp32", lb, b) for lb in ("rect", "square") for b in (1, 3)]
    if openvino:
        from sdk.backends.openvino import native_bf16, shared_core

        bf16 = "bf16" if native_bf16(shared_core()) else "fp32"  # as this CPU runs it
        expected += [("openvino", p, lb, b) for p in ("fp32", bf16) for lb in ("rect", "square") for b in (1, 3)]
    assert settings == expected
    for r in report["results"]:
        assert r["model"] == "tiny.onnx"
        assert r["images"] == 4 and r["classes"] == 2 and r["imgsz"] == 160
        for key in ("model_ms", "e2e_ms_per_image"):
            assert 0 < r[key]["min"] <= r[key]["median"] <= r[key]["max"]
        assert r["model_images_per_s"] == pytest.approx(r["batch"] / r["model_ms"]["median"] * 1e3)
        assert r["e2e_images_per_s"] == pytest.approx(1e3 / r["e2e_ms_per_image"]["median"])
        assert sum(r["stage_share"].values()) == pytest.approx(1.0)
        assert set(r["stage_ms_per_image"]) == set(STAGES)
    table = out.with_suffix(".md").read_text().splitlines()
    assert len(table) == 2 + len(expected) and table[2].startswith("| tiny.onnx | onnxruntime | fp32 | rect | 1 |")
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "wrote" in capsys.readouterr().out


def test_plot_rows_differing_only_in_precision_keep_their_own_bars():
    from bench.cli import row_label

    rows = [{"model": "s.pt", "backend": "torch", "precision": p, "batch": 1} for p in
            ("fp32 (checkpoint)", "fp16 (checkpoint)")]
    assert [row_label(r) for r in rows] == ["s.pt torch fp32 b1", "s.pt torch fp16 b1"]
    assert row_label({**rows[0], "letterbox": "rect"}) == "s.pt torch fp32 rect b1"


def test_bench_cli_rejects_bad_settings(tmp_path):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "m.onnx"), "--batch", "0"])
