"""ActionFormer's identity FPN: one channel LayerNorm per level, masks unchanged (original:
libs/modeling/necks.py:94-143, `FPNIdentity`)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from tallformer.models.actionformer.blocks import ChannelLayerNorm
from tallformer.models.errors import ModelError

__all__ = ["IdentityFPN"]


class IdentityFPN(nn.Module):
    """Levels `start_level` .. end of the backbone's, each through its own LayerNorm (or the
    identity without `with_ln`). The width does not change, so every input level must have
    `out_channel` channels (the release asserts embd_dim == fpn_dim, necks.py:122).

    `forward(feats, masks) -> (feats[start:], masks[start:])`, each `[B, C, T_l]` / `[B, 1, T_l]`.

    Example:
        >>> import torch
        >>> fpn = IdentityFPN([8, 8], 8)
        >>> feats, masks = fpn([torch.randn(1, 8, 4), torch.randn(1, 8, 2)],
        ...                    [torch.ones(1, 1, 4, dtype=torch.bool), torch.ones(1, 1, 2, dtype=torch.bool)])
        >>> [tuple(f.shape) for f in feats]
        [(1, 8, 4), (1, 8, 2)]
    """

    def __init__(self, in_channels: Sequence[int], out_channel: int, start_level: int = 0,
                 with_ln: bool = True) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channel = out_channel
        self.start_level = start_level
        if not 0 <= start_level < len(self.in_channels):
            raise ModelError(f"fpn_start_level {start_level} must be in [0, {len(self.in_channels)})")
        wrong = [c for c in self.in_channels[start_level:] if c != out_channel]
        if wrong:
            raise ModelError(f"identity FPN: input widths {self.in_channels} must equal fpn_dim {out_channel} "
                             "(set embd_dim = fpn_dim)")
        self.fpn_norms = nn.ModuleList(
            ChannelLayerNorm(out_channel) if with_ln else nn.Identity()
            for _ in range(start_level, len(self.in_channels)))

    def forward(self, feats: Sequence[Tensor], masks: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        if len(feats) != len(self.in_channels) or len(masks) != len(self.in_channels):
            raise ModelError(f"identity FPN: {len(feats)} levels and {len(masks)} masks for "
                             f"{len(self.in_channels)} inputs")
        s = self.start_level
        return ([norm(f) for norm, f in zip(self.fpn_norms, feats[s:], strict=True)], list(masks[s:]))
