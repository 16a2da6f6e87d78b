"""The export self-check: relative bounds that pass sound exports on any CPU and fail broken ones, the
measured differences in the manifest, a way on when it fails, and nothing left behind."""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from export.main import main as export_main
from export.onnx_export import build_deploy_model, export_onnx, verify_onnx
from export.verify import DEFAULT_TOLERANCE, ExportError, Tolerance, compare_raw, logit_scale
from sdk.backends.torch import encode_texts
from sdk.manifest import read_manifest
from sdk.model import load_checkpoint
from sdk.vocabulary import Vocabulary

pytestmark = pytest.mark.numeric  # float comparisons across kernels: CI reruns these (Makefile)

CLASSES = ["person", "red car", "a dog"]
IMGSZ = 160
QUIET = {"log": lambda *a: None}


@pytest.fixture(scope="module")
def sound(tiny_checkpoints, tmp_path_factory):
    """The tiny v2 model exported with the default self-check, its deploy model and raw graph."""
    model = load_checkpoint(tiny_checkpoints["v2"])
    vocab = Vocabulary.from_any(CLASSES)
    emb = vocab.embeddings(lambda t: encode_texts(model, None, t))
    path = tmp_path_factory.mktemp("verify") / "m.onnx"
    manifest = export_onnx(model, vocab, emb, path, imgsz=IMGSZ, verify_batches=(1, 2), **QUIET)
    return {"model": model, "vocab": vocab, "emb": emb, "path": path, "manifest": manifest,
            "deploy": build_deploy_model(model, vocab, emb, IMGSZ), "proto": onnx.load(str(path))}


def test_bounds_by_hand():
    """|d s| <= score_atol + logit_rel * Z * s (1 - s); |d box| <= box_atol_px + box_rel * extent."""
    tol = Tolerance(score_atol=1e-5, logit_rel=1e-3, box_atol_px=0.01, box_rel=1e-3)
    ref_s = np.array([[[0.5, 1 / (1 + np.exp(-6.0))]]], np.float32)  # logits 0 and 6: Z = 6
    assert logit_scale(ref_s) == pytest.approx(6.0, rel=1e-5)
    ref_b = np.array([[[10.0, 20.0, 110.0, 70.0]]], np.float32)  # extent 100 x 50
    # score bound at s = 0.5: 1e-5 + 1e-3 * 6 * 0.25 = 1.51e-3; box bounds: x 0.11 px, y 0.06 px
    ok = compare_raw(ref_s + np.float32([[[1.5e-3, 0]]]), ref_b + np.float32([[[0.1, 0.05, -0.1, 0]]]),
                     ref_s, ref_b, tol)
    assert ok.ok and ok.score_ratio == pytest.approx(1.5e-3 / 1.51e-3, rel=1e-3)
    assert ok.box_ratio == pytest.approx(0.1 / 0.11, rel=1e-3)
    bad_y = compare_raw(ref_s, ref_b + np.float32([[[0, 0.07, 0, 0]]]), ref_s, ref_b, tol)
    assert not bad_y.ok and bad_y.box_ratio == pytest.approx(0.07 / 0.06, rel=1e-3)
    assert "coordinate y1" in bad_y.worst_box and "extent 50.0 px" in bad_y.worst_box
    bad_s = compare_raw(ref_s + np.float32([[[1.6e-3, 0]]]), ref_b, ref_s, ref_b, tol)
    assert not bad_s.ok and "class 0" in bad_s.worst_score
    nan = compare_raw(ref_s, ref_b * np.nan, ref_s, ref_b, tol)
    assert not nan.ok and nan.box_ratio == np.inf
    assert Tolerance().scaled(4).box_rel == 4 * Tolerance().box_rel
    with pytest.raises(ValueError, match="positive"):
        Tolerance().scaled(0)


def test_sound_export_records_its_agreement(sound):
    record = sound["manifest"].extra["verification"]
    assert read_manifest(sound["path"]).extra["verification"] == record  # sidecar and metadata alike
    assert "ONNX Runtime" in record["compared"] and record["tolerance"] == DEFAULT_TOLERANCE.__dict__
    for bs in (1, 2):
        entry = record[f"batch_{bs}"]
        # a margin, not a near miss: rounding differences are a small part of the bounds
        assert 0 < entry["score_ratio"] < 0.5 and 0 < entry["box_ratio"] < 0.5, entry
        assert entry["score"] < 1e-3 and entry["box_px"] < 0.1


def _run_graph(proto, deploy):
    return verify_onnx(proto, deploy, IMGSZ, (2,))


def test_broken_exports_still_fail(sound):
    """What the self-check exists for: a wrong fold, a perturbed weight, a half-pixel anchor shift and a
    float16 graph passed off as float32 all exceed the bounds many times over."""
    from export.precision import convert_fp16

    deploy, proto = sound["deploy"], sound["proto"]
    assert _run_graph(proto, deploy)[2].ok  # the sound graph passes
    # 1. the vocabulary folded in is not the one checked against (a wrong fold)
    other = Vocabulary.from_any(["bus", "red car", "a dog"])
    wrong_fold = build_deploy_model(sound["model"], other, other.embeddings(
        lambda t: encode_texts(sound["model"], None, t)), IMGSZ)
    with pytest.raises(ExportError, match=r"self-check failed: ONNX Runtime vs PyTorch at batch 2 .* scores differ"):
        _run_graph(proto, wrong_fold)
    # 2. one convolution's weights 1 % off
    perturbed = copy.deepcopy(proto)
    init = next(i for i in perturbed.graph.initializer if numpy_helper.to_array(i).ndim == 4)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1.01), init.name))
    with pytest.raises(ExportError, match="self-check failed"):
        _run_graph(perturbed, deploy)
    # 3. anchors half a pixel off (the reference decodes from shifted centres)
    shifted = copy.deepcopy(deploy)
    shifted.points += 0.5
    with pytest.raises(ExportError, match="boxes differ by up to 0.5"):
        _run_graph(proto, shifted)
    # 4. a float16 graph checked as if it were the float32 export
    fp16 = sound["path"].with_name("m_fp16.onnx")
    convert_fp16(sound["path"], fp16)
    with pytest.raises(ExportError, match="self-check failed"):
        verify_onnx(fp16, deploy, IMGSZ, (2,))


def test_failure_names_what_was_compared_and_a_way_on(sound, tmp_path):
    path = tmp_path / "m.onnx"
    tight = DEFAULT_TOLERANCE.scaled(1e-4)  # stands for a CPU whose kernels round unlike this one's
    with pytest.raises(ExportError) as err:
        export_onnx(sound["model"], sound["vocab"], sound["emb"], path, imgsz=IMGSZ, tolerance=tight, **QUIET)
    message = str(err.value)
    for part in ("ONNX Runtime vs PyTorch at batch 1", "generated check images", "x the bound", "worst at image",
                 "--verify-tolerance", "--no-verify", "tolerance=None"):
        assert part in message, (part, message)
    assert not path.exists() and not list(tmp_path.iterdir())  # nothing written
    # a larger tolerance gets it through; so does skipping the check, with a warning and a record
    export_onnx(sound["model"], sound["vocab"], sound["emb"], path, imgsz=IMGSZ, tolerance=tight.scaled(1e6), **QUIET)
    with pytest.warns(UserWarning, match="self-check skipped"):
        manifest = export_onnx(sound["model"], sound["vocab"], sound["emb"], path, imgsz=IMGSZ, tolerance=None,
                               **QUIET)
    assert manifest.extra["verification"] == {"skipped": True}


def test_cli_verify_options_and_nothing_left_on_failure(tiny_checkpoints, tmp_path, capsys):
    base = ["--weights", str(tiny_checkpoints["v2"]), "--classes", ",".join(CLASSES), "--imgsz", str(IMGSZ)]
    out = tmp_path / "m.onnx"
    assert export_main([*base, "--output", str(out), "--verify-tolerance", "1e-4"]) == 2
    err = capsys.readouterr().err
    assert "self-check failed" in err and "--no-verify" in err
    assert sorted(os.listdir(tmp_path)) == []
    # fp16 writes an fp32 reference first: a failure removes it too
    assert export_main([*base, "--output", str(out), "--precision", "fp16", "--verify-tolerance", "1e-4"]) == 2
    assert sorted(os.listdir(tmp_path)) == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert export_main([*base, "--output", str(out), "--no-verify"]) == 0
    assert any("self-check skipped" in str(w.message) for w in caught)
    assert read_manifest(out).extra["verification"] == {"skipped": True}
    assert export_main([*base, "--output", str(out), "--verify-tolerance", "2"]) == 0
    record = read_manifest(out).extra["verification"]
    assert record["tolerance"]["box_rel"] == pytest.approx(2 * DEFAULT_TOLERANCE.box_rel)


def test_open_vocab_failure_leaves_nothing(tiny_checkpoints, tmp_path):
    from export.open_vocab import export_open_vocab

    model = load_checkpoint(tiny_checkpoints["v2"])
    with pytest.raises(ExportError, match="self-check failed"):
        export_open_vocab(model, tmp_path / "ov.onnx", capacity=4, imgsz=IMGSZ, verify_batches=(1,),
                          tolerance=DEFAULT_TOLERANCE.scaled(1e-6), **QUIET)
    assert sorted(os.listdir(tmp_path)) == []  # no text encoder, vocabulary or detector left behind
    with torch.no_grad():
        manifest = export_open_vocab(model, tmp_path / "ov.onnx", capacity=4, imgsz=IMGSZ, verify_batches=(1,),
                                     **QUIET)
    record = manifest.extra["verification"]
    assert record["masked_vs_model"]["box_ratio"] < 0.5 and record["vocabulary_0_batch_1"]["score_ratio"] < 0.5
    assert 0 <= record["text_encoder_max_abs_diff"] < DEFAULT_TOLERANCE.text_atol
