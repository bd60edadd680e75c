"""The optimizer of the paper's recipe: SGD with a backbone and a neck/head parameter group."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from tallformer.engine.distributed import unwrap

if TYPE_CHECKING:
    from tallformer.config import TrainConfig

__all__ = ["make_optimizer"]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD with the paper's two parameter groups (original:
    configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:211-217): the backbone at
    ``lr * backbone_lr_mult`` (0.4), the rest at ``lr``; momentum, weight decay as configured.
    Frozen parameters (``requires_grad`` False) are left out. The schedule is the engine's."""
    detector = unwrap(model)
    backbone_ids = {id(p) for p in detector.backbone.parameters()}
    backbone = [p for p in detector.parameters() if p.requires_grad and id(p) in backbone_ids]
    rest = [p for p in detector.parameters() if p.requires_grad and id(p) not in backbone_ids]
    groups = [{"params": rest, "lr": cfg.lr, "name": "neck_head"}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult, "name": "backbone"})
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
