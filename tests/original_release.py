"""Writers of the original release's detector checkpoints, for the tests of
`tallformer.models.original_checkpoints`.

From our own (randomly initialised) detector, through the inverse of the key map, in the
original's saver structure:

- THUMOS14 (vedatad): ``epoch_E_weights.pth`` = the detector's state dict (an
  OrderedDict of CPU tensors, no DDP prefix), ``epoch_E_optim.pth`` = an SGD
  ``state_dict()`` whose param groups carry ``initial_lr``, ``epoch_E_meta.pth`` =
  ``{"epoch": E, "iter": I}`` (original: vedacore/misc/checkpoint.py:192-254 through
  vedacore/loopers/base_looper.py:153-201).
- ActivityNet (AFSD ``train_membank.py``): ``checkpoint-E.ckpt`` = ``model.module.state_dict()``
  (original: AFSD/anet_video_cls/membank/train_membank.py:382-498).

The buffers the original keeps and we rebuild are put back with the original's values:
``dummy_tensor`` (ones(1), original: vedatad/models/backbones/vswin.py:302-303), the TCM's
``relative_position_index`` (i - j + L - 1, vedatad/models/modules/swin_1d.py:40-141) and
the TDM's sinusoid table ``pe`` ([5000, 1, C], vedatad/models/modules/positional_encoding.py:14-37).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn

from tallformer.models.original_checkpoints import ANET_MAP, THUMOS14_MAP, KeyMap


def randomize_norm_stats(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm random running statistics (a trained model's are not 0 / 1)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert m.running_mean is not None
            assert m.running_var is not None
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            assert m.num_batches_tracked is not None
            m.num_batches_tracked.fill_(1234)


def _inverse(state: dict[str, Tensor], keymap: KeyMap) -> OrderedDict[str, Tensor]:
    out: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in state.items():
        orig = keymap.to_original(key)
        if orig is None:
            raise KeyError(f"no original name for {key!r}")
        out[orig] = value.detach().clone().cpu()
    return out


def _rebuilt_buffers(state: dict[str, Tensor], tcm_prefix: str) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key in state:
        m = re.match(r"^backbone\.features\.(\d+)\.(\d+)\.norm1\.weight$", key)
        if m and int(m.group(1)) % 2 == 0:
            out[f"backbone.layers.{int(m.group(1)) // 2}.blocks.{m.group(2)}.dummy_tensor"] = torch.ones(1)
        m = re.match(r"^neck\.tcm\.layers\.(\d+)\.attn\.relative_position_bias_table$", key)
        if m:
            length = (state[key].shape[0] + 1) // 2
            pos = torch.arange(length)
            out[f"{tcm_prefix}1.encoder.layers.{m.group(1)}.attn.relative_position_index"] = (
                pos[:, None] - pos[None, :] + length - 1)
    return out


def _sinusoid(dim: int, max_len: int = 5000) -> Tensor:
    pe = torch.zeros(max_len, dim)
    position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe.unsqueeze(0).transpose(0, 1)


def thumos14_state(model: nn.Module) -> OrderedDict[str, Tensor]:
    """Our THUMOS14 `TALLFormer`'s weights in the original `MemSingleStageDetector` names."""
    state = dict(model.state_dict())
    out = _inverse(state, THUMOS14_MAP)
    out.update(_rebuilt_buffers(state, "neck."))
    out["neck.2.pe.pe"] = _sinusoid(int(state["neck.srm.conv2.weight"].shape[0]))
    return out


def anet_state(model: nn.Module) -> OrderedDict[str, Tensor]:
    """Our `AFSD`'s weights in the original `BDNetMemBank` names."""
    state = dict(model.state_dict())
    out = _inverse(state, ANET_MAP)
    out.update(_rebuilt_buffers(state, "coarse_pyramid_detection.pyramids."))
    return out


def save_thumos14_epoch(model: nn.Module, workdir: Path, epoch: int, iteration: int) -> Path:
    """``epoch_E_weights.pth``, ``epoch_E_optim.pth``, ``epoch_E_meta.pth`` in `workdir`;
    returns the weights file."""
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = workdir / f"epoch_{epoch}"
    weights = Path(f"{prefix}_weights.pth")
    torch.save(thumos14_state(model), weights)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    for group in optimizer.param_groups:
        group["initial_lr"] = 0.01
    torch.save(optimizer.state_dict(), f"{prefix}_optim.pth")
    torch.save({"epoch": epoch, "iter": iteration}, f"{prefix}_meta.pth")
    return weights


def save_anet_checkpoint(model: nn.Module, folder: Path, epoch: int) -> Path:
    """``checkpoint-E.ckpt`` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"checkpoint-{epoch}.ckpt"
    torch.save(anet_state(model), path)
    return path
