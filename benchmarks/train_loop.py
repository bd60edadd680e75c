"""The training loop's overhead: the whole `tallformer.engine.train.train` against bare steps.

Setting: the demo config as shipped (tiny Video Swin, 128-frame windows of 32x32 crops,
batch 2, keep ratio 0.5, the shipped data.num_workers) on synthetic videos written as real mp4 files.

- loop: `train(cfg)` with `train.max_steps=N`: data workers decoding and augmenting the kept
  chunks and reading the bank, the bank journal, the schedule, logging, a checkpoint at the
  end. Its time is the sum of the logged per-step times (step + waiting for data), so the
  set-up (bank build, worker start) is left out (`loop_figures`).
- bare: the same config and number of steps, `train_step` alone over batches collected in
  memory beforehand (no loader, no journal, no logging) (`collect_batches`, `bare_steps`).
- journal: `write_back` through `JournaledBank` against the plain bank on the same batches
  and features: the journal's cost per step (reading the old rows, appending them).

`benchmarks/gpu_check.sh` (part 2) uses the same functions on a GPU, under torchrun.
Prints both rates, the data-wait fraction and the journal's cost; last line
``loop_vs_bare=X data_wait=Y journal_ms=Z`` (aim: loop_vs_bare >= 0.9).

    python benchmarks/train_loop.py [--steps 24] [--videos 10]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any


def loop_figures(run_dir: Path, global_batch: int) -> dict[str, Any]:
    """The loop's figures from ``RUN_DIR/log.jsonl`` (``train.log_interval=1``): steps, the
    seconds in steps and waiting for data, samples/s over both, the data-wait fraction, and
    the same without the first step (which pays for the first kernels and worker start)."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    records = [r for r in records if "step_time" in r]
    steps = [r["step"] for r in records]
    if steps != list(range(1, len(steps) + 1)):
        raise SystemExit(f"{run_dir}/log.jsonl: expected every step logged (train.log_interval=1), got {steps[:12]}")
    step_s = [float(r["step_time"]) for r in records]
    wait_s = [float(r["data_time"]) for r in records]

    def rate(a: list[float], b: list[float]) -> float:
        return global_batch * len(a) / (sum(a) + sum(b)) if a else float("nan")

    mem = [r["max_memory_gib"] for r in records if "max_memory_gib" in r]
    return {
        "steps": len(records),
        "step_s_total": sum(step_s),
        "wait_s_total": sum(wait_s),
        "samples_per_s": rate(step_s, wait_s),
        "samples_per_s_after_first": rate(step_s[1:], wait_s[1:]),
        "data_wait_fraction": sum(wait_s) / (sum(step_s) + sum(wait_s)),
        "data_wait_fraction_after_first": sum(wait_s[1:]) / max(1e-12, sum(step_s[1:]) + sum(wait_s[1:])),
        "step_s": step_s,
        "wait_s": wait_s,
        "max_memory_gib": max(mem) if mem else None,
    }


def collect_batches(cfg: Any, ann_path: str | Path, bank: Any, steps: int, num_workers: int = 0) -> list:
    """The first ``steps`` training batches of ``cfg`` (epochs in order), collected in memory."""
    from tallformer.data.annotations import load_annotations
    from tallformer.engine.loader import make_train_loader

    loader = make_train_loader(cfg, load_annotations(ann_path), bank, num_workers=num_workers)
    batches: list = []
    epoch = 0
    while len(batches) < steps:
        loader.set_epoch(epoch)
        batches.extend(loader)
        epoch += 1
    return batches[:steps]


def bare_steps(cfg: Any, batches: list, bank: Any, device: Any) -> list[float]:
    """Seconds of each bare `train_step` over ``batches`` (a fresh model seeded by
    ``cfg.seed``, on ``device``, with ``train.amp`` autocast there; on CUDA the batches are
    pinned first, as the loop's loader pins them, and the last step is synchronised)."""
    import torch

    from tallformer.engine.device import amp_dtype_for
    from tallformer.engine.factory import build_detector
    from tallformer.engine.optim import make_optimizer
    from tallformer.engine.step import train_step

    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    model = build_detector(cfg).to(device)
    optimizer = make_optimizer(model, cfg.train)
    amp = amp_dtype_for(cfg.train.amp, device)
    cuda = device.type == "cuda"
    if cuda:
        batches = [{k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in b.items()}
                   for b in batches]
        torch.cuda.synchronize()
    times = []
    for i, batch in enumerate(batches):
        t0 = time.perf_counter()
        train_step(model, batch, optimizer, bank, device=device, amp_dtype=amp, grad_clip=cfg.train.grad_clip)
        if cuda and i == len(batches) - 1:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps of each loop")
    parser.add_argument("--videos", type=int, default=10, help="synthetic videos (3/4 for training)")
    args = parser.parse_args()

    import torch

    from tallformer.config import load_config
    from tallformer.data.synthetic import generate_synthetic_dataset
    from tallformer.engine.journal import BankJournal, JournaledBank
    from tallformer.engine.step import write_back
    from tallformer.engine.train import train
    from tallformer.memory.bank import MemoryBank

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ann_path = generate_synthetic_dataset(root / "syn", args.videos, seed=0, min_length=20,
                                              max_length=30, progress=False)
        over = [f"data.annotations={ann_path}", f"data.videos={root / 'syn' / 'videos'}",
                f"train.max_steps={args.steps}", "train.log_interval=1", f"run_dir={root / 'run'}"]
        cfg = load_config("demo", over)

        # the whole loop
        train(cfg, progress=False)
        loop = loop_figures(root / "run", cfg.data.batch_size)
        assert loop["steps"] == args.steps, loop["steps"]
        step_s, wait_s, loop_rate = loop["step_s_total"], loop["wait_s_total"], loop["samples_per_s"]
        samples = args.steps * cfg.data.batch_size

        # bare steps over batches already in memory, same start (bank copy as built by the loop)
        bank = MemoryBank.open(root / "run" / "bank", "r").copy_to(root / "bare_bank", progress=False)
        batches = collect_batches(cfg, ann_path, bank, args.steps)
        bare_s = sum(bare_steps(cfg, batches, bank, "cpu"))
        bare_rate = samples / bare_s

        # the journal's cost per step: write_back through the journal vs the plain bank
        journal = BankJournal(root / "journal")
        journal.begin(0)
        journaled = JournaledBank(bank, journal)
        plain_s = jour_s = 0.0
        for batch in batches:
            kept = sum(len(k) for k in batch["keep"])
            fresh = torch.randn(kept, bank.feature_dim, bank.rows_per_chunk)
            for target in (bank, journaled):
                t = time.perf_counter()
                write_back(target, batch["video_id"], batch["offset"], batch["keep"], fresh)
                dt = time.perf_counter() - t
                if target is bank:
                    plain_s += dt
                else:
                    jour_s += dt
        journal.close()
        journal_ms = 1000 * (jour_s - plain_s) / len(batches)
        journal_kib = journal.bytes_written / 1024 / len(batches)

    print(f"steps: {args.steps} of {cfg.data.batch_size} clips (demo config, {cfg.data.num_workers} workers)")
    print(f"loop: {loop_rate:.2f} samples/s ({step_s:.1f} s in steps, {wait_s:.1f} s waiting for data)")
    print(f"bare train_step over in-memory batches: {bare_rate:.2f} samples/s ({bare_s:.1f} s)")
    print(f"journal: {journal_ms:.3f} ms per step ({journal_kib:.1f} KiB of old rows per step); "
          f"plain write_back {1000 * plain_s / len(batches):.3f} ms per step")
    print(f"loop_vs_bare={loop_rate / bare_rate:.3f} data_wait={wait_s / (step_s + wait_s):.3f} "
          f"journal_ms={journal_ms:.3f}")


if __name__ == "__main__":
    main()
