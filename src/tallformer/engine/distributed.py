"""Several processes: the process group under `torchrun`, and the detector under DDP."""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn

from tallformer.engine.device import resolve_device
from tallformer.memory.selection import num_kept

if TYPE_CHECKING:
    from tallformer.models.detector import TALLFormer

__all__ = ["Processes", "TrainForward", "start_processes", "unwrap", "wrap_ddp"]


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
    if isinstance(inner, TrainForward):
        inner = inner.model
    return cast("TALLFormer", inner)


def wrap_ddp(model: TALLFormer, keep_ratio: float, num_chunks: int,
             device: torch.device | None = None) -> nn.Module:
    """``DistributedDataParallel(TrainForward(model))`` for ``train_step`` under ``torchrun``.

    With no kept chunk (``keep_ratio`` 0) the backbone gets no gradient, so DDP must look
    for unused parameters; otherwise every trainable parameter is used, as in the original
    (``find_unused_parameters=False``, ``broadcast_buffers=False``:
    vedatad/assembler/trainval.py:29-34).
    """
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device is not None and device.type == "cuda" and device.index is not None else None
    with warnings.catch_warnings():
        # newer torch deprecates the flag for `forward_sync_buffers`, which would still sync
        # buffers at init; rank-local buffers (BatchNorm statistics) are what we want here
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*")
        return DistributedDataParallel(
            TrainForward(model),
            device_ids=ids,
            broadcast_buffers=False,
            find_unused_parameters=num_kept(num_chunks, keep_ratio) == 0,
        )


@dataclasses.dataclass
class Processes:
    """This process's place in the run: rank, world size, device, and whether it owns the group."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def start_processes(device_name: str = "auto") -> Processes:
    """The process group under ``torchrun`` (gloo on the CPU, nccl on CUDA), else one process.

    ``device_name`` is ``train.device``; under ``torchrun`` a CUDA run uses ``cuda:LOCAL_RANK``.
    Build the detector after this, so ``model.sync_bn`` gives SyncBatchNorm.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes(0, 1, resolve_device(device_name), False)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not torch.distributed.is_initialized()
    if owns:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(torch.distributed.get_rank(), torch.distributed.get_world_size(), device, owns)
