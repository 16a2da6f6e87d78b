"""YOLO-World training loss: BCE on region-text logits, CIoU on boxes, DFL on box distributions.

Official weights (mmyolo YOLOv8 head as used by YOLO-World): cls 0.5, box 7.5, DFL 1.5 / 4; each
normalised by the sum of target scores and multiplied by (images per process x world size), so DDP's
gradient averaging reproduces the single-process loss on the combined batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from sdk.model import STRIDES, HeadOutputs
from sdk.model.boxes import anchor_points, dfl_expectation, distances_to_boxes

from .assigner import TaskAlignedAssigner, centres_inside
from .boxes import boxes_to_distances, ciou
from .keep import binary_kl


@dataclass(frozen=True)
class LossWeights:
    cls: float = 0.5
    box: float = 7.5
    dfl: float = 1.5 / 4


def dfl_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Distribution focal loss per element: logits ``(K, R)``, continuous targets ``(K,)`` in
    [0, R - 1); cross-entropy to the two neighbouring bins weighted by proximity -> ``(K,)``."""
    left = target.long()
    w_right = target - left.float()
    return (F.cross_entropy(logits, left, reduction="none") * (1 - w_right)
            + F.cross_entropy(logits, left + 1, reduction="none") * w_right)


def per_anchor(levels: list[Tensor]) -> Tensor:
    """Per-level maps ``(B, C, h, w)`` -> float32 ``(B, A, C)``, anchors level by level, row-major (the
    order of ``sdk.model.boxes.anchor_points``)."""
    return torch.cat([t.flatten(2) for t in levels], 2).transpose(1, 2).float()


class YoloWorldLoss:
    """``loss(outputs, gt_labels, gt_boxes, gt_mask, text_mask) -> (total, parts)``.

    gt_labels ``(B, M)`` int64 indices into the image's texts; gt_boxes ``(B, M, 4)`` xyxy input
    pixels; gt_mask ``(B, M)`` bool; text_mask ``(B, T)`` bool, False for padding texts (only used
    when ``mask_padded_texts``: official code up to b1b09f2 trains padding texts as negatives).
    """

    def __init__(self, reg_max: int = 16, weights: LossWeights = LossWeights(),
                 assigner: TaskAlignedAssigner | None = None, world_size: int = 1,
                 mask_padded_texts: bool = False) -> None:
        self.reg_max = reg_max
        self.weights = weights
        self.assigner = assigner or TaskAlignedAssigner()
        self.world_size = world_size
        self.mask_padded_texts = mask_padded_texts

    def __call__(self, out: HeadOutputs, gt_labels: Tensor, gt_boxes: Tensor, gt_mask: Tensor,
                 text_mask: Tensor | None = None, kept: tuple[list[Tensor], list[Tensor]] | None = None
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        """``kept``: (student, teacher) logits of extra text slots per level ``(B, K, h, w)`` (``--keep-
        vocabulary``): their binary KL, normalised and weighted as the classification loss, is the part
        ``keep``."""
        b = out.cls_logits[0].shape[0]
        feat_hw = [tuple(t.shape[2:]) for t in out.cls_logits]
        device = out.cls_logits[0].device
        points, strides = anchor_points(feat_hw, STRIDES, device)  # (A, 2), (A, 1)
        cls_logits = per_anchor(out.cls_logits)  # (B, A, T)
        dists = per_anchor(out.box_dists)  # (B, A, 4R)
        dists = dists.reshape(b, -1, 4, self.reg_max)
        ltrb = dfl_expectation(dists, -1)  # (B, A, 4) stride units
        pred_boxes = distances_to_boxes(points, ltrb * strides)  # pixels

        assigned = self.assigner(pred_boxes.detach(), cls_logits.detach().sigmoid(), points,
                                 gt_labels, gt_boxes, gt_mask)
        target_sum = assigned.scores.sum()
        if self.world_size > 1 and dist.is_initialized():
            # The mean over ranks (official: each GPU's own sum): DDP's gradient average then equals
            # one process on the combined batch exactly.
            target_sum = target_sum.clone()
            dist.all_reduce(target_sum)
            target_sum = target_sum / self.world_size
        target_sum = target_sum.clamp(min=1)

        bce = F.binary_cross_entropy_with_logits(cls_logits, assigned.scores, reduction="none")
        if self.mask_padded_texts and text_mask is not None:
            bce = bce * text_mask[:, None, :]
        loss_cls = bce.sum() / target_sum

        fg = assigned.fg_mask
        if fg.any():
            weight = assigned.scores.sum(-1)[fg]  # (P,)
            pos_pred = (pred_boxes / strides)[fg]
            pos_target = (assigned.boxes / strides)[fg]
            loss_box = ((1 - ciou(pos_pred, pos_target)) * weight).sum() / target_sum
            target_ltrb = boxes_to_distances((points / strides).expand(b, -1, -1)[fg], pos_target,
                                             self.reg_max - 1)
            per = dfl_loss(dists[fg].reshape(-1, self.reg_max), target_ltrb.reshape(-1))
            loss_dfl = (per * weight.repeat_interleave(4)).sum() / target_sum
        else:  # keep the graph connected so DDP sees every parameter used
            loss_box = loss_dfl = dists.sum() * 0.0
        scale = b * self.world_size
        parts = {"cls": loss_cls * self.weights.cls * scale, "box": loss_box * self.weights.box * scale,
                 "dfl": loss_dfl * self.weights.dfl * scale}
        if kept is not None:
            parts["keep"] = self.keep_loss(kept, points, gt_boxes, gt_mask) / target_sum * self.weights.cls * scale
        return sum(parts.values()), {k: v.detach() for k, v in parts.items()}  # type: ignore[return-value]

    @staticmethod
    def keep_loss(kept: tuple[list[Tensor], list[Tensor]], points: Tensor, gt_boxes: Tensor, gt_mask: Tensor
                  ) -> Tensor:
        """Sum of the kept slots' binary KL to the teacher over the anchors outside every labelled box.
        Inside one, the labels win: the starting model's opinion there (a new object scored as a similar
        old class) is what fine-tuning must change; kept, it held the new classes at mAP50:95 0.87
        against plain's 0.98 (benchmarks/keep_vocabulary.py)."""
        student, teacher = per_anchor(kept[0]), per_anchor(kept[1])  # (B, A, K)
        inside = (centres_inside(points, gt_boxes) & gt_mask[..., None]).any(1)  # (B, A): the assigner's rule
        return (binary_kl(student, teacher).sum(-1) * ~inside).sum()
