"""Anchor grid and DFL box decoding in torch, shared by the training loss and the exported graph.

Level-major, row-major anchors with centres at ``(i + 0.5) * stride`` (the order ``sdk.postprocess``
uses in numpy); boxes are xyxy.
"""

from __future__ import annotations

import torch
from torch import Tensor


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


def dfl_bins(reg_max: int, dim: int, ndim: int, device: torch.device | None = None) -> Tensor:
    """0..reg_max-1 float32, shaped to broadcast along ``dim`` of an ``ndim``-d tensor."""
    shape = [1] * ndim
    shape[dim] = reg_max
    return torch.arange(reg_max, device=device, dtype=torch.float32).reshape(shape)


def dfl_expectation(logits: Tensor, dim: int, bins: Tensor | None = None) -> Tensor:
    """Expected bin of DFL logits along ``dim`` (softmax over the ``reg_max`` bins, then the weighted sum
    with :func:`dfl_bins`, or ``bins``): distances in stride units. Softmax, Mul and ReduceSum: plain
    ONNX ops in an exported decode tail (no MatMul/Einsum)."""
    if bins is None:
        bins = dfl_bins(logits.shape[dim], dim, logits.dim(), logits.device)
    return (logits.softmax(dim) * bins).sum(dim)


__all__ = ["anchor_points", "dfl_bins", "dfl_expectation", "distances_to_boxes"]
