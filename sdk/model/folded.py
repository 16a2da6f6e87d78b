"""Vocabulary-folded YOLO-World: text embeddings become weights, no text encoder, one image input.

``fold_text_embeddings(model, text_embeds)`` returns a :class:`FoldedYoloWorld` that computes the same
head outputs as ``model(images, text_embeds)`` for that fixed vocabulary:

* VL-PAN max-sigmoid blocks: ``guide_fc(text)`` becomes the weight of a grouped 1x1 conv (one group
  per head, N outputs each) followed by a max over the N outputs.
* BN contrastive head (v2): the classification branch's last 1x1 conv, the BatchNorm and the
  text similarity ``exp(logit_scale) * <., t/|t|> + bias`` are three affine maps; they become one 1x1
  conv ``cls_channels -> N``. The L2 head (v1) keeps its normalisation, with the text as a 1x1 conv.
* v1's image-pooling attention updates the text per image, so its bottom-up blocks keep the matmul
  form with the per-image text; the query projection of the constant text is precomputed.
* Optionally every Conv + BatchNorm pair is fused into one conv.
Nothing here edits state-dict keys: the folded modules are built from the trained modules' tensors.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import ConvBNAct, HeadOutputs, MaxSigmoidAttnBlock

if TYPE_CHECKING:  # yoloworld imports this module (fold_text_embeddings)
    from .yoloworld import YoloWorld


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """In place: every :class:`ConvBNAct` becomes conv (with bias) + activation (BN folded)."""
    for m in module.modules():
        if isinstance(m, ConvBNAct) and isinstance(m.bn, nn.BatchNorm2d):
            bn, conv = m.bn, m.conv
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                              conv.padding, groups=conv.groups, bias=True).to(conv.weight.device)
            with torch.no_grad():
                fused.weight.copy_(conv.weight * scale[:, None, None, None])
                fused.bias.copy_(bn.bias - bn.running_mean * scale)
            m.conv, m.bn = fused, nn.Identity()
    return module


class FoldedMaxSigmoid(nn.Module):
    """MaxSigmoidAttnBlock with its vocabulary folded into a grouped 1x1 conv (no text input)."""

    def __init__(self, block: MaxSigmoidAttnBlock, text: Tensor) -> None:
        super().__init__()
        m, d = block.num_heads, block.head_channels
        with torch.no_grad():
            guide = block.guide_fc(text)  # (N, E)
            weight = guide.unflatten(1, (m, d)).transpose(0, 1).reshape(-1, d, 1, 1)  # (m*N, d, 1, 1)
        self.num_heads, self.head_channels = m, d
        self.register_buffer("guide_weight", weight.contiguous())
        self.register_buffer("bias", block.bias.detach().clone())
        self.project_conv = block.project_conv

    def forward(self, x: Tensor, text: Tensor | None = None, text_mask: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        m = self.num_heads
        attn = F.conv2d(x, self.guide_weight, groups=m)  # (B, m*N, H, W)
        attn = attn.reshape(b, m, -1, h, w).amax(dim=2)  # max over the vocabulary
        attn = (attn / math.sqrt(self.head_channels) + self.bias[None, :, None, None]).sigmoid()
        out = self.project_conv(x).reshape(b, m, c // m, h, w) * attn[:, :, None]
        return out.reshape(b, c, h, w)


class FoldedClassifier(nn.Module):
    """Classification branch with the text folded in: ``(B, C_in, H, W) -> (B, N, H, W)`` logits."""

    def __init__(self, cls_pred: nn.Sequential, contrast: nn.Module, text: Tensor) -> None:
        super().__init__()
        t = F.normalize(text, dim=-1, p=2) * contrast.logit_scale.exp()  # (N, D)
        last: nn.Conv2d = cls_pred[-1]
        self.stem = nn.Sequential(*list(cls_pred)[:-1])
        self.l2 = contrast.norm is None
        with torch.no_grad():
            if self.l2:  # v1: normalise the D-dim embedding, then similarity as a 1x1 conv
                self.embed = last
                self.sim = nn.Conv2d(t.shape[1], t.shape[0], 1).to(t.device)
                self.sim.weight.copy_(t[:, :, None, None])
                self.sim.bias.fill_(float(contrast.bias))
            else:  # v2: conv -> BN -> similarity are affine: one conv C_in -> N
                bn = contrast.norm
                s = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (D,)
                w_text = t * s  # (N, D)
                b_text = t @ (bn.bias - bn.running_mean * s) + contrast.bias  # (N,)
                w = last.weight[:, :, 0, 0]  # (D, C_in)
                self.embed = None
                self.sim = nn.Conv2d(w.shape[1], t.shape[0], 1).to(t.device)
                self.sim.weight.copy_((w_text @ w)[:, :, None, None])
                self.sim.bias.copy_(w_text @ last.bias + b_text)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        if self.l2:
            x = F.normalize(self.embed(x), dim=1, p=2)
        return self.sim(x)


class FoldedYoloWorld(nn.Module):
    """Image-only YOLO-World for one vocabulary: ``forward(images) -> HeadOutputs``."""

    def __init__(self, model: YoloWorld, text_embeds: Tensor, fuse_bn: bool = True) -> None:
        super().__init__()
        if text_embeds.dim() != 2 or text_embeds.shape[1] != model.config.text_channels:
            raise ValueError(f"text_embeds must be (N, {model.config.text_channels}), got "
                             f"{tuple(text_embeds.shape)}")
        model = copy.deepcopy(model).eval()
        model.text_encoder = None
        text = text_embeds.detach().to(next(model.parameters()).device).float()
        self.config = model.config
        self.num_classes = text.shape[0]
        self.backbone = model.backbone
        neck = model.neck
        dual = neck.text_enhancer is not None
        layers = list(neck.top_down_layers) + ([] if dual else list(neck.bottom_up_layers))
        for layer in layers:
            if isinstance(layer.attn_block, MaxSigmoidAttnBlock):
                layer.attn_block = FoldedMaxSigmoid(layer.attn_block, text)
        self.neck = neck
        # v1 only: the text that the image-pooling attention updates per image (no batch axis)
        self.register_buffer("text", text if dual else torch.zeros(0))
        head = model.head
        self.reg_preds = head.reg_preds
        self.classifiers = nn.ModuleList(
            FoldedClassifier(c, k, text) for c, k in zip(head.cls_preds, head.cls_contrasts, strict=True))
        if fuse_bn:
            fuse_conv_bn(self)
        self.eval()

    def forward(self, images: Tensor) -> HeadOutputs:
        """images ``(B, 3, H, W)`` RGB [0, 1] -> raw head outputs (as ``YoloWorld.forward``)."""
        feats = self.neck(self.backbone(images), self.text if self.text.numel() else None)
        return HeadOutputs([c(x) for c, x in zip(self.classifiers, feats, strict=True)],
                           [r(x) for r, x in zip(self.reg_preds, feats, strict=True)])


def fold_text_embeddings(model: YoloWorld, text_embeds: Tensor, fuse_bn: bool = True) -> FoldedYoloWorld:
    """See the module docstring. ``text_embeds``: ``(N, D)`` L2-normalised (``encode_text``)."""
    return FoldedYoloWorld(model, text_embeds, fuse_bn)
