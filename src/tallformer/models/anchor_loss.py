"""The anchor head's loss: sigmoid focal loss on every anchor, DIoU on the positives.

Targets (original: vedatad/criteria/segment_anchor_criterion.py:83-184): positives get their
gt's class, negatives an all-zero one-hot, ignored anchors weight 0; the regression target
is the gt segment itself, the prediction is decoded from its anchor first
(`reg_decoded_segment=True`, segment_anchor_criterion.py:147-153). Normaliser N = sum over
windows of max(#positives, 1) (segment_anchor_criterion.py:268-269, 384-385).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from tallformer.models.coder import SegmentCoder
from tallformer.models.errors import ModelError
from tallformer.models.matcher import IGNORE, MaxIoUMatcher

if TYPE_CHECKING:
    from tallformer.config import HeadConfig

__all__ = ["AnchorLoss", "diou_loss"]


def diou_loss(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """1-D distance-IoU loss per pair, `[N, 2], [N, 2] -> [N]`
    (original: vedatad/criteria/losses/iou_loss.py:101-140, 276-311).

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


@dataclass
class AnchorLoss:
    """Focal (gamma 2, alpha 0.25) + DIoU, weights 1 and 1 in the paper (original:
    configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:187-195).

    The focal loss equals `torchvision.ops.sigmoid_focal_loss` with a one-hot target
    (original: vedatad/criteria/losses/focal_loss.py:45-154).
    """

    matcher: MaxIoUMatcher = field(default_factory=MaxIoUMatcher)
    coder: SegmentCoder = field(default_factory=SegmentCoder)
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    cls_loss_weight: float = 1.0
    reg_loss_weight: float = 1.0

    @classmethod
    def from_config(cls, cfg: HeadConfig) -> AnchorLoss:
        """From `model.head`: the assigner thresholds, focal parameters and loss weights."""
        return cls(MaxIoUMatcher.from_config(cfg), SegmentCoder(), cfg.focal_gamma,
                   cfg.focal_alpha, cfg.cls_loss_weight, cfg.reg_loss_weight)

    def __call__(self, cls_flat: Tensor, reg_flat: Tensor, anchors: Tensor,
                 gt_segments: list[Tensor], gt_labels: list[Tensor],
                 gt_ignore: list[Tensor] | None = None) -> dict[str, Tensor]:
        """The losses of B windows.

        Args:
            cls_flat: `[B, N, K]` logits, reg_flat: `[B, N, 2]` deltas, anchors `[N, 2]`
                (the rows of `tallformer.models.anchors.flatten_level`).
            gt_segments: B tensors `[G, 2]`, window frames. gt_labels: B int tensors `[G]`
                in [0, K). gt_ignore: B tensors `[I, 2]` (ignore regions) or None.
        Returns:
            {"loss_cls", "loss_reg", "loss"}; each loss summed over anchors and divided by
            N = sum over windows of max(#positives, 1); loss = weighted sum of both.
        """
        b, num_classes = cls_flat.shape[0], cls_flat.shape[-1]
        if len(gt_segments) != b or len(gt_labels) != b:
            raise ValueError(f"loss: {b} windows but {len(gt_segments)} gt segment tensors and "
                             f"{len(gt_labels)} label tensors")
        loss_cls = cls_flat.new_zeros((), dtype=torch.float32)
        loss_reg = cls_flat.new_zeros((), dtype=torch.float32)
        norm = cls_flat.new_zeros((), dtype=torch.float32)
        for i in range(b):
            labels = gt_labels[i].reshape(-1)
            if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
                raise ModelError(f"loss: window {i} has labels outside [0, {num_classes}): "
                                 f"{labels.tolist()}; check model.num_classes")
            labels = labels.to(device=anchors.device, dtype=torch.long)
            segs = gt_segments[i].to(device=anchors.device, dtype=torch.float32).reshape(-1, 2)
            ignore = None if gt_ignore is None else gt_ignore[i].to(anchors.device).reshape(-1, 2)
            assigned = self.matcher(anchors, segs, ignore)
            pos = assigned >= 0
            logits = cls_flat[i].float()
            target = torch.zeros_like(logits)
            target[pos, labels[assigned[pos]]] = 1.0
            weight = (assigned != IGNORE).to(logits.dtype)
            focal = sigmoid_focal_loss(logits, target, alpha=self.focal_alpha,
                                       gamma=self.focal_gamma, reduction="none")
            loss_cls = loss_cls + (focal * weight[:, None]).sum()
            pred = self.coder.decode(reg_flat[i][pos].float(), anchors[pos])
            loss_reg = loss_reg + diou_loss(pred, segs[assigned[pos]]).sum()
            norm = norm + pos.sum().clamp(min=1)  # sum over windows of max(#pos, 1)
        loss_cls = self.cls_loss_weight * loss_cls / norm
        loss_reg = self.reg_loss_weight * loss_reg / norm
        return {"loss_cls": loss_cls, "loss_reg": loss_reg, "loss": loss_cls + loss_reg}
