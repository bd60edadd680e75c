"""The anchor family (``model.kind: anchor``): TALLFormer's THUMOS14 detector, Video Swin
backbone + SRM/TCM/TDM/FPN neck + anchor head (original:
vedatad/models/detectors/mem_single_stage_detector.py).

`TALLFormer` satisfies `tallformer.models.protocol.DetectorModel`; its own entry points:

- `forward_train(fresh_chunks, cached_features, keep_mask)`: the backbone runs only on the
  kept chunks; their features are put back in time order with the memory bank's cached
  features, then neck and head. Returns the head outputs and the fresh features, detached,
  for the bank write-back; `loss` turns the head outputs into the losses
  (`forward_losses` is the two in one, what the training step calls).
- `forward_infer(clip)`: the whole window through the backbone chunk by chunk (no bank);
  `forward_features(feats)` the neck and head on backbone features; `predict` the
  per-window candidates in video frames.

`build_anchor_detector(cfg)` builds it from a `Config` (the engine's factory table,
`tallformer.engine.factory`, calls it for ``model.kind: anchor``); its inference path is
`tallformer.engine.families.anchor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import Tensor, nn

from tallformer.config import ConfigError
from tallformer.models.anchor_head import AnchorHead
from tallformer.models.backbone import VideoSwinBackbone, build_backbone_from_config
from tallformer.models.neck import Neck, convert_sync_batchnorm
from tallformer.models.outputs import Detections, HeadOutputs
from tallformer.models.shared import compose_features, num_tokens, sync_bn_active

if TYPE_CHECKING:
    from tallformer.config import Config

__all__ = ["TALLFormer", "build_anchor_detector"]


class TALLFormer(nn.Module):
    """The detector: `backbone` (`VideoSwinBackbone`), `neck` (`Neck`), `head` (`AnchorHead`).

    `train()` keeps the backbone's frozen stages in eval mode (the backbone re-applies it).
    """

    def __init__(self, backbone: VideoSwinBackbone, neck: Neck, head: AnchorHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head

    @property
    def num_classes(self) -> int:
        """The action classes the head predicts (sigmoid scores, no background)."""
        return self.head.num_classes

    def _param(self) -> Tensor:
        return next(self.neck.parameters())

    def forward_train(self, fresh_chunks: Tensor, cached_features: Tensor,
                      keep_mask: Tensor) -> tuple[HeadOutputs, Tensor]:
        """Training forward with the memory bank (original:
        vedatad/models/detectors/mem_single_stage_detector.py:38-71).

        Args:
            fresh_chunks: `[B*k, 3, chunk, H, W]` the kept chunks, sample by sample, each
                sample's in increasing chunk order (k may be 0: no backbone call).
            cached_features: `[B, n-k, C, rows]` bank features of the dropped chunks in
                increasing chunk order (any float dtype, cast to the fresh features' dtype);
                empty (`numel() == 0`) when every chunk is fresh.
            keep_mask: bool `[B, n]`, True for the kept chunks.
        Returns:
            (head outputs, fresh features `[B*k, C, rows]` detached).
        """
        feats, detached = compose_features(self.backbone, fresh_chunks, cached_features,
                                           keep_mask, self._param())
        return self.head(self.neck(feats)), detached

    def forward_losses(self, fresh_chunks: Tensor, cached_features: Tensor, keep_mask: Tensor,
                       gt_segments: list[Tensor], gt_labels: list[Tensor], gt_ignore: list[Tensor],
                       valid_frames: Sequence[int] | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """`forward_train` then `loss` (`tallformer.models.protocol.DetectorModel`).
        `valid_frames` is not used: a short window's zero-padded end is part of the window,
        as the original (vedatad/datasets/pipelines/transforms.py:57-90 pads the frames, the anchors cover the whole window)."""
        del valid_frames
        outputs, detached = self.forward_train(fresh_chunks, cached_features, keep_mask)
        return self.loss(outputs, gt_segments, gt_labels, gt_ignore), detached

    def forward_features(self, feats: Tensor) -> HeadOutputs:
        """Backbone features `[B, C, T']` of B windows -> neck -> head outputs."""
        return self.head(self.neck(feats))

    def forward_infer(self, clip: Tensor) -> HeadOutputs:
        """Whole window through the backbone (chunk-wise), neck and head.

        `clip [B, 3, T, H, W]` (T = data.num_frames, zero-padded at the end). Call under
        `torch.no_grad()` and `eval()` for testing.
        """
        return self.forward_features(self.backbone(clip))

    def loss(self, head_outputs: HeadOutputs, gt_segments: list[Tensor], gt_labels: list[Tensor],
             gt_ignore: list[Tensor] | None = None) -> dict[str, Tensor]:
        """Focal + DIoU losses; see `AnchorHead.loss`. "loss" is the total."""
        return self.head.loss(head_outputs, gt_segments, gt_labels, gt_ignore)

    def predict(self, head_outputs: HeadOutputs, lengths: Sequence[int] | Tensor,
                offsets: Sequence[int] | Tensor | None = None) -> list[Detections]:
        """Per-window detections in video frames; see `AnchorHead.predict`."""
        return self.head.predict(head_outputs, lengths, offsets)


def build_anchor_detector(cfg: Config) -> TALLFormer:
    """The anchor detector of `cfg` (``model.kind: anchor``): `cfg.model` (+
    `cfg.data.num_frames`, `cfg.test` thresholds).

    Each part gets its config section whole: `build_backbone_from_config(cfg.model.backbone)`,
    `Neck.from_config(cfg.model.neck, ...)`, `AnchorHead.from_config(cfg.model.head, ...,
    cfg.test, num_classes=cfg.model.num_classes)`. Does not load backbone weights (see
    `tallformer.models.load_backbone_weights`). Works under `with torch.device("meta"):`
    (parameter counting). Raises `ConfigError` when the anchor strides do not fit the
    feature levels.

    SyncBatchNorm: with `model.sync_bn` true, the neck's and head's BatchNorm become
    SyncBatchNorm only if a `torch.distributed` process group exists when this is called.
    The engine must therefore build the detector AFTER `init_process_group`; built before,
    SyncBN stays off silently, except that a `TallformerWarning` is issued when `WORLD_SIZE`
    (set by torchrun) is greater than 1. One process without a process group keeps plain
    BatchNorm (the original's SyncBN fails there).
    """
    backbone = build_backbone_from_config(cfg.model.backbone)
    nk, hk = cfg.model.neck, cfg.model.head
    num_levels = len(nk.tdm_kernels) + 1
    if len(hk.anchor_strides) != num_levels:
        raise ConfigError(
            f"model.head.anchor_strides has {len(hk.anchor_strides)} entries but the neck makes "
            f"{num_levels} levels (1 + len(model.neck.tdm_kernels)); give one stride per level"
        )
    # frames per level-0 step: backbone patch (2) x SRM (4); level l doubles it
    base = backbone.temporal_stride * 4
    expected = [base * 2 ** i for i in range(num_levels)]
    if list(hk.anchor_strides) != expected:
        raise ConfigError(
            f"model.head.anchor_strides {list(hk.anchor_strides)} do not match the feature "
            f"strides {expected} (frames per step of each level); set them to {expected}"
        )
    # TCM table length L = num_frames // strides[0] (original:
    # configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:116; 480 -> 60 tokens)
    neck = Neck.from_config(nk, backbone.num_features,
                            num_tokens(cfg.data.num_frames, backbone.temporal_stride))
    head = AnchorHead.from_config(hk, nk.fpn_channels, cfg.test, num_classes=cfg.model.num_classes)
    model = TALLFormer(backbone, neck, head)
    if sync_bn_active(cfg.model.sync_bn):
        model.neck = convert_sync_batchnorm(model.neck)
        model.head = convert_sync_batchnorm(model.head)
    return model
