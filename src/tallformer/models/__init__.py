"""Models: the Video Swin backbone and its weights, the neck, and the detector families.

Modules: `protocol` (`DetectorModel`, what every family provides), `shared` (what the
families share: the memory-bank input, the token count, SyncBatchNorm), `backbone`,
`weights` (checkpoint reading and conversion), `neck`; the anchor family
`anchor_detector` (`TALLFormer`) with its head `anchor_head` and parts `anchors`,
`matcher`, `coder`, `anchor_loss`, `postprocess`; the ActivityNet family `afsd` (`AFSD`)
with `afsd_loss`, `afsd_pooling`, `afsd_postprocess`, `afsd_fusion`; the output types in
`outputs`; `info` (parameter counts); `original_checkpoints` (the original release's
detector weights). The factory from a config, `build_detector`, is the engine's
(`tallformer.engine.factory`, also `tallformer.build_detector`): it also knows each
family's inference path.
"""

from __future__ import annotations

from tallformer.models.afsd import AFSD
from tallformer.models.anchor_detector import TALLFormer
from tallformer.models.backbone import (
    PRESETS,
    SwinArch,
    VideoSwinBackbone,
    build_backbone,
    build_backbone_from_config,
)
from tallformer.models.errors import ModelError
from tallformer.models.info import count_parameters
from tallformer.models.outputs import Detections, HeadOutputs
from tallformer.models.protocol import DetectorModel
from tallformer.models.weights import (
    WeightsError,
    convert_checkpoint,
    load_backbone_weights,
)

__all__ = [
    "AFSD",
    "PRESETS",
    "Detections",
    "DetectorModel",
    "HeadOutputs",
    "ModelError",
    "SwinArch",
    "TALLFormer",
    "VideoSwinBackbone",
    "WeightsError",
    "build_backbone",
    "build_backbone_from_config",
    "convert_checkpoint",
    "count_parameters",
    "load_backbone_weights",
]
