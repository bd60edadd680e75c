"""Two real CPU processes (gloo) train the tiny model under DDP with the memory bank; the bank
ends identical to a single-process replay of the same samples.

Each rank writes only its own samples' rows; `VideoExclusiveSampler` keeps a video out of two
ranks' batches at one step. The backbone's learning rate is 0 (``train.backbone_lr_mult=0``)
and drop-path is off, so a written feature depends only on its (augmented) input frames,
which are a pure function of (seed, rank, epoch, index): the replay builds the rank-0 and
rank-1 pipelines in one process and runs their batches step by step in the same order.

This file is also the worker script, started twice with the environment torchrun gives its
workers (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``):
``python tests/test_ddp_bank.py --worker ANN VIDEOS BANK LOGDIR EPOCHS``. torchrun itself, with
the training command, is run by tests/test_train.py and tests/test_multinode.py; here its
launcher process would add only its start-up.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEEP_RATIO = 0.5
EPOCHS = 2


def _config(ann: str | Path, videos: str | Path):
    from tallformer.config import load_config, shipped_config_path

    return load_config(shipped_config_path("demo"), [
        f"data.annotations={ann}", f"data.videos={videos}", "data.num_workers=0",
        "data.batch_size=1", "model.backbone.drop_path_rate=0", "train.backbone_lr_mult=0",
        f"memory.keep_ratio={KEEP_RATIO}",
    ])


def _record(log: list, rank: int):
    def on_step(epoch: int, step: int, batch: dict, stats: dict) -> None:
        log.append({"rank": rank, "epoch": epoch, "step": step, "video_id": list(batch["video_id"]),
                    "offset": [int(o) for o in batch["offset"]],
                    "keep": [k.tolist() for k in batch["keep"]], "loss": stats["loss"]})
    return on_step


def _worker(ann: str, videos: str, bank_dir: str, log_dir: str, epochs: int) -> None:
    """One DDP rank (its rank and the rendezvous in the environment, as torchrun sets them)."""
    import torch
    import torch.distributed as dist

    from helpers import train_epochs
    from tallformer.data.annotations import load_annotations
    from tallformer.engine.distributed import wrap_ddp
    from tallformer.engine.factory import build_detector
    from tallformer.engine.loader import make_train_loader
    from tallformer.engine.optim import make_optimizer
    from tallformer.memory.bank import MemoryBank

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    cfg = _config(ann, videos)
    torch.manual_seed(0)
    model = wrap_ddp(build_detector(cfg), cfg.memory.keep_ratio,
                     cfg.data.num_frames // cfg.model.backbone.chunk_size)
    bank = MemoryBank.open(bank_dir, "r+")
    loader = make_train_loader(cfg, load_annotations(ann), bank, rank=rank, world_size=world)
    log: list = []
    train_epochs(cfg, model, loader, make_optimizer(model, cfg.train), bank, epochs=epochs,
                 on_step=_record(log, rank))
    bank.flush()
    Path(log_dir, f"rank{rank}.json").write_text(json.dumps(log))
    dist.barrier()
    dist.destroy_process_group()


def _run_ranks(cmd: list[str], logs: Path, world: int) -> None:
    """`cmd` as `world` processes with the environment torchrun gives its workers; a rank that
    fails stops the others (they would wait in a collective)."""
    port = str(_free_port())
    procs = []
    for rank in range(world):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(world))
        with open(logs / f"rank{rank}.log", "w") as out:
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 240
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.05)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    failed = {rank: p.returncode for rank, p in enumerate(procs) if p.returncode != 0}
    assert not failed, f"exit status by rank {failed}:\n" + "\n".join(
        f"--- rank {rank}\n{(logs / f'rank{rank}.log').read_text()[-4000:]}" for rank in failed)


# --------------------------------------------------------------------------- the test


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_bank_equals_single_process_replay(tmp_path):
    import numpy as np
    import torch

    from helpers import random_bank
    from tallformer.data.annotations import load_annotations
    from tallformer.data.synthetic import generate_synthetic_dataset
    from tallformer.engine.factory import build_detector
    from tallformer.engine.loader import make_train_loader
    from tallformer.engine.optim import make_optimizer
    from tallformer.engine.run_bank import training_frame_counts
    from tallformer.engine.step import train_step
    from tallformer.memory.bank import MemoryBank

    ann_path = generate_synthetic_dataset(tmp_path / "data", 6, seed=1, min_length=10,
                                          max_length=14, val_fraction=0.2, progress=False)
    videos = tmp_path / "data" / "videos"
    ann = load_annotations(ann_path)
    frames = training_frame_counts(_config(ann_path, videos), ann)
    assert len(frames) == 5
    initial = random_bank(tmp_path / "initial", frames)
    ddp_bank = initial.copy_to(tmp_path / "ddp", progress=False)
    ref_bank = initial.copy_to(tmp_path / "ref", progress=False)

    # two processes under DDP
    logs = tmp_path / "logs"
    logs.mkdir()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(ann_path), str(videos),
           str(ddp_bank.root), str(logs), str(EPOCHS)]
    _run_ranks(cmd, logs, world=2)
    per_rank = [json.loads((logs / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 3 * EPOCHS  # 5 videos, 2 per step
    for a, b in zip(*per_rank, strict=True):  # never one video on both ranks at one step
        assert not set(a["video_id"]) & set(b["video_id"]), (a, b)
        assert np.isfinite(a["loss"])
        assert np.isfinite(b["loss"])

    # single-process replay of the same samples and chunk draws, step by step
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = _config(ann_path, videos)
        torch.manual_seed(0)
        model = build_detector(cfg)
        optimizer = make_optimizer(model, cfg.train)
        loaders = [make_train_loader(cfg, ann, ref_bank, rank=r, world_size=2) for r in range(2)]
        replay: list[list[dict]] = [[], []]
        for epoch in range(EPOCHS):
            for loader in loaders:
                loader.set_epoch(epoch)
            for step, batches in enumerate(zip(*loaders, strict=True)):
                for r, batch in enumerate(batches):
                    stats = train_step(model, batch, optimizer, ref_bank, device="cpu")
                    _record(replay[r], r)(epoch, step, batch, stats)
    finally:
        torch.set_num_threads(threads)
    ref_bank.flush()
    for r in range(2):
        strip = [{k: v for k, v in e.items() if k != "loss"} for e in per_rank[r]]
        assert strip == [{k: v for k, v in e.items() if k != "loss"} for e in replay[r]]

    # the rows the ranks' steps wrote: each kept chunk's 16 rows inside its video
    rpc = initial.rows_per_chunk
    written: dict[str, set[int]] = {video: set() for video in frames}
    for entry in per_rank[0] + per_rank[1]:
        for video, offset, keep in zip(entry["video_id"], entry["offset"], entry["keep"], strict=True):
            for c in keep:
                first = offset // 2 + rpc * c
                written[video].update(r for r in range(first, first + rpc) if r < initial.num_rows(video))
    assert sum(map(len, written.values())) > 0

    ddp_bank = MemoryBank.open(tmp_path / "ddp")
    for video in frames:
        got = np.load(ddp_bank.path(video))
        want = np.load(ref_bank.path(video))
        start = np.load(initial.path(video))
        assert np.array_equal(got, want), (
            f"{video}: {(got != want).any(axis=1).sum()} rows differ between the DDP run and "
            "the single-process replay"
        )
        changed = set(np.flatnonzero((got != start).any(axis=1)).tolist())
        assert changed == written[video], f"{video}: rows changed other than the kept chunks'"


if __name__ == "__main__" and "--worker" in sys.argv:
    i = sys.argv.index("--worker")
    a, v, bdir, ldir, ep = sys.argv[i + 1:i + 6]
    _worker(a, v, bdir, ldir, int(ep))
