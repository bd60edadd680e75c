"""The run folder and the checkpoint formats: every name and format string in one place.

A training run (``run_dir``)::

    RUN_DIR/.lock              who holds the folder while a run writes there (host, pid,
                               command, start; `tallformer.engine.run_lock`)
    RUN_DIR/config.yaml        the resolved config (written at the start)
    RUN_DIR/log.jsonl          one JSON object per logged step
    RUN_DIR/tensorboard/       TensorBoard events (when tensorboard is installed)
    RUN_DIR/checkpoints/       epoch_NNNN.pt, step_NNNNNN.pt, last.pt, best.pt (+ best.json)
    RUN_DIR/bank/              the run's memory bank (its own copy, or built here)
    RUN_DIR/bank.json          which bank the run started from
    RUN_DIR/journal/           the bank's undo journal since the last checkpoint
    RUN_DIR/test/              the periodic tests (test/epoch_NNNN/) and `tallformer test`
    NODE_DIR/shard.json        (node-local runs) which shard a node folder holds; its bank/,
                               bank.json and journal/ as in RUN_DIR

Checkpoints are ``torch.save`` dicts read with ``weights_only=True``; ``format`` says which:
``TRAIN_FORMAT`` (a training checkpoint: model, optimizer, position, random states, bank)
or ``MODEL_FORMAT`` (a model only: its weights, the config it fits and the class names, as
`tallformer.engine.checkpoint.save_model` and ``tallformer convert-weights`` write it);
``version`` the tallformer that wrote it. The built-in synthetic dataset goes to
``data/synthetic/`` under the working folder (``data.synthetic_task: shapes``; another task
to ``data/synthetic_<task>/``, `synthetic_dir`).

Imports neither torch nor numpy.
"""

from __future__ import annotations

import os
from pathlib import Path

from tallformer.version import __version__

__all__ = [
    "BANK_DIR",
    "BANK_RECORD",
    "BEST",
    "BEST_RECORD",
    "CHECKPOINTS",
    "CHECKPOINT_FORMATS",
    "CONFIG_FILE",
    "JOURNAL",
    "LAST",
    "LOCK",
    "LOG",
    "MODEL_FORMAT",
    "SHARD_RECORD",
    "SYNTHETIC_DIR",
    "TENSORBOARD",
    "TEST_DIR",
    "TRAIN_FORMAT",
    "VERSION",
    "epoch_checkpoint",
    "last_checkpoint",
    "step_checkpoint",
    "synthetic_dir",
]

LOCK = ".lock"
CONFIG_FILE = "config.yaml"
LOG = "log.jsonl"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
BEST_RECORD = "best.json"
BANK_DIR = "bank"
BANK_RECORD = "bank.json"
JOURNAL = "journal"
TEST_DIR = "test"
SHARD_RECORD = "shard.json"
SYNTHETIC_DIR = Path("data") / "synthetic"

TRAIN_FORMAT = "tallformer-train"
MODEL_FORMAT = "tallformer-model"
CHECKPOINT_FORMATS = (TRAIN_FORMAT, MODEL_FORMAT)
VERSION = __version__


def epoch_checkpoint(epoch: int) -> str:
    """``epoch_0600.pt``: the checkpoint at the end of an epoch."""
    return f"epoch_{epoch:04d}.pt"


def step_checkpoint(step: int) -> str:
    """``step_000100.pt``: the checkpoint after an optimizer step."""
    return f"step_{step:06d}.pt"


def synthetic_dir(task: str = "shapes") -> Path:
    """Where `tallformer train` and `tallformer demo` generate the built-in synthetic dataset
    of ``data.synthetic_task``, relative to the working folder: ``data/synthetic`` for the
    demo's ``shapes``, ``data/synthetic_<task>`` for another task.

    Example:
        >>> synthetic_dir("drift").as_posix()
        'data/synthetic_drift'
    """
    return SYNTHETIC_DIR if task == "shapes" else SYNTHETIC_DIR.with_name(f"synthetic_{task}")


def last_checkpoint(run_dir: str | os.PathLike[str]) -> Path:
    """``RUN_DIR/checkpoints/last.pt``: the latest complete checkpoint of a run."""
    return Path(run_dir) / CHECKPOINTS / LAST
