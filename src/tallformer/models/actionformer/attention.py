"""ActionFormer's masked multi-head conv attention: local (a window of 2w+1 keys around each
query) and global (original: libs/modeling/blocks.py:192-641).

Both first run depthwise masked convs on the input (query, key, value; each followed by
its own channel LayerNorm), then 1x1 projections, attention and a 1x1 output projection
multiplied by the output mask. A stride > 1 downsamples query, key and value alike.

The local attention computes, for query i and key j = i + o - w (o = 0 .. 2w):
`q_i . k_j / sqrt(head_dim)` [+ rel_pe[head, o]] [-1e4 when key j is a padded step];
-inf when j is outside the sequence; softmax over o; the rows of padded queries set to 0.
The release builds this band from overlapping chunks of 2w steps (a Longformer kernel that
needs T to be a multiple of 2w); here it is built one diagonal at a time, which gives the
same numbers (to float32 summation order) with O(T * w) memory and no length condition.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tallformer.models.actionformer.blocks import ChannelLayerNorm, MaskedConv1D
from tallformer.models.errors import ModelError

__all__ = ["LocalMaskedMHCA", "MaskedMHCA", "band_attend", "band_scores"]

# the additive mask of a padded key (original: libs/modeling/blocks.py:612-624)
PADDED_KEY = -1e4


def band_scores(q: Tensor, k: Tensor, w: int) -> Tensor:
    """`[N, T, d] x [N, T, d] -> [N, T, 2w+1]`: entry (i, o) = q_i . k_{i+o-w}, -inf where
    i + o - w is outside [0, T).

    Example:
        >>> s = band_scores(torch.ones(1, 4, 2), torch.ones(1, 4, 2), 1)
        >>> s[0, 0].tolist()
        [-inf, 2.0, 2.0]
    """
    t = q.shape[1]
    kp = F.pad(k, (0, 0, w, w))
    cols = [(q * kp[:, o:o + t]).sum(-1) for o in range(2 * w + 1)]
    return torch.stack(cols, dim=-1).masked_fill(_outside(t, w, q.device), float("-inf"))


def band_attend(probs: Tensor, v: Tensor, w: int) -> Tensor:
    """`[N, T, 2w+1] x [N, T, d] -> [N, T, d]`: out_i = sum_o probs[i, o] * v_{i+o-w}
    (steps outside the sequence contribute nothing).

    Example:
        >>> p = torch.tensor([[[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]])
        >>> band_attend(p, torch.tensor([[[1.0], [3.0]]]), 1)[0, :, 0].tolist()
        [1.0, 2.0]
    """
    t = v.shape[1]
    vp = F.pad(v, (0, 0, w, w))
    out = probs[..., 0:1] * vp[:, 0:t]
    for o in range(1, 2 * w + 1):
        out = out + probs[..., o:o + 1] * vp[:, o:o + t]
    return out


def _outside(t: int, w: int, device: torch.device) -> Tensor:
    """bool `[T, 2w+1]`: key i + o - w outside [0, T)."""
    j = torch.arange(t, device=device)[:, None] + torch.arange(-w, w + 1, device=device)[None, :]
    return (j < 0) | (j >= t)


class _ConvQKV(nn.Module):
    """The parts both attentions share, registered in the release's order (so the state
    dict lists them as the release does): depthwise masked convs + LayerNorm for query, key
    and value, 1x1 projections, dropouts and the output projection (original:
    libs/modeling/blocks.py:228-270, 349-390)."""

    def __init__(self, n_embd: int, n_head: int, n_qx_stride: int, n_kv_stride: int,
                 attn_pdrop: float, proj_pdrop: float) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ModelError(f"attention: n_head {n_head} does not divide the width {n_embd}")
        for s in (n_qx_stride, n_kv_stride):
            if s != 1 and s % 2:
                raise ModelError(f"attention: stride {s} must be 1 or even")
        self.n_embd = n_embd
        self.n_head = n_head
        self.n_channels = n_embd // n_head
        self.scale = 1.0 / math.sqrt(self.n_channels)
        self.n_qx_stride = n_qx_stride
        self.n_kv_stride = n_kv_stride
        # the query conv's kernel follows the query stride but its stride is the key/value
        # stride (original: libs/modeling/blocks.py:357-362)
        kq = n_qx_stride + 1 if n_qx_stride > 1 else 3
        self.query_conv = MaskedConv1D(n_embd, n_embd, kq, stride=n_kv_stride, groups=n_embd, bias=False)
        self.query_norm = ChannelLayerNorm(n_embd)
        kkv = n_kv_stride + 1 if n_kv_stride > 1 else 3
        self.key_conv = MaskedConv1D(n_embd, n_embd, kkv, stride=n_kv_stride, groups=n_embd, bias=False)
        self.key_norm = ChannelLayerNorm(n_embd)
        self.value_conv = MaskedConv1D(n_embd, n_embd, kkv, stride=n_kv_stride, groups=n_embd, bias=False)
        self.value_norm = ChannelLayerNorm(n_embd)
        self.key = nn.Conv1d(n_embd, n_embd, 1)
        self.query = nn.Conv1d(n_embd, n_embd, 1)
        self.value = nn.Conv1d(n_embd, n_embd, 1)
        self.attn_drop = nn.Dropout(attn_pdrop)
        self.proj_drop = nn.Dropout(proj_pdrop)
        self.proj = nn.Conv1d(n_embd, n_embd, 1)

    def _qkv(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(q, k, v `[B, nh, T', hs]`, query mask, key/value mask `[B, 1, T']`)."""
        b = x.shape[0]
        q, qx_mask = self.query_conv(x, mask)
        q = self.query_norm(q)
        k, kv_mask = self.key_conv(x, mask)
        k = self.key_norm(k)
        v, _ = self.value_conv(x, mask)
        v = self.value_norm(v)
        q, k, v = self.query(q), self.key(k), self.value(v)

        def heads(z: Tensor) -> Tensor:
            return z.view(b, self.n_head, self.n_channels, -1).transpose(2, 3)

        return heads(q), heads(k), heads(v), qx_mask, kv_mask

    def _out(self, out: Tensor, qx_mask: Tensor) -> Tensor:
        """`[B, nh, T', hs]` -> output projection `[B, C, T']` times the query mask."""
        b, _, t, _ = out.shape
        out = out.transpose(2, 3).reshape(b, self.n_embd, t)
        out = self.proj_drop(self.proj(out))
        return out * qx_mask.to(out.dtype)


class MaskedMHCA(_ConvQKV):
    """Global masked multi-head conv attention, used when the window is <= 1 (original:
    libs/modeling/blocks.py:192-306): padded keys get -inf, values of padded keys are
    zeroed, the output is multiplied by the query mask.

    `forward(x [B, C, T], mask [B, 1, T]) -> (y [B, C, T / s], mask [B, 1, T / s])`.

    Example:
        >>> attn = MaskedMHCA(8, 2)
        >>> y, m = attn(torch.randn(1, 8, 6), torch.ones(1, 1, 6, dtype=torch.bool))
        >>> tuple(y.shape)
        (1, 8, 6)
    """

    def __init__(self, n_embd: int, n_head: int, n_qx_stride: int = 1, n_kv_stride: int = 1,
                 attn_pdrop: float = 0.0, proj_pdrop: float = 0.0) -> None:
        super().__init__(n_embd, n_head, n_qx_stride, n_kv_stride, attn_pdrop, proj_pdrop)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        q, k, v, qx_mask, kv_mask = self._qkv(x, mask)
        att = (q * self.scale) @ k.transpose(-2, -1)
        att = att.masked_fill(~kv_mask[:, :, None, :], float("-inf"))
        att = self.attn_drop(F.softmax(att, dim=-1))
        out = att @ (v * kv_mask[:, :, :, None].to(v.dtype))
        return self._out(out, qx_mask), qx_mask


class LocalMaskedMHCA(_ConvQKV):
    """Local masked multi-head conv attention over a window of `window_size` = 2w+1 keys
    (original: libs/modeling/blocks.py:309-641); see the module docstring for the scores.

    `window_size` must be odd and >= 5 (3 crashes the release). `use_rel_pe` adds a learned
    bias `rel_pe [1, 1, n_head, window_size]` per (head, offset), initialised from a
    normal with std sqrt(2 / C) truncated to [-2, 2].

    `forward(x [B, C, T], mask [B, 1, T]) -> (y [B, C, T / s], mask [B, 1, T / s])`.

    Example:
        >>> attn = LocalMaskedMHCA(8, 2, window_size=5)
        >>> y, m = attn(torch.randn(1, 8, 8), torch.ones(1, 1, 8, dtype=torch.bool))
        >>> tuple(y.shape)
        (1, 8, 8)
    """

    def __init__(self, n_embd: int, n_head: int, window_size: int, n_qx_stride: int = 1,
                 n_kv_stride: int = 1, attn_pdrop: float = 0.0, proj_pdrop: float = 0.0,
                 use_rel_pe: bool = False) -> None:
        super().__init__(n_embd, n_head, n_qx_stride, n_kv_stride, attn_pdrop, proj_pdrop)
        if window_size % 2 == 0 or window_size < 5:
            raise ModelError(f"local attention window {window_size}: must be odd and >= 5 (or <= 1 for "
                             "global attention)")
        self.window_size = window_size
        self.window_overlap = window_size // 2
        self.use_rel_pe = use_rel_pe
        if use_rel_pe:
            self.rel_pe = nn.Parameter(torch.zeros(1, 1, n_head, window_size))
            nn.init.trunc_normal_(self.rel_pe, std=(2.0 / n_embd) ** 0.5, a=-2.0, b=2.0)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        q, k, v, qx_mask, kv_mask = self._qkv(x, mask)
        b, nh, t, hs = q.shape
        w = self.window_overlap
        q = (q * self.scale).reshape(b * nh, t, hs)
        att = band_scores(q, k.reshape(b * nh, t, hs), w)
        att = att.view(b, nh, t, 2 * w + 1).transpose(1, 2)  # [B, T, nh, 2w+1], the release's layout
        if self.use_rel_pe:
            att = att + self.rel_pe
        padded = torch.zeros_like(kv_mask[:, 0], dtype=att.dtype).masked_fill(~kv_mask[:, 0], PADDED_KEY)
        key_bias = F.pad(padded, (w, w)).unfold(1, 2 * w + 1, 1)  # [B, T, 2w+1], 0 outside
        att = att + key_bias[:, :, None, :]
        att = F.softmax(att, dim=-1)
        att = att.masked_fill(~kv_mask[:, 0, :, None, None], 0.0)  # padded query rows
        att = self.attn_drop(att)
        probs = att.transpose(1, 2).reshape(b * nh, t, 2 * w + 1)
        out = band_attend(probs, v.reshape(b * nh, t, hs), w).view(b, nh, t, hs)
        return self._out(out, qx_mask), qx_mask

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, use_rel_pe={self.use_rel_pe}"
