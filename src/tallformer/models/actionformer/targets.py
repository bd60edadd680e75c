"""ActionFormer's training targets: ground truth to the feature grid, and label assignment
by centre sampling and regression ranges (original: libs/datasets/thumos14.py:163-166;
libs/modeling/meta_archs.py:430-532)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["assign_points", "frames_to_grid"]


def frames_to_grid(segments: Tensor, feat_stride: int, num_frames: int) -> Tensor:
    """Segments in frames (`seconds x fps`) -> feature-grid units:
    `(f - 0.5 * num_frames) / feat_stride`, in float32 (original:
    libs/datasets/thumos14.py:163-166; with our Video Swin features, one per 2 frames,
    feat_stride = num_frames = 2: g = (f - 1) / 2). Small negative values are fine.

    Example:
        >>> import torch
        >>> frames_to_grid(torch.tensor([[1.0, 21.0]]), 2, 2).tolist()
        [[0.0, 10.0]]
    """
    return (segments.float() - 0.5 * num_frames) / feat_stride


def assign_points(points: Tensor, gt_segments: Tensor, gt_labels: Tensor, num_classes: int,
                  center_sample: str = "radius", center_sample_radius: float = 1.5) -> tuple[Tensor, Tensor]:
    """Classification and regression targets of one sample (original:
    libs/modeling/meta_archs.py:448-532).

    For point t (stride s) and ground truth [a, b]: d_l = t - a, d_r = b - t. The point
    is inside with `center_sample="radius"` when min(t - max(c - r s, a), min(c + r s, b) - t)
    > 0 (strict; c the centre, r the radius), with "none" when min(d_l, d_r) > 0; and in
    range when lo <= max(d_l, d_r) <= hi (inclusive). Of the ground truths passing both, the
    shortest wins; every one within 1e-3 of that length adds its one-hot label (clamped
    to 1: multi-label targets), and the regression target is (d_l, d_r) / s of the first
    shortest.

    Args:
        points: `[N, 4]` the points of every level concatenated (t, lo, hi, stride).
        gt_segments: `[G, 2]` in grid units. gt_labels: `[G]` int in [0, num_classes).
    Returns:
        (cls targets `[N, num_classes]` in {0, 1}, reg targets `[N, 2]` in strides).

    Example:
        >>> import torch
        >>> pts = torch.tensor([[0.0, 0, 100, 1], [2.0, 0, 100, 1], [4.0, 0, 100, 1]])
        >>> cls, reg = assign_points(pts, torch.tensor([[1.0, 3.0]]), torch.tensor([1]), 2)
        >>> cls.tolist(), reg[1].tolist()
        ([[0.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [1.0, 1.0])
    """
    num_pts, num_gts = points.shape[0], gt_segments.shape[0]
    if num_gts == 0:
        return gt_segments.new_zeros(num_pts, num_classes), gt_segments.new_zeros(num_pts, 2)
    lens = (gt_segments[:, 1] - gt_segments[:, 0])[None, :].repeat(num_pts, 1)  # [N, G]
    segs = gt_segments[None].expand(num_pts, num_gts, 2)
    t = points[:, 0, None]
    stride = points[:, 3, None]
    reg = torch.stack((t - segs[:, :, 0], segs[:, :, 1] - t), dim=-1)  # [N, G, 2]
    if center_sample == "radius":
        center = 0.5 * (segs[:, :, 0] + segs[:, :, 1])
        t_min = center - stride * center_sample_radius
        t_max = center + stride * center_sample_radius
        dist = torch.stack((t - torch.maximum(t_min, segs[:, :, 0]),
                            torch.minimum(t_max, segs[:, :, 1]) - t), dim=-1)
        inside = dist.min(-1)[0] > 0
    elif center_sample == "none":
        inside = reg.min(-1)[0] > 0
    else:
        raise ValueError(f"center_sample must be 'radius' or 'none', got {center_sample!r}")
    max_dist = reg.max(-1)[0]
    in_range = (max_dist >= points[:, 1, None]) & (max_dist <= points[:, 2, None])
    lens = lens.masked_fill(~inside, float("inf")).masked_fill(~in_range, float("inf"))
    min_len, min_idx = lens.min(dim=1)
    near = ((lens <= (min_len[:, None] + 1e-3)) & (lens < float("inf"))).to(reg.dtype)
    cls = (near @ F.one_hot(gt_labels.long(), num_classes).to(reg.dtype)).clamp_(0.0, 1.0)
    reg = reg[torch.arange(num_pts, device=reg.device), min_idx] / stride
    return cls, reg
