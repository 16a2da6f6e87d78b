"""Shared builders: tiny models saved in the official format, synthetic images, a private cache."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/builders.py, tests/parity.py

from builders import make_official_state_dict, synthetic_image

TINY_VARIANTS = ("v2", "v1", "efficient", "efficient_l2")


def pytest_configure(config):
    """``YOLOWORLD_TEST_ORT_THREADS=N`` (set by tests/rerun_numeric.py): every ONNX Runtime session the
    tests open, directly or through the SDK, uses N intra-op threads unless it asks for a number itself."""
    threads = os.environ.get("YOLOWORLD_TEST_ORT_THREADS")
    if not threads:
        return
    import onnxruntime as ort

    original = ort.InferenceSession.__init__

    def init(self, path_or_bytes, sess_options=None, *args, **kwargs):
        sess_options = sess_options or ort.SessionOptions()
        if sess_options.intra_op_num_threads == 0:
            sess_options.intra_op_num_threads = int(threads)
        original(self, path_or_bytes, sess_options, *args, **kwargs)

    ort.InferenceSession.__init__ = init


@pytest.fixture(autouse=True)
def _private_embedding_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own persistent text-embedding cache folder."""
    monkeypatch.setenv("YOLOWORLD_CACHE_DIR", str(tmp_path_factory.mktemp("embcache")))


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """variant -> path of a calibrated tiny checkpoint in the official ``{meta, state_dict}`` layout."""
    import torch

    root = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for variant in TINY_VARIANTS:
        path = root / f"tiny_{variant}.pth"
        torch.save({"meta": {"note": "test"}, "state_dict": make_official_state_dict("tiny", variant)},
                   path)
        paths[variant] = path
    return paths


#: What ``tiny_exports`` folds in and the NMS settings its end-to-end forms carry.
EXPORT_CLASSES = ["person", "red car", "a dog"]
EXPORT_IMGSZ = 160


@pytest.fixture(scope="session")
def tiny_exports(tiny_checkpoints, tmp_path_factory):
    """The tiny v2 model exported at 160 px with ``EXPORT_CLASSES`` in every output form (``raw``,
    ``nms``, ``trt_nms``; NMS conf 0.05, IoU 0.5, 300), with the model, vocabulary, embeddings, the
    manifests and each export's log: one export shared by the in-graph NMS and TensorRT tests."""
    from types import SimpleNamespace

    from export.onnx_export import export_onnx
    from sdk.backends.torch import encode_texts
    from sdk.manifest import NmsSettings
    from sdk.model import load_checkpoint
    from sdk.vocabulary import Vocabulary

    root = tmp_path_factory.mktemp("tiny_exports")
    model = load_checkpoint(tiny_checkpoints["v2"])
    vocab = Vocabulary.from_any(EXPORT_CLASSES)
    emb = vocab.embeddings(lambda t: encode_texts(model, None, t))
    out = SimpleNamespace(root=root, model=model, vocab=vocab, emb=emb, nms=NmsSettings(0.05, 0.5, 300),
                          logs={}, manifests={}, paths={})
    for form, batches in (("raw", (1,)), ("nms", (1, 3)), ("trt_nms", (1,))):
        lines: list[str] = []
        path = root / f"model_{form}.onnx"
        out.manifests[form] = export_onnx(model, vocab, emb, path, imgsz=EXPORT_IMGSZ, nms=out.nms, output_form=form,
                                          verify_batches=batches, log=lines.append)
        out.logs[form], out.paths[form] = "\n".join(lines), path
    return out


@pytest.fixture(scope="session")
def images() -> list[np.ndarray]:
    """Synthetic BGR uint8 images of varied shapes (square, tall, wide, tiny)."""
    return [synthetic_image(1, 160, 160), synthetic_image(2, 200, 120), synthetic_image(3, 70, 100),
            synthetic_image(4, 33, 250)]


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A tiny model fine-tuned on the generated shapes until it detects them (validation mAP50 1.0,
    mAP50:95 0.81-0.87 under AMX, AVX-512 and AVX2 kernels, 1 and 2 threads), and its 4 validation
    images. Realistic weights: random calibrated ones amplify rounding through the network. About a
    minute on 2 cores. 60 epochs: after 40, the model depended on the CPU's float kernels (mAP50:95 0.76
    under AMX, 0.45 under AVX2 with one thread, where no score reached 0.5); 10 epochs at weight decay
    0.05 (the first fixture) learned nothing above a score of 0.03."""
    import json

    from training.finetune import main as finetune
    from training.synthetic import make_shapes_dataset

    root = tmp_path_factory.mktemp("trained")
    data = make_shapes_dataset(root / "data", num_train=16, num_val=4, size=128, seed=0)
    assert finetune(["--model", "tiny", "--data", str(data), "--imgsz", "160", "--epochs", "60",
                     "--batch-size", "2", "--total-batch-size", "2", "--workers", "0", "--num-texts", "6",
                     "--min-size", "0", "--lr", "0.002", "--weight-decay", "0.0005", "--warmup-min-iters", "2",
                     "--warmup-epochs", "0", "--val-interval", "60", "--close-mosaic", "60",
                     "--output", str(root / "run")]) == 0
    best = json.loads((root / "run" / "summary.json").read_text())["best"]
    assert best["mAP50"] > 0.5, best  # the fixture must detect, or the tests on it are vacuous
    return root / "run" / "last.pt", sorted((root / "data" / "val").iterdir())
