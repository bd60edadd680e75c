"""Training checkpoints: plain data and tensors, written atomically, loaded with ``weights_only``.

A checkpoint is one ``torch.save`` dict (see `TrainState` in `tallformer.engine.train` for
the keys): tensors, numbers, strings and lists/dicts/tuples of them, nothing else, so
``torch.load(..., weights_only=True)`` reads it and a crafted file cannot run code. It is
written through `tallformer.atomic.atomic_path`: a kill during the write leaves the
previous file intact.

Random states are converted to that form here: Python's `random` state (a tuple of ints),
numpy's legacy global state (its key array as a tensor), torch's CPU and CUDA generator
states (uint8 tensors).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tallformer.atomic import atomic_path
from tallformer.errors import TallformerError
from tallformer.models.weights import WeightsError, read_checkpoint

__all__ = ["CheckpointError", "get_rng_state", "load_checkpoint", "save_checkpoint", "set_rng_state"]


class CheckpointError(TallformerError):
    """A checkpoint that cannot be read or does not fit the run; the message names the file."""


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (fsynced temp file, then rename)."""
    target = Path(path)
    with atomic_path(target) as tmp:
        torch.save(state, tmp)
    return target


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (`tallformer.models.weights.read_checkpoint`).

    Raises `CheckpointError` naming the file when it is missing, not a checkpoint, or holds
    a pickled object other than tensors and plain containers (the offending global named).
    """
    p = Path(path)
    try:
        state = read_checkpoint(p)
    except WeightsError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{p}: not a tallformer checkpoint (a {type(state).__name__}, not a dict)")
    return state


def get_rng_state() -> dict[str, Any]:
    """Every global random state a training step can touch, as tensors and plain data."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `get_rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
