"""VideoExclusiveSampler: distinct videos per global step, full coverage, determinism."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tallformer.data.sampler import VideoExclusiveSampler


def _ranks(videos, batch_size, world_size, seed=0, epoch=0, **kw):
    """Each rank's batches, from independent sampler objects (as on separate processes)."""
    out = []
    for r in range(world_size):
        s = VideoExclusiveSampler(videos, batch_size, rank=r, world_size=world_size, seed=seed, **kw)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


def _check_invariants(video_of, per_rank, batch_size, drop_last):
    """Checks the yielded ids (a repeat is ``item + k * n``); returns the count per item."""
    n = len(video_of)
    world = len(per_rank)
    steps = len(per_rank[0])
    assert all(len(b) == steps for b in per_rank), "every rank must run the same number of steps"
    ids = [i for r in range(world) for batch in per_rank[r] for i in batch]
    assert len(ids) == len(set(ids)), "every sample of an epoch has its own id"
    seen = Counter()
    for t in range(steps):
        sizes = {len(per_rank[r][t]) for r in range(world)}
        assert len(sizes) == 1, f"step {t}: ranks have different batch sizes {sizes}"
        assert 1 <= sizes.pop() <= batch_size
        vids = [video_of[i % n] for r in range(world) for i in per_rank[r][t]]
        assert len(vids) == len(set(vids)), f"step {t}: a video is on two slots: {vids}"
        seen.update(i % n for r in range(world) for i in per_rank[r][t])
    if not drop_last:
        missing = set(range(n)) - set(seen)
        assert not missing, f"items never sampled: {missing}"
    return seen


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    batch_size=st.integers(1, 5),
    world_size=st.integers(1, 4),
    seed=st.integers(0, 1000),
    drop_last=st.booleans(),
)
def test_one_item_per_video(n: int, batch_size: int, world_size: int, seed: int, drop_last: bool):
    if n < world_size:
        with pytest.raises(ValueError, match="distinct videos"):
            VideoExclusiveSampler(n, batch_size, rank=0, world_size=world_size)
        return
    per_rank = _ranks(n, batch_size, world_size, seed=seed, drop_last=drop_last)
    seen = _check_invariants(list(range(n)), per_rank, batch_size, drop_last)
    g = batch_size * world_size
    if drop_last:
        assert len(per_rank[0]) == n // g
        assert all(c == 1 for c in seen.values())
    else:
        # padding only in the last step; everything else once
        extra = sum(seen.values()) - n
        assert extra < g
        if n >= g:
            assert len(per_rank[0]) == -(-n // g)
            assert all(len(b) == batch_size for r in per_rank for b in r)
        else:  # too few videos for one full step: n // world_size per rank
            assert len(per_rank[0]) == (1 if n % world_size == 0 else 2)


@settings(max_examples=60, deadline=None)
@given(
    video_of=st.lists(st.integers(0, 6), min_size=1, max_size=30),
    batch_size=st.integers(1, 4),
    world_size=st.integers(1, 3),
    seed=st.integers(0, 100),
)
def test_repeated_videos(video_of: list[int], batch_size: int, world_size: int, seed: int):
    """Several items of one video (e.g. several windows) never share a step either."""
    if len(set(video_of)) < world_size:
        with pytest.raises(ValueError, match="distinct videos"):
            VideoExclusiveSampler(video_of, batch_size, world_size=world_size)
        return
    per_rank = _ranks(video_of, batch_size, world_size, seed=seed)
    _check_invariants(video_of, per_rank, batch_size, drop_last=False)


def test_padding_does_not_duplicate_in_step():
    # 10 videos, 2 ranks x 4: the second step has 2 real items and 6 padding, all distinct
    per_rank = _ranks(10, 4, 2, seed=3, distinct_repeats=False)
    assert len(per_rank[0]) == 2
    last = per_rank[0][1] + per_rank[1][1]
    assert len(last) == 8
    assert len(set(last)) == 8
    first = set(per_rank[0][0] + per_rank[1][0])
    assert len(first | set(last)) == 10


def test_padded_repeats_get_their_own_ids():
    # The 6 padding slots above repeat items of step 1: they come as item + 10 (a first
    # repeat), so a dataset that seeds with the index draws them anew; the rest is unchanged.
    plain = _ranks(10, 4, 2, seed=3, distinct_repeats=False)
    ids = _ranks(10, 4, 2, seed=3)
    first = plain[0][0] + plain[1][0]
    assert ids[0][0] + ids[1][0] == first  # first occurrences: the item indices themselves
    for r in range(2):
        for i, item in zip(ids[r][1], plain[r][1], strict=True):
            assert i == (item + 10 if item in first else item)
    s = VideoExclusiveSampler(10, 4, rank=1, world_size=2, seed=3)
    assert s.sample_ids() == list(s) == ids[1]
    assert [[i % 10 for i in b] for b in s.sample_ids()] == [step[1] for step in s.plan()]
    # no shuffle, 5 items, batch 4: [0, 1, 2, 3], then 4 padded with 0, 1, 2 -> 5, 6, 7
    assert list(VideoExclusiveSampler(5, 4, shuffle=False)) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_too_few_videos_shrinks_the_last_step():
    # 3 videos on 2 ranks with batch 2: a full step is impossible without duplicates
    per_rank = _ranks(3, 2, 2)
    assert [len(b) for b in per_rank[0]] == [1, 1]
    _check_invariants([0, 1, 2], per_rank, 2, drop_last=False)


def test_deterministic_per_seed_and_epoch():
    a = VideoExclusiveSampler(50, 3, rank=1, world_size=2, seed=7)
    b = VideoExclusiveSampler(50, 3, rank=1, world_size=2, seed=7)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    b.set_epoch(5)
    assert list(a) != list(b), "another epoch must reshuffle"
    c = VideoExclusiveSampler(50, 3, rank=1, world_size=2, seed=8)
    c.set_epoch(4)
    assert list(a) != list(c), "another seed must reshuffle"
    a.set_epoch(5)
    assert list(a) == list(b)
    assert len(a) == len(b)


def test_no_shuffle_keeps_order():
    s0 = VideoExclusiveSampler(6, 2, rank=0, world_size=1, shuffle=False)
    assert list(s0) == [[0, 1], [2, 3], [4, 5]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank 2 must be < world_size 2"):
        VideoExclusiveSampler(10, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        VideoExclusiveSampler(10, 0)
    with pytest.raises(TypeError, match="dataset length"):
        VideoExclusiveSampler("abc", 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no items"):
        VideoExclusiveSampler([], 2)


def test_works_as_dataloader_batch_sampler():
    import torch
    from torch.utils.data import DataLoader

    data = list(range(7))
    sampler = VideoExclusiveSampler(len(data), 2, rank=0, world_size=1, seed=1,
                                    distinct_repeats=False)
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=lambda b: torch.tensor(b))
    got = torch.cat(list(loader)).tolist()
    assert sorted(set(got)) == list(range(7))
    assert len(got) == 8  # 7 items padded to 4 batches of 2
