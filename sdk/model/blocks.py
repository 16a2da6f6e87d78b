"""Building blocks of YOLO-World's image side, named so official mmyolo state dicts map 1:1.

Every BatchNorm uses eps 1e-3 and momentum 0.03 (mmyolo), not PyTorch's defaults: the eps
difference alone changes outputs measurably.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)



class HeadOutputs(NamedTuple):
    """Raw head outputs, one tensor per level (strides 8, 16, 32), float32.

    cls_logits: ``(B, N, H/s, W/s)`` region-text similarity logits before sigmoid.
    box_dists: ``(B, 4 * reg_max, H/s, W/s)`` DFL logits before softmax; channel groups of
        ``reg_max`` bins in (left, top, right, bottom) order, distances in stride units.
    """

    cls_logits: list[Tensor]
    box_dists: list[Tensor]

class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm -> optional SiLU; mmcv ``ConvModule`` key layout ``conv``/``bn``."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = batch_norm(cout)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class ConvBias(nn.Module):
    """1x1 Conv2d with bias, no norm, no activation (image-pooling projections, key ``conv``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Bottleneck(nn.Module):
    """Two 3x3 ConvBNAct; residual only in the backbone (``add_identity``)."""

    def __init__(self, channels: int, add_identity: bool) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(channels, channels, 3)
        self.conv2 = ConvBNAct(channels, channels, 3)
        self.add_identity = add_identity

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(self.conv1(x))
        return x + y if self.add_identity else y


class CSPLayerWithTwoConv(nn.Module):
    """YOLOv8 C2f: split, chain of bottlenecks, concat every intermediate, fuse."""

    def __init__(self, cin: int, cout: int, num_blocks: int, add_identity: bool, extra: int = 0):
        super().__init__()
        self.mid = int(cout * 0.5)
        self.main_conv = ConvBNAct(cin, 2 * self.mid, 1)
        # `extra` more mid-wide inputs to final_conv: the text-guided variants append one branch.
        self.final_conv = ConvBNAct((2 + num_blocks + extra) * self.mid, cout, 1)
        self.blocks = nn.ModuleList(Bottleneck(self.mid, add_identity) for _ in range(num_blocks))

    def _branches(self, x: Tensor) -> list[Tensor]:
        ys = list(self.main_conv(x).split((self.mid, self.mid), 1))
        for block in self.blocks:
            ys.append(block(ys[-1]))
        return ys

    def forward(self, x: Tensor) -> Tensor:
        return self.final_conv(torch.cat(self._branches(x), 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max-pools."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = channels // 2
        self.conv1 = ConvBNAct(channels, mid, 1)
        self.poolings = nn.MaxPool2d(5, 1, 2)
        self.conv2 = ConvBNAct(4 * mid, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        u = self.conv1(x)
        p1 = self.poolings(u)
        p2 = self.poolings(p1)
        return self.conv2(torch.cat((u, p1, p2, self.poolings(p2)), 1))


class MaxSigmoidAttnBlock(nn.Module):
    """Text-guided max-sigmoid attention of the VL-PAN (T-CSPLayer branch).

    For head m and pixel p: ``s = sigmoid(max_n <x_m(p), guide_fc(t_n)_m> / sqrt(d) + bias_m)``;
    the output is ``project_conv(x)`` with head m's channel group scaled by ``s``. Channels map to
    heads contiguously (``c // (C / h)``). The max runs over every text, padding texts included, unless
    ``text_mask`` ``(N,)`` bool marks the slots in use (an open-vocabulary export's padded vocabulary).
    """

    def __init__(self, channels: int, guide_channels: int, embed_channels: int, num_heads: int):
        super().__init__()
        if embed_channels != channels:
            # Never the case in released models (embed == mid channels, 32 per head).
            raise NotImplementedError("embed_channels != channels (embed_conv) is not supported")
        self.num_heads = num_heads
        self.head_channels = embed_channels // num_heads
        self.guide_fc = nn.Linear(guide_channels, embed_channels)
        self.bias = nn.Parameter(torch.zeros(num_heads))
        self.project_conv = ConvBNAct(channels, channels, 3, act=False)

    def forward(self, x: Tensor, text: Tensor, text_mask: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        m, d = self.num_heads, self.head_channels
        guide = self.guide_fc(text)  # (N, E) or (B, N, E)
        if text_mask is not None:
            # MatMul form (the text is an input, not weights); masked slots can never be the max
            guide = (guide[None] if guide.dim() == 2 else guide).unflatten(-1, (m, d)).transpose(1, 2)  # (1|B, m, N, d)
            attn = torch.matmul(guide, x.reshape(b, m, d, h * w))  # (B, m, N, HW)
            attn = attn.masked_fill(~text_mask[:, None], float("-inf")).amax(dim=2).reshape(b, m, h, w)
        elif guide.dim() == 2:
            # One vocabulary for the batch: a grouped 1x1 conv (group m = head m's d channels),
            # the same per-image computation at any batch size, and the form export folds into.
            weight = guide.unflatten(1, (m, d)).transpose(0, 1).reshape(-1, d, 1, 1)  # (m*N, d, 1, 1)
            attn = F.conv2d(x, weight, groups=m).unflatten(1, (m, -1)).amax(dim=2)  # (B, m, H, W)
        else:
            guide = guide.unflatten(-1, (m, d)).transpose(1, 2)  # (B, m, N, d)
            attn = torch.matmul(guide, x.reshape(b, m, d, h * w)).amax(dim=2)  # (B, m, HW)
            attn = attn.reshape(b, m, h, w)
        attn = (attn / math.sqrt(d) + self.bias[None, :, None, None]).sigmoid()
        out = self.project_conv(x).reshape(b, m, c // m, h, w) * attn[:, :, None]
        return out.reshape(b, c, h, w)


class ProjectOnly(nn.Module):
    """The efficient neck's stand-in for the attention block: 3x3 conv + BN, text ignored."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.project_conv = ConvBNAct(channels, channels, 3, act=False)

    def forward(self, x: Tensor, text: Tensor | None = None, text_mask: Tensor | None = None) -> Tensor:
        return self.project_conv(x)


class TextCSPLayer(CSPLayerWithTwoConv):
    """C2f plus one attention branch on the last bottleneck output (MaxSigmoid or efficient)."""

    def __init__(self, cin: int, cout: int, num_blocks: int, guide_channels: int,
                 embed_channels: int, num_heads: int, efficient: bool) -> None:
        super().__init__(cin, cout, num_blocks, add_identity=False, extra=1)
        self.attn_block: nn.Module = (
            ProjectOnly(self.mid) if efficient
            else MaxSigmoidAttnBlock(self.mid, guide_channels, embed_channels, num_heads)
        )

    def forward(self, x: Tensor, text: Tensor, text_mask: Tensor | None = None) -> Tensor:  # type: ignore[override]
        ys = self._branches(x)
        ys.append(self.attn_block(ys[-1], text, text_mask))
        return self.final_conv(torch.cat(ys, 1))


def adaptive_max_pool(x: Tensor, size: int) -> Tensor:
    """``adaptive_max_pool2d(x, size).flatten(2)`` as explicit slices: bin i spans
    ``[floor(i S / size), ceil((i + 1) S / size))`` (overlapping when S % size != 0). Same values;
    exports to plain Slice/ReduceMax for any input size (ONNX's adaptive pooling needs S % size == 0).
    -> ``(B, C, size * size)``, row-major bins."""
    h, w = x.shape[2], x.shape[3]
    bins = []
    for i in range(size):
        for j in range(size):
            # ceil as (a + size - 1) // size: non-negative operands, so a traced integer division
            # (ONNX Div truncates) is exact too
            y0, y1 = (i * h) // size, ((i + 1) * h + size - 1) // size
            x0, x1 = (j * w) // size, ((j + 1) * w + size - 1) // size
            bins.append(x[:, :, y0:y1, x0:x1].amax(dim=(2, 3)))
    return torch.stack(bins, dim=2)


class ImagePoolingAttention(nn.Module):
    """v1 text enhancer: texts attend to 3x3 max-pooled tokens of the three feature maps.

    ``t' = proj(softmax(q k^T / sqrt(d)) v) + t`` with q from the texts and k, v from 27 image tokens.
    """

    def __init__(self, image_channels: tuple[int, ...], text_channels: int, embed_channels: int,
                 num_heads: int, pool_size: int = 3) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_channels = embed_channels // num_heads
        self.pool_size = pool_size
        self.projections = nn.ModuleList(ConvBias(c, embed_channels) for c in image_channels)
        self.query = nn.Sequential(nn.LayerNorm(text_channels), nn.Linear(text_channels, embed_channels))
        self.key = nn.Sequential(nn.LayerNorm(embed_channels), nn.Linear(embed_channels, embed_channels))
        self.value = nn.Sequential(nn.LayerNorm(embed_channels), nn.Linear(embed_channels, embed_channels))
        self.proj = nn.Linear(embed_channels, text_channels)

    def forward(self, text: Tensor, feats: list[Tensor]) -> Tensor:
        """text (N, G) or (B, N, G); feats: [P3, T4, C5] -> enhanced text (B, N, G)."""
        b = feats[0].shape[0]
        if text.dim() == 2:
            text = text.expand(b, -1, -1)
        pooled = [adaptive_max_pool(proj(x), self.pool_size) for proj, x in zip(self.projections, feats, strict=True)]
        tokens = torch.cat(pooled, 2).transpose(1, 2)  # (B, 27, E)
        m, d = self.num_heads, self.head_channels
        q = self.query(text).unflatten(-1, (m, d)).transpose(1, 2)  # (B, m, N, d)
        k = self.key(tokens).unflatten(-1, (m, d)).transpose(1, 2)  # (B, m, 27, d)
        v = self.value(tokens).unflatten(-1, (m, d)).transpose(1, 2)  # (B, m, 27, d)
        attn = (torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)).softmax(-1)  # (B, m, N, 27)
        out = torch.matmul(attn, v).transpose(1, 2).flatten(2)  # (B, N, E)
        return self.proj(out) + text
