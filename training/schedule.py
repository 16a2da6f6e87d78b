"""The training schedule, derived from the data, the batch, the epochs and the starting point.

The official recipe (``configs/finetune_coco``) was made for COCO: 118k images on 8 GPUs x 16, 80
epochs, from the official pre-trained weights. Taken literally on a few hundred images it never
reaches its learning rate (1000 warm-up steps of 128 images are hundreds of epochs there). Each rule
below gives back the official value at COCO scale from official weights, and a schedule that fits a
small dataset elsewhere (``--recipe official`` applies the official values unchanged):

- nominal batch: gradients are accumulated up to the official 128 images per optimiser step, but never
  so far that an epoch has fewer than 50 steps: ``clamp(train images / 50, batch x processes, 128)``;
- warm-up: ``max(3 epochs, 1000 steps)`` as the official recipe, but at most a tenth of all steps;
- peak learning rate: from pre-trained weights the official 2e-4 (AdamW; SGD 1e-3); from scratch five
  times that (1e-3; SGD 1e-2), where nothing learned has to be preserved and the head starts cold;
- weight decay: the official 0.05 per 64 images of nominal batch (0.1 at 128; ``training.optim``);
- EMA: an average over ``W = min(10000 steps, a seventh of the run)`` (momentum ``1 / W``), ramped in
  over ``min(2000 steps, a fifth of the run)`` (the official 1e-4 and 2000 at COCO scale). Taken as
  they are, a run of a few hundred steps never leaves the ramp (the EMA is the raw model); a ramp of
  ``W / 5`` there averages the fast-changing first epochs into weights that detect nothing (the demo:
  mAP 0 at epoch 15, against 0.74 with a fifth of the run);
- data-loader workers: at most 4 per process and never more than the cores each process has;
- text slots per image: the official 80, or the dataset's class count when smaller (the padding slots
  only add compute).

Values typed on the command line (or in ``--config``) always win; the resolved schedule is printed at
the start and stored in ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from .config import SCRATCH_MODEL, TrainConfig, official_augmentation

OFFICIAL_NOMINAL_BATCH = 128
MIN_STEPS_PER_EPOCH = 50
MIN_TOTAL_STEPS = 100
OFFICIAL_LR = {"adamw": 2e-4, "sgd": 1e-3}
SCRATCH_LR_FACTOR = 5.0
OFFICIAL_EMA_WINDOW = 10000  # steps: 1 / momentum 1e-4
OFFICIAL_EMA_RAMP = 2000.0
MAX_WORKERS = 4
OFFICIAL_NUM_TEXTS = 80


@dataclass(frozen=True)
class Schedule:
    """What the run will do, in optimiser steps (every field is also in the resolved config)."""

    nominal_batch: int  # images per optimiser step
    accumulate: int  # micro-batches per optimiser step
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float
    weight_decay: float  # as applied: cfg.weight_decay * nominal_batch / 64 (training.optim)
    ema_momentum: float
    ema_gamma: float
    workers: int
    num_texts: int
    recipe: str

    def describe(self) -> str:
        return (f"schedule ({self.recipe}): {self.nominal_batch} images per optimiser step (accumulate "
                f"{self.accumulate}), {self.steps_per_epoch} steps/epoch, {self.total_steps} steps in all, warm-up "
                f"{self.warmup_steps} steps, peak lr {self.peak_lr:.3g}, weight decay {self.weight_decay:.3g}, "
                f"EMA momentum {self.ema_momentum:.3g} (ramp {self.ema_gamma:.0f} steps), "
                f"{self.workers} loader workers, {self.num_texts} text slots per image")


def batch_scaled_weight_decay(weight_decay: float, nominal_batch: int) -> float:
    """The official YOLOv5 batch rule: ``weight_decay`` is per 64 images of optimiser step (0.05 -> 0.1 at 128)."""
    return weight_decay * nominal_batch / 64


def cores_per_process() -> int:
    """CPU cores this process may use, shared with the other processes of this node (torchrun)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def resolve_schedule(cfg: TrainConfig, train_images: int, num_classes: int, world: int, pretrained: bool,
                     cores: int | None = None) -> tuple[TrainConfig, Schedule, list[str]]:
    """Fill every schedule field of ``cfg`` left unset (None) by the rules of the module docstring.

    Returns the resolved config, the :class:`Schedule` and warnings (a schedule that cannot reach its
    peak learning rate, or that makes fewer than 100 optimiser steps in all), each saying what to change.
    """
    official = cfg.recipe == "official"
    per_step = cfg.batch_size * world
    if cfg.total_batch_size is not None:
        nominal = cfg.total_batch_size
    elif official:
        nominal = OFFICIAL_NOMINAL_BATCH
    else:
        nominal = min(max(train_images // MIN_STEPS_PER_EPOCH, per_step), OFFICIAL_NOMINAL_BATCH)
    accumulate = max(round(nominal / per_step), 1)
    micro_per_epoch = -(-train_images // world) // cfg.batch_size  # each process's full batches (padded sampler)
    steps_per_epoch = micro_per_epoch // accumulate
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total = steps_per_epoch * cfg.epochs
    official_warmup = max(round(cfg.warmup_epochs * steps_per_epoch), cfg.warmup_min_iters)
    if cfg.warmup_iters is not None:
        warmup = cfg.warmup_iters
    else:
        warmup = official_warmup if official else min(official_warmup, max(total // 10, 1))
    lr = cfg.lr
    if lr is None:
        lr = OFFICIAL_LR[cfg.optimizer] * (1.0 if pretrained or official else SCRATCH_LR_FACTOR)
    window = OFFICIAL_EMA_WINDOW if official else min(OFFICIAL_EMA_WINDOW, max(total // 7, 1))
    momentum = cfg.ema_momentum if cfg.ema_momentum is not None else 1.0 / window
    ramp = OFFICIAL_EMA_RAMP if official else min(OFFICIAL_EMA_RAMP, max(total / 5, 1.0))
    gamma = cfg.ema_gamma if cfg.ema_gamma is not None else ramp
    workers = cfg.workers if cfg.workers is not None else min(MAX_WORKERS, cores or cores_per_process())
    num_texts = cfg.num_texts if cfg.num_texts is not None else (
        OFFICIAL_NUM_TEXTS if official else min(OFFICIAL_NUM_TEXTS, num_classes))
    nominal = accumulate * per_step  # the batch the rules asked for, rounded to whole micro-batches
    resolved = dataclasses.replace(
        cfg, total_batch_size=nominal, lr=lr, warmup_iters=warmup, ema_momentum=momentum,
        ema_gamma=gamma, workers=workers, num_texts=num_texts)
    schedule = Schedule(nominal, accumulate, steps_per_epoch, total, warmup, lr,
                        batch_scaled_weight_decay(cfg.weight_decay, nominal), momentum, gamma, workers, num_texts,
                        cfg.recipe)
    return resolved, schedule, _warnings(schedule, train_images, cfg)


@dataclass(frozen=True)
class RunFacts:
    """What the configuration depends on, read before anything is built."""

    train_images: int
    num_classes: int
    has_polygons: bool  # the training annotations carry segmentation polygons (and mask_refine is on)
    arch_size: str  # preset of the model's architecture ("tiny", "s", ...; --weights decides it)
    pretrained: bool  # starting from --weights
    world: int = 1  # processes
    cores: int | None = None  # per process; None: this machine's


def resolve_config(cfg: TrainConfig, facts: RunFacts) -> tuple[TrainConfig, Schedule, list[str]]:
    """Every field left unset, filled: the augmentation defaults of the architecture's official config
    (``official_augmentation``; the mask-refine box filter 0.01 with polygons, 0.1 without) and the
    schedule (:func:`resolve_schedule`). The one place a run's configuration is decided."""
    affine, mixup, copypaste = official_augmentation(facts.arch_size)
    defaults = {"affine_scale": affine, "mixup_prob": mixup, "copypaste_prob": copypaste,
                "min_area_ratio": 0.01 if facts.has_polygons else 0.1}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in defaults.items() if getattr(cfg, k) is None})
    cfg, schedule, warnings = resolve_schedule(cfg, facts.train_images, facts.num_classes, facts.world,
                                               facts.pretrained, facts.cores)
    note = scratch_note(cfg, facts)
    return cfg, schedule, ([note] if note else []) + warnings


def scratch_note(cfg: TrainConfig, facts: RunFacts) -> str | None:
    """What a run on the user's data without ``--weights`` trains, said before it starts: which model,
    and that its prompts come from an untrained text tower (a closed vocabulary). None for runs from
    pre-trained weights and for the demo, which is from scratch by design and says so."""
    if facts.pretrained or cfg.data is None:
        return None
    size = facts.arch_size.upper() if facts.arch_size != "tiny" else "tiny"
    smaller = "" if facts.arch_size == "tiny" else (
        "; or --model tiny, a nano-scale model that trains faster and writes checkpoints a seventh the size")
    return (f"no --weights: training the {size} model from scratch (--model; {SCRATCH_MODEL} when not given). "
            f"Every weight starts random, the text tower's too, and it stays frozen: the class prompts become "
            f"fixed random codes, so the model learns these {facts.num_classes} classes only (a closed "
            f"vocabulary) and will not understand other prompts. For an open-vocabulary detector, which also "
            f"learns faster, fine-tune an official checkpoint: --weights "
            f"yolo_world_v2_s_obj365v1_goldg_pretrain-55b943ea.pth (README, Fine-tune){smaller}")


def _warnings(s: Schedule, train_images: int, cfg: TrainConfig) -> list[str]:
    out = []
    if s.warmup_steps >= s.total_steps:
        out.append(f"the warm-up ({s.warmup_steps} optimiser steps) is not over before the run ends "
                   f"({s.total_steps} steps): the learning rate never reaches {s.peak_lr:.3g}. Use the "
                   f"default recipe, or lower --warmup-iters, or raise --epochs")
    if s.total_steps < MIN_TOTAL_STEPS:
        out.append(f"only {s.total_steps} optimiser steps in all ({s.steps_per_epoch} per epoch x {cfg.epochs} "
                   f"epochs, {train_images} training images at {s.nominal_batch} per step): too few to learn "
                   f"much. Raise --epochs, or lower --batch-size or --total-batch-size")
    return out


__all__ = ["RunFacts", "Schedule", "batch_scaled_weight_decay", "cores_per_process", "resolve_config",
           "resolve_schedule", "scratch_note"]
