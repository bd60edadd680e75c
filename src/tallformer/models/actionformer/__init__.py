"""The ActionFormer family: ActionFormer's network (happyharrycn/actionformer_release,
`PtTransformer`) on the Video Swin backbone with the memory bank.

Modules, one concept each: `blocks` (masked conv, channel LayerNorm, Scale, drop path,
sinusoid table), `attention` (local and global masked conv attention), `transformer` (the
block), `conv_transformer` (ActionFormer's backbone on features), `fpn` (identity FPN),
`heads` (classification, regression), `points`, `padding`, `outputs`, `net`
(`ActionFormerNet`, the release's keys), `targets` (label assignment), `loss`, `nms`,
`postprocess`, `detector` (`ActionFormerDetector`, `build_actionformer`) and
`release_checkpoint` (the release's `.pth.tar` files).
"""

from __future__ import annotations

from tallformer.models.actionformer.detector import (
    ActionFormerDetector,
    build_actionformer,
)
from tallformer.models.actionformer.loss import ActionFormerLoss
from tallformer.models.actionformer.net import ActionFormerNet
from tallformer.models.actionformer.outputs import ActionFormerOutputs
from tallformer.models.actionformer.postprocess import ActionFormerPostProcess

__all__ = [
    "ActionFormerDetector",
    "ActionFormerLoss",
    "ActionFormerNet",
    "ActionFormerOutputs",
    "ActionFormerPostProcess",
    "build_actionformer",
]
