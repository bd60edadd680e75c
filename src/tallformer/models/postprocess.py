"""Per-window post-processing of the head outputs: scores, top anchors, decoded segments.

original: vedatad/bridge/converters/segment_anchor_converter.py:65-134. The windows of a
video are merged afterwards by `tallformer.engine.infer.merge_video_detections` (NMS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tallformer.models.anchors import flatten_level
from tallformer.models.coder import SegmentCoder
from tallformer.models.outputs import Detections, HeadOutputs
from tallformer.ops.segments import filter_topk

if TYPE_CHECKING:
    from tallformer.config import TestConfig

__all__ = ["WindowPostProcess"]


def _floats(values: Sequence[int] | Sequence[float] | Tensor) -> list[float]:
    return [float(x) for x in (values.tolist() if isinstance(values, Tensor) else values)]


@dataclass
class WindowPostProcess:
    """Per-window candidates, one `Detections` per window (paper: nms_pre 1000, score_thr
    0.005; original: configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:225-235).

    Per level, if it has more than `nms_pre` anchors, keep the `nms_pre` with the best
    max-class score; then every (anchor, class) pair with sigmoid score > `score_thr`
    (strict; original: vedatad/misc/segment/segment.py:110-128); segments decoded with both
    ends clamped to [0, lengths[i]] (the window's real length, frames) and shifted by
    offsets[i] (window start, video frames). No NMS here.

    Candidates whose clamped segment has zero length are dropped (ours): in a padded last
    window the anchors over the padding decode to [length, length], which the original
    keeps (its zero-length detections never match a ground truth, yet rank as false
    positives; docs/differences.md).
    """

    score_thr: float = 0.005
    nms_pre: int = 1000
    coder: SegmentCoder = field(default_factory=SegmentCoder)

    @classmethod
    def from_config(cls, cfg: TestConfig) -> WindowPostProcess:
        """From `test`: `score_thr` and `nms_pre`."""
        return cls(cfg.score_thr, cfg.nms_pre)

    @torch.no_grad()
    def __call__(self, outputs: HeadOutputs, anchors_all: Tensor, num_anchors: int,
                 num_classes: int, lengths: Sequence[int] | Tensor,
                 offsets: Sequence[int] | Tensor | None = None) -> list[Detections]:
        """Args:
            outputs: the head outputs of B windows (A = num_anchors, K = num_classes).
            anchors_all: `[sum_l T_l * A, 2]` the anchors of all levels, level by level.
            lengths: B real window lengths (frames); offsets: B window starts (video frames).
        """
        cls, reg = outputs
        b = cls[0].shape[0]
        lengths_l = _floats(lengths)
        offs = [0.0] * b if offsets is None else _floats(offsets)
        if len(lengths_l) != b or len(offs) != b:
            raise ValueError(f"predict: {b} windows but {len(lengths_l)} lengths, {len(offs)} offsets")
        level_rows = [c.shape[-1] * num_anchors for c in cls]
        results = []
        for i in range(b):
            seg_parts, score_parts, label_parts = [], [], []
            start = 0
            for c, r, rows in zip(cls, reg, level_rows, strict=True):
                anchors = anchors_all[start:start + rows]
                start += rows
                scores = flatten_level(c[i:i + 1], num_classes)[0].float().sigmoid()
                deltas = flatten_level(r[i:i + 1], 2)[0].float()
                if rows > self.nms_pre:
                    top = scores.max(dim=1).values.topk(self.nms_pre).indices
                    scores, deltas, anchors = scores[top], deltas[top], anchors[top]
                row, col, kept = filter_topk(scores, self.score_thr)
                segs = self.coder.decode(deltas[row], anchors[row], max_length=lengths_l[i])
                real = segs[:, 1] > segs[:, 0]  # drop the zero-length ones (see above)
                seg_parts.append(segs[real] + offs[i])
                score_parts.append(kept[real])
                label_parts.append(col[real])
            results.append(Detections(torch.cat(seg_parts), torch.cat(score_parts),
                                      torch.cat(label_parts)))
        return results
