"""Builders for official-format test checkpoints (importable from tests and benchmarks)."""

from __future__ import annotations

import sys
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))

from official_format import fill_state_dict, synthetic_image  # noqa: E402


def official_shapes(model) -> dict[str, tuple[int, ...]]:
    from sdk.model import to_official_state_dict

    return {k: tuple(v.shape) for k, v in to_official_state_dict(model).items()}


def make_official_state_dict(size: str = "tiny", variant: str = "v2", seed: int = 0,
                             calibrate: bool = True):
    """An official-format state dict (official key names) filled deterministically; optionally
    BN/head-calibrated on two synthetic images so outputs are not degenerate."""
    import torch

    from sdk.model import build_model, get_config, load_official_state_dict, to_official_state_dict
    from sdk.preprocess import preprocess
    from tests.calibrate import calibrate_random_model

    with torch.device("meta"):
        shapes = official_shapes(build_model(get_config(size, variant)))
    sd = {k: torch.from_numpy(v) for k, v in fill_state_dict(shapes, seed).items()}
    if calibrate:
        model = build_model(get_config(size, variant))
        load_official_state_dict(model, sd)
        batch, _ = preprocess([synthetic_image(1, 160, 160), synthetic_image(2, 200, 120)], 160)
        text = model.encode_text(["person", "red car", "a dog"])
        calibrate_random_model(model, torch.from_numpy(batch), text)
        sd = dict(to_official_state_dict(model))
    return sd


def free_port() -> int:
    """A port no one listens on now (a fixed one fails when two test runs share the machine)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
