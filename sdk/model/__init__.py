"""The YOLO-World model in PyTorch (imports torch; never imported by ``import sdk``)."""

from ..postprocess import STRIDES  # one definition: the numpy post-processing decodes with it
from .checkpoint import (
    infer_config,
    load_checkpoint,
    load_official_state_dict,
    save_checkpoint,
    save_official_checkpoint,
    to_official_state_dict,
)
from .config import PRESETS, VARIANTS, TextEncoderConfig, YoloWorldConfig, get_config
from .text_encoder import CLIPTextEncoder, load_text_encoder, tokenize
from .yoloworld import HeadOutputs, YoloWorld


def build_model(cfg: YoloWorldConfig) -> YoloWorld:
    """A randomly initialised model of architecture ``cfg``."""
    return YoloWorld(cfg)


__all__ = [
    "PRESETS", "STRIDES", "VARIANTS", "CLIPTextEncoder", "HeadOutputs", "TextEncoderConfig",
    "YoloWorld", "YoloWorldConfig", "build_model", "get_config", "infer_config", "load_checkpoint",
    "load_official_state_dict", "load_text_encoder", "save_checkpoint", "save_official_checkpoint",
    "to_official_state_dict", "tokenize",
]
