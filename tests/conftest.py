"""Shared builders: tiny models saved in the official format, synthetic images, a private cache."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/builders.py, tests/parity.py

from builders import make_official_state_dict, synthetic_image

TINY_VARIANTS = ("v2", "v1", "efficient", "efficient_l2")


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


@pytest.fixture(scope="session")
def images() -> list[np.ndarray]:
    """Synthetic BGR uint8 images of varied shapes (square, tall, wide, tiny)."""
    return [synthetic_image(1, 160, 160), synthetic_image(2, 200, 120), synthetic_image(3, 70, 100),
            synthetic_image(4, 33, 250)]


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A tiny model fine-tuned for a few epochs on the generated shapes (realistic weights: random
    calibrated ones amplify rounding through the network), and its 4 validation images."""
    from training.finetune import main as finetune
    from training.synthetic import make_shapes_dataset

    root = tmp_path_factory.mktemp("trained")
    data = make_shapes_dataset(root / "data", num_train=16, num_val=4, size=128, seed=0)
    assert finetune(["--model", "tiny", "--data", str(data), "--imgsz", "160", "--epochs", "10",
                     "--batch-size", "4", "--total-batch-size", "4", "--workers", "0", "--num-texts", "6",
                     "--min-size", "0", "--lr", "0.004", "--warmup-min-iters", "2", "--warmup-epochs", "0",
                     "--val-interval", "100", "--close-mosaic", "10", "--output", str(root / "run")]) == 0
    return root / "run" / "last.pt", sorted((root / "data" / "val").iterdir())
