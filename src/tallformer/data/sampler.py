"""A distributed batch sampler that never puts one video in two ranks' batches at one step.

Why: every rank reads the memory-bank rows of its samples' dropped chunks and writes the
rows of their kept chunks. The original used a distributed sampler that pads an epoch by
repeating videos (original: vedatad/datasets/samplers/group_sampler.py:94-139), so the same
video could be on two GPUs at once and the two ranks raced on its rows, with no lock (last
writer wins; original: vedatad/engines/train_engine.py:66-146). Here the *global* batch of
every step (the union of all ranks' batches) holds distinct videos, padding included, so
each video has one writer per step. (A data worker still reads a sample's rows up to
``num_workers x prefetch_factor`` batches before its step; a video appears once per epoch,
so only an epoch's padding can repeat a video written in between.)

The plan of an epoch is a pure function of ``(seed, epoch)`` and the items, computed the
same way on every rank; rank ``r`` takes its slice of each step:

1. Order the items: a permutation drawn from ``numpy`` seeded by ``(seed, epoch)``
   (``shuffle``), else the natural order.
2. Fill steps of ``world_size * batch_size`` slots greedily in that order, taking only items
   whose video is not in the step yet (an item whose video is already there waits for a
   later step; only possible when several items share a video).
3. A last step that cannot be filled with waiting items is dropped (``drop_last``) or padded
   to full batches with items of other videos (in plan order) that are not in the step, like
   the usual distributed sampler's padding but without duplicates. When there are too few
   distinct videos for full batches, that step's per-rank batch shrinks to
   ``num_videos // world_size`` (items that do not fit wait for one more step): every rank
   still gets the same number of samples, and no video appears twice in a step.

So every item appears once per epoch (plus padding), every rank has the same number of
steps (``len(sampler)``), and batches have ``batch_size`` items except possibly the last.

A padded repeat is yielded as ``item + k * len(items)`` (its k-th repeat in the epoch,
k >= 1; ``distinct_repeats``), so that a dataset that reads item ``index % len`` and seeds
its random draws with the whole index (``TrainDataset``) gives the repeat its own window,
chunks and augmentation; the first occurrence of every item is the item index itself.
``plan()`` lists the plain item indices.

This module imports numpy only.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from numbers import Integral

import numpy as np

__all__ = ["VideoExclusiveSampler"]


def _check_int(name: str, value: object, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < lo:
        raise ValueError(f"VideoExclusiveSampler: {name} must be an integer >= {lo}, got {value!r}")
    return int(value)


class VideoExclusiveSampler:
    """Distributed batch sampler: per step, the ranks' batches hold distinct videos.

    Args:
        videos: the dataset length (``int``: item ``i`` is its own video) or the video id of
            every item (a sequence; items with equal ids are the same video).
        batch_size: items per rank per step.
        rank, world_size: this process and the number of processes (``torchrun``'s
            ``RANK`` / ``WORLD_SIZE``).
        seed: mixed with the epoch into the shuffle; must be the same on every rank.
        shuffle: shuffle per epoch (else the items' order).
        drop_last: drop the last step when it cannot be filled with unseen items (else pad it
            with other videos).
        distinct_repeats: yield a padded repeat as ``item + k * len(items)`` (module
            docstring; for ``TrainDataset``); False yields plain item indices (any dataset).

    Use as a DataLoader ``batch_sampler``; call ``set_epoch(epoch)`` before each epoch, on
    every rank. Iterating yields this rank's lists of item indices, ``len(self)`` steps.
    """

    def __init__(
        self,
        videos: int | Sequence[Hashable],
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        distinct_repeats: bool = True,
    ) -> None:
        if isinstance(videos, Integral) and not isinstance(videos, bool):
            n = _check_int("dataset length", videos, 1)
            self.video_of: list[Hashable] = list(range(n))
        elif isinstance(videos, Sequence) and not isinstance(videos, (str, bytes)):
            self.video_of = list(videos)
            if not self.video_of:
                raise ValueError("VideoExclusiveSampler: the dataset has no items")
        else:
            raise TypeError(
                "VideoExclusiveSampler: videos must be the dataset length (int) or a sequence "
                f"of per-item video ids, got {type(videos).__name__}"
            )
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.world_size = _check_int("world_size", world_size, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ValueError(
                f"VideoExclusiveSampler: rank {rank} must be < world_size {world_size}"
            )
        self.seed = _check_int("seed", seed, 0)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.distinct_repeats = bool(distinct_repeats)
        self.num_videos = len(set(self.video_of))
        if self.num_videos < self.world_size:
            raise ValueError(
                f"VideoExclusiveSampler: {self.num_videos} distinct videos cannot give each of "
                f"{self.world_size} ranks a different video at every step; use fewer processes "
                "or more training videos"
            )
        self.epoch = 0
        self._plan_cache: tuple[int, list[list[list[int]]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's shuffle (call on every rank before iterating)."""
        self.epoch = _check_int("epoch", epoch, 0)

    # ------------------------------------------------------------------ the plan

    def _order(self) -> list[int]:
        n = len(self.video_of)
        if not self.shuffle:
            return list(range(n))
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch]))
        return [int(i) for i in rng.permutation(n)]

    def plan(self) -> list[list[list[int]]]:
        """The epoch's global plan: ``plan[step][rank]`` = that rank's item indices.

        Identical on every rank (a function of seed, epoch and the items only).
        """
        if self._plan_cache is not None and self._plan_cache[0] == self.epoch:
            return self._plan_cache[1]
        order = self._order()
        world, bs = self.world_size, self.batch_size
        slots = world * bs
        waiting = list(order)
        steps: list[list[list[int]]] = []
        while waiting:
            step: list[int] = []
            seen: set[Hashable] = set()
            rest: list[int] = []
            for i in waiting:
                v = self.video_of[i]
                if len(step) < slots and v not in seen:
                    step.append(i)
                    seen.add(v)
                else:
                    rest.append(i)
            if len(step) < slots:  # a last, partial step
                if self.drop_last:
                    break
                per_rank = min(bs, self.num_videos // world)
                want = per_rank * world
                rest = step[want:] + rest  # overflow (too few distinct videos) waits
                step = step[:want]
                seen = {self.video_of[i] for i in step}
                for i in order:  # pad with other videos, in plan order
                    if len(step) >= want:
                        break
                    if self.video_of[i] not in seen:
                        step.append(i)
                        seen.add(self.video_of[i])
            else:
                per_rank = bs
            steps.append([step[r * per_rank:(r + 1) * per_rank] for r in range(world)])
            waiting = rest
        self._plan_cache = (self.epoch, steps)
        return steps

    def sample_ids(self) -> list[list[int]]:
        """This rank's batches as yielded: plan item indices, repeats as ``item + k * n``.

        The k-th repeat (k >= 1) of an item within the epoch's plan (counted over every
        rank's batches, step by step, so all ranks agree) is ``item + k * n``, n the number
        of items; with ``distinct_repeats=False``, the plain item indices.
        """
        plan = self.plan()
        if not self.distinct_repeats:
            return [list(step[self.rank]) for step in plan]
        n = len(self.video_of)
        seen: dict[int, int] = {}
        out: list[list[int]] = []
        for step in plan:
            for r, batch in enumerate(step):
                ids = []
                for i in batch:
                    k = seen.get(i, 0)
                    seen[i] = k + 1
                    ids.append(i + k * n)
                if r == self.rank:
                    out.append(ids)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.sample_ids()

    def __len__(self) -> int:
        return len(self.plan())

    def __repr__(self) -> str:
        return (
            f"VideoExclusiveSampler(items={len(self.video_of)}, videos={self.num_videos}, "
            f"batch_size={self.batch_size}, rank={self.rank}, world_size={self.world_size}, "
            f"seed={self.seed}, epoch={self.epoch}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, distinct_repeats={self.distinct_repeats})"
        )
