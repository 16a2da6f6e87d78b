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
