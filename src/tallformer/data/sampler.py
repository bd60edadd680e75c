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

Several nodes with node-local banks (``memory.placement: node_local``): `assign_nodes`
gives every video to exactly one node for the whole run, and a sampler made with
``nodes=`` (that assignment) and ``node=k`` plans over node ``k``'s items only, with
``rank`` / ``world_size`` the process's place within its node. Each epoch shuffles within
the node's own videos, the rule above holds among the node's ranks, and every node takes
the same number of steps (the longest node's plan; shorter ones are padded with further
repeats of their own videos), so a bank row is only ever read and written on its owner.

This module imports numpy only.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterator, Mapping, Sequence
from numbers import Integral
from typing import TypeVar

import numpy as np

__all__ = ["VideoExclusiveSampler", "assign_nodes"]

K = TypeVar("K", bound=Hashable)


def _check_int(name: str, value: object, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < lo:
        raise ValueError(f"VideoExclusiveSampler: {name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def assign_nodes(frames: Mapping[K, int], num_nodes: int, seed: int = 0) -> list[list[K]]:
    """Give every video to exactly one of ``num_nodes`` nodes, for a whole run.

    ``frames`` ``{video_id: num_frames}`` (every training video). Node sizes differ by at
    most one video (each video is one sample per epoch, so every node has the same number
    of steps, up to one), and within that the frame totals (the node's bank bytes) are
    balanced greedily: videos by decreasing frame count (equal counts in an order drawn
    from ``seed``) each go to the node with the fewest frames so far that may still take
    one (ties: the lower node). A pure function of the frame counts, ``seed`` and
    ``num_nodes``. Returns ``nodes[k]`` = node ``k``'s videos in the order of ``frames``.
    """
    n_nodes = _check_int("num_nodes", num_nodes, 1)
    ids = list(frames)
    if len(ids) < n_nodes:
        raise ValueError(f"assign_nodes: {len(ids)} videos cannot give each of {n_nodes} nodes one; "
                         "use fewer nodes or more training videos")
    tie = np.random.default_rng(np.random.SeedSequence([_check_int("seed", seed, 0), 0x6E6F6465]))
    draw = {v: int(r) for v, r in zip(ids, tie.permutation(len(ids)), strict=True)}
    order = sorted(ids, key=lambda v: (-int(frames[v]), draw[v]))
    base, extra = divmod(len(ids), n_nodes)
    counts = [0] * n_nodes
    totals = [0] * n_nodes
    owner: dict[K, int] = {}
    for video in order:
        over = sum(c > base for c in counts)  # nodes that already took one of the extra videos
        open_nodes = [k for k in range(n_nodes) if counts[k] < base or (counts[k] == base and over < extra)]
        k = min(open_nodes, key=lambda j: (totals[j], j))
        owner[video] = k
        counts[k] += 1
        totals[k] += int(frames[video])
    return [[v for v in ids if owner[v] == k] for k in range(n_nodes)]


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
        nodes: several nodes with node-local banks: the videos of every node (`assign_nodes`);
            this sampler then plans over node ``node``'s items, ``rank`` and ``world_size``
            are within the node, and every node takes the same number of steps. None (the
            default): one group of ranks over every item.
        node: this process's node (an index into ``nodes``).

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
        *,
        nodes: Sequence[Collection[Hashable]] | None = None,
        node: int = 0,
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
        self.node = _check_int("node", node, 0)
        self.node_items: list[list[int]] | None = None
        self.items = list(range(len(self.video_of)))
        if nodes is not None:
            self.node_items = self._split(nodes)
            self.items = self.node_items[self.node]
        self.num_videos = len({self.video_of[i] for i in self.items})
        for k, items in enumerate(self.node_items or [self.items]):
            have = len({self.video_of[i] for i in items})
            if have < self.world_size:
                where = f"node {k} has {have} distinct videos, which cannot" if nodes is not None else \
                    f"{have} distinct videos cannot"
                raise ValueError(
                    f"VideoExclusiveSampler: {where} give each of {self.world_size} ranks a different "
                    "video at every step; use fewer processes or more training videos"
                )
        self.epoch = 0
        self._plan_cache: tuple[int, list[list[list[int]]]] | None = None

    def _split(self, nodes: Sequence[Collection[Hashable]]) -> list[list[int]]:
        """Each node's item indices (ascending); every item's video in exactly one node."""
        if not 0 <= self.node < len(nodes):
            raise ValueError(f"VideoExclusiveSampler: node {self.node} must be < the {len(nodes)} nodes")
        owner: dict[Hashable, int] = {}
        for k, videos in enumerate(nodes):
            for video in videos:
                if owner.setdefault(video, k) != k:
                    raise ValueError(f"VideoExclusiveSampler: video {video!r} is given to nodes "
                                     f"{owner[video]} and {k}; every video needs exactly one node")
        lost = [v for v in dict.fromkeys(self.video_of) if v not in owner]
        if lost:
            raise ValueError(f"VideoExclusiveSampler: {len(lost)} video(s) are on no node, e.g. "
                             f"{lost[0]!r}; every video needs exactly one node")
        out: list[list[int]] = [[] for _ in nodes]
        for i, video in enumerate(self.video_of):
            out[owner[video]].append(i)
        return out

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's shuffle (call on every rank before iterating)."""
        self.epoch = _check_int("epoch", epoch, 0)

    # ------------------------------------------------------------------ the plan

    def _order(self, items: list[int]) -> list[int]:
        if not self.shuffle:
            return list(items)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch]))
        return [items[int(i)] for i in rng.permutation(len(items))]

    def plan(self) -> list[list[list[int]]]:
        """The epoch's global plan: ``plan[step][rank]`` = that rank's item indices.

        Identical on every rank (a function of seed, epoch and the items only). With
        ``nodes``: the plan of this sampler's node (its ranks), as long as the longest
        node's plan.
        """
        if self._plan_cache is not None and self._plan_cache[0] == self.epoch:
            return self._plan_cache[1]
        order, steps = self._plan_items(self.items)
        if self.node_items is not None:
            length = max(len(self._plan_items(items)[1]) if k != self.node else len(steps)
                         for k, items in enumerate(self.node_items))
            steps = self._pad_steps(steps, order, length)
        self._plan_cache = (self.epoch, steps)
        return steps

    def _plan_items(self, items: list[int]) -> tuple[list[int], list[list[list[int]]]]:
        """The order of ``items`` this epoch and their plan (steps of the ranks' batches)."""
        order = self._order(items)
        world, bs = self.world_size, self.batch_size
        num_videos = len({self.video_of[i] for i in items})
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
                per_rank = min(bs, num_videos // world)
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
        return order, steps

    def _pad_steps(self, steps: list[list[list[int]]], order: list[int], length: int
                   ) -> list[list[list[int]]]:
        """Steps of repeats (distinct videos within each, cycling through ``order``) up to
        ``length`` steps, so every node takes as many steps as the longest."""
        world = self.world_size
        per_rank = min(self.batch_size, self.num_videos // world)
        want = per_rank * world
        cursor = 0
        out = list(steps)
        while len(out) < length:
            step: list[int] = []
            seen: set[Hashable] = set()
            for _ in range(len(order)):  # one pass meets every video of the node
                i = order[cursor % len(order)]
                cursor += 1
                if self.video_of[i] not in seen:
                    step.append(i)
                    seen.add(self.video_of[i])
                    if len(step) == want:
                        break
            out.append([step[r * per_rank:(r + 1) * per_rank] for r in range(world)])
        return out

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
            f"drop_last={self.drop_last}, distinct_repeats={self.distinct_repeats}"
            + ("" if self.node_items is None else f", node={self.node} of {len(self.node_items)}")
            + ")"
        )
