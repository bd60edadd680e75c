"""What every detector family shares: the memory-bank training input (`compose_features`),
the neck's token count (`num_tokens`) and the SyncBatchNorm switch (`sync_bn_active`).

Each family module imports these; no family imports another.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

from tallformer.errors import TallformerWarning
from tallformer.models.backbone import VideoSwinBackbone
from tallformer.models.errors import ModelError
from tallformer.models.neck import srm_output_length

__all__ = ["compose_features", "num_tokens", "sync_bn_active"]


def num_tokens(num_frames: int, temporal_stride: int = 2) -> int:
    """TCM tokens of a window: SRM length of ceil(num_frames / stride) (480 frames -> 60)."""
    return srm_output_length(-(-num_frames // temporal_stride))


def compose_features(backbone: VideoSwinBackbone, fresh_chunks: Tensor, cached_features: Tensor,
                     keep_mask: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """The backbone on the kept chunks, put back in time order with the bank's cached
    features (original: vedatad/models/detectors/mem_single_stage_detector.py:38-71).

    Args: ``fresh_chunks``, ``cached_features``, ``keep_mask`` as
    `tallformer.models.protocol.DetectorModel.forward_losses`; `like`: a parameter of the
    model (device and dtype of the features when no chunk is fresh).
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


def sync_bn_active(sync_bn: bool) -> bool:
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
