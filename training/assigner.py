"""Task-aligned assigner (TOOD / YOLOv8), with the official YOLO-World settings.

Per GT, the positives are the ``topk`` anchors whose centre lies strictly inside the GT, ranked by the
alignment metric ``t = s^alpha * u^beta`` (s: predicted score of the GT's class, u: CIoU of the
predicted box with the GT, clamped at 0). An anchor claimed by several GTs keeps the one it overlaps
most. Targets are one-hot classes scaled so that, per GT, the best anchor's target equals that GT's
best overlap: ``t * max_u / (max_t + eps)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .boxes import ciou


@dataclass(frozen=True)
class AssignResult:
    """labels ``(B, A)`` int64 (0 where unassigned), boxes ``(B, A, 4)`` xyxy pixels, scores
    ``(B, A, C)`` soft targets, fg_mask ``(B, A)`` bool."""

    labels: Tensor
    boxes: Tensor
    scores: Tensor
    fg_mask: Tensor


def centres_inside(points: Tensor, boxes: Tensor, eps: float = 1e-9) -> Tensor:
    """``(B, M, A)`` bool: anchor centre ``points`` ``(A, 2)`` strictly inside (by more than ``eps``)
    each xyxy box of ``boxes`` ``(B, M, 4)``, padding boxes included."""
    lt = points[None, None] - boxes[:, :, None, :2]
    rb = boxes[:, :, None, 2:] - points[None, None]
    return torch.cat((lt, rb), -1).amin(-1) > eps


class TaskAlignedAssigner:
    def __init__(self, topk: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9):
        self.topk, self.alpha, self.beta, self.eps = topk, alpha, beta, eps

    @torch.no_grad()
    def __call__(self, pred_boxes: Tensor, pred_scores: Tensor, points: Tensor, gt_labels: Tensor,
                 gt_boxes: Tensor, gt_mask: Tensor) -> AssignResult:
        """pred_boxes ``(B, A, 4)`` xyxy pixels; pred_scores ``(B, A, C)`` probabilities; points
        ``(A, 2)`` anchor centres in pixels; gt_labels ``(B, M)`` int64; gt_boxes ``(B, M, 4)``;
        gt_mask ``(B, M)`` bool (False for padding GTs)."""
        b, a, c = pred_scores.shape
        m = gt_boxes.shape[1]
        if m == 0:
            return AssignResult(torch.zeros(b, a, dtype=torch.long, device=pred_scores.device),
                                torch.zeros_like(pred_boxes), torch.zeros_like(pred_scores),
                                torch.zeros(b, a, dtype=torch.bool, device=pred_scores.device))
        labels = gt_labels.clamp(min=0)
        # (B, M, A): predicted score of each GT's class at each anchor, and CIoU overlaps
        scores = pred_scores.transpose(1, 2).gather(1, labels[:, :, None].expand(-1, -1, a))
        overlaps = ciou(pred_boxes[:, None], gt_boxes[:, :, None]).clamp(min=0)
        metric = scores.pow(self.alpha) * overlaps.pow(self.beta)

        in_gt = centres_inside(points, gt_boxes, self.eps)

        valid = gt_mask[:, :, None]
        k = min(self.topk, a)
        top_idx = (metric * in_gt).topk(k, dim=-1).indices  # (B, M, k)
        # padding GTs point every pick at anchor 0 and then count it k times -> discarded below
        top_idx = torch.where(valid.expand(-1, -1, k), top_idx, torch.zeros_like(top_idx))
        in_topk = F.one_hot(top_idx, a).sum(-2)
        in_topk = torch.where(in_topk > 1, torch.zeros_like(in_topk), in_topk)
        pos = in_topk.to(metric.dtype) * in_gt * valid  # (B, M, A)

        fg_count = pos.sum(1)  # (B, A)
        if fg_count.max() > 1:  # anchors claimed by several GTs keep the most overlapping one
            best = F.one_hot(overlaps.argmax(1), m).transpose(1, 2).to(pos.dtype)
            pos = torch.where((fg_count[:, None] > 1).expand(-1, m, -1), best, pos)
            fg_count = pos.sum(1)
        gt_index = pos.argmax(1)  # (B, A)
        fg_mask = fg_count > 0

        assigned_labels = labels.gather(1, gt_index)
        assigned_boxes = gt_boxes.gather(1, gt_index[..., None].expand(-1, -1, 4))
        target = F.one_hot(assigned_labels, c).to(pred_scores.dtype) * fg_mask[..., None]

        metric = metric * pos
        max_metric = metric.amax(-1, keepdim=True)  # (B, M, 1)
        max_overlap = (overlaps * pos).amax(-1, keepdim=True)
        norm = (metric * max_overlap / (max_metric + self.eps)).amax(1)  # (B, A)
        return AssignResult(assigned_labels, assigned_boxes, target * norm[..., None], fg_mask)
