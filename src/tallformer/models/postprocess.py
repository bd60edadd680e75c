"""Post-processing of the anchor head: per window, scores, top anchors and decoded segments
(`WindowPostProcess`, original: vedatad/bridge/converters/segment_anchor_converter.py:65-134);
per video, all windows' candidates merged by class-wise NMS into seconds
(`merge_video_detections`, original: vedatad/engines/infer_engine.py:76-117).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tallformer.models.anchors import flatten_level
from tallformer.models.coder import SegmentCoder
from tallformer.models.outputs import Detections, HeadOutputs, float_list
from tallformer.ops.segments import NmsMethod, filter_topk, nms

if TYPE_CHECKING:
    from tallformer.config import TestConfig

__all__ = ["WindowPostProcess", "merge_video_detections"]


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
        lengths_l = float_list(lengths)
        offs = [0.0] * b if offsets is None else float_list(offsets)
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


def merge_video_detections(windows: list[Detections], fps: float, *, method: NmsMethod = "nmw",
                           iou_threshold: float = 0.5, sigma: float = 0.5, min_score: float = 0.0,
                           max_per_video: int = 1200) -> Detections:
    """All windows of one video -> final detections in seconds.

    Concatenates the windows' candidates (video frames) and post-processes them once
    (original: vedatad/engines/infer_engine.py:76-117): class-wise
    `tallformer.ops.segments.nms` (`method` = test.nms_method, "nmw" IoU 0.5 in the paper),
    keeps the best `max_per_video` (1200) and divides by `fps` (original:
    vedatad/datasets/custom.py:314-325).
    """
    if fps <= 0:
        raise ValueError(f"merge_video_detections: fps must be > 0, got {fps}")
    if not windows:
        return Detections(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    segs = torch.cat([w.segments for w in windows])
    scores = torch.cat([w.scores for w in windows])
    labels = torch.cat([w.labels for w in windows])
    segs, scores, labels = nms(segs, scores, labels, method, iou_threshold,
                               sigma=sigma, min_score=min_score, max_num=max_per_video)
    return Detections(segs / fps, scores, labels)
