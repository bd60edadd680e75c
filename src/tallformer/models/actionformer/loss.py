"""ActionFormer's losses: sigmoid focal loss on every valid (point, class), centre DIoU on
the positives, both divided by a moving average of the number of positives (original:
libs/modeling/meta_archs.py:534-595; libs/modeling/losses.py)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from tallformer.models.actionformer.targets import assign_points
from tallformer.models.errors import ModelError

__all__ = ["ActionFormerLoss", "ctr_diou_loss_1d"]


def ctr_diou_loss_1d(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Distance-IoU loss of segments given as (left, right) distances from one shared
    point, `[N, 2], [N, 2] -> [N]`, in float32 (original: libs/modeling/losses.py:108-168).

    IoU = (min(l_p, l_g) + min(r_p, r_g)) / max(union, eps); rho = (r_p - l_p - r_g + l_g) / 2;
    loss = 1 - IoU + (rho / max(max(l_p, l_g) + max(r_p, r_g), eps))^2. Both inputs must be >= 0.

    Example:
        >>> import torch
        >>> ctr_diou_loss_1d(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 1.0]])).tolist()
        [0.0]
    """
    pred, target = pred.float(), target.float()
    if bool((pred < 0).any()) or bool((target < 0).any()):
        raise ModelError("DIoU loss: offsets must be non-negative")
    lp, rp = pred[:, 0], pred[:, 1]
    lg, rg = target[:, 0], target[:, 1]
    inter = torch.min(rp, rg) + torch.min(lp, lg)
    union = (lp + rp) + (lg + rg) - inter
    iou = inter / union.clamp(min=eps)
    len_c = torch.max(lp, lg) + torch.max(rp, rg)
    rho = 0.5 * (rp - lp - rg + lg)
    return 1.0 - iou + torch.square(rho / len_c.clamp(min=eps))


def _positives(pos: Tensor) -> float:
    """max(#positives, 1) of the batch (original: libs/modeling/meta_archs.py:554-557); under
    ``torch.distributed`` with several processes, of the global batch divided by the number
    of processes, so every process keeps the same normaliser and the averaged gradients
    equal the release's on the global batch (the release runs one process,
    nn.DataParallel)."""
    import torch.distributed as dist

    count = pos.sum().to(torch.float64)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(count)
        return max(float(count.item()), 1.0) / dist.get_world_size()
    return float(max(int(count.item()), 1))


class ActionFormerLoss(nn.Module):
    """Targets (`assign_points`) and losses of a batch (original:
    libs/modeling/meta_archs.py:534-595).

    Per call (one training step): valid = the level masks; positive = valid with a target
    class; the normaliser N <- 0.9 N + 0.1 max(#positives, 1) (updated before use, from
    `init_loss_norm`); targets smoothed as y (1 - ls) + ls / (K + 1); classification =
    sigmoid focal loss (alpha 0.25, gamma 2, float32) summed over valid (point, class) / N;
    regression = `ctr_diou_loss_1d` summed over positives / N (0 x sum without positives);
    total = cls + loss_weight x reg, or with loss_weight <= 0, cls + reg x
    cls.detach() / max(reg, 0.01).

    N is the buffer `loss_normalizer` (float64, in the state dict), so a checkpoint and an
    exact resume keep it; the release holds it in a plain attribute that its checkpoints
    do not save. Under ``torch.distributed`` the positives are counted over every process's
    batch (`_positives`), so the buffer is the same in every process.

    Example:
        >>> import torch
        >>> crit = ActionFormerLoss(num_classes=2, init_loss_norm=100.0)
        >>> pts = [torch.tensor([[0.0, 0, 100, 1], [1.0, 0, 100, 1], [2.0, 0, 100, 1], [3.0, 0, 100, 1]])]
        >>> out = crit([torch.ones(1, 4, dtype=torch.bool)], [torch.zeros(1, 4, 2)], [torch.ones(1, 4, 2)],
        ...            pts, [torch.tensor([[0.5, 2.5]])], [torch.tensor([0])])
        >>> sorted(out), round(float(crit.loss_normalizer), 6)
        (['loss', 'loss_cls', 'loss_reg'], 90.2)
    """

    momentum = 0.9  # original: libs/modeling/meta_archs.py:325
    loss_normalizer: Tensor

    def __init__(self, num_classes: int, center_sample: str = "radius", center_sample_radius: float = 1.5,
                 loss_weight: float = 1.0, label_smoothing: float = 0.0, init_loss_norm: float = 100.0) -> None:
        super().__init__()
        if center_sample not in ("radius", "none"):
            raise ModelError(f"center_sample must be 'radius' or 'none', got {center_sample!r}")
        self.num_classes = num_classes
        self.center_sample = center_sample
        self.center_sample_radius = center_sample_radius
        self.loss_weight = loss_weight
        self.label_smoothing = label_smoothing
        self.init_loss_norm = init_loss_norm
        self.register_buffer("loss_normalizer", torch.tensor(float(init_loss_norm), dtype=torch.float64))

    def targets(self, points: Sequence[Tensor], gt_segments: Sequence[Tensor],
                gt_labels: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """(cls targets `[B, N, K]`, reg targets `[B, N, 2]`) over the concatenated points."""
        cat = torch.cat(list(points), dim=0)
        cls, reg = [], []
        for segs, labels in zip(gt_segments, gt_labels, strict=True):
            c, r = assign_points(cat, segs.to(cat.device, torch.float32).reshape(-1, 2),
                                 labels.to(cat.device).reshape(-1), self.num_classes,
                                 self.center_sample, self.center_sample_radius)
            cls.append(c)
            reg.append(r)
        return torch.stack(cls), torch.stack(reg)

    def forward(self, masks: Sequence[Tensor], cls_logits: Sequence[Tensor], offsets: Sequence[Tensor],
                points: Sequence[Tensor], gt_segments: Sequence[Tensor],
                gt_labels: Sequence[Tensor]) -> dict[str, Tensor]:
        """The losses of B samples.

        Args:
            masks: per level bool `[B, T_l]`; cls_logits `[B, T_l, K]`; offsets `[B, T_l, 2]`;
                points `[T_l, 4]` (see `ActionFormerOutputs`).
            gt_segments: B tensors `[G, 2]` in feature-grid units; gt_labels: B int tensors `[G]`.
        Returns:
            {"loss_cls", "loss_reg", "loss"} (the release's cls_loss, reg_loss, final_loss).
        """
        b = cls_logits[0].shape[0]
        if len(gt_segments) != b or len(gt_labels) != b:
            raise ModelError(f"loss: {b} samples but {len(gt_segments)} segment and {len(gt_labels)} label tensors")
        for i, labels in enumerate(gt_labels):
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ModelError(f"loss: sample {i} has labels outside [0, {self.num_classes}): "
                                 f"{labels.tolist()}; check model.num_classes")
        gt_cls, gt_reg = self.targets(points, gt_segments, gt_labels)
        valid = torch.cat(list(masks), dim=1)
        pos = (gt_cls.sum(-1) > 0) & valid
        pred_offsets = torch.cat(list(offsets), dim=1)[pos]
        gt_offsets = gt_reg[pos]
        num_pos = int(pos.sum().item())
        norm = self.momentum * float(self.loss_normalizer) + (1 - self.momentum) * _positives(pos)
        self.loss_normalizer.fill_(norm)
        target = gt_cls[valid]
        target = target * (1 - self.label_smoothing)
        target = target + self.label_smoothing / (self.num_classes + 1)
        logits = torch.cat(list(cls_logits), dim=1)[valid]
        loss_cls = sigmoid_focal_loss(logits.float(), target.float(), alpha=0.25, gamma=2.0, reduction="sum")
        loss_cls = loss_cls / norm
        if num_pos == 0:
            loss_reg = 0 * pred_offsets.sum()
        else:
            loss_reg = ctr_diou_loss_1d(pred_offsets, gt_offsets).sum() / norm
        weight: float | Tensor = self.loss_weight
        if self.loss_weight <= 0:
            weight = loss_cls.detach() / max(float(loss_reg.item()), 0.01)
        return {"loss_cls": loss_cls, "loss_reg": loss_reg, "loss": loss_cls + loss_reg * weight}

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, center_sample={self.center_sample!r}, "
                f"radius={self.center_sample_radius}, loss_weight={self.loss_weight}, "
                f"label_smoothing={self.label_smoothing}")
