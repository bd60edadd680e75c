"""The max-IoU assigner: which anchors are positive for which gt, negative or left out.

original: vedatad/misc/segment/assigners/max_iou_assigner.py:134-220 (the original's
`MaxIoUAssigner`; IoU from vedatad/misc/segment/segment.py:9-107, no +1, union clamped to
>= 1e-6, which is `tallformer.ops.segments.segment_iou`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tallformer.ops.segments import segment_iof, segment_iou

if TYPE_CHECKING:
    from tallformer.config import HeadConfig

__all__ = ["IGNORE", "NEGATIVE", "MaxIoUMatcher", "assign_anchors"]

NEGATIVE = -1  # assign_anchors: background anchor
IGNORE = -2  # assign_anchors: anchor left out of every loss


def assign_anchors(anchors: Tensor, gt_segments: Tensor, gt_ignore: Tensor | None = None, *,
                   pos_iou_thr: float = 0.6, neg_iou_thr: float = 0.4,
                   min_pos_iou: float = 0.0, ignore_iof_thr: float = -1.0) -> Tensor:
    """Max-IoU assignment. Returns `[N]` int64.

    Value g >= 0: positive for gt g; `NEGATIVE` (-1): background; `IGNORE` (-2): no loss.
    1. every anchor starts ignored; 2. max IoU over gts in [0, neg_iou_thr) -> negative;
    3. max IoU >= pos_iou_thr -> positive for the argmax gt; 4. low-quality matches: for
    every gt (in order) whose best IoU is >= min_pos_iou AND > 0, every anchor reaching that
    best IoU becomes positive for it (original: max_iou_assigner.py:134-220). The "> 0" is
    ours: with min_pos_iou 0, a gt overlapping no anchor would otherwise make every anchor
    positive. When ignore_iof_thr > 0 (original: max_iou_assigner.py:114; the paper's -1
    disables it), anchors whose overlap with an ignore region, as a fraction of the
    anchor's length, exceeds it are ignored (never positive, never negative).

    Args:
        anchors: `[N, 2]`; gt_segments: `[G, 2]`; gt_ignore: `[I, 2]` or None (same unit).
    """
    n = anchors.shape[0]
    assigned = torch.full((n,), IGNORE, dtype=torch.long, device=anchors.device)
    ignored = torch.zeros(n, dtype=torch.bool, device=anchors.device)
    if ignore_iof_thr > 0 and gt_ignore is not None and gt_ignore.numel():
        iof = segment_iof(anchors, gt_ignore.to(anchors))
        ignored = iof.max(dim=1).values > ignore_iof_thr
    if gt_segments.numel() == 0:
        assigned[~ignored] = NEGATIVE
        return assigned
    iou = segment_iou(anchors, gt_segments.to(anchors))  # [N, G]
    iou[ignored] = -1.0
    max_iou, argmax = iou.max(dim=1)
    assigned[(max_iou >= 0) & (max_iou < neg_iou_thr)] = NEGATIVE
    pos = max_iou >= pos_iou_thr
    assigned[pos] = argmax[pos]
    gt_max = iou.max(dim=0).values  # [G]
    valid = (gt_max >= min_pos_iou) & (gt_max > 0)
    hit = (iou == gt_max[None, :]) & valid[None, :]  # [N, G]
    # as a loop over gts in order, a later gt overwrites an earlier one: take the last hit
    gt_ids = torch.arange(gt_segments.shape[0], device=anchors.device)
    last = torch.where(hit, gt_ids[None, :], -1).max(dim=1).values
    return torch.where(last >= 0, last, assigned)


@dataclass
class MaxIoUMatcher:
    """`assign_anchors` with its thresholds. Paper: positive >= 0.6, negative < 0.4,
    min_pos_iou 0, ignore regions off (-1) (original:
    configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:197-205).

    `matcher(anchors [N, 2], gt_segments [G, 2], gt_ignore [I, 2] | None) -> [N]` int64.
    """

    pos_iou_thr: float = 0.6
    neg_iou_thr: float = 0.4
    min_pos_iou: float = 0.0
    ignore_iof_thr: float = -1.0

    @classmethod
    def from_config(cls, cfg: HeadConfig) -> MaxIoUMatcher:
        """From `model.head`: the four thresholds."""
        return cls(cfg.pos_iou_thr, cfg.neg_iou_thr, cfg.min_pos_iou, cfg.ignore_iof_thr)

    def __call__(self, anchors: Tensor, gt_segments: Tensor,
                 gt_ignore: Tensor | None = None) -> Tensor:
        return assign_anchors(
            anchors, gt_segments, gt_ignore, pos_iou_thr=self.pos_iou_thr,
            neg_iou_thr=self.neg_iou_thr, min_pos_iou=self.min_pos_iou,
            ignore_iof_thr=self.ignore_iof_thr,
        )
