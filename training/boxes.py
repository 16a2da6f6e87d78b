"""Box geometry for training: CIoU (YOLOv5 form, as mmyolo's ``bbox_overlaps(iou_mode='ciou')``) and
distance encoding (the DFL targets). Boxes are xyxy; the anchor grid and decoding are ``sdk.model.boxes``."""

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


def boxes_to_distances(points: Tensor, boxes: Tensor, max_dist: float, eps: float = 0.01) -> Tensor:
    """xyxy boxes -> (l, t, r, b) distances clamped to ``[0, max_dist - eps]`` (DFL targets)."""
    ltrb = torch.cat((points - boxes[..., :2], boxes[..., 2:] - points), -1)
    return ltrb.clamp(min=0, max=max_dist - eps)
