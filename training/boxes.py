"""Box geometry for training: CIoU (YOLOv5 form, as mmyolo's ``bbox_overlaps(iou_mode='ciou')``),
anchor points and distance encoding. Boxes are xyxy."""

from __future__ import annotations

import math

import torch
from torch import Tensor

CIOU_EPS = 1e-7


def ciou(box1: Tensor, box2: Tensor, eps: float = CIOU_EPS) -> Tensor:
    """Complete IoU of broadcastable xyxy boxes ``(..., 4)`` -> ``(...)`` in [-1, 1].

    ``IoU - rho^2 / c^2 - alpha * v`` with v the aspect-ratio term and alpha = v / (v - IoU + 1 + eps)
    (alpha carries no gradient).
    """
    b1x1, b1y1, b1x2, b1y2 = box1.unbind(-1)
    b2x1, b2y1, b2x2, b2y2 = box2.unbind(-1)
    w1, h1 = b1x2 - b1x1, b1y2 - b1y1 + eps
    w2, h2 = b2x2 - b2x1, b2y2 - b2y1 + eps
    overlap = ((torch.minimum(b1x2, b2x2) - torch.maximum(b1x1, b2x1)).clamp(min=0)
               * (torch.minimum(b1y2, b2y2) - torch.maximum(b1y1, b2y1)).clamp(min=0))
    union = w1 * h1 + w2 * h2 - overlap + eps
    iou = overlap / union
    cw = (torch.maximum(b1x2, b2x2) - torch.minimum(b1x1, b2x1)).clamp(min=0)
    ch = (torch.maximum(b1y2, b2y2) - torch.minimum(b1y1, b2y1)).clamp(min=0)
    c2 = cw**2 + ch**2 + eps
    rho2 = ((b2x1 + b2x2 - b1x1 - b1x2) ** 2 + (b2y1 + b2y2 - b1y1 - b1y2) ** 2) / 4
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return (iou - (rho2 / c2 + alpha * v)).clamp(min=-1.0, max=1.0)


def anchor_points(feat_hw: list[tuple[int, int]], strides: tuple[int, ...], device: torch.device | None = None
                  ) -> tuple[Tensor, Tensor]:
    """Anchor centres ``(A, 2)`` (x, y) in input pixels and strides ``(A, 1)``, level-major,
    row-major, centres at ``(i + 0.5) * stride`` (same order as ``sdk.postprocess``)."""
    points, stride_list = [], []
    for (h, w), s in zip(feat_hw, strides, strict=True):
        ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                                torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
        points.append(torch.stack(((xs.reshape(-1) + 0.5) * s, (ys.reshape(-1) + 0.5) * s), -1))
        stride_list.append(torch.full((h * w, 1), float(s), device=device))
    return torch.cat(points), torch.cat(stride_list)


def distances_to_boxes(points: Tensor, ltrb: Tensor) -> Tensor:
    """(l, t, r, b) distances from points -> xyxy boxes (same units)."""
    return torch.cat((points - ltrb[..., :2], points + ltrb[..., 2:]), -1)


def boxes_to_distances(points: Tensor, boxes: Tensor, max_dist: float, eps: float = 0.01) -> Tensor:
    """xyxy boxes -> (l, t, r, b) distances clamped to ``[0, max_dist - eps]`` (DFL targets)."""
    ltrb = torch.cat((points - boxes[..., :2], boxes[..., 2:] - points), -1)
    return ltrb.clamp(min=0, max=max_dist - eps)
