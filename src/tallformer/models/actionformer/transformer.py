"""ActionFormer's pre-LN transformer block, optionally downsampling (original:
libs/modeling/blocks.py:644-732)."""

from __future__ import annotations

from torch import Tensor, nn

from tallformer.models.actionformer.attention import LocalMaskedMHCA, MaskedMHCA
from tallformer.models.actionformer.blocks import AffineDropPath, ChannelLayerNorm

__all__ = ["TransformerBlock"]


class TransformerBlock(nn.Module):
    """`a, m' = attn(LN1(x), m)`; `y = pool(x) * m' + DP_attn(a)`;
    `y = y + DP_mlp(MLP(LN2(y)) * m')` (original: libs/modeling/blocks.py:722-732).

    `attn` is `LocalMaskedMHCA` when `mha_win_size > 1`, else the global `MaskedMHCA`. At
    stride s > 1 the skip `pool` is MaxPool1d(s+1, stride s, padding (s+1)//2) (it pads with
    -inf but reads the 0 of padded steps); at stride 1 the identity. MLP: Conv1d(C, 4C, 1),
    exact GELU, Dropout, Conv1d(4C, C, 1), Dropout. `DP_*` is `AffineDropPath` when
    `path_pdrop > 0` (its learned scale also applies at inference), the identity otherwise
    (no `drop_path_*` parameters then).

    `forward(x [B, C, T], mask [B, 1, T]) -> (y [B, C, T / s], mask [B, 1, T / s])`.

    Example:
        >>> import torch
        >>> block = TransformerBlock(8, 2, n_ds_strides=(2, 2), mha_win_size=5)
        >>> y, m = block(torch.randn(1, 8, 16), torch.ones(1, 1, 16, dtype=torch.bool))
        >>> tuple(y.shape), tuple(m.shape)
        ((1, 8, 8), (1, 1, 8))
    """

    def __init__(self, n_embd: int, n_head: int, n_ds_strides: tuple[int, int] = (1, 1),
                 attn_pdrop: float = 0.0, proj_pdrop: float = 0.0, path_pdrop: float = 0.0,
                 mha_win_size: int = -1, use_rel_pe: bool = False) -> None:
        super().__init__()
        self.ln1 = ChannelLayerNorm(n_embd)
        self.ln2 = ChannelLayerNorm(n_embd)
        qx, kv = n_ds_strides
        self.attn: LocalMaskedMHCA | MaskedMHCA
        if mha_win_size > 1:
            self.attn = LocalMaskedMHCA(n_embd, n_head, mha_win_size, qx, kv, attn_pdrop, proj_pdrop, use_rel_pe)
        else:
            self.attn = MaskedMHCA(n_embd, n_head, qx, kv, attn_pdrop, proj_pdrop)
        self.pool_skip: nn.Module = (nn.MaxPool1d(qx + 1, stride=qx, padding=(qx + 1) // 2) if qx > 1
                                     else nn.Identity())
        hidden = 4 * n_embd
        self.mlp = nn.Sequential(
            nn.Conv1d(n_embd, hidden, 1),
            nn.GELU(),
            nn.Dropout(proj_pdrop),
            nn.Conv1d(hidden, n_embd, 1),
            nn.Dropout(proj_pdrop),
        )
        self.drop_path_attn: nn.Module
        self.drop_path_mlp: nn.Module
        if path_pdrop > 0.0:
            self.drop_path_attn = AffineDropPath(n_embd, drop_prob=path_pdrop)
            self.drop_path_mlp = AffineDropPath(n_embd, drop_prob=path_pdrop)
        else:
            self.drop_path_attn = nn.Identity()
            self.drop_path_mlp = nn.Identity()

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        out, out_mask = self.attn(self.ln1(x), mask)
        m = out_mask.to(out.dtype)
        out = self.pool_skip(x) * m + self.drop_path_attn(out)
        out = out + self.drop_path_mlp(self.mlp(self.ln2(out)) * m)
        return out, out_mask
