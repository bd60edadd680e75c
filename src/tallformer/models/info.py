"""Parameter counts of a detector, per part (what `tallformer model-info` prints).

The paper config counts 117,478,022 parameters, 114,770,014 trainable: the numbers of the
original classes instantiated with that config (backbone 87,638,984 of which 2,708,008
frozen, SRM 2,360,320, TCM 9,462,864, TDM 14,710,784, FPN 1,643,520, head 1,661,550).

The ActivityNet config (`anet_swin_b`, `model.kind: afsd`) counts 119,123,568, all trainable
(the original's classes, AFSD/anet_video_cls/BDNet.py with configs/membank/1.0.0.py):
backbone 87,638,984, SRM 2,360,320, TCM 9,466,320 (96 tokens), TDM 3,937,280 (5 conv
stages), FPN 6,303,744 (6 levels, 512 channels, GroupNorm), action head 206,025, head
9,210,895 (coarse + frame branch + refinement + 6 scales).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tallformer.models.detector import TALLFormer, build_detector

if TYPE_CHECKING:
    from tallformer.config import Config
    from tallformer.models.afsd import AFSD

__all__ = ["AFSD_PARTS", "PARTS", "count_parameters", "parameter_counts"]

PARTS = ("backbone", "srm", "tcm", "tdm", "fpn", "head")
AFSD_PARTS = ("backbone", "srm", "tcm", "tdm", "fpn", "action_head", "head")


def _count(module: nn.Module) -> dict[str, int]:
    params = list(module.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


def count_parameters(model: TALLFormer | AFSD) -> dict[str, Any]:
    """`{"parts": {name: {"total", "trainable"}}, "total", "trainable"}` of a detector.

    Parts in `PARTS` order: backbone, srm, tcm, tdm, fpn, head; for the ActivityNet
    detector `AFSD_PARTS` (action_head before head). Trainable excludes the backbone's
    frozen stages. Buffers are not counted.
    """
    modules: dict[str, nn.Module] = {
        "backbone": model.backbone, "srm": model.neck.srm, "tcm": model.neck.tcm,
        "tdm": model.neck.tdm, "fpn": model.neck.fpn, "head": model.head,
    }
    names: tuple[str, ...] = PARTS
    action_head = getattr(model, "action_head", None)
    if isinstance(action_head, nn.Module):
        modules["action_head"] = action_head
        names = AFSD_PARTS
    parts = {name: _count(modules[name]) for name in names}
    return {"parts": parts, **_count(model)}


def parameter_counts(cfg: Config) -> dict[str, Any]:
    """`count_parameters` of the detector of `cfg`, built on the meta device (no memory,
    no weights read, so Swin-B is instant)."""
    with torch.device("meta"):
        model = build_detector(cfg)
    return count_parameters(model)
