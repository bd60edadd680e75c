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
    world = len(per_rank)
    steps = len(per_rank[0])
    assert all(len(b) == steps for b in per_rank), "every rank must run the same number of steps"
    seen = Counter()
    for t in range(steps):
        sizes = {len(per_rank[r][t]) for r in range(world)}
        assert len(sizes) == 1, f"step {t}: ranks have different batch sizes {sizes}"
        assert 1 <= sizes.pop() <= batch_size
        vids = [video_of[i] for r in range(world) for i in per_rank[r][t]]
        assert len(vids) == len(set(vids)), f"step {t}: a video is on two slots: {vids}"
        seen.update(i for r in range(world) for i in per_rank[r][t])
    if not drop_last:
        missing = set(range(len(video_of))) - set(seen)
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
        with pytest.raises(ValueError):
            VideoExclusiveSampler(video_of, batch_size, world_size=world_size)
        return
    per_rank = _ranks(video_of, batch_size, world_size, seed=seed)
    _check_invariants(video_of, per_rank, batch_size, drop_last=False)


def test_padding_does_not_duplicate_in_step():
    # 10 videos, 2 ranks x 4: the second step has 2 real items and 6 padding, all distinct
    per_rank = _ranks(10, 4, 2, seed=3)
    assert len(per_rank[0]) == 2
    last = per_rank[0][1] + per_rank[1][1]
    assert len(last) == 8 and len(set(last)) == 8
    first = set(per_rank[0][0] + per_rank[1][0])
    assert len(first | set(last)) == 10


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
    assert list(a) == list(b) and len(a) == len(b)


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
    sampler = VideoExclusiveSampler(len(data), 2, rank=0, world_size=1, seed=1)
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=lambda b: torch.tensor(b))
    got = torch.cat(list(loader)).tolist()
    assert sorted(set(got)) == list(range(7))
    assert len(got) == 8  # 7 items padded to 4 batches of 2
