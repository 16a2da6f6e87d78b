"""``python -m training.finetune``: fine-tune YOLO-World on COCO-format data (DDP, AMP, EMA, resume).

    python -m training.finetune                     # the demo: generated data, tiny model, CPU
    python -m training.finetune --weights yolo_world_v2_s_...pth --data data.yaml --epochs 80
    torchrun --nproc_per_node 8 -m training.finetune --weights ... --data data.yaml
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from sdk.atomic import atomic_path, atomic_write_text, check_can_create
from sdk.errors import CheckpointError, YoloWorldError
from sdk.model import STRIDES, YoloWorld, build_model, get_config, load_official_state_dict
from sdk.model.checkpoint import load_checkpoint_with_meta, to_official_state_dict
from sdk.model.config import VARIANTS, preset_name

from . import distributed as D
from .checkpointing import load_training_checkpoint, save_training_checkpoint
from .config import TrainConfig, add_arguments, official_augmentation, resolve, save_config
from .data import read_data
from .ema import ModelEMA
from .engine import LoopState, NonFiniteLossError, TextEmbedder, evaluate, train_one_epoch
from .loss import YoloWorldLoss
from .optim import LinearWarmupSchedule, build_optimizer
from .sampler import ResumableSampler
from .schedule import resolve_schedule
from .transforms import TrainDataset, TrainTransform, ValDataset, collate, val_collate


def init_head_for_training(model: YoloWorld, num_classes: int, imgsz: int) -> None:
    """Official initialisation of the head for training from scratch: prior probability
    ``5 / num_classes / (imgsz / stride)^2`` in the contrast bias, reg bias 1, cls bias 0."""
    with torch.no_grad():
        for contrast, cls, reg, s in zip(model.head.cls_contrasts, model.head.cls_preds,
                                         model.head.reg_preds, STRIDES, strict=True):
            contrast.bias.fill_(math.log(5 / num_classes / (imgsz / s) ** 2))
            cls[-1].bias.zero_()
            reg[-1].bias.fill_(1.0)


def build_training_model(cfg: TrainConfig, explicit: set[str]) -> tuple[YoloWorld, bool]:
    """(model, from_pretrained). ``--weights`` decides the architecture; an explicitly given
    ``--model``/``--variant`` that contradicts it is an error."""
    if not cfg.weights:
        cfg_model = get_config(cfg.model, cfg.variant)
        if cfg.mode == "efficient":
            cfg_model = dataclasses.replace(cfg_model, neck="efficient")
        return build_model(cfg_model), False
    model, _ = load_checkpoint_with_meta(cfg.weights)
    arch = model.config
    for name in sorted({"model", "variant"} & explicit):
        preset = get_config(cfg.model, cfg.variant)
        size_ok = (preset.widen, preset.deepen, preset.last_stage_channels) == \
            (arch.widen, arch.deepen, arch.last_stage_channels)
        variant_ok = VARIANTS[cfg.variant] == (arch.neck, arch.head)
        if (name == "model" and not size_ok) or (name == "variant" and not variant_ok):
            raise CheckpointError(
                f"--weights {cfg.weights} holds a {arch.neck}/{arch.head} model (widen {arch.widen}, "
                f"deepen {arch.deepen}); it does not fit --{name} {getattr(cfg, name)}. Drop --{name}: "
                f"the checkpoint's architecture is used")
    if cfg.mode == "efficient" and arch.neck != "efficient":
        if arch.neck == "dual_vlpan":
            raise CheckpointError("efficient-neck fine-tuning starts from v2 (VL-PAN) weights; "
                                  f"{cfg.weights} is a v1 dual VL-PAN model")
        eff = YoloWorld(dataclasses.replace(arch, neck="efficient"))
        load_official_state_dict(eff, to_official_state_dict(model), source=str(cfg.weights),
                                 drop_neck_guides=True)
        model = eff
    model.train()
    return model, True


def make_demo_data(root: Path) -> Path:
    from .synthetic import make_shapes_dataset

    return make_shapes_dataset(root)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = add_arguments(argparse.ArgumentParser(prog="python -m training.finetune",
                                                   description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    demo = len(argv) == 0 or (args.data is None and args.weights is None and args.config is None)
    try:
        cfg = resolve(args, demo=demo)
        explicit = {k for k, v in vars(args).items() if v is not None}
        return run(cfg, explicit, demo)
    except (YoloWorldError, ValueError, OSError) as e:
        print(f"training.finetune: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"training.finetune: stopped: {e}\n  the last good checkpoint is untouched", file=sys.stderr)
        return 3
    finally:
        D.cleanup()


def run(cfg: TrainConfig, explicit: set[str], demo: bool = False) -> int:
    device_name = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    rank, world, local = D.init_distributed(device_name)
    device = torch.device(f"cuda:{local}" if device_name.startswith("cuda") and world > 1 else device_name)
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs CUDA; on CPU use --amp bf16 or none")
    main_proc = rank == 0
    out = Path(cfg.output)
    if main_proc:
        check_can_create(out)  # before any work; the folder itself is made when training starts
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    # ---- data (validated before anything is trained or written) ----
    data_yaml = Path(cfg.data) if cfg.data else out / "data" / "data.yaml"
    if cfg.data is None:
        if main_proc and not data_yaml.exists():
            make_demo_data(data_yaml.parent)
        D.barrier()
    data = read_data(data_yaml, cfg.class_texts)
    train_set = data.build_train(filter_empty_gt=cfg.filter_empty_gt, min_size=cfg.min_size)
    val_set = data.build_val() if data.val else None
    class_texts = data.class_texts

    # ---- model ----
    model, pretrained = build_training_model(cfg, explicit)
    if not pretrained:
        init_head_for_training(model, len(class_texts), cfg.imgsz)
    model.to(device)
    if model.text_encoder is not None:
        model.text_encoder.requires_grad_(False)  # frozen, as in every official config
    embedder = TextEmbedder(model, class_texts if cfg.mode == "prompt" else None)
    if cfg.mode == "prompt":
        model.requires_grad_(False)  # only the class embeddings learn
    embedder.encode([""] + [p for ps in class_texts for p in ps])
    if cfg.mode == "efficient":
        for i in range(len(train_set)):
            embedder.encode([t for ps in train_set.record(i).texts for t in ps])
        model.text_encoder = None  # fixed embeddings from here on; the vocabulary is closed
        model.config = dataclasses.replace(model.config, text_encoder=None)
    if cfg.sync_bn and world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    raw_model = model
    trainable = any(p.requires_grad for p in model.parameters())
    ddp_model: nn.Module = model
    if world > 1 and trainable:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[local] if device.type == "cuda" else None)

    # ---- loaders ----
    size = cfg.imgsz
    # size-dependent defaults follow the model's architecture (--weights decides it, not --model)
    arch_size = preset_name(raw_model.config) or cfg.model
    defaults = dict(zip(("affine_scale", "mixup_prob", "copypaste_prob"), official_augmentation(arch_size),
                        strict=True))
    has_polygons = cfg.mask_refine and any(train_set.record(i).polygons is not None for i in range(len(train_set)))
    defaults["min_area_ratio"] = 0.01 if has_polygons else 0.1  # the mask-refine configs' value, else the base's
    # unset options take the defaults; config.yaml records the values used
    cfg = dataclasses.replace(cfg, **{k: v for k, v in defaults.items() if getattr(cfg, k) is None})
    cfg, plan, schedule_warnings = resolve_schedule(cfg, len(train_set), len(class_texts), world, pretrained)
    transform = TrainTransform(size=size, affine_scale=cfg.affine_scale, num_texts=cfg.num_texts,
                               min_area_ratio=cfg.min_area_ratio, mosaic=True, mixup_prob=cfg.mixup_prob,
                               pixel_noise_prob=cfg.pixel_noise_prob, mask_refine=cfg.mask_refine,
                               copypaste_prob=cfg.copypaste_prob)
    train_ds = TrainDataset(train_set, transform, seed=cfg.seed)
    sampler = ResumableSampler(len(train_ds), shuffle=True, seed=cfg.seed, rank=rank, world_size=world)
    # set_epoch/close_mosaic reach persistent workers through shared memory (training/transforms.py)
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                        collate_fn=collate, drop_last=True, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.workers > 0)
    accumulate, steps_per_epoch = plan.accumulate, plan.steps_per_epoch
    if steps_per_epoch < 1:
        raise ValueError(f"the training set ({len(train_set)} images) gives {len(sampler) // cfg.batch_size} "
                         f"batches of {cfg.batch_size} per process, fewer than one optimiser step ({accumulate})")
    val_loader = None
    if val_set is not None:
        val_ds = ValDataset(val_set, size)
        val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, num_workers=cfg.workers,
                                sampler=ResumableSampler(len(val_ds), False, rank=rank, world_size=world, pad=False),
                                collate_fn=val_collate)

    # ---- optimisation ----
    effective = cfg.batch_size * world * accumulate
    extra = [embedder.prompts] if embedder.prompts is not None else None
    optimizer = build_optimizer(raw_model, cfg, effective, extra)
    schedule = LinearWarmupSchedule(cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    ema = ModelEMA(raw_model, cfg.ema_momentum, cfg.ema_gamma) if cfg.ema else None
    loss_fn = YoloWorldLoss(reg_max=raw_model.config.reg_max, world_size=world,
                            mask_padded_texts=cfg.mask_padded_texts)
    state = LoopState()
    last, best = out / "last.pt", out / "best.pt"
    if cfg.resume:
        if not last.exists():
            raise FileNotFoundError(f"--resume: {last} does not exist")
        load_training_checkpoint(last, raw_model, ema, embedder, optimizer, scaler, state)
    if main_proc:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml", dataclasses.asdict(plan))
        print(f"training {len(train_set)} images ({len(class_texts)} classes), val "
              f"{len(val_set) if val_set else 0}; {world} process(es) x {cfg.batch_size} x accumulate "
              f"{accumulate} = batch {effective}; {steps_per_epoch} steps/epoch; device {device}, amp {cfg.amp}; "
              f"affine scale 1 +- {cfg.affine_scale}, mixup {cfg.mixup_prob}, "
              + (f"polygons: copy-paste {cfg.copypaste_prob}, refined boxes" if has_polygons else "no polygons")
              + f", min area ratio {cfg.min_area_ratio} ({arch_size} defaults)"
              + (f"; resuming at epoch {state.epoch + 1} step {state.step_in_epoch}" if cfg.resume else ""))
        print(plan.describe() + (" (from pre-trained weights)" if pretrained else " (from scratch)"))
        for message in schedule_warnings:
            print(f"warning: {message}", file=sys.stderr)

    def request_stop(signum: int, _frame: Any) -> None:
        if state.stop_requested:
            raise KeyboardInterrupt
        state.stop_requested = True
        if main_proc:
            print(f"\n{signal.Signals(signum).name}: saving at the next step, then stopping "
                  f"(again to abort)", file=sys.stderr)

    old_handlers = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}

    categories = val_set.categories if val_set is not None else getattr(train_set, "categories", None)

    def save(path: Path, resume: bool = True) -> None:
        if main_proc:
            save_training_checkpoint(path, raw_model, ema, embedder, optimizer, scaler, state, cfg.to_dict(),
                                     class_texts, categories or list(range(len(class_texts))),
                                     with_resume_state=resume)
        D.barrier()

    def check_time_box() -> None:
        if cfg.stop_after_steps and state.global_step >= cfg.stop_after_steps:
            state.stop_requested = True

    t_start = time.perf_counter()
    try:
        while state.epoch < cfg.epochs:
            epoch = state.epoch
            if epoch >= cfg.epochs - cfg.close_mosaic:
                train_ds.close_mosaic()
            train_ds.set_epoch(epoch)
            sampler.set_epoch(epoch)
            sampler.set_start(state.step_in_epoch * accumulate * cfg.batch_size)
            t0 = time.perf_counter()
            metrics = train_one_epoch(ddp_model, raw_model, embedder, loss_fn, loader, optimizer, scaler,
                                      schedule, ema, state, device, cfg.amp, accumulate, cfg.grad_clip,
                                      steps_per_epoch, on_step=check_time_box)
            if state.stop_requested:
                save(last)
                if main_proc:
                    print(f"stopped in epoch {epoch + 1} after step {state.step_in_epoch}; saved {last}; "
                          f"continue with --resume --output {out}")
                return 130
            state.epoch += 1
            state.step_in_epoch = 0
            row: dict[str, Any] = {"epoch": state.epoch, **{f"loss_{k}": metrics[k] for k in ("cls", "box", "dfl")},
                                   "lr": metrics["lr"], "images_per_s": metrics["images_per_s"],
                                   "epoch_s": time.perf_counter() - t0}
            validate = val_loader is not None and (state.epoch % cfg.val_interval == 0 or
                                                   state.epoch > cfg.epochs - cfg.close_mosaic)
            improved = False
            if validate:
                eval_model = ema.module if ema is not None else raw_model
                names = [ps[0] for ps in class_texts]  # official validation: first prompt, fixed order
                class_embeds = embedder([names])[0].detach()
                res = evaluate(eval_model, val_loader, class_embeds, val_set.categories, data.val.ground_truth(),
                               val_set.image_ids, device, cfg.amp)
                if main_proc:
                    row.update(mAP=res["AP"], mAP50=res["AP50"])
                    improved = res["AP"] > state.best_map
                    state.best_map = max(state.best_map, res["AP"])
            state.history.append(row)
            save(last)
            if improved:
                save(best, resume=False)
            if main_proc:
                write_log(out, state.history)
                print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
    if main_proc:
        plot_curves(out, state.history)
        summary(out, state, time.perf_counter() - t_start, demo)
    return 0


def write_log(out: Path, history: list[dict[str, Any]]) -> None:
    """metrics.csv, rewritten atomically every epoch (an interrupted run keeps the last whole log)."""
    keys = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    atomic_write_text(out / "metrics.csv", buf.getvalue())


def plot_curves(out: Path, history: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    ep = [r["epoch"] for r in history]
    for k in ("loss_cls", "loss_box", "loss_dfl"):
        a.plot(ep, [r[k] for r in history], label=k)
    a.set_xlabel("epoch")
    a.set_title("training losses")
    a.legend()
    val = [r for r in history if "mAP" in r]
    b.plot([r["epoch"] for r in val], [r["mAP50"] for r in val], "o-", label="mAP50")
    b.plot([r["epoch"] for r in val], [r["mAP"] for r in val], "o-", label="mAP50:95")
    b.set_xlabel("epoch")
    b.set_title("validation (EMA weights)")
    b.legend()
    fig.tight_layout()
    with atomic_path(out / "curves.png") as tmp:  # rewritten every epoch: never a half-written plot
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def summary(out: Path, state: LoopState, seconds: float, demo: bool) -> None:
    val = [r for r in state.history if "mAP" in r]
    best = max(val, key=lambda r: r["mAP"]) if val else None
    print(f"done: {state.epoch} epochs in {seconds / 60:.1f} min"
          + (f"; best mAP50:95 {best['mAP']:.3f} (mAP50 {best['mAP50']:.3f}) at epoch {best['epoch']}"
             if best else ""))
    print(f"  checkpoints: {out / 'last.pt'}, {out / 'best.pt'}; log {out / 'metrics.csv'}, "
          f"curves {out / 'curves.png'}")
    ckpt = out / "best.pt" if (out / "best.pt").exists() else out / "last.pt"
    images = out / "data" / "val" if demo else "IMAGES"
    print(f"  next: yoloworld-predict {images} --weights {ckpt} --out {out / 'predict'}"
          + (" --imgsz 256" if demo else ""))
    atomic_write_text(out / "summary.json",
                      json.dumps({"epochs": state.epoch, "minutes": seconds / 60, "best": best}, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
