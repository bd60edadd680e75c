"""DDP helpers: run the detector's training forward under `DistributedDataParallel`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn

from tallformer.memory.selection import num_kept

if TYPE_CHECKING:
    from tallformer.models.detector import TALLFormer

__all__ = ["TrainForward", "unwrap", "wrap_ddp"]


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
    return DistributedDataParallel(
        TrainForward(model),
        device_ids=ids,
        broadcast_buffers=False,
        find_unused_parameters=num_kept(num_chunks, keep_ratio) == 0,
    )
