"""TALLFormer: Video Swin backbone + SRM/TCM/TDM/FPN neck + anchor head (original:
vedatad/models/detectors/mem_single_stage_detector.py).

Two entry points:

- `forward_train(fresh_chunks, cached_features, keep_mask)`: the backbone runs only on the
  kept chunks; their features are put back in time order with the memory bank's cached
  features, then neck and head. Returns the head outputs and the fresh features, detached,
  for the bank write-back.
- `forward_infer(clip)`: the whole window through the backbone chunk by chunk (no bank).

`build_detector(cfg)` is the one factory from a `Config`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from tallformer.config import ConfigError
from tallformer.errors import TallformerWarning
from tallformer.models.anchor_head import AnchorHead
from tallformer.models.backbone import VideoSwinBackbone, build_backbone_from_config
from tallformer.models.errors import ModelError
from tallformer.models.neck import Neck, convert_sync_batchnorm, srm_output_length
from tallformer.models.outputs import Detections, HeadOutputs

if TYPE_CHECKING:
    from tallformer.config import Config
    from tallformer.models.afsd import AFSD

__all__ = ["TALLFormer", "build_detector", "compose_features", "num_tokens"]


def num_tokens(num_frames: int, temporal_stride: int = 2) -> int:
    """TCM tokens of a window: SRM length of ceil(num_frames / stride) (480 frames -> 60)."""
    return srm_output_length(-(-num_frames // temporal_stride))


def compose_features(backbone: VideoSwinBackbone, fresh_chunks: Tensor, cached_features: Tensor,
                     keep_mask: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """The backbone on the kept chunks, put back in time order with the bank's cached
    features (original: vedatad/models/detectors/mem_single_stage_detector.py:38-71).

    Args: as `TALLFormer.forward_train`; `like`: a parameter of the model (device and dtype
    of the features when no chunk is fresh).
    Returns:
        (features `[B, C, n*rows]` in time order, fresh features `[B*k, C, rows]` detached).
    """
    if keep_mask.dim() != 2 or keep_mask.dtype != torch.bool:
        raise ValueError(f"forward_train: keep_mask must be a bool [B, n] tensor, got "
                         f"{keep_mask.dtype} {list(keep_mask.shape)}")
    b, n = keep_mask.shape
    num_keep = int(keep_mask.sum())
    num_drop = b * n - num_keep
    if fresh_chunks.shape[0] != num_keep:
        raise ValueError(f"forward_train: keep_mask marks {num_keep} kept chunks but "
                         f"fresh_chunks has {fresh_chunks.shape[0]} ({list(fresh_chunks.shape)})")
    fresh: Tensor | None = None
    if num_keep:
        fresh = backbone.forward_chunks(fresh_chunks)  # [B*k, C, rows]
    if num_drop:
        # sample-major [B, n-k, C, rows] with one drop count for all samples; a check on
        # the element count alone would accept the original's chunk-first layout or
        # uneven keep counts and silently move bank rows into another sample
        drops = n - keep_mask.sum(dim=1)
        per_sample = num_drop // b
        if bool((drops != per_sample).any()):
            raise ValueError(
                f"forward_train: keep_mask drops {drops.tolist()} chunks per sample; "
                "cached_features [B, n-k, C, rows] needs the same number of chunks "
                "dropped (and kept) in every sample"
            )
        if cached_features.dim() != 4 or tuple(cached_features.shape[:2]) != (b, per_sample):
            raise ValueError(
                f"forward_train: keep_mask drops {num_drop} chunks (of {b} x {n}) but "
                f"cached_features has shape {list(cached_features.shape)}; expected "
                f"[{b}, {per_sample}, C, rows] (sample-major)"
            )
        cached = cached_features.reshape(num_drop, *cached_features.shape[2:])
        like = like if fresh is None else fresh
        cached = cached.to(device=like.device, dtype=like.dtype)
        if fresh is not None and cached.shape[1:] != fresh.shape[1:]:
            raise ModelError(f"forward_train: cached features are [C, rows] = "
                             f"{list(cached.shape[1:])} but the backbone gives "
                             f"{list(fresh.shape[1:])}; the memory bank was built with "
                             "another backbone or chunk size")
    ref = fresh if fresh is not None else cached
    c, rows = ref.shape[1], ref.shape[2]
    feats = ref.new_zeros(b, n, c, rows)
    mask = keep_mask.to(feats.device)
    if fresh is not None:
        feats[mask] = fresh
    if num_drop:
        feats[~mask] = cached
    feats = feats.permute(0, 2, 1, 3).reshape(b, c, n * rows)  # [B, C, n*rows], time order
    detached = fresh.detach() if fresh is not None else ref.new_zeros(0, c, rows)
    return feats, detached


class TALLFormer(nn.Module):
    """The detector: `backbone` (`VideoSwinBackbone`), `neck` (`Neck`), `head` (`AnchorHead`).

    `train()` keeps the backbone's frozen stages in eval mode (the backbone re-applies it).
    """

    def __init__(self, backbone: VideoSwinBackbone, neck: Neck, head: AnchorHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head

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

    def forward_infer(self, clip: Tensor) -> HeadOutputs:
        """Whole window through the backbone (chunk-wise), neck and head.

        `clip [B, 3, T, H, W]` (T = data.num_frames, zero-padded at the end). Call under
        `torch.no_grad()` and `eval()` for testing.
        """
        return self.head(self.neck(self.backbone(clip)))

    def loss(self, head_outputs: HeadOutputs, gt_segments: list[Tensor], gt_labels: list[Tensor],
             gt_ignore: list[Tensor] | None = None) -> dict[str, Tensor]:
        """Focal + DIoU losses; see `AnchorHead.loss`. "loss" is the total."""
        return self.head.loss(head_outputs, gt_segments, gt_labels, gt_ignore)

    def predict(self, head_outputs: HeadOutputs, lengths: Sequence[int] | Tensor,
                offsets: Sequence[int] | Tensor | None = None) -> list[Detections]:
        """Per-window detections in video frames; see `AnchorHead.predict`."""
        return self.head.predict(head_outputs, lengths, offsets)


def _sync_bn_active(sync_bn: bool) -> bool:
    """True when `model.sync_bn` is on and a process group exists. Warns when it is on,
    torchrun's `WORLD_SIZE` says several processes, but no process group exists yet."""
    if not sync_bn:
        return False
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return True
    world = os.environ.get("WORLD_SIZE", "")
    if world.isdigit() and int(world) > 1:
        warnings.warn(
            f"model.sync_bn is true and WORLD_SIZE={world}, but torch.distributed has no process "
            "group yet: the neck and head keep plain BatchNorm; build the detector after "
            "torch.distributed.init_process_group",
            TallformerWarning,
            stacklevel=3,
        )
    return False


def build_detector(cfg: Config) -> TALLFormer | AFSD:
    """Build the detector from `cfg.model` (+ `cfg.data.num_frames`, `cfg.test` thresholds).

    `model.kind: afsd` builds the ActivityNet detector (`tallformer.models.afsd.build_afsd`,
    same interface); the rest of this docstring is about the THUMOS14 one (the default).

    Each part gets its config section whole: `build_backbone_from_config(cfg.model.backbone)`,
    `Neck.from_config(cfg.model.neck, ...)`, `AnchorHead.from_config(cfg.model.head, ...,
    cfg.test)`. Does not load backbone weights (see `tallformer.models.load_backbone_weights`).
    Works under `with torch.device("meta"):` (parameter counting). Raises `ConfigError`
    when the anchor strides do not fit the feature levels.

    SyncBatchNorm: with `model.sync_bn` true, the neck's and head's BatchNorm become
    SyncBatchNorm only if a `torch.distributed` process group exists when this is called.
    The engine must therefore build the detector AFTER `init_process_group`; built before,
    SyncBN stays off silently, except that a `TallformerWarning` is issued when `WORLD_SIZE`
    (set by torchrun) is greater than 1. One process without a process group keeps plain
    BatchNorm (the original's SyncBN fails there).
    """
    if cfg.model.kind == "afsd":
        from tallformer.models.afsd import build_afsd

        return build_afsd(cfg)
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
    head = AnchorHead.from_config(hk, nk.fpn_channels, cfg.test)
    model = TALLFormer(backbone, neck, head)
    if _sync_bn_active(cfg.model.sync_bn):
        model.neck = convert_sync_batchnorm(model.neck)
        model.head = convert_sync_batchnorm(model.head)
    return model
