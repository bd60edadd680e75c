"""Several processes: the process group under `torchrun`, and the detector under DDP."""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from tallformer.engine.device import resolve_device
from tallformer.engine.errors import TrainingError
from tallformer.memory.selection import num_kept

if TYPE_CHECKING:
    from tallformer.models.protocol import DetectorModel

__all__ = ["ONE_PROCESS_GROUP_ENV", "Processes", "TrainForward", "node_layout", "start_processes", "unwrap",
           "wrap_ddp"]

# set to 1: one process under torchrun forms a process group too (start_processes)
ONE_PROCESS_GROUP_ENV = "TALLFORMER_PROCESS_GROUP"


class TrainForward(nn.Module):
    """Routes ``forward`` to the detector's ``forward_losses`` so DDP can wrap it.

    DDP synchronises gradients only for work done through its ``forward``; a detector's
    training entry point is `tallformer.models.protocol.DetectorModel.forward_losses`.
    ``DDP(TrainForward(model))`` calls it.
    """

    def __init__(self, model: DetectorModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, fresh_chunks: Tensor, cached_features: Tensor, keep_mask: Tensor,
                gt_segments: list[Tensor], gt_labels: list[Tensor], gt_ignore: list[Tensor],
                valid_frames: list[int] | None = None) -> tuple[dict[str, Tensor], Tensor]:
        return self.model.forward_losses(fresh_chunks, cached_features, keep_mask, gt_segments,
                                         gt_labels, gt_ignore, valid_frames)


def unwrap(model: Any) -> DetectorModel:
    """The detector inside ``DDP(TrainForward(detector))``, ``TrainForward`` or itself."""
    inner = getattr(model, "module", model)  # DistributedDataParallel
    if isinstance(inner, TrainForward):
        return inner.model
    detector: DetectorModel = inner
    return detector


def wrap_ddp(model: DetectorModel, keep_ratio: float, num_chunks: int,
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
    """This process's place in the run: rank, world size, device, and whether it owns the group.

    Under ``torchrun`` also its node: ``node_rank`` is torchrun's ``GROUP_RANK`` (the
    rendezvous' order of the machines, which with the c10d rendezvous need not be the same
    from one launch to the next), ``local_rank`` / ``local_world_size`` its place on the
    machine (``LOCAL_RANK`` / ``LOCAL_WORLD_SIZE``), ``num_nodes`` the machines in the run
    and ``uniform`` whether every machine runs ``local_world_size`` processes. ``node`` and
    ``data_rank`` are the node and rank the data of this process belongs to: torchrun's
    by default; a node-local bank run sets them from the bank shard the machine holds
    (`tallformer.engine.train`), so a machine keeps its shard whatever order the
    rendezvous gives.
    """

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    num_nodes: int = 1
    uniform: bool = True
    node: int = -1  # -1: node_rank
    data_rank: int = -1  # -1: rank

    def __post_init__(self) -> None:
        if self.node < 0:
            self.node = self.node_rank
        if self.data_rank < 0:
            self.data_rank = self.rank

    @property
    def distributed(self) -> bool:
        """Under DDP: several processes, or one that formed its own process group."""
        return self.world_size > 1 or self.owns_group

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def local_main(self) -> bool:
        """The first process on its machine (the one that manages the node's files)."""
        return self.local_rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def raise_together(self, error: str | None) -> None:
        """Raise `TrainingError` on every rank when any rank hit a user error (`error`, the
        message; None: this rank is fine), so no rank waits at a barrier."""
        if self.world_size == 1:
            if error:
                raise TrainingError(error)
            return
        errors: list[str | None] = [None] * self.world_size
        torch.distributed.all_gather_object(errors, error)
        first = next((e for e in errors if e), None)
        if first:
            raise TrainingError(first)

    def agree_max(self, value: int) -> int:
        """The largest ``value`` of all ranks (``value`` on one process): one all-reduce."""
        if self.world_size == 1:
            return int(value)
        flag = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())

    def gather(self, value: Any) -> list[Any]:
        """``value`` of every rank, in rank order (``[value]`` on one process)."""
        if self.world_size == 1:
            return [value]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, value)
        return out

    def close(self) -> None:
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def start_processes(device_name: str = "auto") -> Processes:
    """The process group under ``torchrun`` (gloo on the CPU, nccl on CUDA), else one process.

    ``device_name`` is ``train.device``; under ``torchrun`` a CUDA run uses ``cuda:LOCAL_RANK``.
    One process (``--nproc_per_node 1``) runs without a process group unless
    ``TALLFORMER_PROCESS_GROUP=1`` is set: then it forms one too (nccl or gloo, SyncBatchNorm
    with ``model.sync_bn``, DDP), the path several processes take (the GPU check runs it
    on one GPU).
    Build the detector after this, so ``model.sync_bn`` gives SyncBatchNorm. The node layout
    (``GROUP_RANK``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` of every rank) is gathered once.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    one_group = os.environ.get(ONE_PROCESS_GROUP_ENV) == "1" and "MASTER_ADDR" in os.environ
    if world <= 1 and not one_group:
        return Processes(0, 1, resolve_device(device_name), False)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not torch.distributed.is_initialized()
    if owns:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    node_rank = int(os.environ.get("GROUP_RANK", str(rank // max(1, local_world))))
    layout: list[Any] = [None] * world
    torch.distributed.all_gather_object(layout, (node_rank, local_rank, local_world))
    num_nodes, uniform = node_layout(layout)
    return Processes(rank, world, device, owns, local_rank=local_rank, local_world_size=local_world,
                     node_rank=node_rank, num_nodes=num_nodes, uniform=uniform)


def node_layout(layout: list[tuple[int, int, int]]) -> tuple[int, bool]:
    """``(num_nodes, uniform)`` from every rank's ``(node_rank, local_rank, local_world_size)``:
    uniform when the node ranks are ``0 .. N-1`` and each node has local ranks ``0 .. W-1``,
    the same ``W`` everywhere."""
    nodes: dict[int, list[int]] = {}
    sizes = {w for _, _, w in layout}
    for node_rank, local_rank, _ in layout:
        nodes.setdefault(node_rank, []).append(local_rank)
    uniform = (len(sizes) == 1 and sorted(nodes) == list(range(len(nodes)))
               and all(sorted(v) == list(range(next(iter(sizes)))) for v in nodes.values()))
    return len(nodes), uniform
