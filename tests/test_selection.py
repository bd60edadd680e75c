"""Chunk selection: counts, modes, per-sample seeding (tallformer.memory.selection)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tallformer.config import ConfigError
from tallformer.memory.selection import (
    ChunkSelector,
    make_chunk_selector,
    num_kept,
    select_chunks,
)
from tallformer.ops.seeding import sample_generator


@pytest.mark.parametrize(
    ("num_chunks", "ratio", "expected"),
    [
        (15, 0.15, 2),  # the paper: int(2.25) = 2 (original: vedatad/partial_feedback/indice_selection.py:68-72)
        (15, 1.0, 15),
        (15, 0.0, 0),
        (15, 0.01, 1),  # int(0.15) = 0, raised to 1 (ours: the original would keep none)
        (15, 0.5, 7),
        (4, 0.5, 2),
        (1, 0.15, 1),
        (0, 0.5, 0),
    ],
)
def test_num_kept(num_chunks: int, ratio: float, expected: int) -> None:
    assert num_kept(num_chunks, ratio) == expected


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", True])
def test_bad_keep_ratio(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"memory\.keep_ratio"):
        num_kept(15, bad)  # type: ignore[arg-type]


def test_bad_mode_and_num_chunks() -> None:
    with pytest.raises(ConfigError, match=r"memory\.mode"):
        select_chunks(15, 0.5, "segments_2v1", np.random.default_rng(0))
    with pytest.raises(ValueError, match="num_chunks"):
        num_kept(-1, 0.5)
    with pytest.raises(ValueError, match="keep_ratio"):
        make_chunk_selector(2.0)


@pytest.mark.parametrize("mode", ["random", "uniform"])
@pytest.mark.parametrize(("ratio", "k"), [(0.0, 0), (0.15, 2), (0.5, 7), (1.0, 15)])
def test_select_counts_sorted_distinct(mode: str, ratio: float, k: int) -> None:
    for i in range(20):
        ids = select_chunks(15, ratio, mode, sample_generator(0, 0, 0, i))
        assert len(ids) == k
        assert ids == sorted(set(ids))
        assert all(isinstance(c, int) and 0 <= c < 15 for c in ids)
    if ratio == 1.0:
        assert ids == list(range(15))


@given(n=st.integers(0, 64), ratio=st.floats(0, 1), mode=st.sampled_from(["random", "uniform"]),
       seed=st.integers(0, 2**32 - 1))
@settings(max_examples=150, deadline=None)
def test_select_property(n: int, ratio: float, mode: str, seed: int) -> None:
    ids = select_chunks(n, ratio, mode, np.random.default_rng(seed))
    assert len(ids) == num_kept(n, ratio)
    assert ids == sorted(set(ids))
    assert all(0 <= c < n for c in ids)


def test_uniform_mode_is_linspace() -> None:
    gen = np.random.default_rng(0)
    assert select_chunks(15, 0.15, "uniform", gen) == [0, 14]  # original: indice_selection.py:78-95
    assert select_chunks(15, 0.2, "uniform", gen) == [0, 7, 14]
    assert select_chunks(15, 0.27, "uniform", gen) == [0, 4, 9, 14]  # floor(0, 4.67, 9.33, 14)
    assert select_chunks(15, 0.01, "uniform", gen) == [0]
    assert select_chunks(8, 0.5, "uniform", gen) == [0, 2, 4, 7]
    # uniform ignores the generator state
    assert select_chunks(15, 0.27, "uniform", sample_generator(1, 2, 3, 4)) == [0, 4, 9, 14]


def test_random_mode_is_uniform_over_chunks() -> None:
    counts = np.zeros(15)
    for i in range(3000):
        for c in select_chunks(15, 0.15, "random", sample_generator(7, 0, 0, i)):
            counts[c] += 1
    expected = 3000 * 2 / 15  # 400 per chunk
    assert counts.sum() == 6000
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))  # ~5 sigma


def test_selector_reproducible_and_independent() -> None:
    sel = make_chunk_selector(0.5, "random")
    base = (10, 0, 3, 17)
    first = sel(*base, 15)
    assert sel(*base, 15) == first  # same tuple, same draw
    assert len(first) == 7
    # changing any one of (seed, rank, epoch, index) gives a different stream
    for pos in range(4):
        draws = set()
        for delta in range(1, 9):
            t = list(base)
            t[pos] += delta
            draws.add(tuple(sel(*t, 15)))
        assert len(draws) >= 6  # C(15, 7) = 6435 outcomes: collisions are rare
    # streams of neighbouring tuples are not shifted copies of each other
    a = sample_generator(10, 0, 3, 17).random(8)
    b = sample_generator(10, 1, 3, 17).random(8)
    c = sample_generator(10, 0, 3, 18).random(8)
    assert not np.allclose(a, b)
    assert not np.allclose(a, c)
    assert np.array_equal(a, sample_generator(10, 0, 3, 17).random(8))


def test_ranks_draw_independently() -> None:
    # the original shared one draw across GPUs (vedatad/engines/train_engine.py:72-74 with
    # one seed on every rank, tools/trainval.py:46-48): ours agree only by chance
    sel = make_chunk_selector(0.15)
    same = sum(sel(10, 0, 0, i, 15) == sel(10, 1, 0, i, 15) for i in range(500))
    assert same < 25  # P(equal) = 1/C(15,2) = 1/105 -> about 5 of 500


def test_sample_generator_rejects_negative() -> None:
    with pytest.raises(ValueError, match="rank"):
        sample_generator(0, -1, 0, 0)


def test_selector_pickles() -> None:
    sel = make_chunk_selector(0.15, "uniform")
    assert isinstance(sel, ChunkSelector)
    again = pickle.loads(pickle.dumps(sel))
    assert again == sel
    assert again(0, 0, 0, 0, 15) == [0, 14]


def test_draws_are_the_seed_sequence_of_the_sample() -> None:
    """The kept chunks are `default_rng(SeedSequence([seed, rank, epoch, index]))`'s choice:
    pinned, so a change of the seeding (or of numpy's stream) shows here."""
    assert make_chunk_selector(0.15)(10, 0, 0, 0, 15) == [10, 14]
    assert make_chunk_selector(0.5)(10, 1, 2, 3, 15) == [2, 3, 5, 7, 8, 11, 13]
    direct = np.random.default_rng(np.random.SeedSequence([10, 1, 2, 3]))
    assert make_chunk_selector(0.5)(10, 1, 2, 3, 15) == sorted(
        int(c) for c in direct.choice(15, size=7, replace=False))
