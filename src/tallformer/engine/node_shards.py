"""Several nodes, each with its own bank shard (``memory.placement: node_local``).

Every training video belongs to one node for the whole run
(`tallformer.data.sampler.assign_nodes`), and each node keeps the bank rows of only its own
videos, with their journal, in its node folder (``memory.node_dir``, local disk;
`tallformer.engine.run_bank`): a bank row is only ever read and written on its owner node.
Rank 0 writes the checkpoints into ``RUN_DIR`` (a folder every node sees); they record
every node's shard (its videos and bank fingerprint). A resume needs the same number of
nodes; each node's first process rolls its own shard back by its own journal.

`NodeShards` is that placement for one run (`tallformer.engine.train` builds it);
`node_train_loader` the loader of one process; `reshard_message` what a resume on another
number of nodes is told.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader

from tallformer.data.sampler import VideoExclusiveSampler, assign_nodes
from tallformer.engine.errors import TrainingError
from tallformer.engine.loader import TrainLoader, make_train_loader
from tallformer.engine.run_bank import (
    claim_shards,
    node_path,
    read_shard,
    shard_record,
    write_shard,
)
from tallformer.engine.run_layout import BANK_DIR
from tallformer.errors import TallformerError

if TYPE_CHECKING:
    from tallformer.config import Config
    from tallformer.data.annotations import AnnotationSet
    from tallformer.engine.distributed import Processes
    from tallformer.memory.bank import MemoryBank

__all__ = ["NodeShards", "node_train_loader", "reshard_message"]


def reshard_message(last: Path, saved_nodes: int, nodes: int) -> str:
    """Why a node-local run cannot resume on `nodes` nodes, and how to re-shard it."""
    return (f"{last} was trained on {saved_nodes} nodes with memory.placement=node_local (each node's "
            f"bank holds only its own videos) but this resume has {nodes}; resume on {saved_nodes} "
            "nodes, or re-shard: gather the node folders (memory.node_dir) on one machine, "
            f"'tallformer bank merge --run {last.parent.parent} --out MERGED NODE_DIR...', and start a "
            f"new run with memory.bank_dir=MERGED model.init_from={last} (the videos are split afresh "
            f"for {nodes} nodes)")


def node_train_loader(cfg: Config, annotations: AnnotationSet, bank: MemoryBank | None,
                      shards: list[list[str]], node: int, local_rank: int = 0, local_world_size: int = 1,
                      *, classes: list[str] | None = None, num_workers: int | None = None) -> TrainLoader:
    """`make_train_loader` for one process of a node-local run: node ``node`` of
    ``len(shards)`` (``shards``: every node's videos, `assign_nodes`), rank ``local_rank``
    of its ``local_world_size``; its samples are drawn as data rank
    ``node * local_world_size + local_rank``."""
    from tallformer.data.dataset import collate_train

    world = len(shards) * local_world_size
    tl = make_train_loader(cfg, annotations, bank, classes=classes, rank=node * local_world_size + local_rank,
                           world_size=world, num_workers=num_workers)
    try:
        sampler = VideoExclusiveSampler([v.video_id for v in tl.dataset.videos], cfg.data.batch_size,
                                        rank=local_rank, world_size=local_world_size, seed=cfg.seed,
                                        shuffle=True, drop_last=False, nodes=shards, node=node)
    except ValueError as exc:
        raise TrainingError(f"memory.placement=node_local: {exc}") from None
    workers = cfg.data.num_workers if num_workers is None else num_workers
    loader = DataLoader(tl.dataset, batch_sampler=sampler, collate_fn=collate_train, num_workers=workers,
                        persistent_workers=False, prefetch_factor=2 if workers > 0 else None)
    return TrainLoader(tl.dataset, sampler, loader)


class NodeShards:
    """The node-local placement of one run: every node's videos (`shards`), this node's
    folder (`node_dir`) and its records for the checkpoints.

    Construction splits the videos over the nodes and finds which shard this machine
    holds: the split is a function of the frame counts, the seed and the node count. A node
    whose folder already holds a shard of this run keeps it (the c10d rendezvous orders the
    machines anew at each launch); the others take the free shards in rank order. It sets
    ``procs.node`` and ``procs.data_rank`` accordingly.
    """

    def __init__(self, cfg: Config, procs: Processes, run: Path, counts: dict[str, int], *,
                 resume: bool) -> None:
        self.cfg = cfg
        self.procs = procs
        self.run = run
        self.resume = resume
        self.records: list[dict[str, Any]] = []
        if not procs.uniform:
            raise TrainingError("memory.placement=node_local needs the same number of processes on every "
                                "node (torchrun --nproc_per_node) and node ranks 0 .. N-1")
        try:
            self.shards = [[str(v) for v in shard] for shard in assign_nodes(counts, procs.num_nodes, cfg.seed)]
        except ValueError as exc:
            raise TrainingError(f"memory.placement=node_local: {exc}") from None
        self.counts = counts
        digest = hashlib.sha256(json.dumps(self.shards).encode()).hexdigest()
        if len(set(procs.gather(digest))) > 1:
            raise TrainingError("the nodes split the training videos differently (their frame counts "
                                "differ): every node needs the same data.annotations and data.videos")
        self.node_dir = node_path(cfg.memory.node_dir or str(run / "node{node}"), procs.node_rank)
        claim: int | None = None
        error: str | None = None
        if procs.local_main:
            try:
                claim = self._claim()
            except TallformerError as exc:
                error = str(exc)
        procs.raise_together(error)
        claims: list[int | None] = [None] * procs.num_nodes
        for node_rank, local_rank, held in procs.gather((procs.node_rank, procs.local_rank, claim)):
            if local_rank == 0:
                claims[node_rank] = held
        try:
            mapping = claim_shards(claims, procs.num_nodes, resume=resume)
        except TallformerError as exc:
            raise TrainingError(str(exc)) from None
        procs.node = mapping[procs.node_rank]
        procs.data_rank = procs.node * procs.local_world_size + procs.local_rank
        if procs.local_main and claim is None:
            write_shard(self.node_dir, self._shard_record(None))
        procs.barrier()

    @property
    def own_counts(self) -> dict[str, int]:
        """``{video_id: frames}`` of this node's videos."""
        return {v: self.counts[v] for v in self.shards[self.procs.node]}

    def _shard_record(self, fingerprint: str | None) -> dict[str, Any]:
        cfg = self.cfg
        bank = (str(node_path(cfg.memory.bank_dir, self.procs.node_rank).resolve())
                if cfg.memory.in_place and cfg.memory.bank_dir is not None else BANK_DIR)
        record = shard_record(self.procs.node, self.shards, cfg.seed, bank, fingerprint)
        record["run"] = str(self.run.resolve())
        return record

    def _claim(self) -> int | None:
        """The shard this machine's node folder holds (None: none yet); one of another run
        or split is an error naming the folder."""
        record = read_shard(self.node_dir)
        if record is None:
            return None
        node, nodes = int(record.get("node", -1)), int(record.get("nodes", 0))
        same = (nodes == len(self.shards) and 0 <= node < nodes and record.get("seed") == self.cfg.seed
                and record.get("videos") == self.shards[node] and record.get("run") == str(self.run.resolve()))
        if not same:
            raise TrainingError(
                f"{self.node_dir} holds bank shard {node} of {nodes} nodes of the run {record.get('run')}, "
                f"not a shard of this run's split of {len(self.shards)} nodes; give this run its own "
                "memory.node_dir" + ("" if self.resume else
                                     f", or delete {self.node_dir} (that run's own copy of the bank)"))
        return node

    def record(self, bank: MemoryBank | None) -> None:
        """Every node's shard (videos, bank fingerprint, folder, host) for the checkpoints."""
        procs = self.procs
        fingerprint = None if bank is None else bank.fingerprint()
        if procs.local_main:
            write_shard(self.node_dir, self._shard_record(fingerprint))
        infos = procs.gather((procs.node, procs.local_rank, fingerprint, str(self.node_dir.resolve()),
                              socket.gethostname()))
        self.records = [{"node": k, "videos": list(self.shards[k]), "fingerprint": fp, "dir": folder,
                         "host": host} for k, local, fp, folder, host in sorted(infos, key=lambda i: i[0])
                        if local == 0]

    def state(self) -> dict[str, Any]:
        """What a checkpoint records of the placement (``nodes``)."""
        return {"placement": "node_local", "count": self.procs.num_nodes,
                "local_world_size": self.procs.local_world_size, "seed": self.cfg.seed,
                "shards": self.records}

    def problem(self, saved: dict[str, Any], last: Path | None, bank: MemoryBank | None) -> str | None:
        """Why the checkpoint `saved` (file `last`) does not go with this node's shard (None:
        it does)."""
        mine = saved["nodes"]["shards"][self.procs.node]
        if list(mine["videos"]) != self.shards[self.procs.node]:
            return (f"{last}: node {self.procs.node}'s videos in the checkpoint are not the split of "
                    "the videos now (did data.annotations or data.videos change?)")
        if bank is not None and mine["fingerprint"] != bank.fingerprint():
            return (f"{last} goes with node {self.procs.node}'s bank shard of fingerprint "
                    f"{str(mine['fingerprint'])[:12]} but {bank.root} has {bank.fingerprint()[:12]}")
        return None
