"""Device choice (`train.device`, `bank build --device`), the autocast dtype (`train.amp`) and
the autocast context every forward runs in (training step, test paths)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from tallformer.errors import TallformerError

__all__ = ["DeviceError", "amp_dtype_for", "autocast", "resolve_device"]


class DeviceError(TallformerError, ValueError):
    """A device name that is not a device, or a CUDA device this machine does not have."""


def resolve_device(name: str | torch.device, what: str = "train.device") -> torch.device:
    """The torch device for `name`: "auto" is CUDA when available, else the CPU.

    `what` names the setting in the messages: a config key (``train.device``, the fix reads
    ``train.device=cpu``) or a command-line option (``--device``, the fix ``--device cpu``).
    Raises `DeviceError` for a name that is not a device, or CUDA (or a CUDA index) that
    this machine does not have.
    """
    fix = f"{what} cpu" if what.startswith("-") else f"{what}=cpu"
    if isinstance(name, str) and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(
            f"{what}: {name!r} is not a device (use auto, cpu, cuda, cuda:1)"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{what} is {str(name)!r} but CUDA is not available; use {fix}")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"{what} is {str(name)!r} but this machine has {count} CUDA "
                              f"device(s) (cuda:0 .. cuda:{count - 1})")
    return device


def amp_dtype_for(amp: str, device: torch.device) -> torch.dtype | None:
    """``train.amp`` ("none" | "bf16" | "fp16") as an autocast dtype; None on the CPU."""
    if device.type != "cuda" or amp == "none":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def autocast(dtype: torch.dtype | None, device: torch.device | str) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` on `device`'s type with `dtype` (`amp_dtype_for`), or nothing for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
