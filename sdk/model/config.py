"""Architecture configuration of YOLO-World: a frozen dataclass per model and the named presets.

The scaling rules are mmyolo's (YOLOv8 P5): channels ``ceil(c * widen / 8) * 8``, block counts
``max(round(n * deepen), 1)``. Everything the network's shapes depend on is derivable from a config,
and a config is derivable from an official checkpoint's weights (see ``checkpoint.infer_config``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

NeckType = Literal["vlpan", "dual_vlpan", "efficient"]
HeadType = Literal["bn", "l2"]


def make_divisible(channels: float, widen: float, divisor: int = 8) -> int:
    """mmyolo channel scaling: ``ceil(channels * widen / divisor) * divisor``."""
    return int(math.ceil(channels * widen / divisor) * divisor)


def make_round(num: float, factor: float) -> int:
    """mmyolo block-count scaling: ``max(round(num * factor), 1)`` for ``num > 1``."""
    return max(round(num * factor), 1) if num > 1 else int(num)


@dataclass(frozen=True)
class TextEncoderConfig:
    """CLIP text tower (HuggingFace ``CLIPTextModelWithProjection`` layout)."""

    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512  # transformer width; heads = width // 64 as in every CLIP text tower
    layers: int = 12
    heads: int = 8
    embed_dim: int = 512  # output of text_projection (= the detector's text channels)
    act: Literal["quick_gelu", "gelu"] = "quick_gelu"  # OpenAI CLIP weights use QuickGELU


@dataclass(frozen=True)
class YoloWorldConfig:
    """One YOLO-World architecture. Field names follow the official configs where they exist."""

    deepen: float = 0.33  # deepen_factor
    widen: float = 0.5  # widen_factor
    last_stage_channels: int = 1024  # last_stage_out_channels (before widening)
    neck: NeckType = "vlpan"  # vlpan: v2 VL-PAN; dual_vlpan: v1 with image-pooling attention
    head: HeadType = "bn"  # bn: v2 BNContrastiveHead; l2: v1 ContrastiveHead
    text_channels: int = 512
    reg_max: int = 16
    # Width of the classification branch; official configs use max(in_channels[0], 80), which
    # equals in_channels[0] for every released size. 0 means "derive as in_channels[0]".
    cls_channels: int = 0
    ipool_channels: int = 256  # image-pooling attention (dual_vlpan only)
    ipool_heads: int = 8
    text_encoder: TextEncoderConfig | None = field(default_factory=TextEncoderConfig)

    # ---- derived shapes -------------------------------------------------------------------------
    @property
    def blocks_per_stage(self) -> tuple[int, int, int, int]:
        return tuple(make_round(n, self.deepen) for n in (3, 6, 6, 3))  # type: ignore[return-value]

    @property
    def stage_channels(self) -> tuple[int, int, int, int, int]:
        """Stem and the four stage outputs."""
        raw = (64, 128, 256, 512, self.last_stage_channels)
        return tuple(make_divisible(c, self.widen) for c in raw)  # type: ignore[return-value]

    @property
    def feature_channels(self) -> tuple[int, int, int]:
        """Channels of P3, P4, P5 (backbone outputs = neck outputs = head inputs)."""
        c = self.stage_channels
        return c[2], c[3], c[4]

    @property
    def neck_blocks(self) -> int:
        return make_round(3, self.deepen)

    @property
    def neck_embed_channels(self) -> tuple[int, int, int]:
        raw = (128, 256, self.last_stage_channels // 2)
        return tuple(make_round(c, self.widen) for c in raw)  # type: ignore[return-value]

    @property
    def neck_num_heads(self) -> tuple[int, int, int]:
        raw = (4, 8, self.last_stage_channels // 2 // 32)
        return tuple(make_round(h, self.widen) for h in raw)  # type: ignore[return-value]

    @property
    def cls_branch_channels(self) -> int:
        return self.cls_channels or self.feature_channels[0]

    @property
    def reg_branch_channels(self) -> int:
        return max(16, self.feature_channels[0] // 4, 4 * self.reg_max)

    # ---- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> YoloWorldConfig:
        data = dict(data)
        text = data.pop("text_encoder", None)
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown YoloWorldConfig fields: {sorted(unknown)}")
        return cls(**data, text_encoder=TextEncoderConfig(**text) if text else None)


TINY_TEXT = TextEncoderConfig(width=128, layers=2, heads=2)

#: Released sizes (v2 VL-PAN + BN head) and ``tiny`` for CPU tests and demos.
PRESETS: dict[str, YoloWorldConfig] = {
    "tiny": YoloWorldConfig(deepen=0.33, widen=0.25, text_encoder=TINY_TEXT),
    "s": YoloWorldConfig(deepen=0.33, widen=0.5, last_stage_channels=1024),
    "m": YoloWorldConfig(deepen=0.67, widen=0.75, last_stage_channels=768),
    "l": YoloWorldConfig(deepen=1.0, widen=1.0, last_stage_channels=512),
    "x": YoloWorldConfig(deepen=1.0, widen=1.25, last_stage_channels=512),
}

#: Named architecture variants: (neck, head) as in the official config families.
VARIANTS: dict[str, tuple[NeckType, HeadType]] = {
    "v2": ("vlpan", "bn"),  # pretrain/ and most finetune_coco/ configs
    "v1": ("dual_vlpan", "l2"),  # pretrain_v1/ configs
    "efficient": ("efficient", "bn"),  # v2 efficient-neck fine-tuning
    "efficient_l2": ("efficient", "l2"),  # v1 efficient-neck fine-tuning
}


def preset_name(config: YoloWorldConfig) -> str | None:
    """The size preset (tiny, s, m, l, x) whose depth and width ``config`` has, else None."""
    for name, preset in PRESETS.items():
        if (preset.deepen, preset.widen, preset.last_stage_channels) == \
                (config.deepen, config.widen, config.last_stage_channels):
            return name
    return None


def get_config(size: str = "s", variant: str = "v2") -> YoloWorldConfig:
    """Preset ``size`` (tiny, s, m, l, x) with a ``variant`` (v2, v1, efficient, efficient_l2)."""
    if size not in PRESETS:
        raise ValueError(f"unknown model size {size!r}; expected one of {sorted(PRESETS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    neck, head = VARIANTS[variant]
    return replace(PRESETS[size], neck=neck, head=head)
