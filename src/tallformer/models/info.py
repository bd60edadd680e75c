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

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from torch import nn

if TYPE_CHECKING:
    from tallformer.models.protocol import DetectorModel

__all__ = ["AFSD_PARTS", "PARTS", "count_parameters"]

PARTS = ("backbone", "srm", "tcm", "tdm", "fpn", "head")
AFSD_PARTS = ("backbone", "srm", "tcm", "tdm", "fpn", "action_head", "head")


class _HasParameters(Protocol):
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


def _count(module: _HasParameters) -> dict[str, int]:
    params = list(module.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


def count_parameters(model: DetectorModel) -> dict[str, Any]:
    """`{"parts": {name: {"total", "trainable"}}, "total", "trainable"}` of a detector of
    any family.

    The parts are the detector's own modules in their order, the neck split into its
    stages (srm, tcm, tdm, fpn), modules without parameters left out: `PARTS` for the
    anchor family, `AFSD_PARTS` for the ActivityNet one. Trainable excludes the backbone's
    frozen stages. Buffers are not counted. `tallformer.engine.factory.parameter_counts`
    counts the detector of a config.
    """
    parts: dict[str, dict[str, int]] = {}
    for name, module in model.named_children():
        for part, sub in (module.named_children() if name == "neck" else [(name, module)]):
            counted = _count(sub)
            if counted["total"]:
                parts[part] = counted
    return {"parts": parts, **_count(model)}
