"""Training configuration: one frozen dataclass, exposed as argparse options and YAML keys.

Fixed defaults are the official COCO fine-tuning recipe (configs/finetune_coco: AdamW, weight decay 0.05
per 64 images, 80 epochs, mosaic closed for the last 10 epochs, linear decay to 1 %). Fields left
``None`` (nominal batch, learning rate, warm-up, EMA, loader workers, text slots) are derived from the
data, the batch and the starting point by ``training.schedule``; ``--recipe official`` takes the
official values for them instead. Precedence: defaults < ``--config`` YAML < command-line options.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

import yaml

from sdk.atomic import atomic_write_text

Mode = Literal["full", "efficient", "prompt"]
Recipe = Literal["auto", "official"]
AmpMode = Literal["none", "fp16", "bf16"]


@dataclass(frozen=True)
class TrainConfig:
    # --- model ---
    model: str | None = None  # preset without --weights: tiny, s (default), m, l, x; with it, a check
    variant: str | None = None  # v2 (default), v1 (dual VL-PAN), efficient, efficient_l2; the same
    weights: str | None = None  # official .pth or own .pt; its architecture wins over model/variant
    mode: Mode = "full"  # full | efficient (efficient neck, no text encoder) | prompt (embeddings only)
    # --- data ---
    data: str | None = None  # data YAML (COCO files), Ultralytics dataset YAML or VOC folder; None: the demo set
    class_texts: str | None = None  # class-text JSON replacing the dataset's prompts (YOLO/VOC: their names)
    imgsz: int = 640
    workers: int | None = None  # None: min(4, cores per process)
    num_texts: int | None = None  # text slots per image (RandomLoadText max_num_samples); None: min(80, classes)
    close_mosaic: int = 10  # last epochs without mosaic
    affine_scale: float | None = None  # None: 0.5 for tiny/s, 0.9 for m/l/x (official)
    mixup_prob: float | None = None  # None: 0.15 for tiny/s/l/x, 0.1 for m (official)
    pixel_noise_prob: float = 0.01  # each of blur, median blur, gray, CLAHE (official albumentations)
    mask_refine: bool = True  # use segmentation polygons where the data has them (copy-paste, box refine)
    copypaste_prob: float | None = None  # None: 0.3 for tiny/s/l/x, 0.1 for m (official; needs polygons)
    min_area_ratio: float | None = None  # None: 0.01 with polygons (mask-refine configs), else 0.1
    filter_empty_gt: bool = False
    min_size: int = 32
    # --- optimisation (None: derived, see training.schedule) ---
    recipe: Recipe = "auto"  # auto: schedule fitted to the data; official: the COCO recipe's values as they are
    epochs: int = 80
    batch_size: int = 16  # per process
    total_batch_size: int | None = None  # nominal batch (gradient accumulation); official 128
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float | None = None  # peak; official 2e-4 (AdamW) from pre-trained weights
    momentum: float = 0.937  # SGD only
    weight_decay: float = 0.05  # at total batch 64; scaled with the batch (YOLOv5 rule): 0.1 at 128
    warmup_epochs: float = 3.0  # official warm-up: max(warmup_epochs, warmup_min_iters) ...
    warmup_min_iters: int = 1000
    warmup_iters: int | None = None  # ... in optimiser steps, as used (the auto recipe caps it at a tenth of the run)
    lr_final: float = 0.01  # final lr = lr * lr_final, linear decay
    grad_clip: float = 10.0
    ema: bool = True
    ema_momentum: float | None = None  # official 1e-4
    ema_gamma: float | None = None  # official 2000
    mask_padded_texts: bool = False  # official up to b1b09f2 trains '' paddings as negatives
    # --- run ---
    amp: AmpMode = "none"
    device: str = "auto"  # auto: cuda when available, else cpu
    sync_bn: bool = False
    val_interval: int = 5
    seed: int = 0
    dist_timeout: float = 1800.0  # seconds a multi-process collective waits for the slowest process, then fails
    output: str = "runs/finetune"
    resume: bool = False  # continue from OUTPUT/last.pt
    max_steps_per_epoch: int = 0  # >0 truncates epochs (smoke tests)
    stop_after_steps: int = 0  # >0: stop as if interrupted after this many optimiser steps (time-boxed runs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def official_augmentation(size: str) -> tuple[float, float, float]:
    """(affine_scale, mixup_prob, copypaste_prob) of the official mask-refine fine-tuning configs for a
    model size: S 0.5, 0.15, 0.3; M 0.9, 0.1, 0.1; L/X 0.9, 0.15, 0.3 (tiny, which has no official
    config, takes S's)."""
    return (0.5 if size in ("tiny", "s") else 0.9), (0.1 if size == "m" else 0.15), (0.1 if size == "m" else 0.3)


#: The demo: generated dataset, tiny model from scratch, CPU, a few minutes; only what a user would type.
DEMO = dict(model="tiny", data=None, imgsz=256, epochs=40, batch_size=8, output="runs/demo_finetune")


SCHEDULE_KEY = "schedule"

#: Fields that training.schedule derives when they are left unset.
DERIVED = ("workers", "num_texts", "total_batch_size", "lr", "warmup_iters", "ema_momentum", "ema_gamma")


def _arg_type(tp: Any) -> Any:
    args = [a for a in get_args(tp) if a is not type(None)]
    if args and all(isinstance(a, str) for a in args):  # Literal[...]
        return str
    if args:
        return _arg_type(args[0])
    return tp


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """One ``--flag`` per TrainConfig field (defaults left as None: unset = not overriding)."""
    hints = get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        name = "--" + f.name.replace("_", "-")
        tp = hints[f.name]
        choices = [a for a in get_args(tp) if isinstance(a, str)] or None
        default = "derived from the data (training/schedule.py)" if f.name in DERIVED else f.default
        if tp is bool:
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"(default {default})")
        else:
            parser.add_argument(name, type=_arg_type(tp), choices=choices, default=None,
                                help=f"(default {default})")
    parser.add_argument("--config", type=Path, help="YAML file of TrainConfig fields")
    return parser


def resolve(args: argparse.Namespace, demo: bool = False) -> TrainConfig:
    """Defaults (the demo's when ``demo``) < YAML (--config) < explicit command-line options."""
    values: dict[str, Any] = dict(DEMO) if demo else {}
    if getattr(args, "config", None):
        try:
            data = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"cannot read config {args.config}: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{args.config}: expected a mapping of TrainConfig fields")
        data.pop(SCHEDULE_KEY, None)  # written by save_config for reading, derived again on every run
        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{args.config}: unknown fields {unknown}; known: {sorted(known)}")
        values.update(data)
    values.update({f.name: getattr(args, f.name) for f in fields(TrainConfig)
                   if getattr(args, f.name, None) is not None})
    return TrainConfig(**values)


def save_config(cfg: TrainConfig, path: Path, schedule: dict[str, Any] | None = None) -> None:
    """``config.yaml``: the resolved fields (reusable with ``--config``), and under ``schedule`` what they
    mean in optimiser steps (for reading; ignored when the file is read back)."""
    data = cfg.to_dict()
    if schedule is not None:
        data[SCHEDULE_KEY] = schedule
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
