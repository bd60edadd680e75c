"""Device choice (`train.device`, `bank build --device`), the autocast dtype (`train.amp`) and
the autocast context every forward runs in (training step, test paths) and the
deterministic-algorithms switch (``TALLFORMER_DETERMINISTIC=1``)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch

from tallformer.errors import TallformerError

__all__ = ["DETERMINISTIC_ENV", "DeviceError", "amp_dtype_for", "autocast", "deterministic_from_env",
           "resolve_device"]

# set to 1: deterministic GPU kernels for training (bit-identical runs and resumes on one GPU)
DETERMINISTIC_ENV = "TALLFORMER_DETERMINISTIC"


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


def deterministic_from_env() -> bool:
    """Deterministic algorithms when ``TALLFORMER_DETERMINISTIC=1``; returns whether they are on.

    On a GPU, some kernels (cuDNN convolution backward, atomic adds in index backward) give
    run-to-run different sums, so two identical runs, or a run and its resume, differ in
    the last bits. Switched on, this calls ``torch.use_deterministic_algorithms(True,
    warn_only=True)`` (an op without a deterministic kernel warns and runs anyway),
    turns cuDNN autotuning off and sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless it is set
    (cuBLAS reads it when it starts: call this before the first CUDA matrix product). It
    costs speed; the CPU is deterministic without it.

    `tallformer.engine.train.train` calls it first. Example (a shell)::

        TALLFORMER_DETERMINISTIC=1 tallformer train --config thumos14_swin_b ...
    """
    if os.environ.get(DETERMINISTIC_ENV) != "1":
        return False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    return True
