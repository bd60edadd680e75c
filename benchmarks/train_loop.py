"""The training loop's overhead: the whole `tallformer.engine.train.train` against bare steps.

Setting: the demo config as shipped (tiny Video Swin, 128-frame windows of 56x56 crops,
batch 2, keep ratio 0.5, 2 data workers) on synthetic videos written as real mp4 files.

- loop: `train(cfg)` with `train.max_steps=N`: data workers decoding and augmenting the kept
  chunks and reading the bank, the bank journal, the schedule, logging, a checkpoint at the
  end. Its time is the sum of the logged per-step times (step + waiting for data), so the
  set-up (bank build, worker start) is left out.
- bare: the same config and number of steps, `train_step` alone over batches collected in
  memory beforehand (no loader, no journal, no logging).
- journal: `write_back` through `JournaledBank` against the plain bank on the same batches
  and features: the journal's cost per step (reading the old rows, appending them).

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps of each loop")
    parser.add_argument("--videos", type=int, default=10, help="synthetic videos (3/4 for training)")
    args = parser.parse_args()

    import torch

    from tallformer.config import load_config
    from tallformer.data.annotations import load_annotations
    from tallformer.data.synthetic import generate_synthetic_dataset
    from tallformer.engine.factory import build_detector
    from tallformer.engine.journal import BankJournal, JournaledBank
    from tallformer.engine.loader import make_train_loader
    from tallformer.engine.optim import make_optimizer
    from tallformer.engine.step import train_step, write_back
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
        records = [json.loads(line) for line in (root / "run" / "log.jsonl").read_text().splitlines()]
        assert len(records) == args.steps, len(records)
        step_s = sum(r["step_time"] for r in records)
        wait_s = sum(r["data_time"] for r in records)
        samples = args.steps * cfg.data.batch_size
        loop_rate = samples / (step_s + wait_s)

        # bare steps over batches already in memory, same start (bank copy as built by the loop)
        bank = MemoryBank.open(root / "run" / "bank", "r").copy_to(root / "bare_bank", progress=False)
        torch.manual_seed(cfg.seed)
        model = build_detector(cfg)
        optimizer = make_optimizer(model, cfg.train)
        loader = make_train_loader(cfg, load_annotations(ann_path), bank, num_workers=0)
        batches: list = []
        epoch = 0
        while len(batches) < args.steps:
            loader.set_epoch(epoch)
            batches.extend(loader)
            epoch += 1
        batches = batches[:args.steps]
        t0 = time.perf_counter()
        for batch in batches:
            train_step(model, batch, optimizer, bank, device="cpu")
        bare_s = time.perf_counter() - t0
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
