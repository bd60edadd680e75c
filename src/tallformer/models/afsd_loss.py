"""Losses of the ActivityNet (AFSD) detector (original: AFSD/anet_video_cls/multisegment_loss.py,
membank/train_membank.py:123-204,268-283).

Per clip b, with P priors (centre x_k as a fraction of the clip, level l_k) and ground-truth
segments (s_n, e_n) in clip frames, T the clip length:

- matching (`match_priors`): GT n is valid for prior k when l = T x_k - s_n >= 0,
  r = e_n - T x_k >= 0 and lower_l < max(l, r) <= upper_l (the level's range); the valid
  GT with the smallest l + r is the target, the prior is positive (label 1) if any is.
- coarse regression: sum over positives of 1 - GIoU of the (left, right) distances / N.
- classification: softmax focal loss (alpha 0.25 background / 0.75 action, gamma 2) over
  all priors / N.
- refinement: positives whose coarse IoU is below min(refine_iou, best positive IoU) become
  negatives; SmoothL1 of the offsets (target: the distance errors in half proposal widths)
  over the refinement positives / PN, and the focal loss on the refined logits / PN.
- quality: BCE-with-logits of the centre logit against the IoU of the refined segment,
  over the coarse positives / N.
- boundary: BCE of mean-over-channels tanh of the frame-level (and level-0 proposal)
  features against the start / end regions of the GTs.
- action: cross-entropy of the video logits against the first GT's class + 1.

N = max(#positives, 1), PN = max(#refinement positives, 1); the per-clip terms are
averaged over the batch. Total = loc_weight (loc + prop_loc) + cls_weight (cls + prop_cls
+ quality) + start + end + action_weight action (train_membank.py:268-283).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from tallformer.models.afsd_outputs import AfsdOutputs
from tallformer.models.errors import ModelError

if TYPE_CHECKING:
    from tallformer.config import Config

__all__ = [
    "AfsdLoss",
    "action_targets",
    "boundary_bce",
    "boundary_targets",
    "giou_loss",
    "lr_iou",
    "match_priors",
    "refinement_targets",
    "softmax_focal_loss",
]

_EPS = torch.finfo(torch.float32).eps  # multisegment_loss.py:83-116
FOCAL_ALPHA = (0.25, 0.75)  # background, action (multisegment_loss.py:160-163: alpha 0.25 at index 0)
FOCAL_GAMMA = 2.0
FOCAL_EPS = 1e-6  # added to p_t (multisegment_loss.py:10-80)
BOUNDARY_AUX_WEIGHT = 0.1  # the level-0 proposal features' boundary terms (train_membank.py:183-192)


def match_priors(priors: Tensor, segments: Tensor, num_frames: int,
                 level_ranges: Tensor) -> tuple[Tensor, Tensor]:
    """Assign GT segments to priors by level ranges (original: multisegment_loss.py:204-233).

    Args:
        priors: `[P, 2]` (x, level). segments: `[N, 2]` GT (start, end) in clip frames.
        num_frames: clip length T. level_ranges: `[L, 2]` (lower, upper] in frames per level.
    Returns:
        (labels `[P]` int64, 1 for a positive; targets `[P, 2]` (left, right) distances in
        frames to the chosen GT, to the first GT for negatives). The GT coordinates are
        normalised by T in float64 and stored float32, as the original's targets.
    """
    x = priors[:, 0]
    p = x.shape[0]
    if segments.shape[0] == 0:
        return (torch.zeros(p, dtype=torch.long, device=x.device),
                torch.zeros(p, 2, dtype=x.dtype, device=x.device))
    gt = (segments.double() / num_frames).to(x.dtype)
    s, e = gt[:, 0], gt[:, 1]
    left = (x[:, None] - s[None, :]) * num_frames  # [P, N]
    right = (e[None, :] - x[:, None]) * num_frames
    longest = torch.maximum(left, right)
    ranges = level_ranges.to(device=x.device, dtype=x.dtype)[priors[:, 1].long()]  # [P, 2]
    invalid = ((left < 0) | (right < 0) | (longest <= ranges[:, :1]) | (longest > ranges[:, 1:]))
    never = 2.0 * num_frames
    area = (left + right).masked_fill(invalid, never)
    best_area, best = area.min(dim=1)  # the first of equal areas
    targets = torch.stack([(x - s[best]) * num_frames, (e[best] - x) * num_frames], dim=1)
    return (best_area < never).long(), targets


def lr_iou(pred: Tensor, target: Tensor) -> Tensor:
    """IoU of segments given as (left, right) distances from the same point: `[M, 2]` x2 ->
    `[M]`, intersection / max(union, eps) (original: multisegment_loss.py:83-116)."""
    inter = torch.minimum(pred[:, 0], target[:, 0]) + torch.minimum(pred[:, 1], target[:, 1])
    union = (target[:, 0] + target[:, 1]) + (pred[:, 0] + pred[:, 1]) - inter
    return inter / union.clamp(min=_EPS)


def giou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 - GIoU of (left, right) distance pairs: `[M, 2]` x2 -> `[M]` (original:
    multisegment_loss.py:83-116). GIoU = IoU - (E - U) / max(E, eps) with E the enclosing
    length max(p_l, g_l) + max(p_r, g_r)."""
    inter = torch.minimum(pred[:, 0], target[:, 0]) + torch.minimum(pred[:, 1], target[:, 1])
    union = (target[:, 0] + target[:, 1]) + (pred[:, 0] + pred[:, 1]) - inter
    iou = inter / union.clamp(min=_EPS)
    enclosing = torch.maximum(pred[:, 0], target[:, 0]) + torch.maximum(pred[:, 1], target[:, 1])
    return 1.0 - (iou - (enclosing - union) / enclosing.clamp(min=_EPS))


def softmax_focal_loss(logits: Tensor, labels: Tensor, alpha: Sequence[float] = FOCAL_ALPHA,
                       gamma: float = FOCAL_GAMMA) -> Tensor:
    """Summed focal loss on the softmax (original: multisegment_loss.py:10-80):
    -alpha_y (1 - p_t)^gamma log p_t with p_t = softmax(logits)[y] + 1e-6.
    `logits [P, K]`, `labels [P]` -> scalar."""
    prob = torch.softmax(logits, dim=-1)
    pt = prob.gather(1, labels[:, None]).squeeze(1) + FOCAL_EPS
    weight = torch.tensor(list(alpha), dtype=prob.dtype, device=prob.device)[labels]
    return (-torch.pow(1.0 - pt, gamma) * (weight * pt.log())).sum()


@torch.no_grad()
def refinement_targets(loc: Tensor, targets: Tensor, labels: Tensor,
                       refine_iou: float) -> tuple[Tensor, Tensor]:
    """Refinement labels and offsets from the (detached) coarse distances (original:
    multisegment_loss.py:235-246).

    Args:
        loc: `[P, 2]` coarse distances. targets, labels: `match_priors`'s. refine_iou: --piou.
    Returns:
        (labels `[P]`: the coarse labels, 0 where IoU(loc, target) < min(refine_iou, the best
        positive's IoU); offsets `[P, 2]` = (target - loc) / (w / 2), w = loc_l + loc_r).
    """
    iou = lr_iou(loc, targets)
    pos = labels > 0
    best = float(iou[pos].max()) if bool(pos.any()) else 2.0
    refined = labels.clone()
    refined[iou < min(refine_iou, best)] = 0
    half = 0.5 * (loc[:, 0] + loc[:, 1])
    return refined, (targets - loc) / half[:, None]


@torch.no_grad()
def boundary_targets(segments: Tensor, num_frames: int) -> Tensor:
    """Start / end regions of the GTs: `[N, 2]` frames -> `[2, T]` float (original:
    AFSD/anet_video_cls/anet_dataset.py:78-92). For each GT, d = max((e - s) / 10, 2);
    frames round(s - d/2) .. round(s + d/2) (inclusive, clipped to [0, T - 1], rounding
    half-to-even) are 1 in the start row, likewise around e in the end row. GTs with
    e <= s are skipped."""
    seg = segments.double()
    seg = seg[seg[:, 1] > seg[:, 0]]
    frames = torch.arange(num_frames, device=segments.device, dtype=torch.float64)
    out = torch.zeros(2, num_frames, device=segments.device)
    if seg.shape[0] == 0:
        return out
    d = torch.clamp((seg[:, 1] - seg[:, 0]) / 10.0, min=2.0)
    for row in range(2):
        point = seg[:, row]
        lo = torch.round(point - d / 2).clamp(0, num_frames - 1)
        hi = torch.round(point + d / 2).clamp(0, num_frames - 1)
        inside = (frames[None] >= lo[:, None]) & (frames[None] <= hi[:, None])
        out[row] = inside.any(dim=0).float()
    return out


def boundary_bce(features: Tensor, targets: Tensor) -> Tensor:
    """Mean BCE of a(f) = mean over channels of tanh(features) against the targets
    (original: train_membank.py:123-144). `features [B, T', C]`, `targets [B, T']`.
    The log terms are clamped at -100 as `F.binary_cross_entropy`; written out so that it
    runs under autocast (where that function is refused)."""
    a = torch.tanh(features.float()).mean(dim=-1)
    log_a = torch.log(a).clamp(min=-100.0)
    log_b = torch.log(1.0 - a).clamp(min=-100.0)
    return -(targets * log_a + (1.0 - targets) * log_b).mean()


def action_targets(segments: Sequence[Tensor], labels: Sequence[Tensor], device: torch.device) -> Tensor:
    """Video labels for the action cross-entropy: the first GT's (with e > s) class + 1
    (original: multisegment_loss.py:331-373; index 0 is background), 0 for a clip without
    a GT (the original never trains on one). -> `[B]` int64."""
    out = []
    for seg, lab in zip(segments, labels, strict=True):
        valid = torch.nonzero(seg[:, 1] > seg[:, 0]).flatten()
        out.append(int(lab[valid[0]]) + 1 if valid.numel() else 0)
    return torch.tensor(out, dtype=torch.long, device=device)


class AfsdLoss:
    """The detector's losses, configured from `model.afsd` (see the module docstring).

    Args:
        num_frames: clip length T (768).
        level_ranges: `[L][2]` (lower, upper] per level, in frames.
        refine_iou: IoU threshold of refinement positives (--piou 0.6).
        loc_weight, cls_weight, action_weight: --lw, --cw, the action loss weight.
        detach_quality_target: detach the quality target (ours); False: the original's
            live target, which also pushes on loc and prop_loc (multisegment_loss.py:268-278).
    """

    def __init__(self, num_frames: int = 768,
                 level_ranges: Sequence[Sequence[float]] = ((0, 30), (15, 60), (30, 120), (60, 240),
                                                            (96, 768), (256, 768)),
                 refine_iou: float = 0.6, loc_weight: float = 1.0, cls_weight: float = 1.0,
                 action_weight: float = 1.0, detach_quality_target: bool = True) -> None:
        self.num_frames = num_frames
        self.level_ranges = torch.tensor([list(r) for r in level_ranges], dtype=torch.float32)
        self.refine_iou = refine_iou
        self.loc_weight = loc_weight
        self.cls_weight = cls_weight
        self.action_weight = action_weight
        self.detach_quality_target = detach_quality_target

    @classmethod
    def from_config(cls, cfg: Config) -> AfsdLoss:
        a = cfg.model.afsd
        return cls(cfg.data.num_frames, a.level_ranges, a.refine_iou, a.loc_weight, a.cls_weight,
                   a.action_weight, a.detach_quality_target)

    def clip_losses(self, out: AfsdOutputs, b: int, segments: Tensor) -> dict[str, Tensor]:
        """The five per-clip terms of clip `b`, normalised by N or PN (multisegment_loss.py:204-288)."""
        loc, conf = out.loc[b].float(), out.conf[b].float()
        prop_loc, prop_conf = out.prop_loc[b].float(), out.prop_conf[b].float()
        center = out.center[b].float().reshape(-1)
        labels, targets = match_priors(out.priors, segments.to(loc.device).float(),
                                       self.num_frames, self.level_ranges)
        prop_labels, prop_targets = refinement_targets(loc.detach(), targets, labels, self.refine_iou)
        pos, prop_pos = labels > 0, prop_labels > 0
        loss_loc = giou_loss(loc[pos], targets[pos]).sum()
        loss_prop_loc = F.smooth_l1_loss(prop_loc[prop_pos], prop_targets[prop_pos], reduction="sum")
        coarse = loc[pos]
        if coarse.shape[0]:
            width = (coarse[:, 0] + coarse[:, 1])[:, None]
            refined = 0.5 * width * prop_loc[pos] + coarse
            quality = lr_iou(refined, targets[pos]).clamp(min=0)
            if self.detach_quality_target:
                quality = quality.detach()
            loss_quality = F.binary_cross_entropy_with_logits(center[pos], quality, reduction="sum")
        else:  # an attached (near) zero, as the original (multisegment_loss.py:268-278)
            loss_quality = coarse.sum() + center.mean() * 1e-9
        n = max(int(pos.sum()), 1)
        pn = max(int(prop_pos.sum()), 1)
        return {
            "loss_loc": loss_loc / n,
            "loss_cls": softmax_focal_loss(conf, labels) / n,
            "loss_prop_loc": loss_prop_loc / pn,
            "loss_prop_cls": softmax_focal_loss(prop_conf, prop_labels) / pn,
            "loss_quality": loss_quality / n,
        }

    def boundary_losses(self, out: AfsdOutputs, gt_segments: Sequence[Tensor]) -> dict[str, Tensor]:
        """L_start, L_end: frame-level BCE + 0.1 x the level-0 proposal branches' BCE
        (targets taken every T / t0 frames, train_membank.py:183-192)."""
        device = out.start.device
        targets = torch.stack([boundary_targets(s.to(device), self.num_frames) for s in gt_segments])
        step = self.num_frames // out.start_loc_prop.shape[1]
        coarse = targets[:, :, ::step][:, :, : out.start_loc_prop.shape[1]]
        losses = {}
        for row, name, frame, loc_prop, conf_prop in (
                (0, "loss_start", out.start, out.start_loc_prop, out.start_conf_prop),
                (1, "loss_end", out.end, out.end_loc_prop, out.end_conf_prop)):
            aux = boundary_bce(loc_prop, coarse[:, row]) + boundary_bce(conf_prop, coarse[:, row])
            losses[name] = boundary_bce(frame, targets[:, row]) + BOUNDARY_AUX_WEIGHT * aux
        return losses

    def __call__(self, out: AfsdOutputs, gt_segments: Sequence[Tensor],
                 gt_labels: Sequence[Tensor]) -> dict[str, Tensor]:
        """All losses of a batch: `loss` (the total) and each term.

        Args:
            out: the detector's outputs for B clips.
            gt_segments: per clip `[N_b, 2]` GT (start, end) in clip frames.
            gt_labels: per clip `[N_b]` class indices (0-based actions; the first one is the
                video's label).
        """
        batch = out.loc.shape[0]
        if len(gt_segments) != batch or len(gt_labels) != batch:
            raise ModelError(f"AFSD loss: {batch} clips but {len(gt_segments)} segment and "
                             f"{len(gt_labels)} label lists; give one of each per clip")
        per_clip = [self.clip_losses(out, b, gt_segments[b]) for b in range(batch)]
        losses = {k: torch.stack([c[k] for c in per_clip]).sum() / batch for k in per_clip[0]}
        losses.update(self.boundary_losses(out, gt_segments))
        logits = out.action_logits.float()
        losses["loss_action"] = F.cross_entropy(
            logits, action_targets(gt_segments, gt_labels, logits.device))
        total = (self.loc_weight * (losses["loss_loc"] + losses["loss_prop_loc"])
                 + self.cls_weight * (losses["loss_cls"] + losses["loss_prop_cls"] + losses["loss_quality"])
                 + losses["loss_start"] + losses["loss_end"]
                 + self.action_weight * losses["loss_action"])
        return {"loss": total, **losses}
