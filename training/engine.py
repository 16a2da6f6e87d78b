"""The loop as two free functions: ``train_one_epoch`` and ``evaluate``; plus the text embedder."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from sdk.detections import Detections
from sdk.evaluation import coco_evaluate
from sdk.model import YoloWorld
from sdk.postprocess import postprocess

from . import distributed as D
from .config import AmpMode
from .distributed import gather_objects, is_main_process, reduce_mean
from .ema import ModelEMA
from .keep import KeepTeacher, guide_mask, split_kept
from .loss import YoloWorldLoss
from .optim import LinearWarmupSchedule


class NonFiniteLossError(RuntimeError):
    """A NaN/inf loss: training stops, the last good checkpoint stays as it is."""


class TextEmbedder(nn.Module):
    """Strings -> L2-normalised embeddings, each text encoded once by the frozen CLIP tower and kept.

    ``prompt_texts`` (prompt tuning): these prompts get learnable rows, initialised from their CLIP
    embeddings; all prompts of a class share the class's row.
    """

    def __init__(self, model: YoloWorld, prompt_texts: list[list[str]] | None = None) -> None:
        super().__init__()
        self.model = [model]  # a list keeps the detector out of this module's parameters
        self.table: dict[str, Tensor] = {}
        self.prompt_index: dict[str, int] = {}
        self.prompts: nn.Parameter | None = None
        if prompt_texts:
            init = self.encode([p[0] for p in prompt_texts])
            self.prompts = nn.Parameter(init.clone())
            self.prompt_index = {t: i for i, ps in enumerate(prompt_texts) for t in ps}

    @torch.no_grad()
    def encode(self, texts: Iterable[str]) -> Tensor:
        texts = list(texts)
        todo = [t for t in dict.fromkeys(texts) if t not in self.table]
        if todo:
            emb = self.model[0].encode_text(todo)
            self.table.update(zip(todo, emb, strict=True))
        return torch.stack([self.table[t] for t in texts]) if texts else torch.zeros(0)

    def forward(self, texts: list[list[str]]) -> Tensor:
        """B lists of T strings -> ``(B, T, D)`` float32."""
        flat = [t for row in texts for t in row]
        emb = self.encode(flat)
        if self.prompts is not None:
            idx = [self.prompt_index.get(t, -1) for t in flat]
            learn = torch.tensor([i >= 0 for i in idx], device=emb.device)
            rows = torch.nn.functional.normalize(self.prompts, dim=-1)[torch.tensor(idx).clamp(min=0)]
            emb = torch.where(learn[:, None], rows.to(emb.device), emb)
        return emb.reshape(len(texts), -1, emb.shape[-1])

    def export_table(self, texts: list[str]) -> dict[str, Tensor]:
        """Embeddings to store with a checkpoint (learned rows for prompt-tuned texts)."""
        emb = self.forward([texts])[0].detach().cpu()
        return dict(zip(texts, emb, strict=True))


@dataclass
class LoopState:
    epoch: int = 0
    global_step: int = 0  # optimiser steps so far
    step_in_epoch: int = 0  # optimiser steps done in the current epoch
    best_map: float = -1.0
    stop_requested: bool = False  # this process was asked to stop (a signal, the time box)
    stopping: bool = False  # every rank agreed to stop after the current step (set by train_one_epoch)
    history: list[dict[str, Any]] = field(default_factory=list)


def autocast(device: torch.device, amp: AmpMode) -> contextlib.AbstractContextManager:
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


@dataclass
class EpochContext:
    """What an epoch needs, built once per run (``training.finetune.build_run``)."""

    model: nn.Module  # what is called: the model, or DDP around it
    raw_model: YoloWorld  # the model itself (EMA source, checkpoints)
    embedder: TextEmbedder
    loss_fn: YoloWorldLoss
    loader: Iterable[dict]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: LinearWarmupSchedule
    ema: ModelEMA | None
    device: torch.device
    amp: AmpMode
    accumulate: int  # micro-batches per optimiser step
    grad_clip: float
    steps: int  # optimiser steps per epoch
    on_step: Callable[[], None] | None = None  # after every optimiser step
    keep: KeepTeacher | None = None  # --keep-vocabulary: the frozen starting model and the kept classes


def train_one_epoch(ctx: EpochContext, state: LoopState) -> dict[str, float]:
    """One epoch (or the rest of one, after a resume): ``ctx.steps`` optimiser steps.

    Every ``ctx.accumulate`` micro-batches make one optimiser step (gradients summed, not averaged: the
    loss already scales with the batch). Returns mean losses (reduced over ranks), lr, images/s.
    """
    ctx.model.train()
    if ctx.raw_model.text_encoder is not None:
        ctx.raw_model.text_encoder.eval()  # frozen: no dropout, no BN in CLIP anyway
    sums = {"cls": 0.0, "box": 0.0, "dfl": 0.0, **({"keep": 0.0} if ctx.keep is not None else {})}
    seen, micro, t0 = 0, 0, time.perf_counter()
    lr = ctx.optimizer.param_groups[0]["lr"]
    bar = tqdm(total=ctx.steps, initial=state.step_in_epoch, desc=f"epoch {state.epoch + 1}",
               disable=not is_main_process(), leave=False, dynamic_ncols=True)
    for batch in ctx.loader:
        D.at(f"training epoch {state.epoch + 1}, step {state.step_in_epoch + 1}")
        sync = (micro + 1) % ctx.accumulate == 0
        parts = _backward(ctx, batch, state, sync)
        micro += 1
        seen += batch["images"].shape[0]
        for k in sums:
            sums[k] += float(parts[k])
        if not sync:
            continue
        lr = _optimizer_step(ctx, state)
        bar.update(1)
        bar.set_postfix(loss=f"{sum(sums.values()) / micro:.2f}", lr=f"{lr:.2e}",
                        img_s=f"{seen / (time.perf_counter() - t0):.1f}")
        if ctx.on_step is not None:
            ctx.on_step()
        # one rank may have been signalled a step before another: stop together, at the same step
        state.stopping = D.any_rank(state.stop_requested, device=ctx.device)[0]
        if state.stopping or state.step_in_epoch >= ctx.steps:
            break
    bar.close()
    out = reduce_mean({k: v / max(micro, 1) for k, v in sums.items()}, ctx.device)
    out.update(lr=lr, images_per_s=seen / max(time.perf_counter() - t0, 1e-9))
    return out


def _backward(ctx: EpochContext, batch: dict, state: LoopState, sync: bool) -> dict[str, Tensor]:
    """Forward, loss and backward of one micro-batch (DDP's gradient sync only on the last of a step)."""
    device = ctx.device
    images = batch["images"].to(device, non_blocking=True).float().div_(255)
    texts = ctx.embedder(batch["texts"]).to(device)
    kept, guide = None, None
    if ctx.keep is not None:  # the kept classes ride along as extra text slots after the image's own
        extra = ctx.keep.sample()
        texts = torch.cat([texts, extra.expand(texts.shape[0], -1, -1)], 1)
        guide = guide_mask(texts.shape[1], len(extra), device)
    no_sync = not sync and hasattr(ctx.model, "no_sync")
    with ctx.model.no_sync() if no_sync else contextlib.nullcontext():
        with autocast(device, ctx.amp):
            out = ctx.model(images, texts, None, guide)
            if ctx.keep is not None:
                out, student = split_kept(out, len(extra))
                kept = (student, ctx.keep.targets(images, texts, guide))
        loss, parts = ctx.loss_fn(out, batch["labels"].to(device), batch["boxes"].to(device),
                                  batch["box_mask"].to(device), batch["text_mask"].to(device), kept)
        here = not bool(torch.isfinite(loss))
        if D.any_rank(here, device=device)[0]:  # all ranks stop before the backward, or DDP's sync would hang
            raise NonFiniteLossError(f"non-finite loss at epoch {state.epoch + 1}, step {state.step_in_epoch}: "
                                     + (", ".join(f"{k}={float(v):.4g}" for k, v in parts.items()) if here
                                        else f"on another rank than rank {D.rank()}"))
        ctx.scaler.scale(loss).backward()
    return parts


def _optimizer_step(ctx: EpochContext, state: LoopState) -> float:
    """lr for this step, gradient clipping, the step, EMA; returns the lr."""
    lr = ctx.schedule.apply(ctx.optimizer, state.global_step, state.epoch)
    if ctx.embedder.prompts is not None:  # prompt tuning: no DDP around the model, so sync these here
        D.average_gradients([ctx.embedder.prompts])
    ctx.scaler.unscale_(ctx.optimizer)
    if ctx.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for g in ctx.optimizer.param_groups for p in g["params"]], ctx.grad_clip)
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    ctx.optimizer.zero_grad(set_to_none=True)
    if ctx.ema is not None:
        ctx.ema.update(ctx.raw_model)
    state.global_step += 1
    state.step_in_epoch += 1
    return lr


@torch.no_grad()
def predict_batch(model: YoloWorld, images: Tensor, text_embeds: Tensor, infos: list, amp: AmpMode,
                  conf: float = 0.001, iou: float = 0.7, max_det: int = 300) -> list[Detections]:
    """:func:`sdk.postprocess.postprocess` (what every backend runs) on a letterboxed uint8 batch
    ``(B, 3, S, S)`` (RGB)."""
    with autocast(images.device, amp):
        out = model(images.float().div_(255), text_embeds)
    raw = {f"cls_logits_{i}": t.float().cpu().numpy() for i, t in enumerate(out.cls_logits)}
    raw.update({f"box_dists_{i}": t.float().cpu().numpy() for i, t in enumerate(out.box_dists)})
    return [Detections(d.xyxy, d.confidence, d.class_id, np.array([""] * len(d.class_id)))
            for d in postprocess(raw, "head", infos, conf, iou, max_det)]


@torch.no_grad()
def evaluate(model: YoloWorld, loader: Iterable[dict], class_embeds: Tensor, categories: list[int],
             ground_truth: str | dict[str, Any], image_ids: list[int], device: torch.device, amp: AmpMode = "none"
             ) -> dict[str, Any] | None:
    """COCO mAP of ``model`` (the EMA weights) with the evaluation settings (conf 0.001, IoU 0.7,
    300 per image) and the sdk post-processing; every rank predicts its shard, rank 0 scores.
    Returns the metrics on rank 0, None elsewhere."""
    model.eval()
    results: list[dict[str, Any]] = []
    for batch in tqdm(loader, desc="val", leave=False, disable=not is_main_process()):
        dets = predict_batch(model, batch["images"].to(device), class_embeds.to(device), batch["infos"], amp)
        for det, image_id in zip(dets, batch["image_ids"], strict=True):
            results.extend(det.to_coco(image_id, categories))
    gathered = gather_objects(results)
    if not is_main_process():
        return None
    return coco_evaluate(ground_truth, [r for part in gathered for r in part], image_ids=image_ids)
