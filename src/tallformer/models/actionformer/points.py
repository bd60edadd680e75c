"""ActionFormer's points: one per step of each FPN level, with its regression range and
stride (original: libs/modeling/loc_generators.py:27-84, `PointGenerator`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["PointGenerator"]


class PointGenerator:
    """Level l (stride s_l) has points t = 0, s_l, 2 s_l, ... in input feature steps, no
    half-stride offset (the release's `use_offset` is false); each row is
    `(t, range_lo, range_hi, s_l)` (float32).

    The release builds them once for `max_seq_len x max_buffer_len_factor` steps and stops
    beyond; these are computed for any length, with the same values.

    Example:
        >>> points = PointGenerator([1, 2], [[0, 4], [4, 10000]])([4, 2])
        >>> points[1].tolist()
        [[0.0, 4.0, 10000.0, 2.0], [2.0, 4.0, 10000.0, 2.0]]
    """

    def __init__(self, fpn_strides: Sequence[int], regression_range: Sequence[Sequence[float]]) -> None:
        if len(fpn_strides) != len(regression_range):
            raise ValueError(f"{len(fpn_strides)} FPN strides but {len(regression_range)} regression ranges")
        self.fpn_strides = [int(s) for s in fpn_strides]
        self.regression_range = [(float(lo), float(hi)) for lo, hi in regression_range]

    def __call__(self, lengths: Sequence[int], device: torch.device | str | None = None) -> list[Tensor]:
        """Points `[T_l, 4]` of levels of these lengths."""
        if len(lengths) != len(self.fpn_strides):
            raise ValueError(f"{len(lengths)} level lengths for {len(self.fpn_strides)} FPN levels")
        out = []
        for n, stride, (lo, hi) in zip(lengths, self.fpn_strides, self.regression_range, strict=True):
            pts = torch.empty(int(n), 4, dtype=torch.float32, device=device)
            pts[:, 0] = torch.arange(int(n), dtype=torch.float32, device=device) * stride
            pts[:, 1] = lo
            pts[:, 2] = hi
            pts[:, 3] = stride
            out.append(pts)
        return out
