"""ActionFormer's inference after the network: per-level candidates, NMS and feature grid to
seconds (original: libs/modeling/meta_archs.py:597-753)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from tallformer.models.actionformer.nms import batched_nms
from tallformer.models.outputs import Detections

if TYPE_CHECKING:
    from tallformer.config import ActionFormerTestConfig

__all__ = ["ActionFormerPostProcess", "grid_to_seconds", "level_candidates"]


def level_candidates(cls_logits: Tensor, offsets: Tensor, points: Tensor, mask: Tensor, pre_nms_thresh: float,
                     pre_nms_topk: int, duration_thresh: float) -> tuple[Tensor, Tensor, Tensor]:
    """One level of one video (original: libs/modeling/meta_archs.py:658-698).

    prob = sigmoid(logit) x mask, flattened time-major (index t * K + c); keep prob >
    `pre_nms_thresh` (strict); the best `pre_nms_topk` by `torch.sort(descending=True)`
    (not stable); segment = (t - o_l s, t + o_r s); keep length > `duration_thresh`
    (strict, grid units).

    Args:
        cls_logits: `[T_l, K]`; offsets `[T_l, 2]`; points `[T_l, 4]`; mask bool `[T_l]`.
    Returns:
        (segments `[M, 2]` grid units, scores `[M]`, labels `[M]` int64), float32.

    Example:
        >>> import torch
        >>> pts = torch.tensor([[0.0, 0, 4, 1], [1.0, 0, 4, 1]])
        >>> segs, scores, labels = level_candidates(torch.tensor([[5.0], [-9.0]]), torch.ones(2, 2), pts,
        ...                                         torch.ones(2, dtype=torch.bool), 0.001, 10, 0.05)
        >>> segs.tolist(), labels.tolist()
        ([[-1.0, 1.0]], [0])
    """
    num_classes = cls_logits.shape[-1]
    prob = (cls_logits.float().sigmoid() * mask.unsqueeze(-1)).flatten()
    keep = prob > pre_nms_thresh
    prob = prob[keep]
    idxs = keep.nonzero(as_tuple=True)[0]
    k = min(pre_nms_topk, idxs.shape[0])
    prob, order = prob.sort(descending=True)
    prob = prob[:k].clone()
    idxs = idxs[order[:k]].clone()
    pt = torch.div(idxs, num_classes, rounding_mode="floor")
    cls = torch.fmod(idxs, num_classes)
    off = offsets.float()[pt]
    pts = points[pt]
    left = pts[:, 0] - off[:, 0] * pts[:, 3]
    right = pts[:, 0] + off[:, 1] * pts[:, 3]
    segs = torch.stack((left, right), -1)
    long_enough = (right - left) > duration_thresh
    return segs[long_enough], prob[long_enough], cls[long_enough]


def grid_to_seconds(segs: Tensor, feat_stride: int, num_frames: int, fps: float, duration: float) -> Tensor:
    """`(g * feat_stride + 0.5 * num_frames) / fps`, then values <= 0 multiplied by 0 (a
    negative one becomes -0.0, as in the release) and values >= `duration` set to it
    (original: libs/modeling/meta_archs.py:739-743). With our features (feat_stride =
    num_frames = 2): (2g + 1) / fps.

    Example:
        >>> import torch
        >>> grid_to_seconds(torch.tensor([[-1.0, 7.0], [2.0, 100.0]]), 2, 2, 15.0, 5.0).tolist()
        [[-0.0, 1.0], [0.3333333432674408, 5.0]]
    """
    if segs.shape[0] == 0:
        return segs
    segs = (segs * feat_stride + 0.5 * num_frames) / fps
    segs[segs <= 0.0] *= 0.0
    over = segs >= duration
    segs[over] = segs[over] * 0.0 + duration
    return segs


@dataclass
class ActionFormerPostProcess:
    """Candidates of every level, `batched_nms` and seconds, for one video (original:
    libs/modeling/meta_archs.py:597-753; settings: `model.actionformer.test_cfg`).

    `nms_method` "none" keeps every candidate (no NMS, sort or cap), as the release.

    Example:
        >>> import torch
        >>> post = ActionFormerPostProcess()
        >>> pts = [torch.tensor([[0.0, 0, 4, 1], [1.0, 0, 4, 1]])]
        >>> dets = post([torch.tensor([[5.0], [-9.0]])], [torch.ones(2, 2)], pts, [torch.ones(2, dtype=torch.bool)],
        ...             fps=15.0, duration=10.0, feat_stride=2, num_frames=2)
        >>> [round(v, 4) for v in dets.segments[0].tolist()], dets.labels.tolist()
        ([-0.0, 0.2], [0])
    """

    pre_nms_thresh: float = 0.001
    pre_nms_topk: int = 2000
    iou_threshold: float = 0.1
    min_score: float = 0.001
    max_seg_num: int = 200
    nms_method: Literal["soft", "hard", "none"] = "soft"
    nms_sigma: float = 0.5
    duration_thresh: float = 0.05
    multiclass_nms: bool = True
    voting_thresh: float = 0.7

    @classmethod
    def from_config(cls, cfg: ActionFormerTestConfig) -> ActionFormerPostProcess:
        """From `model.actionformer.test_cfg`."""
        return cls(cfg.pre_nms_thresh, cfg.pre_nms_topk, cfg.iou_threshold, cfg.min_score, cfg.max_seg_num,
                   cfg.nms_method, cfg.nms_sigma, cfg.duration_thresh, cfg.multiclass_nms, cfg.voting_thresh)

    def candidates(self, cls_logits: Sequence[Tensor], offsets: Sequence[Tensor], points: Sequence[Tensor],
                   masks: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Every level's candidates concatenated in level order (grid units)."""
        parts = [level_candidates(c, o, p, m, self.pre_nms_thresh, self.pre_nms_topk, self.duration_thresh)
                 for c, o, p, m in zip(cls_logits, offsets, points, masks, strict=True)]
        return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                torch.cat([p[2] for p in parts]))

    @torch.no_grad()
    def __call__(self, cls_logits: Sequence[Tensor], offsets: Sequence[Tensor], points: Sequence[Tensor],
                 masks: Sequence[Tensor], *, fps: float, duration: float, feat_stride: int,
                 num_frames: int) -> Detections:
        """Detections of one video in seconds.

        Args:
            cls_logits / offsets / masks: per level `[T_l, K]` / `[T_l, 2]` / `[T_l]` (one
                video of `ActionFormerOutputs`); points `[T_l, 4]`.
            fps: features' frame rate (frames per second of the decoded video).
            duration: the video's length in seconds (the clamp).
            feat_stride, num_frames: frames per feature step and per feature (2 and 2).
        """
        segs, scores, labels = self.candidates(cls_logits, offsets, points, masks)
        segs, scores, labels = segs.cpu(), scores.cpu(), labels.cpu()
        if self.nms_method != "none":
            segs, scores, labels = batched_nms(
                segs, scores, labels, self.iou_threshold, self.min_score, self.max_seg_num,
                use_soft_nms=self.nms_method == "soft", multiclass=self.multiclass_nms,
                sigma=self.nms_sigma, voting_thresh=self.voting_thresh)
        segs = grid_to_seconds(segs, feat_stride, num_frames, fps, duration)
        return Detections(segs.reshape(-1, 2), scores, labels.to(torch.int64))
