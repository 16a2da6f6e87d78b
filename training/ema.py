"""Exponential moving average of weights and floating buffers (mmengine ``ExpMomentumEMA``).

``ema <- ema + m_t (theta - ema)`` with ``m_t = (1 - m) exp(-(t + 1) / gamma) + m`` for the t-th
update (t >= 1); the first update copies. Validation and saved checkpoints use the EMA weights.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, momentum: float = 1e-4, gamma: float = 2000.0) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.momentum, self.gamma = momentum, gamma
        self.steps = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = model.state_dict()
        if self.steps == 0:
            self.module.load_state_dict(src)
        else:
            m = (1 - self.momentum) * math.exp(-float(1 + self.steps) / self.gamma) + self.momentum
            for k, v in self.module.state_dict().items():
                if v.dtype.is_floating_point:
                    v.mul_(1 - m).add_(src[k].detach(), alpha=m)
                else:
                    v.copy_(src[k])
        self.steps += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = int(state["steps"])
