"""RetinaNet-style 1-D anchor head: the conv towers, composed with its parts.

The parts, each in its own module, as torchvision's RetinaNet splits them:

- `tallformer.models.anchors`: `AnchorGenerator` (scales, `make_anchors`, `flatten_level`);
- `tallformer.models.matcher`: `MaxIoUMatcher` / `assign_anchors` (`NEGATIVE`, `IGNORE`);
- `tallformer.models.coder`: `SegmentCoder` (delta encode / decode);
- `tallformer.models.anchor_loss`: `AnchorLoss` (focal + DIoU), `diou_loss`;
- `tallformer.models.postprocess`: `WindowPostProcess` (per-window candidates) and
  `merge_video_detections` (all windows of a video merged);
- `tallformer.models.outputs`: `HeadOutputs`, `Detections`.

All segments here are in frames: window-relative in training and per-window prediction,
video frames after `offsets` are added, seconds only after
`tallformer.models.postprocess.merge_video_detections`.

Head outputs (one tuple for all levels)::

    cls[l]: [B, A * K, T_l]   channel a * K + c   (anchor a, class c)
    reg[l]: [B, A * 2, T_l]   channel a * 2 + {0: d_centre, 1: d_log_width}

Anchors are flattened level by level, row t * A + a inside a level, matching
`flatten_level` applied to the outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, cast

import torch
from torch import Tensor, nn

from tallformer.models.anchor_loss import AnchorLoss, diou_loss
from tallformer.models.anchors import (
    AnchorGenerator,
    anchor_scales,
    flatten_level,
    make_anchors,
)
from tallformer.models.errors import ModelError
from tallformer.models.matcher import IGNORE, NEGATIVE, MaxIoUMatcher, assign_anchors
from tallformer.models.outputs import Detections, HeadOutputs
from tallformer.models.postprocess import WindowPostProcess

if TYPE_CHECKING:
    from tallformer.config import HeadConfig, TestConfig

__all__ = [
    "IGNORE",
    "NEGATIVE",
    "AnchorGenerator",
    "AnchorHead",
    "AnchorLoss",
    "Detections",
    "HeadOutputs",
    "MaxIoUMatcher",
    "WindowPostProcess",
    "anchor_scales",
    "assign_anchors",
    "diou_loss",
    "flatten_level",
    "make_anchors",
]


HeadNorm = Literal["bn", "gn"]


def _norm(kind: HeadNorm, channels: int, num_groups: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm1d(channels)
    if kind == "gn":
        if channels % num_groups:
            raise ModelError(f"model.head.norm_groups = {num_groups} does not divide the head's "
                             f"{channels} channels (model.head.feat_channels); choose a divisor")
        return nn.GroupNorm(num_groups, channels)
    raise ModelError(f"model.head.norm = {kind!r}: choose bn or gn")


def _conv_block(channels_in: int, channels: int, norm: HeadNorm = "bn", num_groups: int = 16) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(channels_in, channels, 3, padding=1, bias=False),
        _norm(norm, channels, num_groups),
        nn.ReLU(inplace=True),
    )


class AnchorHead(nn.Module):
    """RetinaHead in 1-D, shared by all levels (original:
    vedatad/models/heads/retina_head.py:13-117, anchor_head.py:21-87).

    cls / reg branches: `stacked_convs` x [Conv1d k3 no bias + BN + ReLU] (the BN is shared
    across levels, as the original), then Conv1d k3 to A * K (cls) and A * 2 (reg).
    `norm="gn"` puts GroupNorm(`num_groups`) in place of each BN (ours, `model.head.norm`:
    no running statistics, so the levels cannot mix in eval mode; same weights and init).
    Init (retina_head.py:86-94): stacked convs N(0, 0.01), cls out N(0, 0.01) with bias
    -log(0.99 / 0.01) (prior 0.01), reg out N(0, 0.01) with bias 0. A = the anchor
    generator's scales per position.

    The parts it composes (plain objects, no parameters): `anchor_generator`,
    `criterion` (`AnchorLoss`: matcher, coder, focal + DIoU) and `post_process`
    (`WindowPostProcess`). Build from the config with `AnchorHead.from_config`.

    `forward([[B, C, T_l]]) -> (cls [[B, A*K, T_l]], reg [[B, A*2, T_l]])`.
    """

    def __init__(self, num_classes: int = 20, in_channels: int = 256, feat_channels: int = 256,
                 stacked_convs: int = 4, *, anchor_generator: AnchorGenerator | None = None,
                 criterion: AnchorLoss | None = None,
                 post_process: WindowPostProcess | None = None, norm: HeadNorm = "bn",
                 norm_groups: int = 16) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.anchor_generator = anchor_generator if anchor_generator is not None else AnchorGenerator()
        self.criterion = criterion if criterion is not None else AnchorLoss()
        self.post_process = post_process if post_process is not None else WindowPostProcess()
        self.num_anchors = self.anchor_generator.num_anchors

        def tower() -> nn.Sequential:
            return nn.Sequential(*(
                _conv_block(in_channels if i == 0 else feat_channels, feat_channels, norm, norm_groups)
                for i in range(stacked_convs)
            ))

        # creation and init order fix the seeded weights: keep it
        self.cls_convs = tower()
        self.reg_convs = tower()
        last = feat_channels if stacked_convs else in_channels
        self.cls_out = nn.Conv1d(last, self.num_anchors * num_classes, 3, padding=1)
        self.reg_out = nn.Conv1d(last, self.num_anchors * 2, 3, padding=1)
        for m in (*self.cls_convs.modules(), *self.reg_convs.modules()):
            if isinstance(m, nn.Conv1d):
                nn.init.normal_(m.weight, std=0.01)
        nn.init.normal_(self.cls_out.weight, std=0.01)
        nn.init.constant_(cast(Tensor, self.cls_out.bias), -math.log((1 - 0.01) / 0.01))
        nn.init.normal_(self.reg_out.weight, std=0.01)
        nn.init.zeros_(cast(Tensor, self.reg_out.bias))  # both convs have bias=True

    @classmethod
    def from_config(cls, cfg: HeadConfig, in_channels: int, test_cfg: TestConfig, *,
                    num_classes: int) -> AnchorHead:
        """The head of `model.head` for `num_classes` (``model.num_classes``) on
        `in_channels` input channels (the FPN's), with the post-processing of `test`
        (`score_thr`, `nms_pre`)."""
        return cls(
            num_classes, in_channels, cfg.feat_channels, cfg.stacked_convs,
            anchor_generator=AnchorGenerator.from_config(cfg),
            criterion=AnchorLoss.from_config(cfg),
            post_process=WindowPostProcess.from_config(test_cfg),
            norm=cfg.norm, norm_groups=cfg.norm_groups,
        )

    @property
    def anchor_strides(self) -> list[int]:
        return self.anchor_generator.strides

    def forward(self, feats: list[Tensor]) -> HeadOutputs:
        cls = [self.cls_out(self.cls_convs(f)) for f in feats]
        reg = [self.reg_out(self.reg_convs(f)) for f in feats]
        return cls, reg

    def anchors(self, lengths: Sequence[int], device: torch.device | str | None = None) -> Tensor:
        """Anchors `[sum T_l * A, 2]` for feature levels of these lengths."""
        return self.anchor_generator(lengths, device)

    def _flat(self, outputs: HeadOutputs) -> tuple[Tensor, Tensor, Tensor]:
        cls, reg = outputs
        lengths = [c.shape[-1] for c in cls]
        if len(lengths) != self.anchor_generator.num_levels:
            raise ValueError(f"head outputs have {len(lengths)} levels but "
                             f"{self.anchor_generator.num_levels} anchor strides are configured")
        cls_flat = torch.cat([flatten_level(c, self.num_classes) for c in cls], dim=1)
        reg_flat = torch.cat([flatten_level(r, 2) for r in reg], dim=1)
        return cls_flat, reg_flat, self.anchors(lengths, cls[0].device)

    def loss(self, outputs: HeadOutputs, gt_segments: list[Tensor], gt_labels: list[Tensor],
             gt_ignore: list[Tensor] | None = None) -> dict[str, Tensor]:
        """Focal + DIoU losses of B windows; see `AnchorLoss`.

        Args:
            outputs: the head outputs for B windows.
            gt_segments: B tensors `[G, 2]`, window frames. gt_labels: B int tensors `[G]`
                in [0, num_classes). gt_ignore: B tensors `[I, 2]` (ignore regions) or None.
        Returns:
            {"loss_cls", "loss_reg", "loss"}.
        """
        cls_flat, reg_flat, anchors = self._flat(outputs)
        return self.criterion(cls_flat, reg_flat, anchors, gt_segments, gt_labels, gt_ignore)

    @torch.no_grad()
    def predict(self, outputs: HeadOutputs, lengths: Sequence[int] | Tensor,
                offsets: Sequence[int] | Tensor | None = None) -> list[Detections]:
        """Per-window candidates, one `Detections` per window; see `WindowPostProcess`.

        lengths: B real window lengths (frames); offsets: B window starts (video frames).
        """
        cls = outputs[0]
        anchors = self.anchors([c.shape[-1] for c in cls], cls[0].device)
        return self.post_process(outputs, anchors, self.num_anchors, self.num_classes,
                                 lengths, offsets)
