"""1-D anchors: scales, the anchors of a window, and the row layout they share with the head.

Anchor (level l, position t, scale a) = [t * s_l - len / 2, t * s_l + len / 2] with
len = s_l * scales[a] and centre offset 0, in frames relative to the window start; rows are
level by level, row t * A + a inside a level (original:
vedatad/bridge/meshgrids/base_anchors/segment.py:37-94, segment_anchor_meshgrid.py:73-153).
`flatten_level` puts the head outputs in the same row order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from tallformer.config import HeadConfig

__all__ = ["AnchorGenerator", "anchor_scales", "flatten_level", "make_anchors"]


def anchor_scales(octave_base_scale: float = 2.0, scales_per_octave: int = 5) -> list[float]:
    """Scales octave_base_scale * 2^(a / scales_per_octave): 2, 2.297, 2.639, 3.031, 3.482
    (original: vedatad/bridge/meshgrids/base_anchors/segment.py:37-94)."""
    return [octave_base_scale * 2 ** (a / scales_per_octave) for a in range(scales_per_octave)]


def make_anchors(lengths: Sequence[int], strides: Sequence[int], scales: Sequence[float],
                 device: torch.device | str | None = None) -> Tensor:
    """All anchors of a window, `[sum_l T_l * A, 2]` float32 frames (window-relative).

    Anchor (level l, position t, a) = [t * s_l - len / 2, t * s_l + len / 2] with
    len = s_l * scales[a]; row order level, then t * A + a. For the paper (lengths
    60, 30, 15, 8, 4) this gives 585 anchors.
    """
    if len(lengths) != len(strides):
        raise ValueError(f"{len(lengths)} feature levels but {len(strides)} anchor strides")
    sc = torch.tensor(scales, dtype=torch.float32, device=device)
    out = []
    for length, stride in zip(lengths, strides, strict=True):
        centre = torch.arange(length, dtype=torch.float32, device=device)[:, None] * stride
        half = (stride * sc)[None, :] / 2
        out.append(torch.stack([centre - half, centre + half], dim=-1).reshape(-1, 2))
    return torch.cat(out) if out else torch.zeros(0, 2, device=device)


def flatten_level(x: Tensor, per_anchor: int) -> Tensor:
    """`[B, A * D, T] -> [B, T * A, D]` (row t * A + a, as the anchors)."""
    b = x.shape[0]
    return x.permute(0, 2, 1).reshape(b, -1, per_anchor)


class AnchorGenerator:
    """The anchors of every level: one stride per level, `scales_per_octave` scales.

    `generator(lengths, device) -> [sum_l T_l * A, 2]` for feature levels of these lengths.
    Paper defaults: strides 8, 16, 32, 64, 128; octave base scale 2; 5 scales per octave
    (original: configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:78-82, 156-165).
    """

    def __init__(self, strides: Sequence[int] = (8, 16, 32, 64, 128),
                 octave_base_scale: float = 2.0, scales_per_octave: int = 5) -> None:
        self.strides = list(strides)
        self.scales = anchor_scales(octave_base_scale, scales_per_octave)

    @classmethod
    def from_config(cls, cfg: HeadConfig) -> AnchorGenerator:
        """From `model.head`: `anchor_strides`, `octave_base_scale`, `scales_per_octave`."""
        return cls(cfg.anchor_strides, cfg.octave_base_scale, cfg.scales_per_octave)

    @property
    def num_anchors(self) -> int:
        """Anchors per position (A)."""
        return len(self.scales)

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    def __call__(self, lengths: Sequence[int], device: torch.device | str | None = None) -> Tensor:
        return make_anchors(lengths, self.strides, self.scales, device)

    def __repr__(self) -> str:
        return f"AnchorGenerator(strides={self.strides}, scales={[round(s, 4) for s in self.scales]})"
