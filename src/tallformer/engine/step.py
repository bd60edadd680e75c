"""The memory-bank training step, the training data loader that feeds it, and a minimal loop.

One step (design.md §2; spec memory-data-training §2.6, model-thumos14 §3):

1. The data workers already chose each sample's kept chunks (``memory.keep_ratio``, drawn
   per ``(seed, rank, epoch, index)``), decoded and augmented only those chunks' frames, and
   read the dropped chunks' rows from the bank (``make_train_loader``).
2. ``train_step`` moves the batch to the device and runs ``forward_train``: the backbone on
   the kept chunks of the whole batch at once, the fresh features put back in time order with
   the cached ones (``[B, C, T/2]``), neck and head.
3. Losses; once the loss is known to be finite (so a diverged step never leaves NaN rows in
   the bank), and before backward, the kept chunks' fresh features (detached: the very
   tensors fed to the neck, computed with the weights before this step's update) are written
   back to the bank at rows ``offset // 2 + rows_per_chunk * c`` for each kept chunk ``c`` of
   each sample (spec §2.6), never when ``memory.frozen`` is set.
4. Backward, (gradient clipping), optimizer step.

``keep_ratio = 1`` keeps every chunk (nothing dropped, no bank read, full end-to-end training)
and ``keep_ratio = 0`` keeps none (no backbone call, no write): the same code path for every
ratio (design.md §8).

Under DDP (``torchrun``), every rank writes only its own samples' rows, and
``VideoExclusiveSampler`` keeps a video out of two ranks' batches at the same step, so rows
have one writer per step. A worker may read rows that are one or two steps stale (the bank
is read in the data workers, ahead of the step; design.md §2): accepted on purpose.

The full training engine (schedule, checkpoints, resume, logging) is ``engine/train.py``;
``train_epochs`` here is only the small loop that tests and benchmarks need.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from tallformer.data.dataset import TrainDataset, collate_train
from tallformer.data.sampler import VideoExclusiveSampler
from tallformer.memory.selection import make_chunk_selector, num_kept

if TYPE_CHECKING:
    from tallformer.config import Config, TrainConfig
    from tallformer.data.annotations import AnnotationSet
    from tallformer.memory.bank import MemoryBank
    from tallformer.models.detector import TALLFormer

__all__ = [
    "TrainForward",
    "TrainLoader",
    "amp_dtype_for",
    "make_optimizer",
    "make_train_loader",
    "resolve_device",
    "train_epochs",
    "train_step",
    "unwrap",
    "wrap_ddp",
    "write_back",
]

# --------------------------------------------------------------------------- model helpers


class TrainForward(nn.Module):
    """Routes ``forward`` to ``TALLFormer.forward_train`` so DDP can wrap the detector.

    DDP synchronises gradients only for work done through its ``forward``; the detector's
    training entry point is ``forward_train``. ``DDP(TrainForward(model))`` calls it.
    """

    def __init__(self, model: TALLFormer) -> None:
        super().__init__()
        self.model = model

    def forward(self, fresh_chunks: Tensor, cached_features: Tensor,
                keep_mask: Tensor) -> tuple[Any, Tensor]:
        return self.model.forward_train(fresh_chunks, cached_features, keep_mask)


def unwrap(model: nn.Module) -> TALLFormer:
    """The detector inside ``DDP(TrainForward(detector))``, ``TrainForward`` or itself."""
    inner = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(inner, "model", inner) if isinstance(inner, TrainForward) else inner


def wrap_ddp(model: TALLFormer, keep_ratio: float, num_chunks: int,
             device: torch.device | None = None) -> nn.Module:
    """``DistributedDataParallel(TrainForward(model))`` for ``train_step`` under ``torchrun``.

    With no kept chunk (``keep_ratio`` 0) the backbone gets no gradient, so DDP must look
    for unused parameters; otherwise every trainable parameter is used (spec §2.7:
    ``find_unused_parameters=False``, ``broadcast_buffers=False``).
    """
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device is not None and device.type == "cuda" and device.index is not None else None
    return DistributedDataParallel(
        TrainForward(model),
        device_ids=ids,
        broadcast_buffers=False,
        find_unused_parameters=num_kept(num_chunks, keep_ratio) == 0,
    )


def resolve_device(name: str) -> torch.device:
    """``train.device``: "auto" is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"train.device: {name!r} is not a device (use auto, cpu, cuda, cuda:1)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device is {name!r} but CUDA is not available; use train.device=cpu")
    return device


def amp_dtype_for(amp: str, device: torch.device) -> torch.dtype | None:
    """``train.amp`` ("none" | "bf16" | "fp16") as an autocast dtype; None on the CPU."""
    if device.type != "cuda" or amp == "none":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD with the paper's two parameter groups (spec model-thumos14 §14): the backbone at
    ``lr * backbone_lr_mult`` (0.4), the rest at ``lr``; momentum, weight decay as configured.
    Frozen parameters (``requires_grad`` False) are left out. The schedule is the engine's."""
    detector = unwrap(model)
    backbone_ids = {id(p) for p in detector.backbone.parameters()}
    backbone = [p for p in detector.parameters() if p.requires_grad and id(p) in backbone_ids]
    rest = [p for p in detector.parameters() if p.requires_grad and id(p) not in backbone_ids]
    groups = [{"params": rest, "lr": cfg.lr, "name": "neck_head"}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult, "name": "backbone"})
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


# --------------------------------------------------------------------------- the step


def write_back(bank: MemoryBank, video_ids: Sequence[str], offsets: Sequence[int],
               keep: Sequence[Tensor | Sequence[int]], fresh: Tensor) -> int:
    """Write the kept chunks' fresh features to the bank; returns the chunks written.

    Args:
        bank: the run's bank, open ``"r+"``.
        video_ids, offsets: per sample, the video and the window's start frame.
        keep: per sample, its kept chunk ids (sorted); ``fresh`` holds them sample by sample.
        fresh: ``[sum(k), C, rows_per_chunk]`` detached features (any device/float dtype).

    Sample ``b``'s chunk ``c`` goes to rows ``offset_b // frames_per_row + rows_per_chunk * c``
    (spec memory-data-training §2.6; rows outside the video are dropped by the bank). One
    device-to-host copy for the batch, one contiguous slice write per run of chunks.
    """
    total = sum(len(k) for k in keep)
    if fresh.shape[0] != total:
        raise ValueError(f"write_back: {total} kept chunks in the batch but {fresh.shape[0]} "
                         "fresh feature chunks")
    if total == 0:
        return 0
    if fresh.shape[1] != bank.feature_dim or fresh.shape[2] != bank.rows_per_chunk:
        raise ValueError(
            f"write_back: fresh features are [C, rows] = {list(fresh.shape[1:])} but the memory "
            f"bank {bank.root} holds [{bank.feature_dim}, {bank.rows_per_chunk}] per chunk; it was "
            "built with another backbone or chunk size (rebuild it with `tallformer bank build`)"
        )
    host = fresh.detach().float().cpu()
    pos = 0
    for video, offset, ids in zip(video_ids, offsets, keep):
        ids = [int(c) for c in ids]
        if ids:
            bank.write_chunks(video, int(offset) // bank.frames_per_row, ids, host[pos:pos + len(ids)])
        pos += len(ids)
    return total


def train_step(
    model: nn.Module,
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
        model: a ``TALLFormer``, or ``wrap_ddp(...)`` of one under ``torchrun``.
        batch: ``collate_train`` output: ``chunks`` ``[B*k, 3, chunk, H, W]``, ``cached``
            ``[B, n-k, C, rows]``, ``keep_mask`` bool ``[B, n]``, lists ``keep``,
            ``segments``, ``labels``, ``ignore``, ``video_id``, ``offset``.
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
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())

    with autocast:
        if model is detector:
            outputs, fresh = detector.forward_train(chunks, cached, keep_mask)
        else:  # DDP(TrainForward) or TrainForward
            outputs, fresh = model(chunks, cached, keep_mask)
        losses = detector.loss(outputs, segments, labels, ignore)
    loss = losses["loss"]
    if not torch.isfinite(loss.detach()):
        # checked before the write-back: non-finite fresh features (a diverged backbone) would
        # otherwise stay in the run's bank copy, which --resume reuses
        raise FloatingPointError(
            f"training loss is {float(loss.detach())} on videos {list(batch['video_id'])}; lower train.lr "
            "or set train.grad_clip (nothing was written to the memory bank)"
        )
    written = 0
    if bank is not None and not frozen:  # after the forward, before backward (spec §2.6)
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


# --------------------------------------------------------------------------- the loader


@dataclass
class TrainLoader:
    """The training dataset, its ``VideoExclusiveSampler`` and the ``DataLoader`` over them.

    Call ``set_epoch(epoch)`` before each epoch (reshuffles, re-draws windows, chunks and
    augmentation); iterate for ``collate_train`` batches; ``len`` is the steps per epoch.
    """

    dataset: TrainDataset
    sampler: VideoExclusiveSampler
    loader: DataLoader

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.sampler)


def make_train_loader(
    cfg: Config,
    annotations: AnnotationSet,
    bank: MemoryBank | None,
    *,
    classes: list[str] | None = None,
    videos_dir: str | Path | None = None,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int | None = None,
    batch_size: int | None = None,
    pin_memory: bool = False,
) -> TrainLoader:
    """The training data pipeline of a memory-bank run.

    ``TrainDataset`` with ``chunk_selector = make_chunk_selector(memory.keep_ratio,
    memory.mode)`` and ``feature_reader = bank.read_chunks`` (read in the workers; only
    called for dropped chunks, so ``keep_ratio = 1`` never reads), a
    ``VideoExclusiveSampler`` over the dataset's videos (``rank`` of ``world_size``, seeded
    by ``cfg.seed``) and a ``DataLoader`` with ``data.num_workers`` workers (not persistent:
    each epoch's workers copy the dataset after ``set_epoch``).

    Args:
        classes: class names (default: ``annotations.classes``).
        videos_dir: default ``data.videos``.
        num_workers, batch_size: override ``data.num_workers`` / ``data.batch_size``.
    """
    keep_ratio = cfg.memory.keep_ratio
    chunk_size = cfg.model.backbone.chunk_size
    num_chunks = cfg.data.num_frames // chunk_size
    if bank is None and num_kept(num_chunks, keep_ratio) < num_chunks:
        raise ValueError(
            f"memory.keep_ratio = {keep_ratio} drops chunks, whose features come from the memory "
            "bank, but no bank was given; set memory.bank_dir (build one with `tallformer bank "
            "build`) or use memory.keep_ratio=1"
        )
    if bank is not None and bank.chunk_size != chunk_size:
        raise ValueError(
            f"memory bank {bank.root} was built with chunks of {bank.chunk_size} frames but "
            f"model.backbone.chunk_size is {chunk_size}; rebuild the bank with this config"
        )
    videos = videos_dir if videos_dir is not None else cfg.data.videos
    if videos is None:
        raise ValueError("data.videos is not set: give the folder of training videos")
    dataset = TrainDataset(
        annotations,
        videos,
        cfg.data,
        list(classes) if classes is not None else list(annotations.classes),
        chunk_size=chunk_size,
        chunk_selector=make_chunk_selector(keep_ratio, cfg.memory.mode),
        feature_reader=bank.read_chunks if bank is not None else None,
        seed=cfg.seed,
        rank=rank,
    )
    sampler = VideoExclusiveSampler(
        [v.video_id for v in dataset.videos],
        batch_size if batch_size is not None else cfg.data.batch_size,
        rank=rank,
        world_size=world_size,
        seed=cfg.seed,
        shuffle=True,
        drop_last=False,
    )
    workers = cfg.data.num_workers if num_workers is None else num_workers
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_train,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
    )
    return TrainLoader(dataset, sampler, loader)


# --------------------------------------------------------------------------- minimal loop


def train_epochs(
    cfg: Config,
    model: nn.Module,
    loader: TrainLoader,
    optimizer: torch.optim.Optimizer,
    bank: MemoryBank | None = None,
    *,
    device: torch.device | str = "cpu",
    epochs: int = 1,
    start_epoch: int = 0,
    max_steps: int | None = None,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    on_step: Callable[[int, int, dict[str, Any], dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """A minimal loop for tests and benchmarks: ``epochs`` epochs of ``train_step`` (no
    schedule, no checkpoints: that is the training engine's job).

    ``on_step(epoch, step, batch, stats)`` is called after each step. Stops after
    ``max_steps`` steps in all. Flushes the bank at the end. Returns every step's stats.
    """
    from tqdm import tqdm

    # fp16 autocast needs loss scaling (small gradients underflow to zero); bf16 does not
    scaler = (torch.amp.GradScaler(torch.device(device).type) if amp_dtype == torch.float16
              else None)
    history: list[dict[str, float]] = []
    for epoch in range(start_epoch, start_epoch + epochs):
        loader.set_epoch(epoch)
        bar = tqdm(loader, desc=f"epoch {epoch}", unit="step", disable=not progress, leave=False)
        for step, batch in enumerate(bar):
            if max_steps is not None and len(history) >= max_steps:
                break
            stats = train_step(model, batch, optimizer, bank, frozen=cfg.memory.frozen,
                               device=device, amp_dtype=amp_dtype, grad_clip=cfg.train.grad_clip,
                               scaler=scaler)
            history.append(stats)
            bar.set_postfix(loss=f"{stats['loss']:.4f}")
            if on_step is not None:
                on_step(epoch, step, batch, stats)
        if max_steps is not None and len(history) >= max_steps:
            break
    if bank is not None:
        bank.flush()
    return history
