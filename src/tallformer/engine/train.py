"""The training engine: `train(cfg)` on one process or under `torchrun`, with exact resume.

One call runs (or continues) a whole run in ``cfg.run_dir``::

    RUN_DIR/config.yaml        the resolved config (written at the start)
    RUN_DIR/log.jsonl          one JSON object per logged step
    RUN_DIR/checkpoints/       epoch_NNNN.pt (every train.checkpoint_interval epochs, all kept),
                               step_NNNNNN.pt (every train.checkpoint_steps steps, the last
                               train.keep_checkpoints kept), last.pt (the latest complete one)
    RUN_DIR/bank/              the run's memory bank (its own copy, or built here)
    RUN_DIR/journal/           the bank's undo journal since the last checkpoint

With ``memory.placement: node_local`` (several nodes, docs/cluster.md) every training video
belongs to one node for the whole run (`tallformer.data.sampler.assign_nodes`), and each node
keeps the bank rows of only its own videos, with their journal, in its node folder
(``memory.node_dir``, local disk; `tallformer.engine.run_bank`): a bank row is only ever
read and written on its owner node. Rank 0 writes the checkpoints into ``RUN_DIR`` (a folder
every node sees); they record every node's shard (its videos and bank fingerprint). A
resume needs the same number of nodes; each node's first process rolls its own shard back
by its own journal.

Order of work: process group (``torchrun`` sets ``RANK``/``WORLD_SIZE``), data (the built-in
synthetic dataset when the config asks for it), annotations, the model (built after the
process group exists, so ``model.sync_bn`` gives SyncBatchNorm), the bank (validated, or
built from the initial backbone), the optimizer, then either a fresh start (backbone
weights loaded) or a resume from ``last.pt`` (every state restored, the bank rolled back by
its journal), then the epochs.

Exactness: everything random is a function of the seed and the position in the run (the
per-sample generators of the dataset, the sampler's per-epoch plan, the DataLoader's own
generator) or is saved in the checkpoint (the global RNG states that dropout and stochastic
depth use), the bank is restored to its checkpoint state, and a resumed epoch skips exactly
the batches already done. So N steps straight and N/2 steps, a kill, and a resume to N give
bit-identical weights, optimizer state and bank (tested on the CPU, one and two processes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from tallformer import __version__
from tallformer.atomic import write_json
from tallformer.config import Config, config_from_dict, config_to_dict, save_config
from tallformer.data.sampler import VideoExclusiveSampler, assign_nodes
from tallformer.engine.checkpoint import (
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from tallformer.engine.device import amp_dtype_for, deterministic_from_env
from tallformer.engine.distributed import Processes, start_processes, unwrap, wrap_ddp
from tallformer.engine.journal import BankJournal, JournaledBank, rollback
from tallformer.engine.loader import TrainLoader, make_train_loader
from tallformer.engine.optim import make_optimizer
from tallformer.engine.run_bank import (
    NODE_JOURNAL,
    RUN_BANK_DIR,
    claim_shards,
    node_path,
    read_shard,
    shard_record,
    write_shard,
)
from tallformer.engine.schedule import LrSchedule
from tallformer.engine.step import train_step
from tallformer.errors import TallformerError, name_list
from tallformer.memory.selection import num_kept

if TYPE_CHECKING:
    from tallformer.data.annotations import AnnotationSet
    from tallformer.memory.bank import MemoryBank

__all__ = ["RESUMABLE_KEYS", "TrainingError", "check_param_groups", "node_train_loader", "train"]

CHECKPOINTS = "checkpoints"
LAST = "last.pt"
JOURNAL = "journal"
LOG = "log.jsonl"
SYNTHETIC_DIR = Path("data") / "synthetic"

# config keys a resume may change: run length, logging, checkpoint cadence, workers, device
# (and the test settings, which training never reads)
RESUMABLE_KEYS = (
    "train.max_epochs", "train.max_steps", "train.log_interval", "train.checkpoint_interval",
    "train.checkpoint_steps", "train.keep_checkpoints", "train.resume", "train.device",
    "data.num_workers", "test.",
)


class TrainingError(TallformerError):
    """A run that cannot start or continue; the message names the file, key or step."""


# --------------------------------------------------------------------------- processes


def _broadcast_error(procs: Processes, error: str | None) -> None:
    """Raise on every rank when any rank hit a user error (so no rank waits at a barrier)."""
    if procs.world_size == 1:
        if error:
            raise TrainingError(error)
        return
    errors: list[str | None] = [None] * procs.world_size
    torch.distributed.all_gather_object(errors, error)
    first = next((e for e in errors if e), None)
    if first:
        raise TrainingError(first)


# --------------------------------------------------------------------------- setup


def _synthetic_data(cfg: Config, procs: Processes, progress: bool = True) -> Config:
    """Fill null data paths with the built-in synthetic dataset (generated once, reused)."""
    d = cfg.data
    if d.synthetic_videos == 0 or (d.annotations is not None and d.videos is not None):
        return cfg
    from tallformer.data.synthetic import (
        annotation_dict,
        generate_synthetic_dataset,
        plan_dataset,
    )

    out = SYNTHETIC_DIR.resolve()
    size = (int(d.frame_size[0]), int(d.frame_size[1]))
    classes = cfg.model.head.num_classes
    ann = out / "annotations.json"
    if procs.main:
        wanted = annotation_dict(plan_dataset(d.synthetic_videos, d.synthetic_seed, num_classes=classes,
                                              fps=d.fps, size=size), classes)
        have = json.loads(ann.read_text()) if ann.is_file() else None
        if have != json.loads(json.dumps(wanted)):
            print(f"generating the synthetic dataset ({d.synthetic_videos} videos) in {out}")
            generate_synthetic_dataset(out, d.synthetic_videos, d.synthetic_seed, num_classes=classes,
                                       size=size, fps=d.fps, progress=progress)
    procs.barrier()
    return dataclasses.replace(cfg, data=dataclasses.replace(
        d, annotations=d.annotations or str(ann), videos=d.videos or str(out / "videos")))


def _annotations(cfg: Config) -> AnnotationSet:
    from tallformer.data.annotations import load_annotations
    from tallformer.data.dataset import _resolve_all as resolve_videos

    if cfg.data.annotations is None:
        raise TrainingError("data.annotations is not set: give the training annotations "
                            "(ActivityNet JSON), e.g. data.annotations=data/thumos14/annotations.json")
    if cfg.data.videos is None:
        raise TrainingError("data.videos is not set: give the folder of training videos, "
                            "e.g. data.videos=data/thumos14/videos")
    if not Path(cfg.data.videos).is_dir():
        raise TrainingError(f"data.videos={cfg.data.videos}: no such folder")
    annotations = load_annotations(cfg.data.annotations)
    videos = annotations.subset(cfg.data.train_subset)  # unknown or empty: an error naming both
    resolve_videos(cfg.data.videos, [v.video_id for v in videos])  # one error listing the missing
    num = len(annotations.classes)
    if num != cfg.model.head.num_classes:
        raise TrainingError(f"{cfg.data.annotations} has {num} classes but model.head.num_classes is "
                            f"{cfg.model.head.num_classes}; set model.head.num_classes={num}")
    return annotations


def check_param_groups(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every trainable parameter in exactly one group, and nothing else in any group."""
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    seen: dict[int, int] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            seen[id(p)] = seen.get(id(p), 0) + 1
    twice = sum(1 for n in seen.values() if n > 1)
    missing = len(trainable - seen.keys())
    extra = len(seen.keys() - trainable)
    if twice or missing or extra:
        raise TrainingError(f"optimizer parameter groups: {missing} trainable parameters in no group, "
                            f"{twice} in several, {extra} frozen or foreign ones in a group")


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def _config_changes(saved: dict[str, Any], cfg: Config) -> list[str]:
    old, new = _flat(saved), _flat(config_to_dict(cfg))
    default = _flat(config_to_dict(Config()))
    for k in new.keys() - old.keys():  # a key added to the schema after the run started
        if new[k] == default.get(k):
            old[k] = new[k]
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys
            if old.get(k) != new.get(k) and k != "run_dir"
            and not any(k == r or (r.endswith(".") and k.startswith(r)) for r in RESUMABLE_KEYS)]


# --------------------------------------------------------------------------- the bank


def _frame_counts(cfg: Config, annotations: AnnotationSet) -> dict[str, int]:
    from tallformer.engine.run_bank import training_frame_counts

    return training_frame_counts(cfg, annotations)


def _open_bank(cfg: Config, run: Path, model: torch.nn.Module, annotations: AnnotationSet,
               procs: Processes, progress: bool = True) -> MemoryBank | None:
    """The run's bank (None when every chunk goes through the backbone)."""
    from tallformer.memory.bank import MemoryBank

    chunks = cfg.data.num_frames // cfg.model.backbone.chunk_size
    if num_kept(chunks, cfg.memory.keep_ratio) == chunks:
        return None
    counts = _frame_counts(cfg, annotations)
    dim = unwrap(model).backbone.num_features
    error: str | None = None
    if cfg.memory.bank_dir is not None:
        from tallformer.engine.run_bank import open_training_bank

        if procs.main:
            try:
                open_training_bank(cfg, run, counts, dim, progress=progress).close()
            except TallformerError as exc:
                error = str(exc)
        _broadcast_error(procs, error)
        return open_training_bank(cfg, run, counts, dim, progress=False)
    own = run / "bank"
    if procs.main and not _complete(own, counts):
        from tallformer.engine.bank_build import build_bank

        print(f"building the memory bank in {own} from the initial backbone")
        report = build_bank(cfg, own, weights=cfg.model.backbone.weights, device=procs.device,
                            backbone=unwrap(model).backbone, progress=True)
        if not report.ok:
            error = f"memory bank build in {own} failed: {report.summary()}"
    _broadcast_error(procs, error)
    return MemoryBank.open(own, mode="r+", videos=counts, feature_dim=dim, dtype=cfg.memory.dtype,
                           fps=cfg.data.fps)


def _open_node_bank(cfg: Config, node_dir: Path, model: torch.nn.Module, counts: dict[str, int],
                    procs: Processes, progress: bool) -> MemoryBank | None:
    """This node's shard of the run's bank (``counts``: its own videos only), in ``node_dir``.

    From ``memory.bank_dir`` (``{node}`` replaced): its videos copied into
    ``NODE_DIR/bank`` (or, with ``memory.in_place``, that bank itself, which may hold other
    videos too: they are never touched); without one, the node's first process builds its
    own videos from the initial backbone.
    """
    from tallformer.engine.run_bank import open_training_bank
    from tallformer.memory.bank import MemoryBank

    chunks = cfg.data.num_frames // cfg.model.backbone.chunk_size
    if num_kept(chunks, cfg.memory.keep_ratio) == chunks:
        return None
    dim = unwrap(model).backbone.num_features
    error: str | None = None
    if cfg.memory.bank_dir is not None:
        source = node_path(cfg.memory.bank_dir, procs.node_rank)
        if procs.local_main:
            try:
                open_training_bank(cfg, node_dir, counts, dim, videos=list(counts), bank_dir=source,
                                   progress=progress).close()
            except TallformerError as exc:
                error = str(exc)
        _broadcast_error(procs, error)
        return open_training_bank(cfg, node_dir, counts, dim, videos=list(counts), bank_dir=source,
                                  progress=False)
    own = node_dir / RUN_BANK_DIR
    if procs.local_main and not _complete(own, counts):
        from tallformer.engine.bank_build import build_bank

        print(f"node {procs.node}: building its memory bank shard ({len(counts)} videos) in {own} "
              "from the initial backbone")
        report = build_bank(cfg, own, weights=cfg.model.backbone.weights, device=procs.device,
                            videos=list(counts), backbone=unwrap(model).backbone, progress=progress)
        if not report.ok:
            error = f"memory bank build in {own} failed: {report.summary()}"
    _broadcast_error(procs, error)
    return MemoryBank.open(own, mode="r+", videos=counts, feature_dim=dim, dtype=cfg.memory.dtype,
                           fps=cfg.data.fps)


def _complete(root: Path, counts: dict[str, int]) -> bool:
    from tallformer.memory.bank import MemoryBank

    if not (root / "meta.json").is_file():
        return False
    bank = MemoryBank.open(root, mode="r")
    try:
        return all(v in bank and bank.is_complete(v) for v in counts)
    finally:
        bank.close()


def _refresh_repeats(batch: dict[str, Any], bank: MemoryBank, repeats: set[int]) -> None:
    """Re-read the cached features of samples whose video an earlier step of the epoch wrote.

    The loader reads bank rows in its workers, ahead of the step; a video appears once per
    epoch except in the padding of the last step, and only such a repeat can have rows that
    a step in between wrote. Reading those here, after every earlier step, keeps a run
    independent of how far ahead the workers happened to be.
    """
    n = batch["keep_mask"].shape[1]
    for b in sorted(repeats):
        keep = {int(c) for c in batch["keep"][b]}
        dropped = [c for c in range(n) if c not in keep]
        if not dropped:
            continue
        rows = bank.read_chunks(batch["video_id"][b], int(batch["offset"][b]) // bank.frames_per_row,
                                dropped, bank.rows_per_chunk)
        batch["cached"][b] = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))


# --------------------------------------------------------------------------- checkpoints


@dataclasses.dataclass
class _Position:
    epoch: int = 0  # the epoch in progress (completed epochs)
    batch: int = 0  # batches of that epoch done
    step: int = 0  # optimizer steps in all
    samples: int = 0  # training samples in all (every rank)


def _state(cfg: Config, model: torch.nn.Module, optimizer: torch.optim.Optimizer, pos: _Position,
           classes: list[str], bank: MemoryBank | None, world_size: int,
           nodes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint. ``nodes`` (node-local runs): every node's shard, and then ``bank`` is None."""
    state = {
        "format": "tallformer-train",
        "version": __version__,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": dataclasses.asdict(LrSchedule.from_config(cfg.train)),
        "epoch": pos.epoch, "batch_in_epoch": pos.batch, "step": pos.step, "samples": pos.samples,
        "world_size": world_size,
        "config": config_to_dict(cfg),
        "classes": list(classes),
        "rng": get_rng_state(),
        "bank": None if bank is None or nodes is not None else {"path": str(bank.root.resolve()),
                                                                "fingerprint": bank.fingerprint()},
    }
    if nodes is not None:
        state["nodes"] = nodes
    return state


def _save(run: Path, state: dict[str, Any], cfg: Config, *, epoch_end: bool) -> None:
    """last.pt always; epoch_NNNN.pt / step_NNNNNN.pt by the configured cadence."""
    folder = run / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    if epoch_end and state["epoch"] % cfg.train.checkpoint_interval == 0:
        names.append(f"epoch_{state['epoch']:04d}.pt")
    steps = cfg.train.checkpoint_steps
    if steps and state["step"] % steps == 0:
        names.append(f"step_{state['step']:06d}.pt")
    first = folder / (names[0] if names else LAST)
    save_checkpoint(first, state)
    for name in [*names[1:], LAST] if names else []:
        with contextlib.suppress(FileNotFoundError):
            (folder / f".{name}.link").unlink()
        os.link(first, folder / f".{name}.link")  # hard link: one write, several names
        os.replace(folder / f".{name}.link", folder / name)
    old = sorted(folder.glob("step_*.pt"))
    for path in old[:max(0, len(old) - cfg.train.keep_checkpoints)]:
        path.unlink(missing_ok=True)


def _due(cfg: Config, pos: _Position, *, epoch_end: bool) -> bool:
    if epoch_end and pos.epoch % cfg.train.checkpoint_interval == 0:
        return True
    return bool(cfg.train.checkpoint_steps) and pos.step % cfg.train.checkpoint_steps == 0


# --------------------------------------------------------------------------- logging


class _Log:
    """``log.jsonl`` (rank 0) and TensorBoard scalars when ``tensorboard`` is installed."""

    def __init__(self, run: Path, enabled: bool, resume_step: int | None) -> None:
        self.enabled = enabled
        self.path = run / LOG
        self.tb: Any = None
        if not enabled:
            return
        if resume_step is not None and self.path.is_file():
            # lines of a killed run past the checkpoint are redone by the resume
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            self.path.write_text("".join(f"{ln}\n" for ln in kept))
        elif resume_step is None:
            self.path.write_text("")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the optional extra `tensorboard` is not installed
            return
        self.tb = SummaryWriter(str(run / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in _flat(record).items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tb.add_scalar(key.replace(".", "/"), value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# --------------------------------------------------------------------------- the loop


def _epoch_loader(tl: TrainLoader, epoch: int, start: int, cfg: Config, pin: bool
                  ) -> tuple[list[list[int]], DataLoader]:
    """This rank's batches of ``epoch`` and a DataLoader over those from ``start`` on."""
    tl.set_epoch(epoch)
    batches = list(tl.sampler)
    workers = cfg.data.num_workers
    loader = DataLoader(
        tl.dataset, batch_sampler=batches[start:], collate_fn=tl.loader.collate_fn,
        num_workers=workers, pin_memory=pin, persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
        # its own generator: creating the iterator never draws from the global RNG
        generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch),
    )
    return batches, loader


def _repeats(tl: TrainLoader, batches: list[list[int]]) -> list[set[int]]:
    """Per step of this rank: the batch positions whose video an earlier step already had."""
    ids = [v.video_id for v in tl.dataset.videos]
    seen: set[str] = set()
    out = []
    for s, step in enumerate(tl.sampler.plan()):
        mine = step[tl.sampler.rank] if s < len(batches) else []
        out.append({b for b, i in enumerate(mine) if ids[i] in seen})
        seen.update(ids[i] for rank_batch in step for i in rank_batch)
    return out


def _timed(loader: DataLoader) -> Iterator[tuple[dict[str, Any], float]]:
    """Batches and the seconds the loop waited for each."""
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        yield batch, time.perf_counter() - t0


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(cfg: Config, *, resume: bool | None = None, progress: bool = True) -> Path:
    """Train (or continue) the run of ``cfg``; returns the run directory.

    Args:
        cfg: the run's config (``run_dir`` is where everything goes).
        resume: True: continue from ``RUN_DIR/checkpoints/last.pt`` (an error if there is
            none); False: start fresh (an error if the run has checkpoints); None: as
            ``train.resume`` says ("auto": resume when there is a checkpoint).
        progress: tqdm bars (rank 0).

    Raises:
        TrainingError (and the library's other `TallformerError`s) for anything the user
        can fix, before the first step where possible; a non-finite loss stops the run
        with the step and its losses named.
    """
    deterministic_from_env()  # TALLFORMER_DETERMINISTIC=1; before the first CUDA op
    procs = start_processes(cfg.train.device)
    try:
        return _train(cfg, procs, resume, progress)
    finally:
        procs.close()


def _resume_from(cfg: Config, run: Path, resume: bool | None) -> Path | None:
    last = run / CHECKPOINTS / LAST
    mode = {True: "always", False: "never", None: cfg.train.resume}[resume]
    if mode == "always" and not last.is_file():
        raise TrainingError(f"{run}: nothing to resume (no {CHECKPOINTS}/{LAST}); drop --resume to start")
    if mode == "never" and last.is_file():
        raise TrainingError(f"{run} already holds a run ({CHECKPOINTS}/{LAST}); resume it "
                            "(--resume or train.resume=auto) or choose another run_dir")
    return last if last.is_file() and mode != "never" else None


def _agreed_resume(cfg: Config, run: Path, resume: bool | None, procs: Processes) -> Path | None:
    """`_resume_from` on every rank, the same answer everywhere (run_dir must be one folder
    that every node sees)."""
    if procs.world_size == 1:
        return _resume_from(cfg, run, resume)
    last: Path | None = None
    error: str | None = None
    try:
        last = _resume_from(cfg, run, resume)
    except TrainingError as exc:
        error = str(exc)
    _broadcast_error(procs, error)
    seen = procs.gather(last is not None)
    if len(set(seen)) > 1:
        have = [r for r, s in enumerate(seen) if s]
        raise TrainingError(f"{run / CHECKPOINTS / LAST} is seen by rank(s) {name_list([str(r) for r in have])} "
                            "only; run_dir must be one folder that every node sees (a shared file system)")
    return last


def _reshard_message(last: Path, saved_nodes: int, nodes: int) -> str:
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


class _Run:
    """One call of `train`: set up (or restore) everything, then run the epochs."""

    def __init__(self, cfg: Config, procs: Processes, resume: bool | None, progress: bool) -> None:
        self.procs = procs
        self.progress = progress
        self.run = Path(cfg.run_dir)
        self.last = _agreed_resume(cfg, self.run, resume, procs)
        self.saved = None if self.last is None else self._checked_checkpoint(self.last, cfg)
        self.cfg = _synthetic_data(cfg, procs, progress)
        self.annotations = _annotations(self.cfg)
        self.classes = list(self.annotations.classes)
        self.node_local = self.cfg.memory.placement == "node_local"
        self.shards: list[list[str]] = []  # node-local: every node's videos
        self.counts: dict[str, int] = {}
        self.node_dir = self.run
        self.node_records: list[dict[str, Any]] = []
        if self.node_local:
            self._place_nodes()
        if procs.main:
            self.run.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run / "config.yaml")
        self._build()
        self.pos = _Position()
        self._restore()

    def _checked_checkpoint(self, last: Path, cfg: Config) -> dict[str, Any]:
        saved = load_checkpoint(last)
        if saved.get("format") != "tallformer-train":
            raise CheckpointError(f"{last}: not a tallformer training checkpoint")
        changes = _config_changes(saved["config"], cfg)
        if changes:
            raise TrainingError(f"{last}: the config differs from the run's in " + "; ".join(changes)
                                + " (a resume may change only run length, logging, checkpoint "
                                "cadence, workers and device); use another run_dir for a new run")
        nodes = saved.get("nodes")
        if nodes is not None and nodes["count"] != self.procs.num_nodes:
            raise TrainingError(_reshard_message(last, nodes["count"], self.procs.num_nodes))
        if saved["world_size"] != self.procs.world_size:
            raise TrainingError(f"{last} was written by {saved['world_size']} processes but this "
                                f"resume has {self.procs.world_size}; resume with the same number")
        return saved

    # ------------------------------------------------------------------ node-local shards

    def _place_nodes(self) -> None:
        """Split the videos over the nodes, and find which shard this machine holds.

        The split is a function of the frame counts, the seed and the node count. A node
        whose folder already holds a shard of this run keeps it (the c10d rendezvous orders
        the machines anew at each launch); the others take the free shards in rank order.
        """
        cfg, procs = self.cfg, self.procs
        if not procs.uniform:
            raise TrainingError("memory.placement=node_local needs the same number of processes on every "
                                "node (torchrun --nproc_per_node) and node ranks 0 .. N-1")
        self.counts = _frame_counts(cfg, self.annotations)
        try:
            self.shards = [[str(v) for v in shard] for shard in
                           assign_nodes(self.counts, procs.num_nodes, cfg.seed)]
        except ValueError as exc:
            raise TrainingError(f"memory.placement=node_local: {exc}") from None
        digest = hashlib.sha256(json.dumps(self.shards).encode()).hexdigest()
        if len(set(procs.gather(digest))) > 1:
            raise TrainingError("the nodes split the training videos differently (their frame counts "
                                "differ): every node needs the same data.annotations and data.videos")
        self.node_dir = node_path(cfg.memory.node_dir or str(self.run / "node{node}"), procs.node_rank)
        claim: int | None = None
        error: str | None = None
        if procs.local_main:
            try:
                claim = self._claim()
            except TallformerError as exc:
                error = str(exc)
        _broadcast_error(procs, error)
        claims: list[int | None] = [None] * procs.num_nodes
        for node_rank, local_rank, held in procs.gather((procs.node_rank, procs.local_rank, claim)):
            if local_rank == 0:
                claims[node_rank] = held
        try:
            mapping = claim_shards(claims, procs.num_nodes, resume=self.saved is not None)
        except TallformerError as exc:
            raise TrainingError(str(exc)) from None
        procs.node = mapping[procs.node_rank]
        procs.data_rank = procs.node * procs.local_world_size + procs.local_rank
        if procs.local_main and claim is None:
            write_shard(self.node_dir, self._shard_record(None))
        procs.barrier()

    def _shard_record(self, fingerprint: str | None) -> dict[str, Any]:
        cfg = self.cfg
        bank = (str(node_path(cfg.memory.bank_dir, self.procs.node_rank).resolve())
                if cfg.memory.in_place and cfg.memory.bank_dir is not None else RUN_BANK_DIR)
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
                "memory.node_dir" + ("" if self.saved is not None else
                                     f", or delete {self.node_dir} (that run's own copy of the bank)"))
        return node

    def _record_shards(self) -> None:
        """Every node's shard (videos, bank fingerprint, folder, host) for the checkpoints."""
        procs = self.procs
        fingerprint = None if self.bank is None else self.bank.fingerprint()
        if procs.local_main:
            write_shard(self.node_dir, self._shard_record(fingerprint))
        infos = procs.gather((procs.node, procs.local_rank, fingerprint, str(self.node_dir.resolve()),
                              socket.gethostname()))
        self.node_records = [{"node": k, "videos": list(self.shards[k]), "fingerprint": fp, "dir": folder,
                              "host": host} for k, local, fp, folder, host in sorted(infos, key=lambda i: i[0])
                             if local == 0]

    def _nodes_state(self) -> dict[str, Any] | None:
        if not self.node_local:
            return None
        return {"placement": "node_local", "count": self.procs.num_nodes,
                "local_world_size": self.procs.local_world_size, "seed": self.cfg.seed,
                "shards": self.node_records}

    def _shard_problem(self, saved: dict[str, Any]) -> str | None:
        """Why the checkpoint does not go with this node's shard (None: it does)."""
        mine = saved["nodes"]["shards"][self.procs.node]
        if list(mine["videos"]) != self.shards[self.procs.node]:
            return (f"{self.last}: node {self.procs.node}'s videos in the checkpoint are not the split of "
                    "the videos now (did data.annotations or data.videos change?)")
        if self.bank is not None and mine["fingerprint"] != self.bank.fingerprint():
            return (f"{self.last} goes with node {self.procs.node}'s bank shard of fingerprint "
                    f"{str(mine['fingerprint'])[:12]} but {self.bank.root} has {self.bank.fingerprint()[:12]}")
        return None

    # ------------------------------------------------------------------ setup

    def _build(self) -> None:
        from tallformer.models.detector import build_detector
        from tallformer.models.weights import load_backbone_weights

        cfg, procs = self.cfg, self.procs
        _seed_everything(cfg.seed)
        self.detector = build_detector(cfg)  # after the process group: SyncBatchNorm with model.sync_bn
        if self.saved is None and cfg.model.init_from:
            self._init_from(cfg.model.init_from)
        elif self.saved is None and cfg.model.backbone.weights:
            load_backbone_weights(self.detector.backbone, cfg.model.backbone.weights)
        self.detector.to(procs.device)
        if self.node_local:
            own = {v: self.counts[v] for v in self.shards[procs.node]}
            self.bank = _open_node_bank(cfg, self.node_dir, self.detector, own, procs, self.progress)
            self._record_shards()
        else:
            self.bank = _open_bank(cfg, self.run, self.detector, self.annotations, procs,
                                   self.progress and procs.main)
        chunks = cfg.data.num_frames // cfg.model.backbone.chunk_size
        self.model = (wrap_ddp(self.detector, cfg.memory.keep_ratio, chunks, procs.device)
                      if procs.distributed else self.detector)
        self.optimizer = make_optimizer(self.detector, cfg.train)
        for group in self.optimizer.param_groups:
            group["base_lr"] = group["lr"]
        check_param_groups(self.detector, self.optimizer)
        self.schedule = LrSchedule.from_config(cfg.train)

    def _init_from(self, path: str) -> None:
        """A fresh run from a detector checkpoint's weights (every key must fit)."""
        state = load_checkpoint(path)
        weights = state.get("model", state)
        try:
            self.detector.load_state_dict(weights)
        except RuntimeError as exc:
            raise TrainingError(f"model.init_from={path}: the weights do not fit this config's "
                                f"detector ({str(exc).splitlines()[0]}); use the config the "
                                "checkpoint was made for") from None
        classes = state.get("classes")
        if classes is not None and list(classes) != self.classes:
            raise TrainingError(f"model.init_from={path}: its classes {name_list(classes, 5)} are not "
                                f"the annotations' {name_list(self.classes, 5)} (same order needed)")

    def _restore(self) -> None:
        """Checkpoint state, then the bank rolled back to it, then the random states."""
        saved, bank, procs = self.saved, self.bank, self.procs
        if saved is not None:
            self.detector.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.pos = _Position(saved["epoch"], saved["batch_in_epoch"], saved["step"], saved["samples"])
            if self.node_local:
                _broadcast_error(procs, self._shard_problem(saved))
            elif bank is not None and saved["bank"] is not None and saved["bank"]["fingerprint"] != bank.fingerprint():
                raise TrainingError(f"{self.last} goes with memory bank {saved['bank']['path']} (fingerprint "
                                    f"{saved['bank']['fingerprint'][:12]}) but the run's bank {bank.root} "
                                    f"has {bank.fingerprint()[:12]}")
        journal_dir = self.node_dir / NODE_JOURNAL if self.node_local else self.run / JOURNAL
        if bank is not None:
            # undo the writes after the checkpoint (or of an abandoned first try); node-local:
            # each node's first process its own shard's, by its own journal
            if procs.local_main if self.node_local else procs.main:
                restored = rollback(bank, journal_dir, self.pos.step)
                if restored:
                    where = f" shard of node {procs.node}" if self.node_local else ""
                    print(f"memory bank{where}: rolled back {restored} rows written after step {self.pos.step}")
            procs.barrier()
        if saved is not None:  # last: nothing above may draw from them after the restore
            set_rng_state(saved["rng"][procs.data_rank])
        self.journal = (BankJournal(journal_dir, procs.data_rank)
                        if bank is not None and not self.cfg.memory.frozen else None)
        if self.journal is not None:
            self.journal.begin(self.pos.step)
        self.write_bank: Any = bank if self.journal is None or bank is None else JournaledBank(bank, self.journal)

    def checkpoint(self, *, epoch_end: bool) -> None:
        """Bank flushed by every rank, checkpoint by rank 0, then every rank cuts its journal."""
        procs = self.procs
        if self.bank is not None:
            self.bank.flush()
        rng = get_rng_state()
        states: list[Any] = [rng]
        if procs.world_size > 1:  # in data-rank order (a node-local run's ranks follow the shards)
            states = [state for _, state in sorted(procs.gather((procs.data_rank, rng)), key=lambda p: p[0])]
        procs.barrier()
        if procs.main:
            state = _state(self.cfg, self.model, self.optimizer, self.pos, self.classes, self.bank,
                           procs.world_size, self._nodes_state())
            state["rng"] = states
            _save(self.run, state, self.cfg, epoch_end=epoch_end)
        procs.barrier()
        if self.journal is not None:
            self.journal.begin(self.pos.step)

    def loop(self) -> None:
        cfg, procs, pos = self.cfg, self.procs, self.pos
        if self.node_local:
            tl = node_train_loader(cfg, self.annotations, self.bank, self.shards, procs.node, procs.local_rank,
                                   procs.local_world_size, classes=self.classes)
        else:
            tl = make_train_loader(cfg, self.annotations, self.bank, classes=self.classes, rank=procs.rank,
                                   world_size=procs.world_size)
        self.global_batch = cfg.data.batch_size * procs.world_size
        self.amp = amp_dtype_for(cfg.train.amp, procs.device)
        self.scaler = torch.amp.GradScaler(procs.device.type) if self.amp == torch.float16 else None
        self.log = _Log(self.run, procs.main, None if self.saved is None else pos.step)
        if procs.main:
            what = "resuming" if self.saved is not None else "training"
            nodes = (f" ({procs.num_nodes} nodes, each with its own bank shard)" if self.node_local
                     and procs.num_nodes > 1 else "")
            print(f"{what} {self.run}: epoch {pos.epoch}, step {pos.step}, {procs.world_size} "
                  f"process(es){nodes} on {procs.device}, {len(tl)} steps per epoch")
        try:
            while pos.epoch < cfg.train.max_epochs and not self._stop():
                if not self._epoch(tl):
                    break  # stopped by train.max_steps inside the epoch
                pos.epoch += 1
                pos.batch = 0
                procs.barrier()
                if _due(cfg, pos, epoch_end=True):
                    self.checkpoint(epoch_end=True)
                if cfg.test.interval and pos.epoch % cfg.test.interval == 0:
                    self._periodic_test()
            self.checkpoint(epoch_end=False)
        finally:
            self.log.close()
            if self.journal is not None:
                self.journal.close()
            tl.dataset.close()
        if procs.main:
            print(f"done: epoch {pos.epoch}, step {pos.step}; checkpoints in {self.run / CHECKPOINTS}")

    def _periodic_test(self) -> None:
        """``test.interval``: test on ``data.test_subset`` (rank 0), log the table, keep
        ``checkpoints/best.pt`` by average mAP. The random states are left as they were, so
        a run with periodic tests trains exactly as one without."""
        from tallformer.engine.infer import evaluate_model

        cfg, pos, procs = self.cfg, self.pos, self.procs
        if procs.main:
            rng = get_rng_state()
            out = self.run / "test" / f"epoch_{pos.epoch:04d}"
            metrics = evaluate_model(cfg, self.detector, str(cfg.data.annotations), cfg.data.test_subset, out,
                                     progress=self.progress, classes=self.classes, device=procs.device)
            set_rng_state(rng)
            score = float(metrics["average_mAP"])
            self.log.write({"step": pos.step, "epoch": pos.epoch, "test": {
                "subset": cfg.data.test_subset, "average_mAP": score,
                **{f"mAP@{t:g}": float(m) for t, m in zip(metrics["tiou_thresholds"], metrics["mAP"], strict=True)}}})
            best_file = self.run / CHECKPOINTS / "best.json"
            best = json.loads(best_file.read_text())["average_mAP"] if best_file.is_file() else -1.0
            print(f"epoch {pos.epoch}: average mAP {100 * score:.2f} on {cfg.data.test_subset}"
                  + (" (best so far)" if score > best else ""))
            if score > best:
                state = _state(cfg, self.model, self.optimizer, pos, self.classes, self.bank,
                               procs.world_size, self._nodes_state())
                state["test"] = {k: metrics[k] for k in ("tiou_thresholds", "mAP", "average_mAP")}
                save_checkpoint(self.run / CHECKPOINTS / "best.pt", state)
                write_json(best_file, {"epoch": pos.epoch, "step": pos.step, "average_mAP": score,
                                       "subset": cfg.data.test_subset})
        procs.barrier()

    def _stop(self) -> bool:
        return self.cfg.train.max_steps is not None and self.pos.step >= self.cfg.train.max_steps

    def _epoch(self, tl: TrainLoader) -> bool:
        """The rest of the current epoch; False when train.max_steps stopped it early."""
        from tqdm import tqdm

        cfg, pos = self.cfg, self.pos
        batches, loader = _epoch_loader(tl, pos.epoch, pos.batch, cfg, self.procs.device.type == "cuda")
        repeats = _repeats(tl, batches) if self.bank is not None else None
        bar = tqdm(total=len(batches), initial=pos.batch, desc=f"epoch {pos.epoch}", unit="step",
                   disable=not (self.progress and self.procs.main), leave=False, dynamic_ncols=True)
        try:
            for batch, wait in _timed(loader):
                if self._stop():
                    break
                if repeats is not None and self.bank is not None and repeats[pos.batch]:
                    _refresh_repeats(batch, self.bank, repeats[pos.batch])
                stats, rates, seconds = self._step(batch)
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{rates[0]:.2e}", s_step=f"{seconds:.2f}")
                if pos.step % cfg.train.log_interval == 0 or pos.step == 1:
                    self.log.write(_record(pos, stats, self.optimizer, seconds, wait, self.procs.device))
                if cfg.train.checkpoint_steps and pos.step % cfg.train.checkpoint_steps == 0:
                    self.checkpoint(epoch_end=False)
        finally:
            bar.close()
        return pos.batch >= len(batches)

    def _step(self, batch: dict[str, Any]) -> tuple[dict[str, float], list[float], float]:
        cfg, pos = self.cfg, self.pos
        t0 = time.perf_counter()
        rates = self.schedule.apply(self.optimizer, pos.epoch, pos.samples, self.global_batch)
        if self.journal is not None:
            self.journal.step = pos.step
        try:
            stats = train_step(self.model, batch, self.optimizer, self.write_bank, frozen=cfg.memory.frozen,
                               device=self.procs.device, amp_dtype=self.amp, grad_clip=cfg.train.grad_clip,
                               scaler=self.scaler)
        except FloatingPointError as exc:
            raise TrainingError(f"step {pos.step + 1} (epoch {pos.epoch}): {exc}; the last good "
                                f"checkpoint is {self.run / CHECKPOINTS / LAST}") from None
        pos.step += 1
        pos.batch += 1
        pos.samples += self.global_batch
        return stats, rates, time.perf_counter() - t0


def _train(cfg: Config, procs: Processes, resume: bool | None, progress: bool) -> Path:
    run = _Run(cfg, procs, resume, progress)
    run.loop()
    return run.run


def _record(pos: _Position, stats: dict[str, float], optimizer: torch.optim.Optimizer, seconds: float,
            wait: float, device: torch.device) -> dict[str, Any]:
    record: dict[str, Any] = {"step": pos.step, "epoch": pos.epoch}
    record.update({k: v for k, v in stats.items() if k.startswith("loss") or k == "grad_norm"})
    record["lr"] = {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)}
    record["step_time"] = seconds
    record["data_time"] = wait
    record["data_wait_fraction"] = wait / (wait + seconds) if wait + seconds > 0 else 0.0
    if device.type == "cuda":
        record["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if not all(math.isfinite(v) for v in stats.values()):
        record["non_finite"] = True
    return record


def load_run_config(run_dir: str | os.PathLike[str]) -> Config:
    """The config a run was trained with (from its last checkpoint)."""
    state = load_checkpoint(Path(run_dir) / CHECKPOINTS / LAST)
    if state.get("format") != "tallformer-train":
        raise CheckpointError(f"{run_dir}: {LAST} is not a tallformer training checkpoint")
    return config_from_dict(state["config"], f"{run_dir}/{CHECKPOINTS}/{LAST}")
