"""The exported graph: a folded YOLO-World plus in-graph decoding, images in, scores/boxes out."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sdk.model import STRIDES
from sdk.model.boxes import anchor_points, dfl_bins, dfl_expectation, distances_to_boxes


class DeployModel(nn.Module):
    """``forward(images) -> (scores, boxes)``.

    images: float32 ``(B, 3, H, W)`` RGB in [0, 1] (letterboxed; ``H = W = imgsz`` unless ``dynamic_hw``,
    where any multiples of 32 and the anchors are computed in the graph). scores: ``(B, A, C)`` sigmoid class
    scores (for ``prompt_groups``, the max over a class's prompts); boxes: ``(B, A, 4)`` xyxy in input
    pixels. Anchors level by level (strides 8, 16, 32), row-major. Einsum-free: Conv, Softmax,
    ReduceSum/Max, Gather, elementwise ops only.
    """

    def __init__(self, folded: nn.Module, imgsz: int, reg_max: int = 16,
                 class_columns: list[list[int]] | None = None, num_columns: int = 0, dynamic_hw: bool = False) -> None:
        """``class_columns[c]``: the model's text columns that make class c (several prompts: max
        of their scores; a padding prompt's column belongs to no class and is dropped)."""
        super().__init__()
        self.folded = folded
        self.reg_max = reg_max
        self.dynamic_hw = dynamic_hw
        points, strides = anchor_points([(imgsz // s, imgsz // s) for s in STRIDES], STRIDES)
        self.register_buffer("points", points[None])  # (1, A, 2)
        self.register_buffer("strides", strides[None])  # (1, A, 1)
        self.register_buffer("bins", dfl_bins(reg_max, 2, 4))  # (1, 1, R, 1): a named initializer
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
            dists.append(dfl_expectation(t.reshape(b, 4, self.reg_max, h * w), 2, self.bins))  # (B, 4, HW)
        points, strides = self.points, self.strides
        if self.dynamic_hw:  # traced from the feature-map sizes: Shape -> Range in the graph
            points, strides = (p[None] for p in anchor_points([t.shape[2:] for t in box_dists], STRIDES))
        ltrb = torch.cat(dists, 2).transpose(1, 2) * strides  # (B, A, 4) pixels
        return distances_to_boxes(points, ltrb)
