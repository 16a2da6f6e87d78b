"""Fixtures of the labeling tests: an image collection and the fine-tuned tiny model exported to ONNX."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="session")
def label_collection_fixture(trained_tiny, tmp_path_factory) -> SimpleNamespace:
    """``root/photos`` with 64 generated shape images in two sub-folders, one corrupt JPEG and a text file
    (not an image); ``model``: the fine-tuned tiny model exported to ONNX at 160 px; ``classes`` /
    ``class_texts``: its class names / prompt lists; ``good``: the readable images' paths, sorted."""
    from export.pipeline import ExportOptions, export_artifact
    from sdk.model.checkpoint import load_checkpoint_with_meta
    from sdk.vocabulary import Vocabulary
    from training.synthetic import make_shapes_dataset

    ckpt, _ = trained_tiny
    root = tmp_path_factory.mktemp("label")
    data = make_shapes_dataset(root / "shapes", num_train=48, num_val=16, size=128, seed=3).parent
    photos = root / "photos"
    shutil.copytree(data / "train", photos / "a")
    shutil.copytree(data / "val", photos / "b" / "deeper")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (photos / "notes.txt").write_text("not an image\n")
    model, meta = load_checkpoint_with_meta(ckpt)
    vocab = Vocabulary.from_any(meta["vocabulary"])
    onnx = root / "model.onnx"
    export_artifact(model, vocab, onnx, ExportOptions(imgsz=160), log=lambda *_: None)
    good = sorted(str(p) for p in photos.rglob("*.jpg") if p.name != "broken.jpg")
    return SimpleNamespace(root=root, photos=photos, model=onnx, classes=vocab.names,
                           class_texts=[list(p) for p in vocab.prompts], good=good,
                           broken=str(photos / "broken.jpg"))
