"""Optimiser parameter groups and the official learning-rate schedule (YOLOv5 linear + warm-up)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .config import TrainConfig
from .schedule import batch_scaled_weight_decay


def build_optimizer(model: nn.Module, cfg: TrainConfig, effective_batch: int,
                    extra: list[nn.Parameter] | None = None) -> torch.optim.Optimizer:
    """Two groups: weights of rank >= 2 with weight decay; biases, norms, 0-d scalars (logit_scale,
    contrast bias) and prompt embeddings without. Weight decay follows the YOLOv5 batch rule
    (``wd * effective_batch / 64``: 0.05 -> 0.1 for the official 8 x 16)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    no_decay += list(extra or [])
    wd = batch_scaled_weight_decay(cfg.weight_decay, effective_batch)
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("nothing to train: every parameter is frozen")
    for g in groups:
        g["initial_lr"] = cfg.lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


class LinearWarmupSchedule:
    """``lr(step, epoch)``: linear warm-up from 0 over ``cfg.warmup_iters`` optimiser steps (resolved by
    ``training.schedule``; officially ``max(3 epochs, 1000)``), then ``lr * lf(epoch)`` with
    ``lf(e) = (1 - e / epochs) * (1 - lr_final) + lr_final`` (SGD momentum warms from 0.8)."""

    def __init__(self, cfg: TrainConfig) -> None:
        if cfg.lr is None or cfg.warmup_iters is None:
            raise ValueError("resolve the schedule first (training.schedule.resolve_schedule)")
        self.cfg = cfg
        self.warmup = cfg.warmup_iters

    def factor(self, epoch: int) -> float:
        return (1 - epoch / self.cfg.epochs) * (1 - self.cfg.lr_final) + self.cfg.lr_final

    def apply(self, optimizer: torch.optim.Optimizer, step: int, epoch: int) -> float:
        target = self.cfg.lr * self.factor(epoch)
        lr = float(np.interp(step, [0, self.warmup], [0.0, target])) if step < self.warmup else target
        for g in optimizer.param_groups:
            g["lr"] = lr
            if "momentum" in g and step < self.warmup:
                g["momentum"] = float(np.interp(step, [0, self.warmup], [0.8, self.cfg.momentum]))
        return lr
