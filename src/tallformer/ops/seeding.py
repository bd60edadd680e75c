"""Per-sample random streams: pure functions of `(seed, rank, epoch, index)`.

Every random choice of a training sample (its window start, its kept chunks, its
augmentation) comes from a generator seeded by these four numbers, so a sample is the same
whatever worker draws it and whenever, and resuming a run re-draws exactly the same samples.
`np.random.SeedSequence([seed, rank, epoch, index])` mixes the four numbers, so a change in
any of them gives an independent stream.
"""

from __future__ import annotations

from numbers import Integral
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["sample_generator", "sample_generators", "sample_seed_sequence"]


def sample_seed_sequence(seed: int, rank: int, epoch: int, index: int) -> np.random.SeedSequence:
    """`SeedSequence([seed, rank, epoch, index])`; each must be an integer >= 0."""
    parts = {"seed": seed, "rank": rank, "epoch": epoch, "index": index}
    for name, value in parts.items():
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0 to seed a sample, got {value!r}")
    return np.random.SeedSequence([int(v) for v in parts.values()])


def sample_generator(seed: int, rank: int, epoch: int, index: int) -> np.random.Generator:
    """The sample's chunk-selection generator: `default_rng` of the sample's seed sequence."""
    return np.random.default_rng(sample_seed_sequence(seed, rank, epoch, index))


def sample_generators(seed: int, rank: int, epoch: int, index: int
                      ) -> tuple[np.random.Generator, torch.Generator]:
    """The sample's window generator (numpy) and augmentation generator (torch).

    Two independent children of the sample's seed sequence (independent of the stream of
    `sample_generator` too).
    """
    import torch  # here, so that importing the module (the bank's chunk choice) stays torch-free

    np_seq, torch_seq = sample_seed_sequence(seed, rank, epoch, index).spawn(2)
    np_rng = np.random.Generator(np.random.PCG64(np_seq))
    torch_gen = torch.Generator()
    torch_gen.manual_seed(int(torch_seq.generate_state(1, dtype=np.uint64)[0]))
    return np_rng, torch_gen
