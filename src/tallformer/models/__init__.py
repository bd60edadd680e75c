"""Models: the Video Swin backbone and its weights (neck, head and detector live in their
own modules: `tallformer.models.neck`, `.anchor_head`, `.detector`)."""

from __future__ import annotations

from tallformer.models.backbone import (
    PRESETS,
    SwinArch,
    VideoSwinBackbone,
    build_backbone,
    build_backbone_from_config,
)
from tallformer.models.weights import WeightsError, load_backbone_weights

__all__ = [
    "PRESETS",
    "SwinArch",
    "VideoSwinBackbone",
    "WeightsError",
    "build_backbone",
    "build_backbone_from_config",
    "load_backbone_weights",
]
