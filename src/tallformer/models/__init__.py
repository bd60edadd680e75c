"""Models: the Video Swin backbone and its weights, the neck, the anchor head and its parts,
and the detector that composes them.

Modules: `backbone`, `weights` (checkpoint reading and conversion), `neck`, `anchor_head`
(the conv head) with its parts `anchors`, `matcher`, `coder`, `anchor_loss`, `postprocess`
and the output types in `outputs`; `detector` (`TALLFormer`, `build_detector`) and `info`
(parameter counts).
"""

from __future__ import annotations

from tallformer.models.backbone import (
    PRESETS,
    SwinArch,
    VideoSwinBackbone,
    build_backbone,
    build_backbone_from_config,
)
from tallformer.models.detector import TALLFormer, build_detector
from tallformer.models.errors import ModelError
from tallformer.models.info import count_parameters, parameter_counts
from tallformer.models.outputs import Detections, HeadOutputs
from tallformer.models.weights import (
    WeightsError,
    convert_checkpoint,
    load_backbone_weights,
)

__all__ = [
    "PRESETS",
    "Detections",
    "HeadOutputs",
    "ModelError",
    "SwinArch",
    "TALLFormer",
    "VideoSwinBackbone",
    "WeightsError",
    "build_backbone",
    "build_backbone_from_config",
    "build_detector",
    "convert_checkpoint",
    "count_parameters",
    "load_backbone_weights",
    "parameter_counts",
]
