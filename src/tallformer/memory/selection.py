"""Which chunks of a training window go through the backbone (with gradients).

A window of ``num_chunks`` chunks (THUMOS14: 480 frames = 15 chunks of 32) keeps
``k = num_kept(num_chunks, keep_ratio)`` chunks for the backbone; the other chunks' features
come from the memory bank. Two modes (original:
vedatad/partial_feedback/indice_selection.py:58-95):

- ``random`` (the paper's): ``k`` distinct chunks, uniformly without replacement, sorted.
- ``uniform``: ``floor(linspace(0, num_chunks - 1, k))`` (k = 2 of 15 gives ``[0, 14]``).

Where we differ from the original (listed in docs/differences.md): the count rule is the
original's ``int(num_chunks * keep_ratio)`` (``int`` truncates: 0.15 of 15 keeps 2), but at
least 1 when ``keep_ratio > 0`` (the original then runs no backbone, which DDP rejects);
``keep_ratio = 1`` keeps every chunk (no bank read; the original fails on an empty read)
and ``keep_ratio = 0`` keeps none (no backbone). The same code runs for every ratio: there
is no special-case path. The draw is made per sample, from a generator seeded by
``(seed, rank, epoch, index)`` (``tallformer.ops.seeding.sample_generator``), so a run is
reproducible and ranks draw independently (the original drew one set per step, shared by
the whole batch and, through a shared seed, by every GPU: vedatad/engines/train_engine.py:72-74,
tools/trainval.py:46-48).

This module imports numpy only (no torch), so `tallformer.memory` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from tallformer.config import ConfigError
from tallformer.ops.seeding import sample_generator

__all__ = [
    "MODES",
    "ChunkSelector",
    "make_chunk_selector",
    "num_kept",
    "select_chunks",
]

MODES: tuple[str, ...] = ("random", "uniform")


def _check_num_chunks(num_chunks: int) -> int:
    if isinstance(num_chunks, bool) or not isinstance(num_chunks, Integral) or num_chunks < 0:
        raise ValueError(f"num_chunks must be an integer >= 0, got {num_chunks!r}")
    return int(num_chunks)


def _check_keep_ratio(keep_ratio: float) -> float:
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, Real) or not (
        0.0 <= float(keep_ratio) <= 1.0
    ):
        raise ConfigError(
            f"keep_ratio must be a number in [0, 1] (memory.keep_ratio), got {keep_ratio!r}"
        )
    return float(keep_ratio)


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(
            f"unknown chunk selection mode {mode!r} (memory.mode); choose one of {list(MODES)}"
        )
    return mode


def num_kept(num_chunks: int, keep_ratio: float) -> int:
    """How many of ``num_chunks`` chunks go through the backbone.

    ``int(num_chunks * keep_ratio)`` as the original (vedatad/partial_feedback/indice_selection.py:68-72:
    15 x 0.15 = 2.25 keeps 2), raised to 1 when ``keep_ratio > 0`` (ours: the original keeps
    none and runs no backbone) and never more than ``num_chunks``. ``keep_ratio = 1`` keeps
    all, ``0`` keeps none.
    """
    n = _check_num_chunks(num_chunks)
    ratio = _check_keep_ratio(keep_ratio)
    k = int(n * ratio)
    if ratio > 0.0:
        k = max(k, 1)
    return min(k, n)


def select_chunks(
    num_chunks: int, keep_ratio: float, mode: str, generator: np.random.Generator
) -> list[int]:
    """The kept chunk ids of one window, sorted ascending, ``num_kept(num_chunks, keep_ratio)`` long.

    ``mode="random"``: distinct ids drawn uniformly without replacement from ``generator``.
    ``mode="uniform"``: ``floor(linspace(0, num_chunks - 1, k))`` (``generator`` unused); the
    ids are distinct because ``k <= num_chunks`` makes the linspace step >= 1.
    """
    _check_mode(mode)
    k = num_kept(num_chunks, keep_ratio)
    if mode == "random":
        if not isinstance(generator, np.random.Generator):
            raise TypeError(
                f"generator must be a numpy.random.Generator (see "
                f"tallformer.ops.seeding.sample_generator), got "
                f"{type(generator).__name__}"
            )
        ids = generator.choice(num_chunks, size=k, replace=False)
    else:
        ids = np.floor(np.linspace(0, num_chunks - 1, k))
    return sorted(int(i) for i in ids)


@dataclass(frozen=True)
class ChunkSelector:
    """The dataset's ``chunk_selector`` contract as a picklable object (safe for spawn workers):
    ``memory.keep_ratio`` and ``memory.mode`` applied to each sample's own generator.

    ``selector(seed, rank, epoch, index, num_chunks) -> sorted list[int]`` kept chunk ids.
    """

    keep_ratio: float
    mode: str = "random"

    def __post_init__(self) -> None:
        _check_keep_ratio(self.keep_ratio)
        _check_mode(self.mode)

    def __call__(self, seed: int, rank: int, epoch: int, index: int, num_chunks: int) -> list[int]:
        generator = sample_generator(seed, rank, epoch, index)
        return select_chunks(num_chunks, self.keep_ratio, self.mode, generator)


def make_chunk_selector(keep_ratio: float, mode: str = "random") -> ChunkSelector:
    """A ``chunk_selector(seed, rank, epoch, index, num_chunks) -> sorted list[int]`` for
    ``TrainDataset``; e.g. ``make_chunk_selector(cfg.memory.keep_ratio, cfg.memory.mode)``."""
    return ChunkSelector(keep_ratio=keep_ratio, mode=mode)
