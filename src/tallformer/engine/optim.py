"""The optimizer: SGD (the paper's), Adam (the ActivityNet recipe's) or AdamW (ActionFormer's),
with a backbone and a neck/head parameter group."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tallformer.engine.distributed import unwrap

if TYPE_CHECKING:
    from tallformer.config import TrainConfig
    from tallformer.models.protocol import DetectorModel

__all__ = ["decays", "make_optimizer"]

# layers whose `weight` is decayed by AdamW; every other parameter (biases, the weights of norm
# layers, scales, position and bias tables) is not
_DECAYED = (nn.Linear, nn.modules.conv._ConvNd)


def _params(module: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Parameter]]:
    """(owning module, name in it, parameter) of every parameter of `module`, each once."""
    seen: set[int] = set()
    for owner in module.modules():
        for name, p in owner.named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                yield owner, name, p


def decays(owner: nn.Module, name: str) -> bool:
    """Whether AdamW decays the parameter `name` of `owner`: only the weights of linear and
    convolution layers (original: libs/utils/train_utils.py:60-120, which decays the weights
    of Linear, Conv1d and MaskedConv1D, whose weight is its Conv1d's, and nothing else: not
    biases, LayerNorm weights, Scale / AffineDropPath scales nor rel_pe). The same rule
    leaves out Video Swin's norms and relative position bias tables.

    Example:
        >>> decays(nn.Linear(2, 2), "weight"), decays(nn.Linear(2, 2), "bias"), decays(nn.LayerNorm(2), "weight")
        (True, False, False)
    """
    return name == "weight" and isinstance(owner, _DECAYED)


def make_optimizer(model: DetectorModel | nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer with the two parameter groups of every recipe: the backbone at
    ``lr * backbone_lr_mult``, the rest at ``lr``.

    ``train.optimizer=sgd``: SGD with momentum, weight decay on all, the THUMOS14 recipe
    (original: configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:211-217: lr 0.01,
    backbone 0.4x). ``adam``: Adam with L2 weight decay on all, default betas and eps, the
    ActivityNet recipe (original: AFSD/anet_video_cls/configs/anet_256_mp4.yaml:26-33,
    membank/1.0.0.py:6: lr 1e-4, backbone 4e-6). ``adamw``: AdamW with default betas and
    eps, ActionFormer's recipe (original: libs/utils/train_utils.py:60-120: lr 1e-4, weight
    decay 0.05): each group split in two, the parameters `decays` names with
    ``weight_decay`` (``neck_head``, ``backbone``), the others without (``neck_head_no_decay``,
    ``backbone_no_decay``). Frozen parameters (``requires_grad`` False) are left out. The
    schedule is the engine's (`tallformer.engine.schedule.LrSchedule`).

    Example:
        >>> from tallformer.config import load_config
        >>> from tallformer.engine.factory import build_detector
        >>> cfg = load_config("demo", ["train.optimizer=adamw"])
        >>> [g["name"] for g in make_optimizer(build_detector(cfg), cfg.train).param_groups]
        ['neck_head', 'neck_head_no_decay', 'backbone', 'backbone_no_decay']
    """
    detector = unwrap(model)
    backbone_ids = {id(p) for p in detector.backbone.parameters()}
    backbone = [p for p in detector.parameters() if p.requires_grad and id(p) in backbone_ids]
    rest = [p for p in detector.parameters() if p.requires_grad and id(p) not in backbone_ids]
    if cfg.optimizer == "adamw":
        assert isinstance(detector, nn.Module)  # every detector is one (DetectorModel)
        decayed = {id(p) for owner, name, p in _params(detector) if decays(owner, name)}
        groups: list[dict[str, Any]] = []
        for label, params, lr in (("neck_head", rest, cfg.lr),
                                  ("backbone", backbone, cfg.lr * cfg.backbone_lr_mult)):
            for suffix, chosen, wd in (("", [p for p in params if id(p) in decayed], cfg.weight_decay),
                                       ("_no_decay", [p for p in params if id(p) not in decayed], 0.0)):
                if chosen:
                    groups.append({"params": chosen, "lr": lr, "weight_decay": wd, "name": label + suffix})
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    groups = [{"params": rest, "lr": cfg.lr, "name": "neck_head"}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult, "name": "backbone"})
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
