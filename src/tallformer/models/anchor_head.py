"""RetinaNet-style 1-D anchor head, anchors, assigner, losses and post-processing.

Spec model-thumos14 §9 (head), §10 (anchors), §11 (assignment and losses), §12
(post-processing). All segments here are in frames: window-relative in training and
per-window prediction, video frames after `offsets` are added, seconds only after
`merge_video_detections`.

Head outputs (one tuple for all levels)::

    cls[l]: [B, A * K, T_l]   channel a * K + c   (anchor a, class c)
    reg[l]: [B, A * 2, T_l]   channel a * 2 + {0: d_centre, 1: d_log_width}

Anchors are flattened level by level, row t * A + a inside a level, matching
`flatten_level` applied to the outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from tallformer.ops.segments import decode, filter_topk, nms, segment_iof, segment_iou

__all__ = [
    "IGNORE",
    "NEGATIVE",
    "AnchorHead",
    "Detections",
    "HeadOutputs",
    "anchor_scales",
    "assign_anchors",
    "diou_loss",
    "flatten_level",
    "make_anchors",
    "merge_video_detections",
]

HeadOutputs = tuple[list[Tensor], list[Tensor]]  # (cls per level, reg per level)

NEGATIVE = -1  # assign_anchors: background anchor
IGNORE = -2  # assign_anchors: anchor left out of every loss


@dataclass
class Detections:
    """Detections of one window or one video.

    segments `[M, 2]` (frames, or seconds after `merge_video_detections`), scores `[M]`,
    labels `[M]` int64 class indices (into the config's class list).
    """

    segments: Tensor
    scores: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])


# --------------------------------------------------------------------------- anchors


def anchor_scales(octave_base_scale: float = 2.0, scales_per_octave: int = 5) -> list[float]:
    """Scales octave_base_scale * 2^(a / scales_per_octave): 2, 2.297, 2.639, 3.031, 3.482 (§10)."""
    return [octave_base_scale * 2 ** (a / scales_per_octave) for a in range(scales_per_octave)]


def make_anchors(lengths: list[int], strides: list[int], scales: list[float],
                 device: torch.device | str | None = None) -> Tensor:
    """All anchors of a window, `[sum_l T_l * A, 2]` float32 frames (window-relative).

    Anchor (level l, position t, a) = [t * s_l - len / 2, t * s_l + len / 2] with
    len = s_l * scales[a], centre offset 0 (spec §10); row order level, then t * A + a.
    For the paper (lengths 60, 30, 15, 8, 4) this gives 585 anchors.
    """
    if len(lengths) != len(strides):
        raise ValueError(f"{len(lengths)} feature levels but {len(strides)} anchor strides")
    sc = torch.tensor(scales, dtype=torch.float32, device=device)
    out = []
    for length, stride in zip(lengths, strides):
        centre = torch.arange(length, dtype=torch.float32, device=device)[:, None] * stride
        half = (stride * sc)[None, :] / 2
        out.append(torch.stack([centre - half, centre + half], dim=-1).reshape(-1, 2))
    return torch.cat(out) if out else torch.zeros(0, 2, device=device)


def flatten_level(x: Tensor, per_anchor: int) -> Tensor:
    """`[B, A * D, T] -> [B, T * A, D]` (row t * A + a, as the anchors)."""
    b, _, t = x.shape
    return x.permute(0, 2, 1).reshape(b, -1, per_anchor)


# --------------------------------------------------------------------------- assignment


def assign_anchors(anchors: Tensor, gt_segments: Tensor, gt_ignore: Tensor | None = None, *,
                   pos_iou_thr: float = 0.6, neg_iou_thr: float = 0.4,
                   min_pos_iou: float = 0.0, ignore_iof_thr: float = -1.0) -> Tensor:
    """Max-IoU assignment (spec model-thumos14 §11). Returns `[N]` int64.

    Value g >= 0: positive for gt g; `NEGATIVE` (-1): background; `IGNORE` (-2): no loss.
    1. every anchor starts ignored; 2. max IoU over gts in [0, neg_iou_thr) -> negative;
    3. max IoU >= pos_iou_thr -> positive for the argmax gt; 4. low-quality matches: for
    every gt (in order) whose best IoU is >= min_pos_iou AND > 0, every anchor reaching that
    best IoU becomes positive for it. The "> 0" is the guard of spec §18.9: with
    min_pos_iou 0, a gt overlapping no anchor would otherwise make every anchor positive.
    When ignore_iof_thr >= 0, anchors whose overlap with an ignore region, as a fraction of
    the anchor's length, exceeds it are ignored (never positive, never negative).

    Args:
        anchors: `[N, 2]`; gt_segments: `[G, 2]`; gt_ignore: `[I, 2]` or None (same unit).
    """
    n = anchors.shape[0]
    assigned = torch.full((n,), IGNORE, dtype=torch.long, device=anchors.device)
    ignored = torch.zeros(n, dtype=torch.bool, device=anchors.device)
    if ignore_iof_thr >= 0 and gt_ignore is not None and gt_ignore.numel():
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


# --------------------------------------------------------------------------- losses


def diou_loss(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """1-D distance-IoU loss per pair, `[N, 2], [N, 2] -> [N]` (spec model-thumos14 §11).

    I = overlap, U = len_p + len_t - I + eps, C = enclosing length, rho = centre distance:
    loss = 1 - I / U + rho^2 / (C^2 + eps).
    """
    inter = (torch.minimum(pred[:, 1], target[:, 1])
             - torch.maximum(pred[:, 0], target[:, 0])).clamp(min=0)
    union = (pred[:, 1] - pred[:, 0]) + (target[:, 1] - target[:, 0]) - inter + eps
    enclose = (torch.maximum(pred[:, 1], target[:, 1])
               - torch.minimum(pred[:, 0], target[:, 0])).clamp(min=0)
    rho = (pred[:, 0] + pred[:, 1] - target[:, 0] - target[:, 1]) / 2
    return 1 - inter / union + rho ** 2 / (enclose ** 2 + eps)


# --------------------------------------------------------------------------- head


def _conv_block(channels_in: int, channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(channels_in, channels, 3, padding=1, bias=False),
        nn.BatchNorm1d(channels),
        nn.ReLU(inplace=True),
    )


class AnchorHead(nn.Module):
    """RetinaHead in 1-D, shared by all levels (spec model-thumos14 §9-§12).

    cls / reg branches: `stacked_convs` x [Conv1d k3 no bias + BN + ReLU] (the BN is shared
    across levels, as the original), then Conv1d k3 to A * K (cls) and A * 2 (reg).
    Init: stacked convs N(0, 0.01), cls out N(0, 0.01) with bias -log(0.99 / 0.01) (prior
    0.01), reg out N(0, 0.01) with bias 0. A = scales_per_octave anchors per position.

    `forward([[B, C, T_l]]) -> (cls [[B, A*K, T_l]], reg [[B, A*2, T_l]])`.
    """

    def __init__(self, num_classes: int = 20, in_channels: int = 256, feat_channels: int = 256,
                 stacked_convs: int = 4, anchor_strides: list[int] | tuple[int, ...] = (8, 16, 32, 64, 128),
                 octave_base_scale: float = 2.0, scales_per_octave: int = 5, *,
                 pos_iou_thr: float = 0.6, neg_iou_thr: float = 0.4, min_pos_iou: float = 0.0,
                 ignore_iof_thr: float = -1.0, focal_gamma: float = 2.0, focal_alpha: float = 0.25,
                 cls_loss_weight: float = 1.0, reg_loss_weight: float = 1.0,
                 score_thr: float = 0.005, nms_pre: int = 1000) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.anchor_strides = list(anchor_strides)
        self.scales = anchor_scales(octave_base_scale, scales_per_octave)
        self.num_anchors = scales_per_octave
        self.pos_iou_thr, self.neg_iou_thr = pos_iou_thr, neg_iou_thr
        self.min_pos_iou, self.ignore_iof_thr = min_pos_iou, ignore_iof_thr
        self.focal_gamma, self.focal_alpha = focal_gamma, focal_alpha
        self.cls_loss_weight, self.reg_loss_weight = cls_loss_weight, reg_loss_weight
        self.score_thr, self.nms_pre = score_thr, nms_pre

        def tower() -> nn.Sequential:
            return nn.Sequential(*(
                _conv_block(in_channels if i == 0 else feat_channels, feat_channels)
                for i in range(stacked_convs)
            ))

        self.cls_convs = tower()
        self.reg_convs = tower()
        last = feat_channels if stacked_convs else in_channels
        self.cls_out = nn.Conv1d(last, self.num_anchors * num_classes, 3, padding=1)
        self.reg_out = nn.Conv1d(last, self.num_anchors * 2, 3, padding=1)
        for m in (*self.cls_convs.modules(), *self.reg_convs.modules()):
            if isinstance(m, nn.Conv1d):
                nn.init.normal_(m.weight, std=0.01)
        nn.init.normal_(self.cls_out.weight, std=0.01)
        nn.init.constant_(self.cls_out.bias, -math.log((1 - 0.01) / 0.01))
        nn.init.normal_(self.reg_out.weight, std=0.01)
        nn.init.zeros_(self.reg_out.bias)

    def forward(self, feats: list[Tensor]) -> HeadOutputs:
        cls = [self.cls_out(self.cls_convs(f)) for f in feats]
        reg = [self.reg_out(self.reg_convs(f)) for f in feats]
        return cls, reg

    def anchors(self, lengths: list[int], device: torch.device | str | None = None) -> Tensor:
        """Anchors `[sum T_l * A, 2]` for feature levels of these lengths."""
        return make_anchors(lengths, self.anchor_strides, self.scales, device)

    def _flat(self, outputs: HeadOutputs) -> tuple[Tensor, Tensor, Tensor]:
        cls, reg = outputs
        lengths = [c.shape[-1] for c in cls]
        if len(lengths) != len(self.anchor_strides):
            raise ValueError(f"head outputs have {len(lengths)} levels but "
                             f"{len(self.anchor_strides)} anchor strides are configured")
        cls_flat = torch.cat([flatten_level(c, self.num_classes) for c in cls], dim=1)
        reg_flat = torch.cat([flatten_level(r, 2) for r in reg], dim=1)
        return cls_flat, reg_flat, self.anchors(lengths, cls[0].device)

    def loss(self, outputs: HeadOutputs, gt_segments: list[Tensor], gt_labels: list[Tensor],
             gt_ignore: list[Tensor] | None = None) -> dict[str, Tensor]:
        """Focal + DIoU losses (spec model-thumos14 §11).

        Args:
            outputs: the head outputs for B windows.
            gt_segments: B tensors `[G, 2]`, window frames. gt_labels: B int tensors `[G]`
                in [0, num_classes). gt_ignore: B tensors `[I, 2]` (ignore regions) or None.
        Returns:
            {"loss_cls", "loss_reg", "loss"}; each loss summed over anchors and divided by
            N = sum over windows of max(#positives, 1); loss = weighted sum of both.
        """
        cls_flat, reg_flat, anchors = self._flat(outputs)
        b = cls_flat.shape[0]
        if len(gt_segments) != b or len(gt_labels) != b:
            raise ValueError(f"loss: {b} windows but {len(gt_segments)} gt segment tensors and "
                             f"{len(gt_labels)} label tensors")
        loss_cls = cls_flat.new_zeros((), dtype=torch.float32)
        loss_reg = cls_flat.new_zeros((), dtype=torch.float32)
        norm = cls_flat.new_zeros((), dtype=torch.float32)
        for i in range(b):
            labels = gt_labels[i].reshape(-1)
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"loss: window {i} has labels outside [0, {self.num_classes}): "
                                 f"{labels.tolist()}; check model.head.num_classes")
            labels = labels.to(device=anchors.device, dtype=torch.long)
            segs = gt_segments[i].to(device=anchors.device, dtype=torch.float32).reshape(-1, 2)
            ignore = None if gt_ignore is None else gt_ignore[i].to(anchors.device).reshape(-1, 2)
            assigned = assign_anchors(
                anchors, segs, ignore, pos_iou_thr=self.pos_iou_thr, neg_iou_thr=self.neg_iou_thr,
                min_pos_iou=self.min_pos_iou, ignore_iof_thr=self.ignore_iof_thr,
            )
            pos = assigned >= 0
            logits = cls_flat[i].float()
            target = torch.zeros_like(logits)
            target[pos, labels[assigned[pos]]] = 1.0
            weight = (assigned != IGNORE).to(logits.dtype)
            focal = sigmoid_focal_loss(logits, target, alpha=self.focal_alpha,
                                       gamma=self.focal_gamma, reduction="none")
            loss_cls = loss_cls + (focal * weight[:, None]).sum()
            pred = decode(reg_flat[i][pos].float(), anchors[pos])
            loss_reg = loss_reg + diou_loss(pred, segs[assigned[pos]]).sum()
            norm = norm + pos.sum().clamp(min=1)  # spec §11: sum over windows of max(#pos, 1)
        loss_cls = self.cls_loss_weight * loss_cls / norm
        loss_reg = self.reg_loss_weight * loss_reg / norm
        return {"loss_cls": loss_cls, "loss_reg": loss_reg, "loss": loss_cls + loss_reg}

    @torch.no_grad()
    def predict(self, outputs: HeadOutputs, lengths: list[int] | Tensor,
                offsets: list[int] | Tensor | None = None) -> list[Detections]:
        """Per-window candidates (spec model-thumos14 §12), one `Detections` per window.

        Per level, if it has more than `nms_pre` anchors, keep the `nms_pre` with the best
        max-class score; then every (anchor, class) pair with sigmoid score > `score_thr`
        (strict); segments decoded with both ends clamped to [0, lengths[i]] (the window's
        real length, frames) and shifted by offsets[i] (window start, video frames).
        No NMS here: see `merge_video_detections`.
        """
        cls, reg = outputs
        b = cls[0].shape[0]
        lengths_l = [float(x) for x in (lengths.tolist() if isinstance(lengths, Tensor) else lengths)]
        offs = [0.0] * b if offsets is None else [
            float(x) for x in (offsets.tolist() if isinstance(offsets, Tensor) else offsets)]
        if len(lengths_l) != b or len(offs) != b:
            raise ValueError(f"predict: {b} windows but {len(lengths_l)} lengths, {len(offs)} offsets")
        anchors_all = self.anchors([c.shape[-1] for c in cls], cls[0].device)
        level_rows = [c.shape[-1] * self.num_anchors for c in cls]
        results = []
        for i in range(b):
            seg_parts, score_parts, label_parts = [], [], []
            start = 0
            for c, r, rows in zip(cls, reg, level_rows):
                anchors = anchors_all[start:start + rows]
                start += rows
                scores = flatten_level(c[i:i + 1], self.num_classes)[0].float().sigmoid()
                deltas = flatten_level(r[i:i + 1], 2)[0].float()
                if rows > self.nms_pre:
                    top = scores.max(dim=1).values.topk(self.nms_pre).indices
                    scores, deltas, anchors = scores[top], deltas[top], anchors[top]
                row, col, kept = filter_topk(scores, self.score_thr)
                segs = decode(deltas[row], anchors[row], max_length=lengths_l[i]) + offs[i]
                seg_parts.append(segs)
                score_parts.append(kept)
                label_parts.append(col)
            results.append(Detections(torch.cat(seg_parts), torch.cat(score_parts),
                                      torch.cat(label_parts)))
        return results


def merge_video_detections(windows: list[Detections], fps: float, *, method: str = "nmw",
                           iou_threshold: float = 0.5, sigma: float = 0.5, min_score: float = 0.0,
                           max_per_video: int = 1200) -> Detections:
    """All windows of one video -> final detections in seconds (spec model-thumos14 §12).

    Concatenates the windows' candidates (video frames), runs class-wise
    `tallformer.ops.segments.nms` (`method` = test.nms_method, "nmw" in the paper, IoU 0.5),
    keeps the best `max_per_video` (1200) and divides by `fps`.
    """
    if fps <= 0:
        raise ValueError(f"merge_video_detections: fps must be > 0, got {fps}")
    if not windows:
        return Detections(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    segs = torch.cat([w.segments for w in windows])
    scores = torch.cat([w.scores for w in windows])
    labels = torch.cat([w.labels for w in windows])
    segs, scores, labels = nms(segs, scores, labels, method, iou_threshold,  # type: ignore[arg-type]
                               sigma=sigma, min_score=min_score, max_num=max_per_video)
    return Detections(segs / fps, scores, labels)
