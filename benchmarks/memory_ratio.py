"""Training-step memory and time of the memory bank: keep_ratio 0.15 against 1.0, side by side.

The paper's claim: only ``keep_ratio`` of a clip's chunks go through the
backbone with gradients, so a step costs a fraction of full end-to-end training. Here the
same model and the same clip are trained one step at a time with ``keep_ratio`` 0.15 (2 of
15 chunks, as the original: vedatad/partial_feedback/indice_selection.py:68-72) and 1.0
(all 15 chunks, no bank read), each in
its own process, on the CPU:

- Model: the shipped ``thumos14_swin_t`` config, i.e. Swin-T (C = 768) with the paper's frozen
  stages (2) and activation checkpointing, and the paper's full neck and head on top (SRM
  768 -> 512, TCM 3 layers, TDM 4 stages, FPN 256, anchor head 20 classes), at a 96x96 crop
  (``--crop``) instead of 224 to fit a CPU.
- Clip: batch 1 of 480 frames (15 chunks of 32), random pixels from a fixed seed; the kept
  chunks drawn by ``select_chunks`` from a fixed generator; the dropped chunks' features are
  random ``[1, 15 - k, 768, 16]`` tensors (what the data workers would read from the bank);
  two ground-truth instances. The step is ``tallformer.engine.step.train_step``, write-back
  to a real (temporary) bank included.
- Step memory: the peak resident set size (VmRSS of /proc/self/status, sampled every
  ``--poll-ms`` ms by a thread) during a step minus the RSS just before it, after a warm-up
  step (so weights, gradients and SGD momentum exist in both settings); the median over
  ``--steps`` steps. The children run with ``MALLOC_MMAP_THRESHOLD_`` fixed at 128 KiB and
  ``malloc_trim`` before each step, so freed activation memory goes back to the OS and
  "just before" is the live memory, not glibc's cache.
- Step time: the median wall time of the same ``--steps`` steps.
- Also printed: each process's whole-run peak RSS (``ru_maxrss``: libraries, weights, the clip
  and the step together).

Targets (issue 6): memory ratio <= 0.25 and time ratio <= 0.30 (the floor is about 2/15 =
0.13 for the backbone alone; the neck, head and optimizer do not shrink). Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/memory_ratio.py

A few minutes on a 2-core CPU. Last line: ``memory_ratio=X time_ratio=Y``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RATIOS = (0.15, 1.0)


# --------------------------------------------------------------------------- shared helpers


def synthetic_batch(cfg: Any, keep_ratio: float, batch_size: int, feature_dim: int,
                    seed: int = 0) -> dict[str, Any]:
    """A ``collate_train``-shaped batch of ``batch_size`` random clips of ``cfg.data.num_frames``
    frames at ``cfg.data.crop_size``: the same clip and GT for every keep ratio (seeded), the
    kept chunks of each sample drawn with ``select_chunks``; cached features random."""
    import torch

    from tallformer.memory.selection import select_chunks
    from tallformer.ops.seeding import sample_generator

    chunk = cfg.model.backbone.chunk_size
    n = cfg.data.num_frames // chunk
    rows = chunk // 2
    size = cfg.data.crop_size
    gen = torch.Generator().manual_seed(seed)
    clips = torch.randn(batch_size, 3, cfg.data.num_frames, size, size, generator=gen)
    keep = [select_chunks(n, keep_ratio, cfg.memory.mode, sample_generator(seed, 0, 0, b))
            for b in range(batch_size)]
    k = len(keep[0])
    parts = [clips[b].reshape(3, n, chunk, size, size).transpose(0, 1)[keep[b]] for b in range(batch_size)]
    chunks = torch.cat(parts).contiguous() if k else torch.zeros(0, 3, chunk, size, size)
    del clips, parts
    cached = (torch.randn(batch_size, n - k, feature_dim, rows, generator=gen) if k < n
              else torch.zeros(batch_size, 0, 0, rows))
    mask = torch.zeros(batch_size, n, dtype=torch.bool)
    for b in range(batch_size):
        mask[b, keep[b]] = True
    t = float(cfg.data.num_frames)
    return {
        "chunks": chunks,
        "keep_mask": mask,
        "cached": cached,
        "keep": [torch.tensor(kb, dtype=torch.int64) for kb in keep],
        "segments": [torch.tensor([[0.1 * t, 0.3 * t], [0.5 * t, 0.8 * t]]) for _ in range(batch_size)],
        "labels": [torch.tensor([1, 3]) for _ in range(batch_size)],
        "ignore": [torch.zeros(0, 2) for _ in range(batch_size)],
        "video_id": [f"bench_{b}" for b in range(batch_size)],
        "offset": [0] * batch_size,
    }


def make_bank(root: Path, cfg: Any, batch_size: int, feature_dim: int) -> Any:
    """A real temporary bank holding the benchmark's videos (for the write-back)."""
    from tallformer.memory.bank import MemoryBank

    frames = {f"bench_{b}": cfg.data.num_frames for b in range(batch_size)}
    return MemoryBank.create(root, frames, feature_dim, dtype=cfg.memory.dtype,
                             chunk_size=cfg.model.backbone.chunk_size, fps=cfg.data.fps)


class PeakRSS:
    """Samples this process's VmRSS (bytes) in a thread between ``start()`` and ``stop()``."""

    def __init__(self, poll_s: float) -> None:
        self.poll_s = poll_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def current() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found in /proc/self/status (Linux only)")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.poll_s)

    def start(self) -> None:
        self.peak = self.current()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, self.current())
        return self.peak


def _trim() -> None:
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# --------------------------------------------------------------------------- one setting


def run_setting(args: argparse.Namespace) -> dict[str, Any]:
    """Build the model, warm up one step, measure ``args.steps`` steps (in this process)."""
    import resource

    import torch

    from tallformer.config import load_config, shipped_config_path
    from tallformer.engine.factory import build_detector
    from tallformer.engine.optim import make_optimizer
    from tallformer.engine.step import train_step
    from tallformer.memory.selection import num_kept

    torch.set_num_threads(args.threads)
    cfg = load_config(shipped_config_path("thumos14_swin_t"), [
        f"data.crop_size={args.crop}", f"data.frame_size=[{args.crop}, {args.crop}]",
        f"data.num_frames={args.frames}", f"memory.keep_ratio={args.run}",
    ])
    torch.manual_seed(0)
    model = build_detector(cfg)
    c = model.backbone.num_features
    optimizer = make_optimizer(model, cfg.train)
    batch = synthetic_batch(cfg, args.run, args.batch, c)
    poll = PeakRSS(args.poll_ms / 1000)
    mems: list[int] = []
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        bank = make_bank(Path(tmp) / "bank", cfg, args.batch, c)
        for i in range(args.steps + 1):
            _trim()
            before = PeakRSS.current()
            poll.start()
            t0 = time.perf_counter()
            train_step(model, batch, optimizer, bank, device="cpu")
            dt = time.perf_counter() - t0
            peak = poll.stop()
            if i > 0:  # step 0 is the warm-up
                mems.append(peak - before)
                times.append(dt)
    n = cfg.data.num_frames // cfg.model.backbone.chunk_size
    return {
        "keep_ratio": args.run,
        "kept_chunks": num_kept(n, args.run),
        "num_chunks": n,
        "step_mem_bytes": statistics.median(mems),
        "step_time_s": statistics.median(times),
        "process_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "threads": args.threads,
    }


# --------------------------------------------------------------------------- driver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crop", type=int, default=96, help="frame crop (default 96)")
    parser.add_argument("--frames", type=int, default=480, help="clip length (default 480)")
    parser.add_argument("--batch", type=int, default=1, help="clips per step (default 1)")
    parser.add_argument("--steps", type=int, default=3, help="measured steps after 1 warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--poll-ms", type=float, default=2.0, help="RSS sampling period (ms)")
    parser.add_argument("--run", type=float, default=None, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.run is not None:
        print(json.dumps(run_setting(args)))
        return 0

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS=str(args.threads))
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    results: dict[float, dict[str, Any]] = {}
    print(f"Swin-T + paper neck/head, {args.frames} frames at {args.crop}x{args.crop}, batch "
          f"{args.batch}, frozen stages 2, checkpointing, CPU {args.threads} thread(s); "
          f"1 warm-up + {args.steps} steps per setting, each setting in its own process", flush=True)
    for ratio in RATIOS:
        cmd = [sys.executable, __file__, "--run", str(ratio), "--crop", str(args.crop),
               "--frames", str(args.frames), "--batch", str(args.batch), "--steps", str(args.steps),
               "--threads", str(args.threads), "--poll-ms", str(args.poll_ms)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results[ratio] = r
        print(f"keep_ratio={ratio:<5} kept {r['kept_chunks']:>2}/{r['num_chunks']} chunks: "
              f"step memory {r['step_mem_bytes'] / 2**20:8.1f} MiB, step time "
              f"{r['step_time_s']:7.2f} s, process peak {r['process_peak_bytes'] / 2**20:8.1f} MiB",
              flush=True)
    lo, hi = results[RATIOS[0]], results[RATIOS[1]]
    mem_ratio = lo["step_mem_bytes"] / hi["step_mem_bytes"]
    time_ratio = lo["step_time_s"] / hi["step_time_s"]
    peak_ratio = lo["process_peak_bytes"] / hi["process_peak_bytes"]
    print(f"step memory ratio 0.15/1.0 = {mem_ratio:.3f} (target <= 0.25); step time ratio = "
          f"{time_ratio:.3f} (target <= 0.30); whole-process peak ratio = {peak_ratio:.3f}")
    print(f"memory_ratio={mem_ratio:.3f} time_ratio={time_ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
