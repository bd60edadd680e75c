"""The training engine: `train(cfg)` on one process or under `torchrun`, with exact resume.

One call runs (or continues) a whole run in ``cfg.run_dir`` (the folder's layout and the
checkpoint format: `tallformer.engine.run_layout`): epoch_NNNN.pt every
train.checkpoint_interval epochs (all kept), step_NNNNNN.pt every train.checkpoint_steps
steps (the last train.keep_checkpoints kept), last.pt the latest complete one.

With ``memory.placement: node_local`` (several nodes, docs/cluster.md) each node keeps the
bank rows of only its own videos (`tallformer.engine.node_shards`).

Order of work: process group (``torchrun`` sets ``RANK``/``WORLD_SIZE``), data (the built-in
synthetic dataset when the config asks for it), annotations, the model (built after the
process group exists, so ``model.sync_bn`` gives SyncBatchNorm), the bank (validated, or
built from the initial backbone), the optimizer, then either a fresh start (backbone
weights loaded) or a resume from ``last.pt`` (every state restored, the bank rolled back by
its journal), then the epochs.

One run at a time: the run folder is held (`tallformer.engine.run_lock`) from the start to
the end; another command that would write there stops before it touches anything.

A stop on SIGINT (Ctrl-C) or SIGTERM: the step in progress ends, every rank agrees on the
step to stop at (under ``torchrun``, which forwards the signal to every process, through an
all-reduce of a stop flag after each step), a checkpoint is written and the resume
command printed, and `train` raises `tallformer.errors.Interrupted` (exit status 130 or 143
from the command). A second signal stops at once, without a checkpoint.

A checkpoint that cannot be written (a full disk) stops the run in one line; the files of
the previous checkpoint are untouched and the bank journal still goes back to it, so the
resume from it is exact.

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
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from tallformer.atomic import write_json
from tallformer.config import (
    Config,
    config_from_dict,
    config_to_dict,
    migrate_config_dict,
    save_config,
)
from tallformer.engine.checkpoint import (
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    load_resume_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from tallformer.engine.device import amp_dtype_for, deterministic_from_env
from tallformer.engine.distributed import Processes, start_processes, unwrap, wrap_ddp
from tallformer.engine.errors import TrainingError
from tallformer.engine.factory import build_detector
from tallformer.engine.journal import BankJournal, JournaledBank, rollback
from tallformer.engine.loader import TrainLoader, make_train_loader
from tallformer.engine.node_shards import NodeShards, node_train_loader, reshard_message
from tallformer.engine.optim import make_optimizer
from tallformer.engine.run_bank import (
    complete_videos,
    needs_bank,
    open_run_bank,
    training_frame_counts,
)
from tallformer.engine.run_layout import (
    BANK_DIR,
    BEST,
    BEST_RECORD,
    CHECKPOINTS,
    CONFIG_FILE,
    JOURNAL,
    LAST,
    LOG,
    TENSORBOARD,
    TEST_DIR,
    TRAIN_FORMAT,
    VERSION,
    epoch_checkpoint,
    last_checkpoint,
    step_checkpoint,
    synthetic_dir,
)
from tallformer.engine.run_lock import hold_folder
from tallformer.engine.schedule import LrSchedule, warn_schedule_misfits
from tallformer.engine.step import train_step
from tallformer.errors import (
    Interrupted,
    OutputError,
    TallformerError,
    name_list,
    output_error,
)

if TYPE_CHECKING:
    from tallformer.data.annotations import AnnotationSet
    from tallformer.memory.bank import MemoryBank
    from tallformer.models.protocol import DetectorModel

__all__ = ["RESUMABLE_KEYS", "TrainingError", "check_param_groups", "initial_detector", "prepare_run_bank",
           "train"]

# config keys a resume may change: run length, logging, checkpoint cadence, workers, device
# (and the test settings, which training never reads)
RESUMABLE_KEYS = (
    "train.max_epochs", "train.max_steps", "train.log_interval", "train.checkpoint_interval",
    "train.checkpoint_steps", "train.keep_checkpoints", "train.resume", "train.device",
    "data.num_workers", "test.",
)


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

    out = synthetic_dir(d.synthetic_task).resolve()
    size = (int(d.frame_size[0]), int(d.frame_size[1]))
    classes = cfg.model.num_classes
    ann = out / "annotations.json"
    if procs.main:
        wanted = annotation_dict(plan_dataset(d.synthetic_videos, d.synthetic_seed, num_classes=classes,
                                              fps=d.fps, size=size, task=d.synthetic_task), classes)
        have = json.loads(ann.read_text()) if ann.is_file() else None
        if have != json.loads(json.dumps(wanted)):
            print(f"generating the synthetic dataset ({d.synthetic_videos} videos) in {out}")
            generate_synthetic_dataset(out, d.synthetic_videos, d.synthetic_seed, num_classes=classes,
                                       size=size, fps=d.fps, progress=progress, task=d.synthetic_task)
    procs.barrier()
    return dataclasses.replace(cfg, data=dataclasses.replace(
        d, annotations=d.annotations or str(ann), videos=d.videos or str(out / "videos")))


def _annotations(cfg: Config) -> AnnotationSet:
    from tallformer.data.annotations import check_num_classes, load_annotations
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
    check_num_classes(annotations, cfg.model.num_classes)
    return annotations


def check_param_groups(model: DetectorModel, optimizer: torch.optim.Optimizer) -> None:
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


def _config_changes(saved: dict[str, Any], cfg: Config, source: str) -> list[str]:
    old, new = _flat(migrate_config_dict(saved, source)), _flat(config_to_dict(cfg))
    default = _flat(config_to_dict(Config()))
    for k in new.keys() - old.keys():  # a key added to the schema after the run started
        if new[k] == default.get(k):
            old[k] = new[k]
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys
            if old.get(k) != new.get(k) and k != "run_dir"
            and not any(k == r or (r.endswith(".") and k.startswith(r)) for r in RESUMABLE_KEYS)]


# --------------------------------------------------------------------------- the bank


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


def _state(cfg: Config, model: DetectorModel | torch.nn.Module, optimizer: torch.optim.Optimizer, pos: _Position,
           classes: list[str], bank: MemoryBank | None, world_size: int,
           nodes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint. ``nodes`` (node-local runs): every node's shard, and then ``bank`` is None."""
    state = {
        "format": TRAIN_FORMAT,
        "version": VERSION,
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
    """last.pt always; epoch_NNNN.pt / step_NNNNNN.pt by the configured cadence. One file is
    written (atomically), the other names are hard links to it, last.pt the last: a failed
    write (`OutputError`) leaves last.pt as it was."""
    folder = run / CHECKPOINTS
    try:
        _save_files(folder, state, cfg, epoch_end=epoch_end)
    except OutputError:
        raise
    except OSError as exc:
        raise output_error(folder, exc, "run_dir") from exc


def _save_files(folder: Path, state: dict[str, Any], cfg: Config, *, epoch_end: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    if epoch_end and state["epoch"] % cfg.train.checkpoint_interval == 0:
        names.append(epoch_checkpoint(state["epoch"]))
    steps = cfg.train.checkpoint_steps
    if steps and state["step"] % steps == 0:
        names.append(step_checkpoint(state["step"]))
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
        try:
            if resume_step is not None and self.path.is_file():
                # lines of a killed run past the checkpoint are redone by the resume
                kept = [ln for ln in self.path.read_text().splitlines()
                        if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
                self.path.write_text("".join(f"{ln}\n" for ln in kept))
            elif resume_step is None:
                self.path.write_text("")
        except OSError as exc:
            raise output_error(self.path, exc, "run_dir") from exc
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the optional extra `tensorboard` is not installed
            return
        self.tb = SummaryWriter(str(run / TENSORBOARD))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise output_error(self.path, exc, "run_dir") from exc
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
        worker_init_fn=_ignore_stop_signals,
    )
    return batches, loader


def _ignore_stop_signals(worker_id: int) -> None:
    """In a data worker: SIGINT and SIGTERM (Ctrl-C reaches the whole process group) are the
    main process's to handle; it ends the workers when it stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _StopSignals:
    """While the loop runs (main thread): the first SIGINT or SIGTERM asks the run to stop
    after the step in progress (`requested`: the signal's number); a second one stops at
    once (KeyboardInterrupt, no checkpoint)."""

    def __init__(self, announce: bool) -> None:
        self.requested = 0
        self.announce = announce
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signum
        if self.announce:
            print(f"{signal.Signals(signum).name}: stopping after this step, with a checkpoint (send it again to "
                  "stop at once, without one)", file=sys.stderr, flush=True)


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
    procs.raise_together(error)
    seen = procs.gather(last is not None)
    if len(set(seen)) > 1:
        have = [r for r, s in enumerate(seen) if s]
        raise TrainingError(f"{run / CHECKPOINTS / LAST} is seen by rank(s) {name_list([str(r) for r in have])} "
                            "only; run_dir must be one folder that every node sees (a shared file system)")
    return last


def _init_from(detector: DetectorModel, path: str, classes: list[str]) -> None:
    """A fresh run from a detector checkpoint's weights (every key must fit)."""
    state = load_checkpoint(path)
    weights = state.get("model", state)
    try:
        detector.load_state_dict(weights)
    except RuntimeError as exc:
        raise TrainingError(f"model.init_from={path}: the weights do not fit this config's "
                            f"detector ({str(exc).splitlines()[0]}); use the config the "
                            "checkpoint was made for") from None
    saved = state.get("classes")
    if saved is not None and list(saved) != classes:
        raise TrainingError(f"model.init_from={path}: its classes {name_list(saved, 5)} are not "
                            f"the annotations' {name_list(classes, 5)} (same order needed)")


def initial_detector(cfg: Config, device: torch.device, classes: list[str], *,
                     load_weights: bool = True) -> DetectorModel:
    """The detector a run starts from, as `train` builds it: the global random states seeded
    with ``cfg.seed``, `tallformer.engine.factory.build_detector` (after the process group
    exists, so ``model.sync_bn`` gives SyncBatchNorm), then, with `load_weights` (a fresh
    run), ``model.init_from`` (its classes must be `classes`) or else
    ``model.backbone.weights``; on `device`."""
    from tallformer.models.weights import load_backbone_weights

    _seed_everything(cfg.seed)
    detector = build_detector(cfg)
    if load_weights and cfg.model.init_from:
        _init_from(detector, cfg.model.init_from, classes)
    elif load_weights and cfg.model.backbone.weights:
        load_backbone_weights(detector.backbone, cfg.model.backbone.weights)
    detector.to(device)
    return detector


def prepare_run_bank(cfg: Config, *, progress: bool = True) -> str:
    """The start of `train` up to its memory bank, on one process: the annotations checked,
    the initial detector (`initial_detector`), and the run's bank opened (copied from
    ``memory.bank_dir`` or built in ``RUN_DIR/bank`` from the initial backbone, unless
    there already). `train` then finds the bank ready. Returns what was done, in one line.
    ``tallformer demo`` calls it as its own stage. The run folder is held meanwhile
    (`tallformer.engine.run_lock`)."""
    if not needs_bank(cfg):
        return f"memory.keep_ratio={cfg.memory.keep_ratio:g}: every chunk goes through the backbone, no bank"
    procs = start_processes(cfg.train.device)
    with contextlib.ExitStack() as stack:
        stack.callback(procs.close)
        stack.enter_context(hold_folder(cfg.run_dir, "tallformer train", option="run_dir"))
        annotations = _annotations(cfg)
        detector = initial_detector(cfg, procs.device, list(annotations.classes))
        counts = training_frame_counts(cfg, annotations)
        done = complete_videos(Path(cfg.run_dir) / BANK_DIR, counts) if cfg.memory.bank_dir is None else 0
        bank = open_run_bank(cfg, Path(cfg.run_dir), detector, counts, procs, progress=progress)
    assert bank is not None  # needs_bank
    bank.close()
    if cfg.memory.bank_dir is not None:
        return f"{len(counts)} videos from memory.bank_dir={cfg.memory.bank_dir} in {bank.root}"
    return (f"{len(counts) - done} built, {done} already complete: {len(counts)} training videos in "
            f"{bank.root}")


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
        self.nodes: NodeShards | None = None
        if self.cfg.memory.placement == "node_local":
            self.nodes = NodeShards(self.cfg, procs, self.run, training_frame_counts(self.cfg, self.annotations),
                                    resume=self.saved is not None)
        if procs.main:
            self.run.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run / CONFIG_FILE)
        self._build()
        self.pos = _Position()
        self._restore()
        self.saved_step: int | None = None if self.saved is None else self.pos.step
        self.stop = _StopSignals(announce=procs.main)

    def _checked_checkpoint(self, last: Path, cfg: Config) -> dict[str, Any]:
        saved = load_resume_checkpoint(last, self.run / JOURNAL)
        if saved.get("format") != TRAIN_FORMAT:
            raise CheckpointError(f"{last}: not a tallformer training checkpoint")
        changes = _config_changes(saved["config"], cfg, f"{last} (saved config)")
        if changes:
            raise TrainingError(f"{last}: the config differs from the run's in " + "; ".join(changes)
                                + " (a resume may change only run length, logging, checkpoint "
                                "cadence, workers and device); use another run_dir for a new run")
        nodes = saved.get("nodes")
        if nodes is not None and nodes["count"] != self.procs.num_nodes:
            raise TrainingError(reshard_message(last, nodes["count"], self.procs.num_nodes))
        if saved["world_size"] != self.procs.world_size:
            raise TrainingError(f"{last} was written by {saved['world_size']} processes but this "
                                f"resume has {self.procs.world_size}; resume with the same number")
        return saved

    # ------------------------------------------------------------------ setup

    def _build(self) -> None:
        cfg, procs = self.cfg, self.procs
        self.detector = initial_detector(cfg, procs.device, self.classes, load_weights=self.saved is None)
        if self.nodes is not None:
            self.bank = open_run_bank(cfg, self.nodes.node_dir, self.detector, self.nodes.own_counts, procs,
                                      node_local=True, progress=self.progress)
            self.nodes.record(self.bank)
        else:
            counts = training_frame_counts(cfg, self.annotations) if needs_bank(cfg) else {}
            self.bank = open_run_bank(cfg, self.run, self.detector, counts, procs,
                                      progress=self.progress and procs.main)
        chunks = cfg.data.num_frames // cfg.model.backbone.chunk_size
        self.model = (wrap_ddp(self.detector, cfg.memory.keep_ratio, chunks, procs.device)
                      if procs.distributed else self.detector)
        self.optimizer = make_optimizer(self.detector, cfg.train)
        for group in self.optimizer.param_groups:
            group["base_lr"] = group["lr"]
        check_param_groups(self.detector, self.optimizer)
        self.schedule = LrSchedule.from_config(cfg.train)

    def _restore(self) -> None:
        """Checkpoint state, then the bank rolled back to it, then the random states."""
        saved, bank, procs = self.saved, self.bank, self.procs
        if saved is not None:
            self.detector.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.pos = _Position(saved["epoch"], saved["batch_in_epoch"], saved["step"], saved["samples"])
            if self.nodes is not None:
                procs.raise_together(self.nodes.problem(saved, self.last, bank))
            elif bank is not None and saved["bank"] is not None and saved["bank"]["fingerprint"] != bank.fingerprint():
                raise TrainingError(f"{self.last} goes with memory bank {saved['bank']['path']} (fingerprint "
                                    f"{saved['bank']['fingerprint'][:12]}) but the run's bank {bank.root} "
                                    f"has {bank.fingerprint()[:12]}")
        node_local = self.nodes is not None
        journal_dir = (self.nodes.node_dir if self.nodes is not None else self.run) / JOURNAL
        if bank is not None:
            # undo the writes after the checkpoint (or of an abandoned first try); node-local:
            # each node's first process its own shard's, by its own journal
            if procs.local_main if node_local else procs.main:
                restored = rollback(bank, journal_dir, self.pos.step)
                if restored:
                    where = f" shard of node {procs.node}" if node_local else ""
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
        """Bank flushed by every rank, checkpoint by rank 0, then every rank cuts its journal.

        A checkpoint that cannot be written stops the run on every rank (one line: the file,
        the cause, and the last checkpoint, intact, to resume from); the journal is not cut,
        so it still restores the bank of that checkpoint."""
        procs = self.procs
        if self.bank is not None:
            self.bank.flush()
        rng = get_rng_state()
        states: list[Any] = [rng]
        if procs.world_size > 1:  # in data-rank order (a node-local run's ranks follow the shards)
            states = [state for _, state in sorted(procs.gather((procs.data_rank, rng)), key=lambda p: p[0])]
        procs.barrier()
        error: str | None = None
        if procs.main:
            state = _state(self.cfg, self.model, self.optimizer, self.pos, self.classes, self.bank,
                           procs.world_size, self._nodes_state())
            state["rng"] = states
            try:
                _save(self.run, state, self.cfg, epoch_end=epoch_end)
            except OutputError as exc:
                error = f"{output_error(exc.path or self.run, exc, 'run_dir')}; {self._stopped_here()}"
        procs.raise_together(error)
        self.saved_step = self.pos.step
        if self.journal is not None:
            self.journal.begin(self.pos.step)

    def _stopped_here(self) -> str:
        """Where a run that cannot save stands: the checkpoint to resume from."""
        last = self.run / CHECKPOINTS / LAST
        if self.saved_step is None:
            return f"the run stopped at step {self.pos.step} with no checkpoint written; make room and start again"
        return (f"the run stopped at step {self.pos.step}; the last checkpoint {last} (step {self.saved_step}) is "
                f"intact: make room, then resume exactly from it with {self._resume_command()}")

    def _resume_command(self) -> str:
        config = self.run / CONFIG_FILE
        command = f"tallformer train --config {config} run_dir={self.run} --resume"
        if self.procs.world_size > 1:
            command = (f"torchrun --nnodes {self.procs.num_nodes} --nproc_per_node {self.procs.local_world_size} "
                       f"(and this run's other torchrun options) -m {command}")
        return command

    def _stopping(self) -> int:
        """The stop signal that reached any rank (0: none; SIGTERM before SIGINT when both
        did): every rank gets the same answer (an all-reduce under torchrun, so call it on
        every rank at the same point of the loop)."""
        return self.procs.agree_max(self.stop.requested)

    def _nodes_state(self) -> dict[str, Any] | None:
        return None if self.nodes is None else self.nodes.state()

    def loop(self) -> None:
        cfg, procs, pos = self.cfg, self.procs, self.pos
        if self.nodes is not None:
            tl = node_train_loader(cfg, self.annotations, self.bank, self.nodes.shards, procs.node,
                                   procs.local_rank, procs.local_world_size, classes=self.classes)
        else:
            tl = make_train_loader(cfg, self.annotations, self.bank, classes=self.classes, rank=procs.rank,
                                   world_size=procs.world_size)
        self.global_batch = cfg.data.batch_size * procs.world_size
        self.steps_per_epoch = len(tl)
        if procs.main:
            warn_schedule_misfits(cfg.train, len(tl), self.global_batch)
        self.amp = amp_dtype_for(cfg.train.amp, procs.device)
        self.scaler = torch.amp.GradScaler(procs.device.type) if self.amp == torch.float16 else None
        self.log = _Log(self.run, procs.main, None if self.saved is None else pos.step)
        if procs.main:
            what = "resuming" if self.saved is not None else "training"
            nodes = (f" ({procs.num_nodes} nodes, each with its own bank shard)" if self.nodes is not None
                     and procs.num_nodes > 1 else "")
            print(f"{what} {self.run}: epoch {pos.epoch}, step {pos.step}, {procs.world_size} "
                  f"process(es){nodes} on {procs.device}, {len(tl)} steps per epoch")
        try:
            with self.stop:
                while pos.epoch < cfg.train.max_epochs and not self._stop() and not self._stopping():
                    if not self._epoch(tl):
                        break  # stopped by train.max_steps or a signal inside the epoch
                    pos.epoch += 1
                    pos.batch = 0
                    procs.barrier()
                    if _due(cfg, pos, epoch_end=True):
                        self.checkpoint(epoch_end=True)
                    if cfg.test.interval and pos.epoch % cfg.test.interval == 0:
                        self._periodic_test()
                signalled = self._stopping()
                if self.saved_step != pos.step:
                    self.checkpoint(epoch_end=False)
        finally:
            self.log.close()
            if self.journal is not None:
                self.journal.close()
            tl.dataset.close()
        if signalled:
            name = signal.Signals(signalled).name
            last = self.run / CHECKPOINTS / LAST
            raise Interrupted(f"{name} at step {pos.step} (epoch {pos.epoch}): saved {last}; resume with: "
                              f"{self._resume_command()}" if procs.main else "", signalled)
        if procs.main:
            print(f"done: epoch {pos.epoch}, step {pos.step}; checkpoints in {self.run / CHECKPOINTS}")

    def _periodic_test(self) -> None:
        """``test.interval``: test on ``data.test_subset`` (rank 0), log the table, keep
        ``checkpoints/best.pt`` by average mAP. The random states are left as they were, so
        a run with periodic tests trains exactly as one without. A failure on rank 0 (a
        file it cannot write) stops every rank."""
        procs = self.procs
        error: str | None = None
        if procs.main:
            try:
                self._test_and_keep_best()
            except TallformerError as exc:
                if procs.world_size == 1:
                    raise
                error = str(exc)
        procs.raise_together(error)

    def _test_and_keep_best(self) -> None:
        from tallformer.engine.infer import evaluate_model

        cfg, pos, procs = self.cfg, self.pos, self.procs
        rng = get_rng_state()
        out = self.run / TEST_DIR / f"epoch_{pos.epoch:04d}"
        metrics = evaluate_model(cfg, self.detector, str(cfg.data.annotations), cfg.data.test_subset, out,
                                 progress=self.progress, classes=self.classes, device=procs.device)
        set_rng_state(rng)
        score = float(metrics["average_mAP"])
        self.log.write({"step": pos.step, "epoch": pos.epoch, "test": {
            "subset": cfg.data.test_subset, "average_mAP": score,
            **{f"mAP@{t:g}": float(m) for t, m in zip(metrics["tiou_thresholds"], metrics["mAP"], strict=True)}}})
        best_file = self.run / CHECKPOINTS / BEST_RECORD
        best = json.loads(best_file.read_text())["average_mAP"] if best_file.is_file() else -1.0
        print(f"epoch {pos.epoch}: average mAP {100 * score:.2f} on {cfg.data.test_subset}"
              + (" (best so far)" if score > best else ""))
        if score > best:
            state = _state(cfg, self.model, self.optimizer, pos, self.classes, self.bank,
                           procs.world_size, self._nodes_state())
            state["test"] = {k: metrics[k] for k in ("tiou_thresholds", "mAP", "average_mAP")}
            save_checkpoint(self.run / CHECKPOINTS / BEST, state)
            write_json(best_file, {"epoch": pos.epoch, "step": pos.step, "average_mAP": score,
                                   "subset": cfg.data.test_subset})

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
                if (cfg.train.checkpoint_steps and pos.step % cfg.train.checkpoint_steps == 0
                        and pos.batch < len(batches)):  # at the epoch's end, the epoch's checkpoint is it
                    self.checkpoint(epoch_end=False)
                if self._stopping():
                    return False  # the epoch's end (if this was its last step) is the resume's
        finally:
            bar.close()
        return pos.batch >= len(batches)

    def _step(self, batch: dict[str, Any]) -> tuple[dict[str, float], list[float], float]:
        cfg, pos = self.cfg, self.pos
        t0 = time.perf_counter()
        rates = self.schedule.apply(self.optimizer, pos.epoch, pos.samples, self.global_batch, self.steps_per_epoch)
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
    with contextlib.ExitStack() as held:
        error: str | None = None
        if procs.main:  # the process that writes the checkpoints holds the folders
            try:
                for folder, option in _folders_written(cfg):
                    held.enter_context(hold_folder(folder, "tallformer train", option=option))
            except TallformerError as exc:
                if procs.world_size == 1:
                    raise
                error = str(exc)
        procs.raise_together(error)
        run = _Run(cfg, procs, resume, progress)
        run.loop()
        return run.run


def _folders_written(cfg: Config) -> list[tuple[Path, str]]:
    """The folders a run writes and holds for its life: the run folder; with periodic tests
    their folder ``RUN_DIR/test`` (where ``tallformer test`` writes by default); with
    ``memory.in_place`` the bank it changes."""
    run = Path(cfg.run_dir)
    folders = [(run, "run_dir")]
    if cfg.test.interval:
        folders.append((run / TEST_DIR, "run_dir"))
    bank = cfg.memory.bank_dir
    if (cfg.memory.in_place and bank is not None and cfg.memory.placement != "node_local"
            and (Path(bank) / "meta.json").is_file()):
        folders.append((Path(bank), "memory.bank_dir"))
    return folders


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
    state = load_checkpoint(last_checkpoint(run_dir))
    if state.get("format") != TRAIN_FORMAT:
        raise CheckpointError(f"{run_dir}: {LAST} is not a tallformer training checkpoint")
    return config_from_dict(state["config"], f"{run_dir}/{CHECKPOINTS}/{LAST}")
