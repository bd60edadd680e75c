"""ActionFormer's feature pyramid network on features: embedding convs, a stem of transformer
blocks and a downsampling branch (original: libs/modeling/backbones.py:10-164,
`ConvTransformerBackbone`). Named `backbone` inside `ActionFormerNet`, as in the release;
it runs on the Video Swin features, not on frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from tallformer.models.actionformer.blocks import (
    ChannelLayerNorm,
    MaskedConv1D,
    sinusoid_encoding,
)
from tallformer.models.actionformer.transformer import TransformerBlock
from tallformer.models.errors import ModelError

__all__ = ["ConvTransformerBackbone"]


class ConvTransformerBackbone(nn.Module):
    """`arch = (E, S, B)`: E x [MaskedConv1D(k = `n_embd_ks`, bias = not `with_ln`) ->
    ChannelLayerNorm (or identity) -> ReLU] (the first maps `n_in` to `n_embd`), optional
    absolute sinusoid PE, S stride-1 transformer blocks (level 0), B blocks of stride
    `scale_factor` (levels 1..B) (original: libs/modeling/backbones.py:56-164).

    `mha_win_size` has one window per level (1 + B); the stem uses entry 0, branch block i
    entry i + 1. Every Conv1d / Linear bias inside starts at 0 (backbones.py:106-113).

    Absolute PE (`use_abs_pe`): the table over `max_len` steps divided by sqrt(n_embd),
    added where the mask is set; in training the input must be at most `max_len` long; in
    eval a table is linearly interpolated to T when T >= `max_len` (backbones.py:134-148).

    `forward(x [B, n_in, T], mask [B, 1, T]) -> (feats, masks)`: 1 + B levels
    `[B, n_embd, T / s^l]` with masks `[B, 1, T / s^l]`.

    Example:
        >>> import torch
        >>> net = ConvTransformerBackbone(6, 8, 2, 3, max_len=32, arch=(1, 1, 2), mha_win_size=[5, 5, 5])
        >>> feats, masks = net(torch.randn(1, 6, 32), torch.ones(1, 1, 32, dtype=torch.bool))
        >>> [tuple(f.shape) for f in feats]
        [(1, 8, 32), (1, 8, 16), (1, 8, 8)]
    """

    pos_embd: Tensor  # a non-persistent buffer, only with use_abs_pe

    def __init__(self, n_in: int, n_embd: int, n_head: int, n_embd_ks: int, max_len: int,
                 arch: Sequence[int] = (2, 2, 5), mha_win_size: Sequence[int] = (-1,) * 6,
                 scale_factor: int = 2, with_ln: bool = False, attn_pdrop: float = 0.0,
                 proj_pdrop: float = 0.0, path_pdrop: float = 0.0, use_abs_pe: bool = False,
                 use_rel_pe: bool = False) -> None:
        super().__init__()
        if len(arch) != 3:
            raise ModelError(f"backbone_arch must have 3 entries (embedding convs, stem, branch), got {list(arch)}")
        if len(mha_win_size) != 1 + arch[2]:
            raise ModelError(f"n_mha_win_size has {len(mha_win_size)} windows for {1 + arch[2]} levels")
        if arch[0] == 0 and n_in != n_embd:
            raise ModelError(f"no embedding conv (backbone_arch[0] = 0) needs the input width {n_in} to equal "
                             f"embd_dim {n_embd}")
        self.arch = tuple(arch)
        self.mha_win_size = list(mha_win_size)
        self.max_len = max_len
        self.relu = nn.ReLU(inplace=True)
        self.scale_factor = scale_factor
        self.use_abs_pe = use_abs_pe
        self.use_rel_pe = use_rel_pe
        self.embd = nn.ModuleList()
        self.embd_norm = nn.ModuleList()
        for idx in range(arch[0]):
            self.embd.append(MaskedConv1D(n_in if idx == 0 else n_embd, n_embd, n_embd_ks, bias=not with_ln))
            self.embd_norm.append(ChannelLayerNorm(n_embd) if with_ln else nn.Identity())
        if use_abs_pe:
            self.register_buffer("pos_embd", sinusoid_encoding(max_len, n_embd) / (n_embd ** 0.5),
                                 persistent=False)
        self.stem = nn.ModuleList(
            TransformerBlock(n_embd, n_head, (1, 1), attn_pdrop, proj_pdrop, path_pdrop,
                             self.mha_win_size[0], use_rel_pe)
            for _ in range(arch[1]))
        self.branch = nn.ModuleList(
            TransformerBlock(n_embd, n_head, (scale_factor, scale_factor), attn_pdrop, proj_pdrop,
                             path_pdrop, self.mha_win_size[1 + i], use_rel_pe)
            for i in range(arch[2]))
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d)) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        t = x.shape[-1]
        for conv, norm in zip(self.embd, self.embd_norm, strict=True):
            x, mask = conv(x, mask)
            x = self.relu(norm(x))
        if self.use_abs_pe:
            pe = self.pos_embd
            if self.training and t > self.max_len:
                raise ModelError(f"absolute position encoding: input of {t} steps is longer than "
                                 f"max_seq_len {self.max_len} in training")
            if not self.training and t >= self.max_len:
                pe = F.interpolate(pe, t, mode="linear", align_corners=False)
            x = x + pe[:, :, :t].to(x.dtype) * mask.to(x.dtype)
        feats, masks = [], []
        for block in self.stem:
            x, mask = block(x, mask)
        feats.append(x)
        masks.append(mask)
        for block in self.branch:
            x, mask = block(x, mask)
            feats.append(x)
            masks.append(mask)
        return feats, masks

