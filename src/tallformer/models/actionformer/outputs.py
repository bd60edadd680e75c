"""What `ActionFormerNet` returns: per-level outputs of a batch, in the release's layout after
its permute (original: libs/modeling/meta_archs.py:343-362)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["ActionFormerOutputs"]


@dataclass
class ActionFormerOutputs:
    """One entry per FPN level l (stride s_l, T_l = P / s_l steps of the padded input P):

    - `cls_logits[l]` `[B, T_l, K]` classification logits;
    - `offsets[l]` `[B, T_l, 2]` (left, right) distances >= 0 in strides of the level;
    - `masks[l]` bool `[B, T_l]`, True on valid steps;
    - `points[l]` `[T_l, 4]` rows (t, range_lo, range_hi, s_l), t in input feature steps.
    """

    cls_logits: list[Tensor]
    offsets: list[Tensor]
    masks: list[Tensor]
    points: list[Tensor]
