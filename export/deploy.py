"""The exported graph: a folded YOLO-World plus in-graph decoding, images in, scores/boxes out."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sdk.model import STRIDES


class DeployModel(nn.Module):
    """``forward(images) -> (scores, boxes)``.

    images: float32 ``(B, 3, S, S)`` RGB in [0, 1] (letterboxed). scores: ``(B, A, C)`` sigmoid class
    scores (for ``prompt_groups``, the max over a class's prompts); boxes: ``(B, A, 4)`` xyxy in input
    pixels. Anchors level by level (strides 8, 16, 32), row-major. Einsum-free: Conv, Softmax,
    ReduceSum/Max, Gather, elementwise ops only.
    """

    def __init__(self, folded: nn.Module, imgsz: int, reg_max: int = 16,
                 class_columns: list[list[int]] | None = None, num_columns: int = 0) -> None:
        """``class_columns[c]``: the model's text columns that make class c (several prompts: max
        of their scores; a padding prompt's column belongs to no class and is dropped)."""
        super().__init__()
        self.folded = folded
        self.reg_max = reg_max
        points, strides = [], []
        for s in STRIDES:
            n = imgsz // s
            ys, xs = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32),
                                    indexing="ij")
            points.append(torch.stack(((xs.reshape(-1) + 0.5) * s, (ys.reshape(-1) + 0.5) * s), -1))
            strides.append(torch.full((n * n, 1), float(s)))
        self.register_buffer("points", torch.cat(points)[None])  # (1, A, 2)
        self.register_buffer("strides", torch.cat(strides)[None])  # (1, A, 1)
        self.register_buffer("bins", torch.arange(reg_max, dtype=torch.float32).reshape(1, 1, reg_max, 1))
        self.group_width = 0
        identity = class_columns is None or class_columns == [[i] for i in range(num_columns)]
        if not identity:
            # gather (C, G) columns of [logits..., -inf]; short groups point at the -inf column
            self.group_width = max(len(c) for c in class_columns)
            idx = [c + [num_columns] * (self.group_width - len(c)) for c in class_columns]
            self.register_buffer("group_index", torch.tensor(idx).reshape(-1))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.folded(images)
        logits = torch.cat([t.flatten(2) for t in out.cls_logits], 2)  # (B, P, A)
        if self.group_width:
            pad = torch.full_like(logits[:, :1], float("-inf"))
            logits = torch.cat((logits, pad), 1).index_select(1, self.group_index)
            if self.group_width > 1:
                logits = logits.reshape(logits.shape[0], -1, self.group_width, logits.shape[2]).amax(2)
        return logits.sigmoid().transpose(1, 2), self.decode_boxes(out.box_dists)  # (B, A, C), (B, A, 4)

    def decode_boxes(self, box_dists: list[Tensor]) -> Tensor:
        """Per-level DFL logits ``(B, 4R, H, W)`` -> xyxy boxes ``(B, A, 4)`` in input pixels."""
        dists = []
        for t in box_dists:
            b, _, h, w = t.shape
            p = t.reshape(b, 4, self.reg_max, h * w).softmax(2)
            dists.append((p * self.bins).sum(2))  # (B, 4, HW) expected bin, stride units
        ltrb = torch.cat(dists, 2).transpose(1, 2) * self.strides  # (B, A, 4) pixels
        return torch.cat((self.points - ltrb[..., :2], self.points + ltrb[..., 2:]), -1)
