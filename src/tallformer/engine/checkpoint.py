"""Checkpoints: plain data and tensors, written atomically, loaded with ``weights_only``;
a detector saved (`save_model`) and restored (`load_model`) with its config and classes.

A checkpoint is one ``torch.save`` dict (its ``format``: `tallformer.engine.run_layout`;
the training checkpoint's keys: ``_state`` in `tallformer.engine.train`): tensors, numbers,
strings and lists/dicts/tuples of them, nothing else, so
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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tallformer.atomic import atomic_path
from tallformer.config import Config, apply_overrides, config_from_dict, config_to_dict
from tallformer.engine.device import resolve_device
from tallformer.engine.errors import InferenceError
from tallformer.engine.family import LoadedModel, check_classes
from tallformer.engine.journal import segment_steps
from tallformer.engine.run_layout import (
    CHECKPOINT_FORMATS,
    MODEL_FORMAT,
    TRAIN_FORMAT,
    VERSION,
)
from tallformer.errors import TallformerError, output_error
from tallformer.models.weights import WeightsError, key_problems, read_checkpoint

if TYPE_CHECKING:
    from tallformer.models.protocol import DetectorModel

__all__ = [
    "CheckpointError",
    "get_rng_state",
    "load_checkpoint",
    "load_model",
    "load_resume_checkpoint",
    "resume_alternatives",
    "save_checkpoint",
    "save_model",
    "set_rng_state",
]


class CheckpointError(TallformerError):
    """A checkpoint that cannot be read or does not fit the run; the message names the file."""


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (fsynced temp file, then rename): a failed
    write leaves ``path`` as it was and raises `tallformer.errors.OutputError` naming it and
    the cause (``no space left on the device``, never torch's ``unexpected pos``)."""
    target = Path(path)
    with atomic_path(target) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as exc:  # torch's zip writer reports a failed write as its own error
            if not _is_write_failure(exc):
                raise
            raise output_error(target, _write_cause(exc, tmp, state)) from exc
    return target


def _is_write_failure(exc: RuntimeError) -> bool:
    text = str(exc)
    return "inline_container" in text or "PytorchStreamWriter" in text or "file write failed" in text


def _write_cause(exc: RuntimeError, tmp: Path, state: dict[str, Any]) -> OSError:
    """What made torch's write of `tmp` fail, as an `OSError`: no space when the disk has less
    room left than the checkpoint's tensors (the part written is still there), else torch's
    own words."""
    import errno
    import shutil

    needed = sum(v.untyped_storage().nbytes() for v in _leaves(state) if isinstance(v, torch.Tensor))
    try:
        full = shutil.disk_usage(tmp.parent).free < needed
    except OSError:
        full = False
    if full:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
    return OSError(None, f"the write failed (torch: {str(exc).strip().splitlines()[0]})")


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


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
        if state.get("format") == TRAIN_FORMAT and isinstance(state.get("step"), int):
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


# --------------------------------------------------------------------------- a detector


def save_model(path: str | os.PathLike[str], model: DetectorModel, cfg: Config, classes: Sequence[str],
               **extra: Any) -> Path:
    """Write `model` as a model checkpoint (``format: tallformer-model``): its weights, the
    config it was built from and its class names (label-id order), plus `extra` keys (e.g.
    ``epoch``, ``step``, ``source``); `load_model`, ``tallformer test`` / ``detect`` and
    ``model.init_from`` read it.

    Example::

        >>> import tempfile
        >>> import tallformer
        >>> cfg = tallformer.load_config("demo")
        >>> model = tallformer.build_detector(cfg)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = tallformer.save_model(f"{tmp}/demo.pt", model, cfg, ["a", "b", "c", "d"])
        ...     tallformer.load_model(path, device="cpu").classes
        ['a', 'b', 'c', 'd']
    """
    if len(classes) != model.num_classes:
        raise InferenceError(f"{path}: {len(classes)} class names for a model of {model.num_classes} classes")
    state = {"format": MODEL_FORMAT, "version": VERSION, "model": model.state_dict(),
             "config": config_to_dict(cfg), "classes": [str(c) for c in classes], **extra}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, state)


def load_model(checkpoint: str | os.PathLike[str], cfg: Config | None = None, *,
               overrides: Sequence[str] = (), device: str | torch.device | None = None) -> LoadedModel:
    """Build the detector of a checkpoint (``RUN_DIR/checkpoints/*.pt``, or a model
    checkpoint of `save_model` / ``tallformer convert-weights``) and load its weights.

    The model is built from `cfg` when given (its ``model`` section must be the checkpoint's,
    the starting weights ``model.backbone.weights`` / ``model.init_from`` aside: the error
    names the keys that differ and the run's ``config.yaml``), else from the config saved in
    the checkpoint with `overrides` applied. Class
    names come from the checkpoint. `device` None means ``train.device`` of that config.
    Raises `CheckpointError` naming the file when it is not a tallformer checkpoint or its
    weights do not fit the model. Every detector family loads (``model.kind``).

    Example (a model checkpoint written first, see `save_model`)::

        >>> import tempfile
        >>> import tallformer
        >>> cfg = tallformer.load_config("demo")
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = tallformer.save_model(f"{tmp}/demo.pt", tallformer.build_detector(cfg), cfg,
        ...                                  ["a", "b", "c", "d"])
        ...     loaded = tallformer.load_model(path, device="cpu")
        >>> loaded.classes, loaded.model.num_classes, loaded.model.training
        (['a', 'b', 'c', 'd'], 4, False)
    """
    from tallformer.engine.factory import build_detector, family_for

    path = Path(checkpoint)
    state = load_checkpoint(path)
    # a training checkpoint, or a model checkpoint (save_model, convert-weights: model,
    # config and classes, no optimizer)
    if state.get("format") not in CHECKPOINT_FORMATS or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a tallformer training checkpoint or converted model (format "
                              f"{state.get('format')!r}); pass a file of RUN_DIR/checkpoints/, "
                              "e.g. runs/th14/checkpoints/epoch_0600.pt, or convert the original's "
                              "with tallformer convert-weights")
    saved = config_from_dict(state["config"], f"{path} (saved config)")
    if cfg is None:
        cfg = config_from_dict(apply_overrides(state["config"], list(overrides)),
                               f"{path} (saved config) + command line") if overrides else saved
        where = f"the config saved in {path}"
    else:
        where = "the given config"
        if cfg.model.kind != saved.model.kind:
            raise CheckpointError(f"{path}: a model.kind={saved.model.kind} checkpoint, but the given "
                                  f"config has model.kind={cfg.model.kind}; test it with the config "
                                  f"it was trained with (e.g. --config {family_for(saved).example_config})")
        differences = _model_differences(saved, cfg)
        if differences:
            raise CheckpointError(f"{path} was trained with another model than the given config: "
                                  f"{', '.join(differences)}; test it with the config it was trained with, "
                                  f"{_run_config(path)} (or leave out --config: a checkpoint holds its config)")
    if device is None:
        dev = resolve_device(cfg.train.device)
    else:
        dev = resolve_device(device, "--device") if isinstance(device, str) else device
    model = build_detector(cfg)
    problem = _state_dict_problem(model, state["model"])
    if problem:
        raise CheckpointError(f"{path}: its weights do not fit the model of {where}: {problem}; "
                              "test with the config the checkpoint was trained with")
    model.load_state_dict(state["model"])
    model.eval().to(dev)
    classes = [str(c) for c in state.get("classes") or []]
    if not classes:
        raise CheckpointError(f"{path}: the checkpoint has no class names")
    check_classes(model, classes, str(path))
    return LoadedModel(model=model, cfg=cfg, saved_cfg=saved, classes=classes, path=path,
                       epoch=state.get("epoch"), step=state.get("step"), device=dev)


# model keys that only say where a run's weights started (the checkpoint's weights replace them)
_STARTING_WEIGHTS = ("model.backbone.weights", "model.init_from")


def _model_differences(saved: Config, given: Config) -> list[str]:
    """``model.KEY: SAVED (checkpoint) -> GIVEN (given)`` for every model key that differs."""
    def flat(data: Any, prefix: str) -> dict[str, Any]:
        if isinstance(data, dict):
            return {k: v for key, value in data.items() for k, v in flat(value, f"{prefix}.{key}").items()}
        return {prefix: data}

    old, new = flat(config_to_dict(saved)["model"], "model"), flat(config_to_dict(given)["model"], "model")
    return [f"{key}: {old.get(key)!r} (checkpoint) -> {new.get(key)!r} (given)" for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key) and key not in _STARTING_WEIGHTS]


def _run_config(path: Path) -> str:
    """The config file of the run a checkpoint is in (``RUN_DIR/config.yaml`` beside its
    ``checkpoints/`` folder), or the words for the one it holds."""
    from tallformer.engine.run_layout import CHECKPOINTS, CONFIG_FILE

    run_config = path.parent.parent / CONFIG_FILE
    if path.parent.name == CHECKPOINTS and run_config.is_file():
        return str(run_config)
    return f"the one saved in {path}"


def _state_dict_problem(model: DetectorModel, state: dict[str, Any]) -> str | None:
    """`tallformer.models.weights.key_problems` of `state` against the model's own."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} (file {list(state[k].shape)}, model {list(v.shape)})" for k, v in own.items()
              if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape]
    return "; ".join(key_problems(missing, unexpected, shapes, [])) or None
