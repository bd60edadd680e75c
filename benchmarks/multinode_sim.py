"""Two nodes with node-local bank shards, simulated on one machine, against one process.

Setting: the demo config (tiny Video Swin, 128-frame windows, keep ratio 0.5) on synthetic
videos written as real mp4 files, and one memory bank built beforehand from the initial
backbone (`build_bank`), which both runs start from (`memory.bank_dir`).

- two nodes: `torch.distributed.run --nnodes 2 --nproc_per_node 1 --rdzv-backend c10d` twice
  (gloo), `memory.placement=node_local`, each node with its own node folder, batch 1 per
  node; each node copies only the videos it owns into its folder and trains on them.
- one process: the same total batch (2) on one process, the whole bank in its run folder.

Both get the same CPU threads and data workers in all (``--threads`` and one worker per
node; twice that for the single process). Steps/s are from the logged step and data-wait
times, the first step left out. The bank bytes of a node are the feature bytes of the bank it holds: the only bank
it reads or writes, since the sampler gives it only its own videos; "written" counts the
rows that differ from the starting bank at the end.

Prints both rates and every node's bank; last line ``bank_bytes_per_node_vs_single=X``,
the largest node's bank against the single process's (aim: about 1 / number of nodes).

    python benchmarks/multinode_sim.py [--steps 12] [--videos 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODES = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rate(run: Path) -> tuple[float, float]:
    """Steps per second from the logged step and data-wait times (the first step left out),
    and the fraction of that time spent waiting for data."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()][1:]
    wait = sum(r["data_time"] for r in records)
    total = sum(r["step_time"] for r in records) + wait
    return len(records) / total, wait / total


def _bank_bytes(root: Path, start: Path) -> tuple[int, int, int]:
    """(feature bytes held, bytes of rows that differ from ``start``, videos)."""
    import numpy as np

    from tallformer.memory.bank import MemoryBank

    bank, first = MemoryBank.open(root), MemoryBank.open(start)
    row = bank.feature_dim * np.dtype(bank.dtype).itemsize
    written = sum(int((np.load(bank.path(v)) != np.load(first.path(v))).any(axis=1).sum()) for v in bank.videos)
    return bank.stats()["bytes"], written * row, len(bank)


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps of each run")
    parser.add_argument("--videos", type=int, default=16, help="synthetic videos (3/4 for training)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per node")
    args = parser.parse_args()

    import torch

    from tallformer.config import load_config
    from tallformer.data.synthetic import generate_synthetic_dataset
    from tallformer.engine.bank_build import build_bank
    from tallformer.engine.factory import build_detector

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ann = generate_synthetic_dataset(root / "syn", args.videos, seed=0, min_length=20, max_length=40,
                                         progress=False)
        data = [f"data.annotations={ann}", f"data.videos={root / 'syn' / 'videos'}"]
        cfg = load_config("demo", data)
        torch.manual_seed(cfg.seed)
        build_bank(cfg, root / "bank", backbone=build_detector(cfg).backbone, progress=False)
        common = ["--config", "demo", *data, f"memory.bank_dir={root / 'bank'}", f"train.max_steps={args.steps}",
                  "train.log_interval=1", "data.num_workers=1", "--no-progress"]
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))

        # one process, the same total batch
        single = root / "single"
        done = subprocess.run([sys.executable, "-m", "tallformer", "train", *common, f"run_dir={single}",
                               f"data.batch_size={NODES}", f"data.num_workers={NODES}"], env=dict(env, OMP_NUM_THREADS=str(NODES * args.threads)),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the single-process run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")

        # two nodes on this machine, each with its own node folder
        multi = root / "multi"
        port = _free_port()
        procs = [subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(NODES), "--nproc_per_node", "1",
             "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--node-rank", str(node),
             "-m", "tallformer", "train", *common, f"run_dir={multi}", "data.batch_size=1",
             "memory.placement=node_local", f"memory.node_dir={root / 'node{node}'}"],
            env=dict(env, OMP_NUM_THREADS=str(args.threads)), stdout=subprocess.DEVNULL,
            stderr=open(root / f"node{node}.err", "w")) for node in range(NODES)]  # noqa: SIM115
        for node, proc in enumerate(procs):
            if proc.wait(timeout=1800) != 0:
                err = (root / f"node{node}.err").read_text()[-3000:]
                raise SystemExit(f"node {node} failed (exit {proc.returncode}):\n{err}")

        single_bank = _bank_bytes(single / "bank", root / "bank")
        node_banks = [_bank_bytes(root / f"node{k}" / "bank", root / "bank") for k in range(NODES)]
        single_rate, multi_rate = _rate(single), _rate(multi)

    print(f"{args.steps} steps, demo config, {args.videos} synthetic videos, {args.threads} CPU thread(s) per node")
    print(f"one process:  {single_rate[0]:.3f} steps/s (batch {NODES}, {NODES * args.threads} threads, "
          f"{NODES} workers, {single_rate[1]:.0%} waiting for data); bank {_mib(single_bank[0])} "
          f"({single_bank[2]} videos), {_mib(single_bank[1])} of rows written")
    print(f"{NODES} nodes:      {multi_rate[0]:.3f} steps/s (batch 1 per node, {args.threads} thread(s) and 1 "
          f"worker each, {multi_rate[1]:.0%} waiting for data)")
    for k, (held, written, videos) in enumerate(node_banks):
        print(f"  node {k}: bank {_mib(held)} ({videos} videos), {_mib(written)} of rows written; "
              f"the only bank it reads or writes")
    ratio = max(held for held, _, _ in node_banks) / single_bank[0]
    print(f"bank_bytes_per_node_vs_single={ratio:.3f}")


if __name__ == "__main__":
    main()
