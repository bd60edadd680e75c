"""The optimizer of the paper's recipe: SGD with a backbone and a neck/head parameter group."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from tallformer.engine.distributed import unwrap

if TYPE_CHECKING:
    from tallformer.config import TrainConfig
    from tallformer.models.protocol import DetectorModel

__all__ = ["make_optimizer"]


def make_optimizer(model: DetectorModel | nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer with the two parameter groups of both recipes: the backbone at
    ``lr * backbone_lr_mult``, the rest at ``lr``, weight decay on all.

    ``train.optimizer=sgd``: SGD with momentum, the THUMOS14 recipe (original:
    configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:211-217: lr 0.01, backbone 0.4x).
    ``adam``: Adam with L2 weight decay, default betas and eps, the ActivityNet recipe
    (original: AFSD/anet_video_cls/configs/anet_256_mp4.yaml:26-33, membank/1.0.0.py:6:
    lr 1e-4, backbone 4e-6). Frozen parameters (``requires_grad`` False) are left out. The
    schedule is the engine's (`tallformer.engine.schedule.LrSchedule`).
    """
    detector = unwrap(model)
    backbone_ids = {id(p) for p in detector.backbone.parameters()}
    backbone = [p for p in detector.parameters() if p.requires_grad and id(p) in backbone_ids]
    rest = [p for p in detector.parameters() if p.requires_grad and id(p) not in backbone_ids]
    groups = [{"params": rest, "lr": cfg.lr, "name": "neck_head"}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult, "name": "backbone"})
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
