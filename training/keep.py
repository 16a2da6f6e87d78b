"""Fine-tuning that keeps the open vocabulary (``--keep-vocabulary``).

Plain fine-tuning trains only the new classes' prompts; the classes the starting model knew are never
named, and objects of them in the user's images are trained as background, so they are forgotten
(benchmarks/keep_vocabulary.py measures how much). Three pieces here:

- :func:`resolve_kept_vocabulary`: which classes to keep (the starting checkpoint's own, a built-in list
  for official checkpoints, or the user's);
- :class:`KeepTeacher`: the starting model, frozen, run on the same augmented batches; its scores for a
  sample of the kept classes are soft targets for the student's scores of the same prompts
  (self-distillation, :func:`binary_kl`; no old data needed);
- :func:`interpolate_state`: weight-space interpolation between the start and the fine-tuned weights
  (WiSE-FT), measured as an alternative.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from sdk.errors import YoloWorldError
from sdk.evaluation import normalize_name
from sdk.model import HeadOutputs, YoloWorld
from sdk.vocabulary import read_class_texts

#: The 80 COCO class names: what ``--keep-vocabulary`` keeps for an official checkpoint, which records
#: no vocabulary of its own (its pre-training vocabulary, Objects365 and grounding phrases, includes them).
COCO_NAMES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush"]

#: ``--keep-vocabulary`` with no value: the starting checkpoint's own vocabulary.
FROM_WEIGHTS = "auto"


def resolve_kept_vocabulary(value: str, start_meta: Mapping[str, object], trained: list[list[str]]
                            ) -> list[list[str]]:
    """The classes to keep, prompts per class, less those the training set names itself (by first prompt).

    ``value``: ``auto`` (the starting checkpoint's ``vocabulary`` and ``kept_vocabulary``; for an
    official checkpoint, which stores none, :data:`COCO_NAMES`), a class-text JSON file, or a
    comma-separated list of names."""
    if value == FROM_WEIGHTS:
        own = [*(start_meta.get("vocabulary") or []), *(start_meta.get("kept_vocabulary") or [])]  # type: ignore[misc]
        kept = [list(ps) for ps in own] if own else [[n] for n in COCO_NAMES]
    elif Path(value).suffix == ".json" or Path(value).is_file():
        kept = read_class_texts(value)
    else:
        kept = [[n.strip()] for n in value.split(",") if n.strip()]
    new = {normalize_name(ps[0]) for ps in trained}
    seen: set[str] = set()
    out = []
    for ps in kept:
        key = normalize_name(ps[0])
        if key not in new and key not in seen:
            seen.add(key)
            out.append(ps)
    if not out:
        raise YoloWorldError(f"--keep-vocabulary {value}: no class to keep besides the {len(trained)} classes "
                             f"being trained")
    return out


def write_kept_vocabulary(path: Path, kept: list[list[str]]) -> None:
    """``kept_vocabulary.json`` in the run folder: a class-text JSON, usable as ``--classes``."""
    from sdk.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(kept, indent=1))


def binary_kl(student: Tensor, teacher: Tensor) -> Tensor:
    """Elementwise KL divergence between Bernoulli(sigmoid(teacher)) and Bernoulli(sigmoid(student)),
    both logits of any (equal) shape; 0 where they agree. Its gradient in ``student`` is the soft-target
    BCE's, ``sigmoid(student) - sigmoid(teacher)``."""
    p = teacher.sigmoid()
    return (F.binary_cross_entropy_with_logits(student, p, reduction="none")
            - F.binary_cross_entropy_with_logits(teacher, p, reduction="none"))


class KeepTeacher:
    """The starting model, frozen and in eval mode, with the kept classes' embeddings ``(K, D)``.

    Each step uses ``per_step`` of the K classes (all when fewer), drawn from a generator of its own, so
    a vocabulary of a thousand classes costs what 80 do."""

    def __init__(self, start: YoloWorld, kept_embeds: Tensor, per_step: int = 80, seed: int = 0) -> None:
        self.model = copy.deepcopy(start).eval().requires_grad_(False)
        self.model.text_encoder = None  # the embeddings are computed; the tower would only take memory
        self.embeds = kept_embeds.detach()
        self.per_step = min(per_step, len(kept_embeds))
        self.generator = torch.Generator().manual_seed(seed)

    def to(self, device: torch.device) -> KeepTeacher:
        self.model.to(device)
        self.embeds = self.embeds.to(device)
        return self

    def sample(self) -> Tensor:
        """``(k,)`` float32 rows of the kept embeddings for this step, ``(k, D)``."""
        if self.per_step == len(self.embeds):
            return self.embeds
        idx = torch.randperm(len(self.embeds), generator=self.generator)[:self.per_step]
        return self.embeds[idx.to(self.embeds.device)]

    @torch.no_grad()
    def targets(self, images: Tensor, texts: Tensor, guide: Tensor) -> list[Tensor]:
        """The teacher's logits of the kept text slots (``guide`` False), per level ``(B, k, h, w)``, for
        ``images`` ``(B, 3, H, W)`` in [0, 1], the student's texts ``(B, T + k, D)`` and its
        :func:`guide_mask` (the neck guided as the student's)."""
        out = self.model(images, texts, guide_mask=guide)
        num_kept = int((~guide).sum())
        return [t[:, -num_kept:].float() for t in out.cls_logits]


def guide_mask(slots: int, num_kept: int, device: torch.device) -> Tensor:
    """``(slots,)`` bool: the image's own texts guide the neck, the ``num_kept`` kept ones after them do
    not, so the neck sees what plain fine-tuning and validation show it and the kept classes are scored
    by the head alone. (Measured alone it changed little: new-class mAP50:95 0.872 with it, 0.874
    without, in benchmarks/keep_vocabulary.py; what held the new classes back was distilling inside
    their boxes, see ``YoloWorldLoss.keep_loss``.)"""
    return torch.arange(slots, device=device) < slots - num_kept


def split_kept(out: HeadOutputs, num_kept: int) -> tuple[HeadOutputs, list[Tensor]]:
    """(the outputs of the trained texts, the kept texts' logits per level ``(B, num_kept, h, w)``)."""
    main = HeadOutputs([t[:, :-num_kept] for t in out.cls_logits], out.box_dists)
    return main, [t[:, -num_kept:] for t in out.cls_logits]


def interpolate_state(start: Mapping[str, Tensor], finetuned: Mapping[str, Tensor], alpha: float
                      ) -> dict[str, Tensor]:
    """WiSE-FT: ``(1 - alpha) * start + alpha * finetuned`` for every floating-point tensor (weights and
    BN statistics); integer buffers (BN batch counts) from ``finetuned``. ``alpha`` 1 is the fine-tuned
    model, 0 the start. Both must have the same keys and shapes."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if set(start) != set(finetuned):
        diff = sorted(set(start) ^ set(finetuned))
        raise ValueError(f"the two models differ in parameters {diff[:5]}: interpolation needs one architecture")
    out = {}
    for k, ft in finetuned.items():
        s = start[k]
        if s.shape != ft.shape:
            raise ValueError(f"{k}: shape {tuple(s.shape)} in the start, {tuple(ft.shape)} fine-tuned")
        out[k] = torch.lerp(s.to(ft.dtype), ft, alpha) if ft.is_floating_point() else ft.clone()
    return out


def interpolate_checkpoint(start: str | Path, finetuned: str | Path, alpha: float, out: str | Path) -> Path:
    """Write ``out``: the fine-tuned checkpoint (vocabulary, size, everything it records) with the weights
    :func:`interpolate_state` gives; no training state (it is a model to deploy, not to resume)."""
    from sdk.model.checkpoint import load_checkpoint_with_meta, save_checkpoint

    s_model, _ = load_checkpoint_with_meta(start)
    f_model, meta = load_checkpoint_with_meta(finetuned)
    if s_model.config != f_model.config:
        raise ValueError(f"{start} and {finetuned} are different architectures; interpolation needs one")
    f_model.load_state_dict(interpolate_state(s_model.state_dict(), f_model.state_dict(), alpha))
    meta = {k: v for k, v in meta.items() if k not in ("train", "format", "format_version")}
    return save_checkpoint(f_model, out, **meta, interpolated={"start": str(start), "alpha": alpha})
