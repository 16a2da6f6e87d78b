"""YOLO-World in plain PyTorch: YOLOv8 CSPDarknet backbone -> (dual) VL-PAN neck -> contrastive head.

Clean-room re-implementation of the detector released by AILab-CVC/YOLO-World (arXiv 2401.17270;
mmyolo 0.6.0 building blocks, reference commit b1b09f2). Module names below the four prefixes
(``backbone``, ``text_encoder``, ``neck``, ``head``) equal the official ones, so official checkpoints
load through a prefix map (``checkpoint.py``). The forward pass takes L2-normalised text embeddings
``(N, D)`` shared by the batch or ``(B, N, D)`` per image and returns raw head outputs.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import (
    SPPF,
    ConvBNAct,
    CSPLayerWithTwoConv,
    HeadOutputs,
    ImagePoolingAttention,
    TextCSPLayer,
    batch_norm,
)
from .config import YoloWorldConfig
from .text_encoder import CLIPTextEncoder


class Backbone(nn.Module):
    """YOLOv8 CSPDarknet (P5); returns C3, C4, C5 (strides 8, 16, 32)."""

    def __init__(self, cfg: YoloWorldConfig) -> None:
        super().__init__()
        c = cfg.stage_channels
        n = cfg.blocks_per_stage
        self.stem = ConvBNAct(3, c[0], 3, 2)
        for i in range(4):
            layers: list[nn.Module] = [
                ConvBNAct(c[i], c[i + 1], 3, 2),
                CSPLayerWithTwoConv(c[i + 1], c[i + 1], n[i], add_identity=True),
            ]
            if i == 3:
                layers.append(SPPF(c[i + 1]))
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))

    def forward(self, x: Tensor) -> list[Tensor]:
        stage1, stage2, stage3, stage4 = (cast(nn.Module, getattr(self, f"stage{i}")) for i in range(1, 5))
        x = stage2(stage1(self.stem(x)))
        c4 = stage3(x)
        return [x, c4, stage4(c4)]


class VLPAN(nn.Module):
    """YOLOWorldPAFPN (``dual=False``) or YOLOWorldDualPAFPN with image-pooling attention."""

    def __init__(self, cfg: YoloWorldConfig) -> None:
        super().__init__()
        c3, c4, c5 = cfg.feature_channels
        e, h = cfg.neck_embed_channels, cfg.neck_num_heads
        efficient = cfg.neck == "efficient"

        def block(cin: int, cout: int, k: int) -> TextCSPLayer:
            return TextCSPLayer(cin, cout, cfg.neck_blocks, cfg.text_channels, e[k], h[k], efficient)

        self.top_down_layers = nn.ModuleList([block(c5 + c4, c4, 1), block(c4 + c3, c3, 0)])
        self.downsample_layers = nn.ModuleList([ConvBNAct(c3, c3, 3, 2), ConvBNAct(c4, c4, 3, 2)])
        self.bottom_up_layers = nn.ModuleList([block(c3 + c4, c4, 1), block(c4 + c5, c5, 2)])
        self.text_enhancer = (
            ImagePoolingAttention((c3, c4, c5), cfg.text_channels, cfg.ipool_channels, cfg.ipool_heads)
            if cfg.neck == "dual_vlpan" else None
        )

    def forward(self, feats: list[Tensor], text: Tensor, text_mask: Tensor | None = None) -> list[Tensor]:
        """``text_mask`` ``(N,)`` bool: the slots in use; the others never win a max-sigmoid attention
        (the image-pooling attention updates every text on its own, so they change no other)."""
        c3, c4, c5 = feats
        t4 = self.top_down_layers[0](torch.cat((F.interpolate(c5, scale_factor=2.0), c4), 1), text, text_mask)
        p3 = self.top_down_layers[1](torch.cat((F.interpolate(t4, scale_factor=2.0), c3), 1), text, text_mask)
        if self.text_enhancer is not None:
            text = self.text_enhancer(text, [p3, t4, c5])  # only the bottom-up path sees it
        p4 = self.bottom_up_layers[0](torch.cat((self.downsample_layers[0](p3), t4), 1), text, text_mask)
        p5 = self.bottom_up_layers[1](torch.cat((self.downsample_layers[1](p4), c5), 1), text, text_mask)
        return [p3, p4, p5]


class ContrastiveHead(nn.Module):
    """Region-text logits ``exp(logit_scale) * <f(x), t/|t|> + bias``.

    ``f`` is L2 normalisation over channels (v1, ``use_bn=False``) or BatchNorm (v2).
    """

    def __init__(self, embed_dims: int, use_bn: bool) -> None:
        super().__init__()
        self.norm = batch_norm(embed_dims) if use_bn else None
        self.bias = nn.Parameter(torch.tensor(0.0))
        self.logit_scale = nn.Parameter(torch.tensor(-1.0 if use_bn else 2.6592600))  # ln(1/0.07)

    def forward(self, x: Tensor, text: Tensor) -> Tensor:
        """x (B, D, H, W), text (N, D) or (B, N, D) -> logits (B, N, H, W)."""
        b, d, h, w = x.shape
        x = self.norm(x) if self.norm is not None else F.normalize(x, dim=1, p=2)
        text = F.normalize(text, dim=-1, p=2)
        if text.dim() == 2:  # shared vocabulary: a 1x1 conv, batch-size invariant
            logits = F.conv2d(x, text[:, :, None, None])  # (B, N, H, W)
        else:
            logits = torch.matmul(text, x.reshape(b, d, h * w)).reshape(b, -1, h, w)
        return logits * self.logit_scale.exp() + self.bias


class Head(nn.Module):
    """YOLOWorldHeadModule: per level a classification-embedding branch, a DFL box branch and a
    contrastive head."""

    def __init__(self, cfg: YoloWorldConfig) -> None:
        super().__init__()
        cc, rc = cfg.cls_branch_channels, cfg.reg_branch_channels
        self.reg_max = cfg.reg_max
        self.cls_preds = nn.ModuleList()
        self.reg_preds = nn.ModuleList()
        self.cls_contrasts = nn.ModuleList()
        for cin in cfg.feature_channels:
            self.cls_preds.append(nn.Sequential(
                ConvBNAct(cin, cc, 3), ConvBNAct(cc, cc, 3), nn.Conv2d(cc, cfg.text_channels, 1)))
            self.reg_preds.append(nn.Sequential(
                ConvBNAct(cin, rc, 3), ConvBNAct(rc, rc, 3), nn.Conv2d(rc, 4 * cfg.reg_max, 1)))
            self.cls_contrasts.append(ContrastiveHead(cfg.text_channels, use_bn=cfg.head == "bn"))

    def forward(self, feats: list[Tensor], text: Tensor, text_mask: Tensor | None = None) -> HeadOutputs:
        """``text_mask`` ``(N,)`` bool: logits of the slots not in use are -inf (score 0)."""
        if text_mask is not None and text.dim() == 2:
            text = text[None]  # the MatMul form: the text is an input, not conv weights
        cls_logits, box_dists = [], []
        for x, cls_pred, reg_pred, contrast in zip(
                feats, self.cls_preds, self.reg_preds, self.cls_contrasts, strict=True):
            logits = contrast(cls_pred(x), text)
            if text_mask is not None:
                logits = logits.masked_fill(~text_mask[None, :, None, None], float("-inf"))
            cls_logits.append(logits)
            box_dists.append(reg_pred(x))
        return HeadOutputs(cls_logits, box_dists)


class YoloWorld(nn.Module):
    """The detector. ``forward(images, text_embeds, text_mask=None) -> HeadOutputs``.

    images: float32 ``(B, 3, H, W)``, RGB in [0, 1], H and W multiples of 32 (letterboxed).
    text_embeds: float32 ``(N, D)`` or ``(B, N, D)``, L2-normalised (as ``encode_text`` returns).
    text_mask: optional bool ``(N,)``, the text slots in use: the others influence nothing and score 0
    (a padded vocabulary of fixed capacity, as the open-vocabulary export has).
    """

    def __init__(self, cfg: YoloWorldConfig) -> None:
        super().__init__()
        self.config = cfg
        self.backbone = Backbone(cfg)
        self.text_encoder = CLIPTextEncoder(cfg.text_encoder) if cfg.text_encoder else None
        self.neck = VLPAN(cfg)
        self.head = Head(cfg)

    def forward_features(self, images: Tensor, text_embeds: Tensor, text_mask: Tensor | None = None
                         ) -> list[Tensor]:
        """Backbone + neck -> [P3, P4, P5], each ``(B, C_i, H/s, W/s)``."""
        return self.neck(self.backbone(images), text_embeds, text_mask)

    def forward_head(self, feats: list[Tensor], text_embeds: Tensor, text_mask: Tensor | None = None
                     ) -> HeadOutputs:
        return self.head(feats, text_embeds, text_mask)

    def forward(self, images: Tensor, text_embeds: Tensor, text_mask: Tensor | None = None,
                guide_mask: Tensor | None = None) -> HeadOutputs:
        """``guide_mask`` ``(N,)`` bool (training): the slots that guide the neck's attention, where they
        differ from the scored ones (``--keep-vocabulary`` scores kept classes the neck does not see)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if images.shape[2] % 32 or images.shape[3] % 32:
            raise ValueError(f"image height and width must be multiples of 32, got "
                             f"{tuple(images.shape[2:])}")
        if text_embeds.dim() not in (2, 3) or text_embeds.shape[-1] != self.config.text_channels:
            raise ValueError(f"text_embeds must be (N, {self.config.text_channels}) or "
                             f"(B, N, {self.config.text_channels}), got {tuple(text_embeds.shape)}")
        if text_embeds.dim() == 3 and text_embeds.shape[0] != images.shape[0]:
            raise ValueError(f"text_embeds batch {text_embeds.shape[0]} != images batch "
                             f"{images.shape[0]}")
        if text_mask is not None and text_mask.shape != (text_embeds.shape[-2],):
            raise ValueError(f"text_mask must be ({text_embeds.shape[-2]},) bool, got {tuple(text_mask.shape)}")
        if guide_mask is not None and guide_mask.shape != (text_embeds.shape[-2],):
            raise ValueError(f"guide_mask must be ({text_embeds.shape[-2]},) bool, got {tuple(guide_mask.shape)}")
        feats = self.forward_features(images, text_embeds, text_mask if guide_mask is None else guide_mask)
        return self.forward_head(feats, text_embeds, text_mask)

    def fold_text_embeddings(self, text_embeds: Tensor, fuse_bn: bool = True) -> nn.Module:
        """A copy with this vocabulary ``(N, D)`` folded into weights and no text encoder:
        ``forward(images) -> HeadOutputs`` (see ``sdk.model.folded``)."""
        from .folded import fold_text_embeddings

        return fold_text_embeddings(self, text_embeds, fuse_bn)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> Tensor:
        """CLIP text embeddings, float32 ``(N, D)``, L2-normalised; cached per (weights, text)."""
        if self.text_encoder is None:
            raise RuntimeError("this model carries no text encoder; pass text embeddings directly")
        return self.text_encoder.encode(texts)
