"""ActionFormer's classification and regression heads, shared by every FPN level (original:
libs/modeling/meta_archs.py:13-159, `PtTransformerClsHead` / `PtTransformerRegHead`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tallformer.models.actionformer.blocks import ChannelLayerNorm, MaskedConv1D, Scale
from tallformer.models.errors import ModelError

__all__ = ["ClsHead", "RegHead"]


def _tower(input_dim: int, feat_dim: int, num_layers: int, kernel_size: int,
           with_ln: bool) -> tuple[nn.ModuleList, nn.ModuleList]:
    """`num_layers - 1` x MaskedConv1D(bias = not with_ln) and their norms (LN or identity)."""
    head, norm = nn.ModuleList(), nn.ModuleList()
    for idx in range(num_layers - 1):
        head.append(MaskedConv1D(input_dim if idx == 0 else feat_dim, feat_dim, kernel_size, bias=not with_ln))
        norm.append(ChannelLayerNorm(feat_dim) if with_ln else nn.Identity())
    return head, norm


def _run_tower(head: nn.ModuleList, norm: nn.ModuleList, act: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
    for conv, ln in zip(head, norm, strict=True):
        x, _ = conv(x, mask)
        x = act(ln(x))
    return x


class ClsHead(nn.Module):
    """Per level: `num_layers - 1` x [MaskedConv1D -> LN -> ReLU], then MaskedConv1D to
    `num_classes` logits (original: libs/modeling/meta_archs.py:13-89). The classifier bias
    starts at -log((1 - p) / p), p = `prior_prob`; classes in `empty_cls` at
    -log((1 - 1e-6) / 1e-6) (meta_archs.py:61-73).

    `forward(feats, masks) -> logits`: per level `[B, C, T_l]` -> `[B, num_classes, T_l]`.

    Example:
        >>> import torch
        >>> head = ClsHead(8, 8, num_classes=3)
        >>> out = head([torch.randn(1, 8, 4)], [torch.ones(1, 1, 4, dtype=torch.bool)])
        >>> tuple(out[0].shape)
        (1, 3, 4)
    """

    def __init__(self, input_dim: int, feat_dim: int, num_classes: int, prior_prob: float = 0.01,
                 num_layers: int = 3, kernel_size: int = 3, with_ln: bool = False,
                 empty_cls: Sequence[int] = ()) -> None:
        super().__init__()
        if num_layers < 1:
            raise ModelError(f"head_num_layers must be >= 1, got {num_layers}")
        bad = [c for c in empty_cls if not 0 <= c < num_classes]
        if bad:
            raise ModelError(f"head_empty_cls {bad} are not class ids in [0, {num_classes})")
        self.act = nn.ReLU()
        self.head, self.norm = _tower(input_dim, feat_dim, num_layers, kernel_size, with_ln)
        self.cls_head = MaskedConv1D(feat_dim, num_classes, kernel_size)
        bias = self.cls_head.conv.bias
        assert bias is not None
        with torch.no_grad():
            bias.fill_(-math.log((1 - prior_prob) / prior_prob))
            for idx in empty_cls:
                bias[idx] = -math.log((1 - 1e-6) / 1e-6)

    def forward(self, feats: Sequence[Tensor], masks: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for x, mask in zip(feats, masks, strict=True):
            logits, _ = self.cls_head(_run_tower(self.head, self.norm, self.act, x, mask), mask)
            out.append(logits)
        return out


class RegHead(nn.Module):
    """Per level l: `num_layers - 1` x [MaskedConv1D -> LN -> ReLU], MaskedConv1D to 2, then
    ReLU(Scale_l(.)): offsets (left, right) >= 0 in strides of the level (original:
    libs/modeling/meta_archs.py:92-159). One `Scale` per level, the rest shared.

    `forward(feats, masks) -> offsets`: per level `[B, C, T_l]` -> `[B, 2, T_l]`.

    Example:
        >>> import torch
        >>> head = RegHead(8, 8, fpn_levels=1)
        >>> out = head([torch.randn(1, 8, 4)], [torch.ones(1, 1, 4, dtype=torch.bool)])
        >>> tuple(out[0].shape), bool((out[0] >= 0).all())
        ((1, 2, 4), True)
    """

    def __init__(self, input_dim: int, feat_dim: int, fpn_levels: int, num_layers: int = 3,
                 kernel_size: int = 3, with_ln: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise ModelError(f"head_num_layers must be >= 1, got {num_layers}")
        self.fpn_levels = fpn_levels
        self.act = nn.ReLU()
        self.head, self.norm = _tower(input_dim, feat_dim, num_layers, kernel_size, with_ln)
        self.scale = nn.ModuleList(Scale() for _ in range(fpn_levels))
        self.offset_head = MaskedConv1D(feat_dim, 2, kernel_size)

    def forward(self, feats: Sequence[Tensor], masks: Sequence[Tensor]) -> list[Tensor]:
        if len(feats) != self.fpn_levels:
            raise ModelError(f"regression head: {len(feats)} levels, built for {self.fpn_levels}")
        out = []
        for scale, x, mask in zip(self.scale, feats, masks, strict=True):
            offsets, _ = self.offset_head(_run_tower(self.head, self.norm, self.act, x, mask), mask)
            out.append(F.relu(scale(offsets)))
        return out
