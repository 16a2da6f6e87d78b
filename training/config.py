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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

import yaml

from sdk.atomic import atomic_write_text

Mode = Literal["full", "efficient", "prompt"]
Recipe = Literal["auto", "official"]
AmpMode = Literal["none", "fp16", "bf16"]


def _opt(default: Any, help: str) -> Any:
    """A TrainConfig field whose ``help`` is its ``--flag``'s help line (and says what the YAML key means).
    Only immutable defaults: ruff's RUF009 cannot see through this call where the type is an alias."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Every training option; ``python -m training.finetune --help`` lists them with these help lines."""

    # --- model ---
    model: str | None = _opt(None, "model size: tiny, s, m, l, x. Without --weights: the size trained from "
                                   "scratch (default: tiny); with --weights: a check of the checkpoint's size")
    variant: str | None = _opt(None, "architecture variant: v2 (default), v1 (dual VL-PAN), efficient, "
                                     "efficient_l2; with --weights: a check, as --model")
    weights: str | None = _opt(None, "starting weights: an official .pth or an own .pt (its architecture wins "
                                     "over --model / --variant); none: train from scratch")
    mode: Mode = _opt("full",  # noqa: RUF009 (a str)
                      "what trains: full (everything but the text tower), efficient (efficient neck, no "
                      "text encoder), prompt (the class embeddings only)")
    keep_vocabulary: str | None = _opt(None, "keep what the starting model detects besides your classes: the "
                                             "frozen starting model's scores for these classes are extra targets "
                                             "(self-distillation). No value (or auto): the checkpoint's own "
                                             "vocabulary (official checkpoints: the 80 COCO names); or a class-"
                                             "text JSON, or comma-separated names")
    keep_val: str | None = _opt(None, "a dataset (any layout --data takes) whose validation split, prompted "
                                      "with its own classes, measures the kept vocabulary at every validation "
                                      "(mAP_kept); best.pt then maximises the mean of mAP and mAP_kept")
    # --- data ---
    data: str | None = _opt(None, "data YAML (COCO files), Ultralytics dataset YAML or VOC folder; "
                                  "none: the generated demo set")
    class_texts: str | None = _opt(None, "class-text JSON replacing the dataset's prompts "
                                         "(YOLO/VOC: their class names)")
    imgsz: int = _opt(640, "training and validation input size, pixels (a multiple of 32)")
    workers: int | None = _opt(None, "data-loader workers per process; default: min(4, cores per process)")
    num_texts: int | None = _opt(None, "text slots per image (the official RandomLoadText max_num_samples); "
                                       "default: min(80, number of classes)")
    close_mosaic: int = _opt(10, "train the last N epochs without mosaic")
    affine_scale: float | None = _opt(None, "random-affine scale range 1 +- this; default: 0.5 for tiny/s, "
                                            "0.9 for m/l/x (official)")
    mixup_prob: float | None = _opt(None, "MixUp probability; default: 0.15 for tiny/s/l/x, 0.1 for m (official)")
    pixel_noise_prob: float = _opt(0.01, "probability of each of blur, median blur, gray and CLAHE "
                                         "(the official albumentations)")
    mask_refine: bool = _opt(True, "use segmentation polygons where the data has them (copy-paste, "
                                   "boxes refined by the affine)")
    copypaste_prob: float | None = _opt(None, "copy-paste probability (needs polygons); default: 0.3 for "
                                              "tiny/s/l/x, 0.1 for m (official)")
    min_area_ratio: float | None = _opt(None, "drop a box the random affine leaves with less than this share of "
                                              "its area; default: 0.01 with polygons (mask-refine configs), else 0.1")
    filter_empty_gt: bool = _opt(False, "leave out training images without boxes")
    min_size: int = _opt(32, "leave out training images whose shorter side is under this many pixels")
    # --- optimisation (None: derived, see training.schedule) ---
    recipe: Recipe = _opt("auto",  # noqa: RUF009 (a str)
                          "auto: a schedule fitted to the data; official: the COCO recipe's values as they are")
    epochs: int = _opt(80, "training epochs")
    batch_size: int = _opt(16, "images per forward pass, per process")
    total_batch_size: int | None = _opt(None, "nominal batch: images per optimiser step over all processes "
                                              "(gradient accumulation); official 128")
    optimizer: Literal["adamw", "sgd"] = _opt("adamw", "optimiser")
    lr: float | None = _opt(None, "peak learning rate; official 2e-4 (AdamW) from pre-trained weights")
    momentum: float = _opt(0.937, "SGD momentum (--optimizer sgd only)")
    weight_decay: float = _opt(0.05, "weight decay at a nominal batch of 64, scaled with the batch "
                                     "(YOLOv5 rule): 0.1 at 128")
    warmup_epochs: float = _opt(3.0, "official warm-up: max(warmup epochs, --warmup-min-iters) steps")
    warmup_min_iters: int = _opt(1000, "the least warm-up of the official rule, in optimiser steps")
    warmup_iters: int | None = _opt(None, "warm-up in optimiser steps, as used (the auto recipe caps the "
                                          "official rule at a tenth of the run)")
    lr_final: float = _opt(0.01, "final learning rate as a fraction of the peak (linear decay)")
    grad_clip: float = _opt(10.0, "clip the gradient norm to this (0: no clipping)")
    ema: bool = _opt(True, "keep an exponential moving average of the weights (validated and saved)")
    ema_momentum: float | None = _opt(None, "EMA momentum; official 1e-4")
    ema_gamma: float | None = _opt(None, "EMA ramp-in, optimiser steps; official 2000")
    mask_padded_texts: bool = _opt(False, "leave the padding text slots out of the loss (the official "
                                          "code up to b1b09f2 trains '' paddings as negatives)")
    # --- run ---
    amp: AmpMode = _opt("none",  # noqa: RUF009 (a str)
                        "mixed precision: none, fp16 (CUDA) or bf16")
    device: str = _opt("auto", "cpu, cuda or cuda:N; auto: cuda when available, else cpu")
    sync_bn: bool = _opt(False, "synchronise batch-norm statistics across processes (torchrun)")
    val_interval: int = _opt(5, "validate every N epochs (and every epoch once mosaic is closed)")
    seed: int = _opt(0, "random seed")
    dist_timeout: float = _opt(1800.0, "seconds a multi-process collective waits for the slowest process, "
                                       "then fails")
    output: str = _opt("runs/finetune", "output folder: checkpoints, config.yaml, metrics.csv, curves")
    resume: bool = _opt(False, "continue from OUTPUT/last.pt")
    max_steps_per_epoch: int = _opt(0, ">0: truncate each epoch to this many optimiser steps (smoke tests)")
    stop_after_steps: int = _opt(0, ">0: stop as if interrupted after this many optimiser steps "
                                    "(time-boxed runs)")

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

#: The size trained from scratch when neither ``--weights`` nor ``--model`` says. tiny, not S, because:
#: what users of this field type first, Ultralytics' ``yolo train data=X``, trains its smallest model (n),
#: and tiny is that scale (depth 0.33, width 0.25); from scratch the text tower is random and frozen, so
#: it only gives each class a fixed code, and S's 63 M-parameter CLIP tower adds nothing but 250 MB to
#: every checkpoint (2 epochs of S from scratch wrote a 305 MB best.pt and a 712 MB last.pt); and with the
#: defaults tiny from scratch beats Ultralytics YOLO-World trained with its own on every set measured
#: (README, Benchmarks). S and larger are one flag away (--model s) and pay off with a lot of data and a
#: GPU; an open vocabulary needs --weights, whose checkpoint decides the architecture anyway.
SCRATCH_MODEL = "tiny"

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
    """One ``--flag`` per TrainConfig field, its help the field's (defaults left as None: unset = not
    overriding)."""
    hints = get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        name = "--" + f.name.replace("_", "-")
        tp = hints[f.name]
        choices = [a for a in get_args(tp) if isinstance(a, str)] or None
        text = f.metadata["help"]
        if "default:" not in text:
            text += (" (default: derived from the data and the starting point, training/schedule.py)"
                     if f.name in DERIVED else "" if f.default is None else f" (default: {f.default})")
        text = text.replace("%", "%%")  # argparse formats help strings with %
        if tp is bool:
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif f.name == "keep_vocabulary":  # a value is optional: the flag alone means "auto"
            parser.add_argument(name, nargs="?", const="auto", default=None, metavar="PROMPTS", help=text)
        else:
            parser.add_argument(name, type=_arg_type(tp), choices=choices, default=None, help=text)
    parser.add_argument("--config", type=Path, help="YAML file of TrainConfig fields (the options above, "
                        "underscores for dashes; a run's config.yaml is one); options typed here win")
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
    if values.get("model") is None and values.get("weights") is None:
        values["model"] = scratch_model(values)
    return TrainConfig(**values)


def scratch_model(values: dict[str, Any]) -> str:
    """The size to train from scratch when no ``--model`` is given: :data:`SCRATCH_MODEL`, except that a
    resumed run keeps the size it started with (its ``config.yaml``; runs started before the default
    was tiny recorded none, for S)."""
    saved = Path(values.get("output", TrainConfig.output)) / "config.yaml"
    if values.get("resume") and saved.is_file():
        try:
            old = yaml.safe_load(saved.read_text()) or {}
        except (OSError, yaml.YAMLError):
            old = {}  # the resume itself reports an unreadable run
        if isinstance(old, dict) and old.get("weights") is None:
            return str(old.get("model") or "s")
    return SCRATCH_MODEL


def save_config(cfg: TrainConfig, path: Path, schedule: dict[str, Any] | None = None) -> None:
    """``config.yaml``: the resolved fields (reusable with ``--config``), and under ``schedule`` what they
    mean in optimiser steps (for reading; ignored when the file is read back)."""
    data = cfg.to_dict()
    if schedule is not None:
        data[SCHEDULE_KEY] = schedule
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
