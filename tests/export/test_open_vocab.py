"""Open-vocabulary export: text encoder ONNX == PyTorch, the same detections as the fixed-vocabulary
export and the PyTorch Detector, padding invariance, set_classes without reloading, torch-free use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from parity import (
    RANDOM_BOX_ATOL,
    RANDOM_SCORE_ATOL,
    SAME_RUNTIME_BOX_ATOL,
    SAME_RUNTIME_SCORE_ATOL,
    TEXT_ATOL,
    assert_identical_detections,
    assert_same_detection_lists,
    require_detections,
)

from sdk import Detector, Vocabulary, VocabularyError
from sdk.manifest import read_manifest
from sdk.tokenizer import VOCAB_FILE, ClipTokenizer

pytestmark = pytest.mark.numeric  # float comparisons across kernels: CI reruns these (Makefile)

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["person", "red car", "a dog"]
OTHER = [["dog", "puppy"], ["cat"], ["yellow star", "star"]]  # "max" merge with a padding prompt
IMGSZ = 160
CONF = 0.05
QUIET = {"log": lambda *a: None}


def _fixed_export(model, classes, path, merge="first", pad=False):
    from export.onnx_export import export_onnx

    vocab = Vocabulary.from_any(classes, merge, pad)
    emb = model.encode_text(vocab.model_texts()).numpy()
    export_onnx(model, vocab, emb, path, imgsz=IMGSZ, verify_batches=(1,), **QUIET)
    return path


@pytest.fixture(scope="module")
def models(tiny_checkpoints):
    from sdk.model import load_checkpoint

    return {v: load_checkpoint(tiny_checkpoints[v]) for v in ("v2", "v1")}


@pytest.fixture(scope="module")
def artifacts(models, tmp_path_factory):
    """v2: open vocabulary at capacity 8 and 16, fixed exports of CLASSES and OTHER; v1: open
    vocabulary at capacity 8 and a fixed export of CLASSES."""
    from export.open_vocab import export_open_vocab

    root = tmp_path_factory.mktemp("ov")
    out = {"root": root}
    out["v2_ov8"] = root / "v2_ov8.onnx"
    out["manifest"] = export_open_vocab(models["v2"], out["v2_ov8"], capacity=8, imgsz=IMGSZ, **QUIET)
    out["v2_ov16"] = root / "v2_ov16.onnx"
    export_open_vocab(models["v2"], out["v2_ov16"], capacity=16, imgsz=IMGSZ, verify_batches=(1,), **QUIET)
    out["v1_ov8"] = root / "v1_ov8.onnx"
    export_open_vocab(models["v1"], out["v1_ov8"], capacity=8, imgsz=IMGSZ, verify_batches=(1,), **QUIET)
    out["v2_fixed"] = _fixed_export(models["v2"], CLASSES, root / "v2_fixed.onnx")
    out["v2_fixed_other"] = _fixed_export(models["v2"], OTHER, root / "v2_fixed_other.onnx", "max", True)
    out["v1_fixed"] = _fixed_export(models["v1"], CLASSES, root / "v1_fixed.onnx")
    return out


def _same(a_list, b_list, box_atol=RANDOM_BOX_ATOL, score_atol=RANDOM_SCORE_ATOL):
    """The same detections up to float rounding (the conf and max_det edges may differ, see parity.py);
    not a vacuous comparison: each side holds more than 10 (the random calibrated models find dozens per
    synthetic image at CONF)."""
    assert_same_detection_lists(a_list, b_list, conf=CONF, minimum=11, box_atol=box_atol, score_atol=score_atol)


def test_files_and_manifest(artifacts):
    root, man = artifacts["root"], artifacts["manifest"]
    assert man.open_vocabulary and man.vocab_capacity == 8 and man.imgsz == (IMGSZ, IMGSZ)
    assert man.extra["text_encoder"] == "v2_ov8.text_encoder.onnx"
    assert man.extra["tokenizer_vocab"] == VOCAB_FILE
    assert read_manifest(artifacts["v2_ov8"]) == man  # sidecar
    import onnx

    proto = onnx.load(str(artifacts["v2_ov8"]))
    assert json.loads(next(p.value for p in proto.metadata_props if p.key == "yoloworld"))["vocab_capacity"] == 8
    shapes = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim]
              for i in [*proto.graph.input, *proto.graph.output]}
    assert shapes == {"images": ["batch", 3, IMGSZ, IMGSZ], "text_embeds": [8, 512], "text_mask": [8],
                      "scores": ["batch", 525, 8], "boxes": ["batch", 525, 4]}
    assert (root / VOCAB_FILE).is_file() and (root / "v2_ov16.text_encoder.onnx").is_file()


def test_text_encoder_onnx_matches_pytorch(artifacts, models):
    import onnxruntime as ort
    import torch

    from export.text_encoder import CHECK_TEXTS

    encoder = models["v2"].text_encoder
    tok = ClipTokenizer(artifacts["root"] / VOCAB_FILE)
    session = ort.InferenceSession(str(artifacts["root"] / "v2_ov8.text_encoder.onnx"),
                                   providers=["CPUExecutionProvider"])
    texts = [*CHECK_TEXTS, "Zebra crossing", "a " * 74 + "cat", "ＦＵＬＬ width", "It's 3 o'clock"]
    worst = 0.0
    for chunk in (texts, texts[:5], ["person"]):
        ids = tok.batch(chunk)  # several N and T, right-padded with the end token
        got = session.run(None, {"input_ids": ids})[0]
        with torch.no_grad():
            ref = encoder(torch.from_numpy(ids))
            ref = (ref / ref.norm(dim=1, keepdim=True)).numpy()
        assert got.shape == (len(chunk), 512)
        worst = max(worst, float(np.abs(got - ref).max()))
    assert worst <= 1e-5, worst
    # and the cached PyTorch path (open_clip tokenizer, padding to the chunk's longest text)
    np.testing.assert_allclose(session.run(None, {"input_ids": tok.batch(texts)})[0],
                               encoder.encode(texts).numpy(), rtol=0, atol=TEXT_ATOL)


def test_masked_slots_change_nothing(artifacts, models):
    """Graph level: garbage in padded slots == zeros there; padded scores are exactly 0."""
    import onnxruntime as ort

    from export.onnx_export import check_images

    session = ort.InferenceSession(str(artifacts["v1_ov8"]), providers=["CPUExecutionProvider"])
    images = check_images(IMGSZ, 2)
    emb = np.zeros((8, 512), np.float32)
    emb[:3] = models["v1"].encode_text(CLASSES).numpy()
    mask = np.array([1, 1, 1, 0, 0, 0, 0, 0], np.float32)
    garbage = emb.copy()
    garbage[3:] = np.random.RandomState(0).randn(5, 512) * 10
    s0, b0 = session.run(None, {"images": images, "text_embeds": emb, "text_mask": mask})
    s1, b1 = session.run(None, {"images": images, "text_embeds": garbage, "text_mask": mask})
    np.testing.assert_array_equal(s0[..., :3], s1[..., :3])
    np.testing.assert_array_equal(b0, b1)
    assert (s0[..., 3:] == 0).all() and (s1[..., 3:] == 0).all()
    assert s0[..., :3].max() > 0.5
    s2, _ = session.run(None, {"images": images, "text_embeds": garbage, "text_mask": np.ones(8, np.float32)})
    assert np.abs(s2[..., :3] - s0[..., :3]).max() > 1e-3  # unmasked, the same garbage does matter


@pytest.mark.parametrize("variant", ["v2", "v1"])
def test_same_detections_as_fixed_export_and_torch(artifacts, tiny_checkpoints, images, variant):
    ov = Detector(artifacts[f"{variant}_ov8"], backend="onnxruntime", classes=CLASSES, conf=CONF)
    fixed = Detector(artifacts[f"{variant}_fixed"], backend="onnxruntime", conf=CONF)
    torch_det = Detector(tiny_checkpoints[variant], classes=CLASSES, imgsz=IMGSZ, conf=CONF)
    assert ov.imgsz == IMGSZ and ov.class_names == CLASSES
    # images[3] (33 x 250) saturates this random model: 300 scores of 1.0, ties decide NMS order
    imgs = images[:3]
    got = ov.predict(imgs, batch_size=2)
    _same(got, fixed.predict(imgs, batch_size=2))
    # against PyTorch (unfused BatchNorm): images[2] is up-scaled 1.6x, where the fixed export
    # differs from PyTorch by 1.0e-4 in one score too
    _same(got[:2], torch_det.predict(imgs[:2], batch_size=2))


def test_padding_invariance_capacity_8_vs_16(artifacts, images):
    a = Detector(artifacts["v2_ov8"], backend="onnxruntime", classes=CLASSES, conf=CONF).predict(images, batch_size=4)
    b = Detector(artifacts["v2_ov16"], backend="onnxruntime", classes=CLASSES, conf=CONF).predict(images, batch_size=4)
    assert sum(len(d) for d in a) > 10
    # measured bit-identical here; other kernels for the 16-slot shapes may round differently
    _same(a, b, box_atol=SAME_RUNTIME_BOX_ATOL, score_atol=SAME_RUNTIME_SCORE_ATOL)


def test_set_classes_without_reload(artifacts, images):
    det = Detector(artifacts["v2_ov8"], backend="onnxruntime", classes=CLASSES, conf=CONF)
    session, text_session = det.backend.session, det.backend.text_session
    first = det.predict(images[:3])
    det.set_classes(OTHER, prompt_merge="max", pad_prompt=True)  # 5 prompts + ' ' = 6 slots
    assert det.backend.session is session and det.backend.text_session is text_session
    assert det.class_names == ["dog", "cat", "yellow star"]
    got = det.predict(images[:3])
    assert all(d.class_id.max(initial=0) <= 2 for d in got)
    _same(got, Detector(artifacts["v2_fixed_other"], backend="onnxruntime", conf=CONF).predict(images[:3]))
    det.set_classes(CLASSES, prompt_merge="first", pad_prompt=False)  # and back: embeddings cached
    back = det.predict(images[:3])
    require_detections(back, first, minimum=11)  # identical empty results would pass too
    for a, b in zip(back, first, strict=True):
        assert_identical_detections(a, b)


def test_capacity_errors(artifacts):
    det = Detector(artifacts["v2_ov8"], backend="onnxruntime", classes=CLASSES)
    with pytest.raises(VocabularyError, match="9 classes need 9 text slots .* capacity of 8"):
        det.set_classes([f"class {i}" for i in range(9)])
    with pytest.raises(VocabularyError, match="3 classes need 9 text slots .* capacity of 8"):
        det.set_classes([["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"]], prompt_merge="max")
    assert det.class_names == CLASSES  # unchanged
    with pytest.raises(VocabularyError, match="needs 9 text slots .* capacity of 8"):
        det.backend.set_text(np.zeros((9, 512), np.float32))
    with pytest.raises(VocabularyError, match="stores no vocabulary"):
        Detector(artifacts["v2_ov8"], backend="onnxruntime")
    with pytest.raises(ValueError, match="is 78 tokens long"):
        det.set_classes(["a " * 76])


def test_missing_text_encoder_is_named(artifacts, tmp_path):
    import shutil

    for name in ("v2_ov8.onnx", "v2_ov8.onnx.json"):
        shutil.copy(artifacts["root"] / name, tmp_path / name)
    with pytest.raises(ValueError, match="tokenizer vocab file .*bpe_simple_vocab_16e6.txt.gz' is missing"):
        Detector(tmp_path / "v2_ov8.onnx", backend="onnxruntime", classes=CLASSES)
    shutil.copy(artifacts["root"] / VOCAB_FILE, tmp_path / VOCAB_FILE)
    with pytest.raises(ValueError, match="text encoder file .*v2_ov8.text_encoder.onnx' is missing"):
        Detector(tmp_path / "v2_ov8.onnx", backend="onnxruntime", classes=CLASSES)


def test_export_errors(models, tmp_path):
    import copy

    from export.onnx_export import ExportError
    from export.open_vocab import export_open_vocab

    with pytest.raises(ExportError, match="capacity must be at least 1"):
        export_open_vocab(models["v2"], tmp_path / "m.onnx", capacity=0, imgsz=IMGSZ, **QUIET)
    no_text = copy.copy(models["v2"])
    no_text.text_encoder = None
    with pytest.raises(ExportError, match="no text encoder"):
        export_open_vocab(no_text, tmp_path / "m.onnx", capacity=4, imgsz=IMGSZ, **QUIET)


def test_torch_free_end_to_end(artifacts, images, tmp_path):
    """Import nothing of torch / open_clip: tokenizer + text encoder ONNX + detector ONNX."""
    for i, img in enumerate(images[:3]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), img)
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['open_clip'] = None\n"
        "import numpy as np\n"
        "from sdk import Detector\n"
        f"det = Detector({str(artifacts['v2_ov8'])!r}, backend='onnxruntime', classes={CLASSES!r}, conf={CONF})\n"
        f"res = det.predict([{str(tmp_path / '0.png')!r}, {str(tmp_path / '1.png')!r}, {str(tmp_path / '2.png')!r}])\n"
        "det.set_classes(['dog', 'cat'])\n"
        f"res2 = det.predict({str(tmp_path / '0.png')!r})\n"
        "np.savez(sys.argv[1], **{f'{k}{i}': getattr(r, a) for i, r in enumerate(res + res2)\n"
        "                        for k, a in (('b', 'xyxy'), ('s', 'confidence'), ('c', 'class_id'))})\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip')\n"
        "            and sys.modules[m] is not None]\n"
        "print('ok', sum(len(r) for r in res))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out.npz")], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok") and int(out.stdout.split()[1]) > 10
    det = Detector(artifacts["v2_ov8"], backend="onnxruntime", classes=CLASSES, conf=CONF)
    expected = det.predict(images[:3])
    det.set_classes(["dog", "cat"])
    expected += det.predict(images[0])
    require_detections(expected[:3], minimum=11)  # as the subprocess printed: not a comparison of empty arrays
    require_detections(expected[3])
    with np.load(tmp_path / "out.npz") as data:
        for i, e in enumerate(expected):
            np.testing.assert_array_equal(data[f"c{i}"], e.class_id)
            np.testing.assert_allclose(data[f"b{i}"], e.xyxy, rtol=0, atol=SAME_RUNTIME_BOX_ATOL)
            np.testing.assert_allclose(data[f"s{i}"], e.confidence, rtol=0, atol=SAME_RUNTIME_SCORE_ATOL)


def test_self_check_against_the_model(models):
    """The export's guard compares the masked graph with ``YoloWorld.forward`` on the used slots."""
    import torch

    from export.onnx_export import ExportError, check_images
    from export.open_vocab import OpenVocabDeployModel, check_against_model, check_texts

    model = models["v1"]
    deploy = OpenVocabDeployModel(model, IMGSZ).eval()
    texts = check_texts(model, 8)[:1]  # 3 prompts + 5 masked random slots
    image = check_images(IMGSZ, 2)  # the shapes the export's own check used (warm kernels)
    (agreement,) = check_against_model(model, deploy, image, texts)
    assert agreement.score_ratio < 0.5 and agreement.box_ratio < 0.5, agreement  # margin on the bounds
    with torch.no_grad():
        deploy.folded.head.cls_contrasts[2].bias += 0.5  # a wrong head: caught
    with pytest.raises(ExportError, match="self-check failed: the open-vocabulary graph .* scores differ"):
        check_against_model(model, deploy, image, texts)


@pytest.mark.numeric
def test_openvino_runs_the_open_vocabulary_artifact(artifacts, images):
    """The same artifact and text encoder on OpenVINO (float32): embeddings, scores and boxes as on ONNX
    Runtime, padded slots zero, and the vocabulary changes without a reload."""
    pytest.importorskip("openvino")
    from sdk import RuntimeOptions
    from sdk.preprocess import preprocess
    from tests.parity import OV_FP32_RANDOM_REL, TEXT_ATOL, max_rel_diff

    ort = Detector(artifacts["v2_ov8"], backend="onnxruntime", classes=CLASSES, conf=CONF)
    ovd = Detector(artifacts["v2_ov8"], backend="openvino", classes=CLASSES, conf=CONF,
                   runtime=RuntimeOptions(precision="fp32"))
    np.testing.assert_allclose(ovd.backend.encode_text(CLASSES), ort.backend.encode_text(CLASSES), atol=TEXT_ATOL)
    x, _ = preprocess(images[:3], IMGSZ)
    got, ref = ovd.backend.infer(x), ort.backend.infer(x)
    assert max_rel_diff(got["scores"], ref["scores"]) < OV_FP32_RANDOM_REL
    assert max_rel_diff(got["boxes"], ref["boxes"]) < OV_FP32_RANDOM_REL
    assert (got["scores"][..., len(CLASSES):] == 0).all()  # masked slots
    ovd.set_classes(OTHER, prompt_merge="max", pad_prompt=True)
    assert ovd.class_names == ["dog", "cat", "yellow star"]
    got = ovd.predict(images[:3])
    require_detections(got, minimum=11)  # as ONNX Runtime finds (test_set_classes_without_reload)
    assert all(d.class_id.max(initial=0) <= 2 for d in got)
