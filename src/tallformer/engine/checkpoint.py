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
from tallformer.engine.journal import segment_steps
from tallformer.errors import TallformerError
from tallformer.models.weights import WeightsError, read_checkpoint

__all__ = ["CheckpointError", "get_rng_state", "load_checkpoint", "load_resume_checkpoint", "resume_alternatives",
           "save_checkpoint", "set_rng_state"]


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


def load_resume_checkpoint(last: str | os.PathLike[str], journal: str | os.PathLike[str]) -> dict[str, Any]:
    """`load_checkpoint` of a run's ``last.pt`` for a resume; when it cannot be read, the
    `CheckpointError` goes on to say which intact checkpoints the run has, whether resuming
    from each is exact, and the command (`resume_alternatives`; ``journal``: the run's bank
    journal folder)."""
    try:
        return load_checkpoint(last)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}. {resume_alternatives(last, journal)}") from None


def _exactness(state: dict[str, Any], journal_step: int | None) -> str:
    memory = state.get("config", {}).get("memory", {})
    if state.get("nodes") is not None:
        return ("exact only if it is the step each node's bank journal (memory.node_dir/journal/from_STEP.*) "
                "starts from")
    if state.get("bank") is None or memory.get("frozen"):
        return "exact (this run's memory bank never changes)"
    if journal_step is None:
        return "not exact unless it is the step last.pt had (no bank journal names it)"
    if state["step"] == journal_step:
        return "exact: the bank's journal goes back to this step"
    return (f"not exact: the memory bank keeps the rows written after step {state['step']} (its journal "
            f"only goes back to step {journal_step}, last.pt's), so the run differs from an uninterrupted one")


def resume_alternatives(last: str | os.PathLike[str], journal: str | os.PathLike[str]) -> str:
    """What to do when a run's ``last.pt`` cannot be read: the other checkpoints in its folder
    that can (newest first, with their step and whether a resume from each is exact) and
    the command that resumes from the best of them; or, when none can, how to start again.

    A resume restores the model, optimizer, schedule and random states from the checkpoint,
    and the memory bank by undoing the journaled writes made since the latest checkpoint
    (`tallformer.engine.journal`): that is the state ``last.pt`` had. So a resume from an
    older checkpoint is exact only when the bank cannot have changed since it (a frozen bank,
    no bank) or it is of last.pt's own step (a copy of it under another name).
    """
    last = Path(last)
    folder, run = last.parent, last.parent.parent
    steps = segment_steps(journal)
    journal_step = steps[-1] if steps else None
    intact: list[tuple[int, Path, dict[str, Any]]] = []
    damaged: list[str] = []
    for path in sorted(folder.glob("*.pt")):
        if path.name == last.name or path.name.startswith("."):
            continue
        try:
            state = load_checkpoint(path)
        except CheckpointError:
            damaged.append(path.name)
            continue
        if state.get("format") == "tallformer-train" and isinstance(state.get("step"), int):
            intact.append((state["step"], path, state))
    bad = f" ({', '.join(damaged)} cannot be read either)" if damaged else ""
    fresh = f"tallformer train --config {run / 'config.yaml'} run_dir=NEW_RUN_DIR"
    if not intact:
        return f"No other checkpoint in {folder} can be read{bad}; start the run again: {fresh}"
    intact.sort(key=lambda item: (item[0] == journal_step, item[0]), reverse=True)
    listing = "; ".join(f"{p.name} (step {step}, epoch {st.get('epoch')}): resuming from it is "
                        f"{_exactness(st, journal_step)}" for step, p, st in intact)
    best = intact[0][1]
    return (f"Intact checkpoints in {folder}{bad}: {listing}. To resume from {best.name}: "
            f"cp {best} {last} && tallformer train --config {run / 'config.yaml'} run_dir={run} --resume "
            f"(or start again: {fresh})")


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
