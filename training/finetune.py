"""``python -m training.finetune``: fine-tune YOLO-World on your data (DDP, AMP, EMA, resume).

    python -m training.finetune                     # the demo: generated data, tiny model, CPU
    python -m training.finetune --weights yolo_world_v2_s_...pth --data data.yaml --epochs 80
    torchrun --nproc_per_node 8 -m training.finetune --weights ... --data data.yaml

Reads top to bottom: :func:`run` resolves the whole configuration (``training.schedule.resolve_config``)
from the data and the starting point, builds model, loaders and optimiser, then loops over epochs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import math
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from sdk.atomic import atomic_path, atomic_write_text, check_can_create
from sdk.cli import plain
from sdk.errors import CheckpointError, YoloWorldError
from sdk.model import STRIDES, YoloWorld, build_model, get_config, load_official_state_dict
from sdk.model.checkpoint import load_checkpoint_with_meta, to_official_state_dict
from sdk.model.config import VARIANTS, preset_name

from . import distributed as D
from .checkpointing import load_training_checkpoint, save_training_checkpoint
from .config import TrainConfig, add_arguments, resolve, save_config
from .data import AnyDataset, DataConfig, DetectionDataset, describe_data, read_data
from .ema import ModelEMA
from .engine import EpochContext, LoopState, NonFiniteLossError, TextEmbedder, evaluate, train_one_epoch
from .keep import KeepTeacher, resolve_kept_vocabulary, write_kept_vocabulary
from .loss import YoloWorldLoss
from .optim import LinearWarmupSchedule, build_optimizer
from .sampler import ResumableSampler
from .schedule import RunFacts, Schedule, resolve_config
from .transforms import TrainDataset, TrainTransform, ValDataset, collate, val_collate


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = add_arguments(argparse.ArgumentParser(prog="python -m training.finetune",
                                                   description=plain(__doc__.splitlines()[0])))
    args = parser.parse_args(argv)
    demo = len(argv) == 0 or (args.data is None and args.weights is None and args.config is None)
    try:
        return run(resolve(args, demo=demo), demo)
    except D.RankError as e:  # another rank's failure: rank 0 says which; the failing rank said why
        _report(f"error: {e}", only_main=True)
        return 2
    except (YoloWorldError, ValueError, OSError) as e:
        _report(f"error: {e}")
        return 2
    except NonFiniteLossError as e:
        _report(f"stopped: {e}\n  the last good checkpoint is untouched", only_main=True)
        return 3
    except RuntimeError as e:
        failure = D.describe_failure(e)  # a collective that timed out or lost its peer: say where, not a stack
        if failure is None:
            raise
        _report(f"error: {failure}")
        return 4
    finally:
        D.cleanup()


def _report(message: str, only_main: bool = False) -> None:
    """An error line on stderr; in a multi-process run prefixed with the rank, or from rank 0 alone."""
    if D.is_distributed() and not D.is_main_process():
        if only_main:
            return
        message = f"[rank {D.rank()}] {message}"
    print(f"training.finetune: {message}", file=sys.stderr)


@dataclass
class Run:
    """Everything a run built once: the resolved config, where it writes, the data and the epoch context."""

    cfg: TrainConfig
    plan: Schedule
    out: Path
    main_proc: bool
    data: DataConfig
    class_texts: list[list[str]]
    categories: list[int]
    class_names: list[str]  # the dataset's category names, in label order
    train_ds: TrainDataset
    sampler: ResumableSampler
    val: tuple[DataLoader, DetectionDataset] | None
    epoch: EpochContext
    kept: list[list[str]]  # --keep-vocabulary: the classes kept, prompts per class
    keep_val: KeepVal | None  # --keep-val: the kept vocabulary's validation set


@dataclass
class KeepVal:
    """``--keep-val``: its validation loader and set, its class texts and its ground truth."""

    loader: DataLoader
    dataset: DetectionDataset
    class_texts: list[list[str]]
    ground_truth: Any


def run(cfg: TrainConfig, demo: bool = False) -> int:
    """Resolve, build, then train epoch by epoch; 0 when done, 130 when stopped (Ctrl-C, SIGTERM)."""
    r = build_run(cfg)
    state = LoopState()
    if r.cfg.resume:
        resume(r, state)
    announce(r, state)
    t_start = time.perf_counter()
    with stop_on_signals(state, r.main_proc):
        while state.epoch < r.cfg.epochs:
            start_epoch(r, state)
            t0 = time.perf_counter()
            metrics = train_one_epoch(r.epoch, state)
            # agreed by every rank at the same step (a signal may reach them apart); a stop at an epoch's last
            # step first ends the epoch (validation, log), so a resumed run never logs an empty epoch
            if state.stopping and state.step_in_epoch < r.plan.steps_per_epoch:
                save(r, state, r.out / "last.pt")
                stopped(r, f"in epoch {state.epoch + 1} after step {state.step_in_epoch}")
                return 130
            state.epoch, state.step_in_epoch = state.epoch + 1, 0
            row: dict[str, Any] = {"epoch": state.epoch, **{f"loss_{k}": metrics[k] for k in
                                                            ("cls", "box", "dfl", "keep") if k in metrics},
                                   "lr": metrics["lr"], "images_per_s": metrics["images_per_s"],
                                   "epoch_s": time.perf_counter() - t0}
            improved = validate(r, state, row)
            state.history.append(row)
            save(r, state, r.out / "last.pt")
            if improved:
                save(r, state, r.out / "best.pt", resume=False)
            if r.main_proc:
                write_log(r.out, state.history)
                print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
            if state.stopping and state.epoch < r.cfg.epochs:
                stopped(r, f"after epoch {state.epoch}")
                return 130
    if r.main_proc:
        plot_curves(r.out, state.history)
        summary(r.out, state, time.perf_counter() - t_start, demo, r.cfg.imgsz)
    return 0


def stopped(r: Run, where: str) -> None:
    if r.main_proc:
        print(f"stopped {where}; saved {r.out / 'last.pt'}; continue with --resume --output {r.out}")


# -- building ----------------------------------------------------------------------------------------
def build_run(cfg: TrainConfig) -> Run:
    """Data and starting weights first (validated before anything is trained or written), then the one
    resolution of the configuration, then model, loaders and optimiser."""
    device_name = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    rank, world, local = D.init_distributed(device_name, cfg.dist_timeout)
    device = torch.device(f"cuda:{local}" if device_name.startswith("cuda") and world > 1 else device_name)
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs CUDA; on CPU use --amp bf16 or none")
    if cfg.sync_bn and world > 1 and device.type != "cuda":
        raise ValueError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only); drop it on CPU")
    out = Path(cfg.output)
    D.at("checking the output folder and the data")
    D.on_main(lambda: check_can_create(out))  # before any work; the folder itself is made when training starts
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    path = data_path(cfg, out)
    with D.together("reading the data, the weights and the schedule"):  # no rank goes on alone after an error
        data, train_set, val_set = load_data(cfg, path)
        model, pretrained, start_meta = load_model(cfg)
        kept = check_keep(cfg, pretrained, start_meta, data.class_texts)
        keep_data = read_data(cfg.keep_val) if cfg.keep_val else None
        if keep_data is not None and keep_data.val is None:
            raise ValueError(f"--keep-val {cfg.keep_val} has no validation split")
        facts = RunFacts(len(train_set), len(data.class_texts), cfg.mask_refine and _has_polygons(train_set),
                         preset_name(model.config) or cfg.model or "s", pretrained, world)
        cfg, plan, warnings = resolve_config(cfg, facts)
        if plan.steps_per_epoch < 1:
            raise ValueError(f"the training set ({len(train_set)} images) gives fewer batches of {cfg.batch_size} "
                             f"per process than one optimiser step needs ({plan.accumulate})")
    if rank == 0:
        print(describe_data(data, train_set, val_set))
        for message in warnings:
            print(f"warning: {message}", file=sys.stderr)
    ddp_model, raw_model, embedder = prepare_model(model, cfg, pretrained, data.class_texts, train_set, device,
                                                   world, local)
    train_ds, sampler, loader, val = build_loaders(cfg, train_set, val_set, rank, world, device)
    keep_val = None
    if keep_data is not None:
        kv = keep_data.build_val()
        keep_val = KeepVal(val_loader(cfg, kv, rank, world), kv, keep_data.class_texts,
                           keep_data.val.ground_truth())  # type: ignore[union-attr]
    teacher = (KeepTeacher(raw_model, embedder.encode([ps[0] for ps in kept]), seed=cfg.seed).to(device)
               if kept else None)  # a copy of the start, taken before any step (and before a resume)
    optimizer = build_optimizer(raw_model, cfg, plan.nominal_batch,
                                [embedder.prompts] if embedder.prompts is not None else None)
    epoch = EpochContext(
        model=ddp_model, raw_model=raw_model, embedder=embedder, loader=loader, optimizer=optimizer,
        loss_fn=YoloWorldLoss(reg_max=raw_model.config.reg_max, world_size=world,
                              mask_padded_texts=cfg.mask_padded_texts),
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16"), schedule=LinearWarmupSchedule(cfg),
        ema=ModelEMA(raw_model, cfg.ema_momentum, cfg.ema_gamma) if cfg.ema else None, device=device,
        amp=cfg.amp, accumulate=plan.accumulate, grad_clip=cfg.grad_clip, steps=plan.steps_per_epoch, keep=teacher)
    categories = val_set.categories if val_set is not None else getattr(train_set, "categories", None)
    # the names evaluation pairs classes by; a dataset without them (grounding only) has its first prompts
    names = getattr(val_set if val_set is not None else train_set, "class_names", None)
    return Run(cfg, plan, out, rank == 0, data, data.class_texts, categories or list(range(len(data.class_texts))),
               names or [ps[0] for ps in data.class_texts],
               train_ds, sampler, val, epoch, kept, keep_val)


def data_path(cfg: TrainConfig, out: Path) -> Path:
    """``--data``, or the demo set, generated once by rank 0 (the other ranks wait for it)."""
    from .synthetic import make_shapes_dataset

    if cfg.data:
        return Path(cfg.data)
    path = out / "data" / "data.yaml"
    D.on_main(lambda: None if path.exists() else make_shapes_dataset(path.parent))
    return path


def load_data(cfg: TrainConfig, path: Path) -> tuple[DataConfig, AnyDataset, DetectionDataset | None]:
    """Any layout ``training.data.read_data`` takes: the data configuration, the training and validation sets."""
    data = read_data(path, cfg.class_texts)
    train_set = data.build_train(filter_empty_gt=cfg.filter_empty_gt, min_size=cfg.min_size)
    return data, train_set, data.build_val() if data.val else None


def _has_polygons(train_set: AnyDataset) -> bool:
    return any(train_set.record(i).polygons is not None for i in range(len(train_set)))


def load_model(cfg: TrainConfig) -> tuple[YoloWorld, bool, dict[str, Any]]:
    """(model, from_pretrained, the checkpoint's stored entries). ``--weights`` decides the architecture;
    a ``--model`` / ``--variant`` that contradicts it is an error."""
    if not cfg.weights:
        arch = get_config(cfg.model or "s", cfg.variant or "v2")
        model = build_model(dataclasses.replace(arch, neck="efficient") if cfg.mode == "efficient" else arch)
        return model, False, {}
    model, meta = load_checkpoint_with_meta(cfg.weights)
    arch = model.config
    for name, value in (("model", cfg.model), ("variant", cfg.variant)):
        if value is None:
            continue
        preset = get_config(cfg.model or "s", cfg.variant or "v2")
        fits = ((preset.widen, preset.deepen, preset.last_stage_channels) == (arch.widen, arch.deepen,
                                                                               arch.last_stage_channels)
                if name == "model" else VARIANTS[value] == (arch.neck, arch.head))
        if not fits:
            raise CheckpointError(
                f"--weights {cfg.weights} holds a {arch.neck}/{arch.head} model (widen {arch.widen}, "
                f"deepen {arch.deepen}); it does not fit --{name} {value}. Drop --{name}: the checkpoint's "
                f"architecture is used")
    if cfg.mode == "efficient" and arch.neck != "efficient":
        if arch.neck == "dual_vlpan":
            raise CheckpointError("efficient-neck fine-tuning starts from v2 (VL-PAN) weights; "
                                  f"{cfg.weights} is a v1 dual VL-PAN model")
        eff = YoloWorld(dataclasses.replace(arch, neck="efficient"))
        load_official_state_dict(eff, to_official_state_dict(model), source=str(cfg.weights),
                                 drop_neck_guides=True)
        model = eff
    model.train()
    return model, True, meta


def check_keep(cfg: TrainConfig, pretrained: bool, start_meta: dict[str, Any], class_texts: list[list[str]]
               ) -> list[list[str]]:
    """``--keep-vocabulary``'s classes (``training.keep.resolve_kept_vocabulary``), or [] without it."""
    if not cfg.keep_vocabulary:
        return []
    if not pretrained:
        raise ValueError("--keep-vocabulary needs --weights: a model trained from scratch has no vocabulary to keep")
    if cfg.mode != "full":
        raise ValueError(f"--keep-vocabulary trains the whole model (--mode full); --mode {cfg.mode} "
                         + ("drops the text encoder, which closes the vocabulary" if cfg.mode == "efficient"
                            else "changes only the new classes' embeddings and keeps the rest as it is"))
    return resolve_kept_vocabulary(cfg.keep_vocabulary, start_meta, class_texts)


def init_head_for_training(model: YoloWorld, num_classes: int, imgsz: int) -> None:
    """Official initialisation of the head for training from scratch: prior probability
    ``5 / num_classes / (imgsz / stride)^2`` in the contrast bias, reg bias 1, cls bias 0."""
    with torch.no_grad():
        for contrast, cls, reg, s in zip(model.head.cls_contrasts, model.head.cls_preds,
                                         model.head.reg_preds, STRIDES, strict=True):
            contrast.bias.fill_(math.log(5 / num_classes / (imgsz / s) ** 2))
            cls[-1].bias.zero_()
            reg[-1].bias.fill_(1.0)


def prepare_model(model: YoloWorld, cfg: TrainConfig, pretrained: bool, class_texts: list[list[str]],
                  train_set: AnyDataset, device: torch.device, world: int, local: int
                  ) -> tuple[nn.Module, YoloWorld, TextEmbedder]:
    """(the module to call, possibly DDP; the model itself; the text embedder), per ``--mode``."""
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
    if world > 1 and any(p.requires_grad for p in model.parameters()):
        ids = [local] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids), model, embedder
    return model, model, embedder


def build_loaders(cfg: TrainConfig, train_set: AnyDataset, val_set: DetectionDataset | None, rank: int, world: int,
                  device: torch.device) -> tuple[TrainDataset, ResumableSampler, DataLoader,
                                                 tuple[DataLoader, DetectionDataset] | None]:
    transform = TrainTransform(size=cfg.imgsz, affine_scale=cfg.affine_scale, num_texts=cfg.num_texts,
                               min_area_ratio=cfg.min_area_ratio, mosaic=True, mixup_prob=cfg.mixup_prob,
                               pixel_noise_prob=cfg.pixel_noise_prob, mask_refine=cfg.mask_refine,
                               copypaste_prob=cfg.copypaste_prob)
    train_ds = TrainDataset(train_set, transform, seed=cfg.seed)
    sampler = ResumableSampler(len(train_ds), shuffle=True, seed=cfg.seed, rank=rank, world_size=world)
    # set_epoch/close_mosaic reach persistent workers through shared memory (training/transforms.py)
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                        collate_fn=collate, drop_last=True, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.workers > 0, worker_init_fn=leave_interrupts_to_trainer)
    if val_set is None:
        return train_ds, sampler, loader, None
    return train_ds, sampler, loader, (val_loader(cfg, val_set, rank, world), val_set)


def val_loader(cfg: TrainConfig, val_set: DetectionDataset, rank: int, world: int) -> DataLoader:
    """A validation set's loader: letterboxed at ``--imgsz``, each rank its share, in order, unpadded."""
    return DataLoader(ValDataset(val_set, cfg.imgsz), batch_size=cfg.batch_size, num_workers=cfg.workers,
                      sampler=ResumableSampler(len(val_set), False, rank=rank, world_size=world, pad=False),
                      collate_fn=val_collate, worker_init_fn=leave_interrupts_to_trainer)


def leave_interrupts_to_trainer(_worker_id: int) -> None:
    """Loader workers ignore Ctrl-C: the terminal sends it to them too, and a worker that died of it would
    fail the next batch before the training process could save and stop (it ends them itself)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# -- the loop's steps --------------------------------------------------------------------------------
def announce(r: Run, state: LoopState) -> None:
    """The output folder and config.yaml (when training starts), and what the run will do."""
    if not r.main_proc:
        return
    cfg, plan = r.cfg, r.plan
    r.out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, r.out / "config.yaml", dataclasses.asdict(plan))
    world = plan.nominal_batch // (cfg.batch_size * plan.accumulate)
    val = len(r.val[1]) if r.val else 0
    print(f"training {len(r.train_ds)} images ({len(r.class_texts)} classes), val {val}; {world} process(es) x "
          f"{cfg.batch_size} x accumulate {plan.accumulate} = batch {plan.nominal_batch}; {plan.steps_per_epoch} "
          f"steps/epoch; device {r.epoch.device}, amp {cfg.amp}; affine scale 1 +- {cfg.affine_scale}, mixup "
          f"{cfg.mixup_prob}, min area ratio {cfg.min_area_ratio}"
          + (f"; resuming at epoch {state.epoch + 1} step {state.step_in_epoch}" if cfg.resume else ""))
    print(plan.describe() + (" (from pre-trained weights)" if cfg.weights else " (from scratch)"))
    if r.kept:
        write_kept_vocabulary(r.out / "kept_vocabulary.json", r.kept)
        print(f"keeping {len(r.kept)} classes of the starting model ({', '.join(ps[0] for ps in r.kept[:5])}"
              f"{', ...' if len(r.kept) > 5 else ''}; {r.out / 'kept_vocabulary.json'}): its scores for them on "
              f"these images are extra targets" + (f"; validated on {r.cfg.keep_val}" if r.keep_val else ""))


@contextlib.contextmanager
def stop_on_signals(state: LoopState, main_proc: bool) -> Iterator[None]:
    """Ctrl-C / SIGTERM ask the loop to save and stop at the next step; a second one aborts."""
    def request_stop(signum: int, _frame: Any) -> None:
        if state.stop_requested:
            raise KeyboardInterrupt
        state.stop_requested = True
        if main_proc:
            print(f"\n{signal.Signals(signum).name}: saving at the next step, then stopping (again to abort)",
                  file=sys.stderr)

    old = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def start_epoch(r: Run, state: LoopState) -> None:
    if state.epoch >= r.cfg.epochs - r.cfg.close_mosaic:
        r.train_ds.close_mosaic()
    r.train_ds.set_epoch(state.epoch)
    r.sampler.set_epoch(state.epoch)
    r.sampler.set_start(state.step_in_epoch * r.plan.accumulate * r.cfg.batch_size)
    if r.cfg.stop_after_steps:  # a time-boxed run stops as if interrupted
        def check_time_box() -> None:
            if state.global_step >= r.cfg.stop_after_steps:
                state.stop_requested = True

        r.epoch.on_step = check_time_box


def resume(r: Run, state: LoopState) -> None:
    """Every rank restores ``OUTPUT/last.pt`` (weights, EMA, optimiser, step, RNG); if one cannot, all stop."""
    path, e = r.out / "last.pt", r.epoch
    D.at(f"resuming from {path}")
    with D.together(f"reading {path}"):
        if not path.exists():
            raise FileNotFoundError(f"--resume: {path} does not exist" + (
                " on this node (every process reads it: a multi-node run needs --output on a file system all "
                "nodes share)" if D.is_distributed() else ""))
        load_training_checkpoint(path, e.raw_model, e.ema, e.embedder, e.optimizer, e.scaler, state)


def validate(r: Run, state: LoopState, row: dict[str, Any]) -> bool:
    """COCO mAP of the EMA weights every ``val_interval`` epochs and every epoch once mosaic is closed;
    adds mAP/mAP50 (with --keep-val also mAP_kept/mAP50_kept) to ``row``; True when the best so far
    by :func:`best_rule`. Every rank predicts its share; rank 0 scores
    and every rank gets its scores, so all take the same decision (saving best.pt is a collective)."""
    cfg = r.cfg
    if r.val is None or not (state.epoch % cfg.val_interval == 0 or state.epoch > cfg.epochs - cfg.close_mosaic):
        return False
    D.at(f"validating after epoch {state.epoch}")
    loader, val_set = r.val
    e = r.epoch
    model = e.ema.module if e.ema is not None else e.raw_model
    D.broadcast_buffers(model)  # BN statistics differ by rank's batches: validate what rank 0 saves
    ap, ap50 = _score(r, model, loader, val_set, r.class_texts, r.data.val.ground_truth())  # type: ignore[union-attr]
    row.update(mAP=ap, mAP50=ap50)
    if r.keep_val is not None:
        k = r.keep_val
        row["mAP_kept"], row["mAP50_kept"] = _score(r, model, k.loader, k.dataset, k.class_texts, k.ground_truth)
    score = best_rule(row)
    improved = score > state.best_map
    state.best_map = max(state.best_map, score)
    return improved


def _score(r: Run, model: YoloWorld, loader: DataLoader, val_set: DetectionDataset, class_texts: list[list[str]],
           ground_truth: Any) -> tuple[float, float]:
    """(mAP, mAP50) of ``model`` prompted with ``class_texts`` (official validation: first prompts, in
    order), the same on every rank."""
    names = [ps[0] for ps in class_texts]
    res = evaluate(model, loader, r.epoch.embedder([names])[0].detach(), val_set.categories, ground_truth,
                   val_set.image_ids, r.epoch.device, r.cfg.amp)
    return D.broadcast_object((res["AP"], res["AP50"]) if res is not None else None)


def save(r: Run, state: LoopState, path: Path, resume: bool = True) -> None:
    """Rank 0 writes the checkpoint (atomically); the others wait, and fail with it if it fails."""
    e = r.epoch
    D.at(f"saving {path}")
    D.on_main(lambda: save_training_checkpoint(path, e.raw_model, e.ema, e.embedder, e.optimizer, e.scaler, state,
                                               r.cfg.to_dict(), r.class_texts, r.categories, r.class_names,
                                               with_resume_state=resume, kept_vocabulary=r.kept))


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
    if any("mAP_kept" in r for r in val):
        b.plot([r["epoch"] for r in val], [r["mAP_kept"] for r in val], "s--", label="mAP50:95 kept (--keep-val)")
    b.set_xlabel("epoch")
    b.set_title("validation (EMA weights)")
    b.legend()
    fig.tight_layout()
    with atomic_path(out / "curves.png") as tmp:  # rewritten every epoch: never a half-written plot
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def best_rule(row: dict[str, Any]) -> float:
    """What best.pt maximises: mAP, or with --keep-val the mean of mAP and mAP_kept."""
    return (row["mAP"] + row["mAP_kept"]) / 2 if "mAP_kept" in row else row["mAP"]


def summary(out: Path, state: LoopState, seconds: float, demo: bool, imgsz: int) -> None:
    val = [r for r in state.history if "mAP" in r]
    best = max(val, key=best_rule) if val else None
    print(f"done: {state.epoch} epochs in {seconds / 60:.1f} min"
          + (f"; best mAP50:95 {best['mAP']:.3f} (mAP50 {best['mAP50']:.3f})"
             + (f", kept vocabulary {best['mAP_kept']:.3f}" if "mAP_kept" in best else "")
             + f" at epoch {best['epoch']}" if best else ""))
    print(f"  checkpoints: {out / 'last.pt'}, {out / 'best.pt'}; log {out / 'metrics.csv'}, "
          f"curves {out / 'curves.png'}")
    ckpt = out / "best.pt" if (out / "best.pt").exists() else out / "last.pt"
    images = out / "data" / "val" if demo else "IMAGES"
    print(f"  next: yoloworld-predict {images} --weights {ckpt} --out {out / 'predict'}  (the checkpoint "
          f"records its size, {imgsz}, and its classes)")
    atomic_write_text(out / "summary.json",
                      json.dumps({"epochs": state.epoch, "minutes": seconds / 60, "best": best}, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
