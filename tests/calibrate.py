"""Make randomly initialised weights produce non-degenerate outputs (tests and the offline demo).

Default initialisation leaves BN running statistics at (0, 1), so a random deep CSPDarknet explodes
and every score saturates. This recomputes BN statistics on real inputs and sets each level's
contrastive-head scalars so logits have a chosen median and spread.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sdk.model.yoloworld import YoloWorld


@torch.no_grad()
def calibrate_random_model(model: YoloWorld, images: Tensor, text_embeds: Tensor,
                           median: float = -4.5, std: float = 1.5) -> YoloWorld:
    """In place: BN statistics from ``images`` (cumulative average), then head scalars per level.

    images: float32 ``(B, 3, H, W)`` in [0, 1]; text_embeds: ``(N, D)``. Returns ``model`` in eval mode.
    """
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over the calibration pass
        bn.train()
    model(images, text_embeds)
    for bn in bns:
        bn.momentum = 0.03
        bn.eval()
    for contrast in model.head.cls_contrasts:
        contrast.logit_scale.zero_()
        contrast.bias.zero_()
    out = model(images, text_embeds)
    for contrast, logits in zip(model.head.cls_contrasts, out.cls_logits, strict=True):
        spread = float(logits.std()) or 1.0
        contrast.logit_scale.fill_(math.log(std / spread))
        contrast.bias.fill_(median - std / spread * float(logits.median()))
    return model
