"""The memory-bank training step.

One step (original: vedatad/engines/train_engine.py:66-146,
vedatad/models/detectors/mem_single_stage_detector.py:38-71):

1. The data workers already chose each sample's kept chunks (``memory.keep_ratio``, drawn
   per ``(seed, rank, epoch, index)``), decoded and augmented only those chunks' frames, and
   read the dropped chunks' rows from the bank (``tallformer.engine.loader``).
2. ``train_step`` moves the batch to the device and runs the detector's ``forward_losses``
   (`tallformer.models.protocol.DetectorModel`, any family): the backbone on the kept chunks
   of the whole batch at once, the fresh features put back in time order with the cached
   ones (``[B, C, T/2]``), the family's network and its losses.
3. Once the loss is known to be finite (so a diverged step never leaves NaN rows in
   the bank), and before backward, the kept chunks' fresh features (detached: the very
   tensors fed to the neck, computed with the weights before this step's update) are written
   back to the bank at rows ``offset // 2 + rows_per_chunk * c`` for each kept chunk ``c`` of
   each sample (original: vedatad/engines/train_engine.py:121-139), never when
   ``memory.frozen`` is set.
4. Backward, (gradient clipping), optimizer step.

``keep_ratio = 1`` keeps every chunk (nothing dropped, no bank read, full end-to-end training)
and ``keep_ratio = 0`` keeps none (no backbone call, no write): the same code path for every
ratio.

Under DDP (``torchrun``), every rank writes only its own samples' rows, and
``VideoExclusiveSampler`` keeps a video out of two ranks' batches at the same step, so rows
have one writer per step. The bank is read in the data workers, ahead of the step: a read
can be up to ``num_workers x prefetch_factor`` batches ahead of the step that uses it (the
original reads in the training process, at the step: vedatad/engines/train_engine.py:85-108).
Accepted on purpose: a video appears once per epoch, so the rows read ahead are not rows
the steps in between write.

The loader is ``engine/loader.py``, the DDP wrapper ``engine/distributed.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from tallformer.engine.device import autocast
from tallformer.engine.distributed import unwrap
from tallformer.errors import TallformerError
from tallformer.memory.bank import BankError

if TYPE_CHECKING:
    from tallformer.memory.bank import MemoryBank
    from tallformer.models.protocol import DetectorModel

__all__ = ["NonFiniteLossError", "train_step", "write_back"]


class NonFiniteLossError(TallformerError, FloatingPointError):
    """The training loss is NaN or infinite (the step diverged); nothing was written."""


def write_back(bank: MemoryBank, video_ids: Sequence[str], offsets: Sequence[int],
               keep: Sequence[Tensor | Sequence[int]], fresh: Tensor) -> int:
    """Write the kept chunks' fresh features to the bank; returns the chunks written.

    Args:
        bank: the run's bank, open ``"r+"``.
        video_ids, offsets: per sample, the video and the window's start frame.
        keep: per sample, its kept chunk ids (sorted); ``fresh`` holds them sample by sample.
        fresh: ``[sum(k), C, rows_per_chunk]`` detached features (any device/float dtype).

    Sample ``b``'s chunk ``c`` goes to rows ``offset_b // frames_per_row + rows_per_chunk * c``
    (original: vedatad/partial_feedback/memory_bank.py:65-91; rows outside the video are
    dropped by the bank). One device-to-host copy for the batch, one contiguous slice write
    per run of chunks. ``video_ids``, ``offsets`` and ``keep`` must be equally long (one
    entry per sample).
    """
    if not len(video_ids) == len(offsets) == len(keep):
        raise ValueError(
            f"write_back: one video id, offset and kept-chunk list per sample, got "
            f"{len(video_ids)} video ids, {len(offsets)} offsets and {len(keep)} kept-chunk lists"
        )
    total = sum(len(k) for k in keep)
    if fresh.shape[0] != total:
        raise ValueError(f"write_back: {total} kept chunks in the batch but {fresh.shape[0]} "
                         "fresh feature chunks")
    if total == 0:
        return 0
    if fresh.shape[1] != bank.feature_dim or fresh.shape[2] != bank.rows_per_chunk:
        raise BankError(
            f"write_back: fresh features are [C, rows] = {list(fresh.shape[1:])} but the memory "
            f"bank {bank.root} holds [{bank.feature_dim}, {bank.rows_per_chunk}] per chunk; it was "
            "built with another backbone or chunk size (rebuild it with `tallformer bank build`)"
        )
    host = fresh.detach().float().cpu()
    pos = 0
    for video, offset, kept in zip(video_ids, offsets, keep, strict=True):
        ids = [int(c) for c in kept]
        if ids:
            bank.write_chunks(video, int(offset) // bank.frames_per_row, ids, host[pos:pos + len(ids)])
        pos += len(ids)
    return total


def train_step(
    model: DetectorModel | nn.Module,
    batch: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    bank: MemoryBank | None = None,
    *,
    frozen: bool = False,
    device: torch.device | str,
    amp_dtype: torch.dtype | None = None,
    grad_clip: float | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One training step with the memory bank.

    Args:
        model: a detector of any family, or ``wrap_ddp(...)`` of one under ``torchrun``.
        batch: ``collate_train`` output: ``chunks`` ``[B*k, 3, chunk, H, W]``, ``cached``
            ``[B, n-k, C, rows]``, ``keep_mask`` bool ``[B, n]``, lists ``keep``,
            ``segments``, ``labels``, ``ignore``, ``video_id``, ``offset`` and ``num_frames``
            (each window's real frames, passed on as ``valid_frames``; optional).
        optimizer: e.g. ``make_optimizer(model, cfg.train)``.
        bank: the run's bank (open ``"r+"``) for the write-back; None writes nothing.
        frozen: ``memory.frozen``: never write back.
        device: where the model is.
        amp_dtype: autocast dtype (``amp_dtype_for``) or None.
        grad_clip: max global gradient norm, or None.
        scaler: a ``GradScaler`` for fp16 autocast (bf16 needs none).

    Returns:
        floats: the losses (``loss``, ``loss_cls``, ``loss_reg``), ``fresh_chunks`` (chunks
        through the backbone), ``written_chunks`` (chunks written to the bank) and
        ``grad_norm`` when clipping.
    """
    device = torch.device(device)
    detector = unwrap(model)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    nb = device.type == "cuda"
    chunks = batch["chunks"].to(device, non_blocking=nb)
    cached = batch["cached"].to(device, non_blocking=nb)
    keep_mask = batch["keep_mask"].to(device, non_blocking=nb)
    segments = [s.to(device, non_blocking=nb) for s in batch["segments"]]
    labels = [t.to(device, non_blocking=nb) for t in batch["labels"]]
    ignore = [t.to(device, non_blocking=nb) for t in batch["ignore"]]
    valid = [int(n) for n in batch["num_frames"]] if "num_frames" in batch else None
    with autocast(amp_dtype, device):
        if isinstance(model, nn.Module) and model is not detector:  # DDP(TrainForward), TrainForward
            losses, fresh = model(chunks, cached, keep_mask, segments, labels, ignore, valid)
        else:
            losses, fresh = detector.forward_losses(chunks, cached, keep_mask, segments, labels, ignore, valid)
    loss = losses["loss"]
    if not torch.isfinite(loss.detach()):
        # checked before the write-back: non-finite fresh features (a diverged backbone) would
        # otherwise stay in the run's bank copy, which --resume reuses
        raise NonFiniteLossError(
            f"training loss is {float(loss.detach())} on videos {list(batch['video_id'])}; lower train.lr "
            "or set train.grad_clip (nothing was written to the memory bank)"
        )
    written = 0
    if bank is not None and not frozen:  # after the forward, before backward, as the original
        written = write_back(bank, batch["video_id"], batch["offset"], batch["keep"], fresh)
    if scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()
    out = {k: float(v.detach()) for k, v in losses.items()}
    if grad_clip is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        out["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    out["fresh_chunks"] = float(chunks.shape[0])
    out["written_chunks"] = float(written)
    return out
