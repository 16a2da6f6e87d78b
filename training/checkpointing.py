"""Training checkpoints: self-describing own-format files (loadable by ``sdk.Detector`` and the
exporter as they are) that also carry everything ``--resume`` needs. Written atomically."""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdk.model import YoloWorld, save_checkpoint
from sdk.model.checkpoint import load_checkpoint_with_meta

from .ema import ModelEMA
from .engine import LoopState, TextEmbedder


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


#: A frozen text encoder's weights: stored once, in the deployed model (``raw_model`` rebuilds them).
_TEXT_ENCODER = "text_encoder."


def save_training_checkpoint(path: Path, raw_model: YoloWorld, ema: ModelEMA | None, embedder: TextEmbedder,
                             optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                             state: LoopState, train_config: dict[str, Any], class_texts: list[list[str]],
                             categories: list[int], class_names: list[str], with_resume_state: bool = True,
                             kept_vocabulary: list[list[str]] | None = None) -> Path:
    """``model`` = the EMA weights (what gets deployed), with what every later command needs to know:
    the vocabulary (prompts per class), the dataset's category ids and names, the input size trained at
    and the letterbox validated with. ``train`` = what resuming needs beyond that, stored once each:
    the raw weights without the frozen text encoder (rebuilt from ``--weights``, or from the seed),
    the EMA's step count (its weights are ``model``), optimiser, scaler, loop state and RNG states."""
    deploy = ema.module if ema is not None else raw_model
    prompts = sorted({p for ps in class_texts for p in ps})
    extra: dict[str, Any] = {
        "vocabulary": class_texts, "categories": categories, "class_names": class_names,
        "imgsz": int(train_config["imgsz"]), "letterbox": "square",  # what validation ran (the official one)
        # --keep-vocabulary: the starting model's classes it was trained to keep (the next run keeps them too)
        "kept_vocabulary": kept_vocabulary or None,
        # rows the text encoder cannot reproduce: prompt-tuned embeddings, or all of them when
        # the text encoder was dropped (efficient mode)
        "text_embeddings": (embedder.export_table(prompts)
                            if embedder.prompts is not None or raw_model.text_encoder is None else None),
    }
    if with_resume_state:
        extra["train"] = {
            "config": train_config,
            "raw_model": {k: v for k, v in raw_model.state_dict().items() if not k.startswith(_TEXT_ENCODER)},
            "ema": {"steps": ema.steps} if ema is not None else None,
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "prompts": embedder.prompts.detach().cpu() if embedder.prompts is not None else None,
            "state": {k: v for k, v in asdict(state).items() if k not in ("stop_requested", "stopping")},
            "rng": rng_state(),
        }
    return save_checkpoint(deploy, path, **extra)


def load_training_checkpoint(path: Path, raw_model: YoloWorld, ema: ModelEMA | None, embedder: TextEmbedder,
                             optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                             state: LoopState) -> None:
    """Restore everything ``save_training_checkpoint`` wrote (in place)."""
    deployed, meta = load_checkpoint_with_meta(path)
    train = meta.get("train")
    if not train:
        raise ValueError(f"{path} holds no training state (a best.pt or an exported model?)")
    missing, unexpected = raw_model.load_state_dict(train["raw_model"], strict=False)
    if unexpected or any(not k.startswith(_TEXT_ENCODER) for k in missing):
        raise ValueError(f"{path}: its training state does not fit this model (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}); resume with the options it was started with")
    if ema is not None and train["ema"] is not None:
        # files written before the EMA was stored once carry its weights in train.ema.module
        ema.load_state_dict({"module": train["ema"].get("module", deployed.state_dict()),
                             "steps": train["ema"]["steps"]})
    optimizer.load_state_dict(train["optimizer"])
    scaler.load_state_dict(train["scaler"])
    if embedder.prompts is not None and train["prompts"] is not None:
        with torch.no_grad():
            embedder.prompts.copy_(train["prompts"])
    for k, v in train["state"].items():
        setattr(state, k, v)
    set_rng_state(train["rng"])
