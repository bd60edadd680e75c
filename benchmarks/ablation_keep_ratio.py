"""The paper's central claim at demo scale: memory-bank training against full end-to-end.

Same data (the demo's synthetic dataset), model (the demo config), number of steps and seeds;
only ``memory.keep_ratio`` changes:

- 0: bank features only (the backbone never runs in training, so it never learns: the neck
  and head learn on the features of the initial, random backbone);
- 0.25, 0.5: 1 or 2 of the 4 chunks of a clip through the backbone, the rest from the bank
  (the demo: 0.5);
- 1.0: every chunk through the backbone (full end-to-end, no bank).

Each run is its own process (``--run``): the demo's stages (bank from the initial backbone,
training, test on the validation subset), then two memory figures of that process:

- ``peak RSS``: the process's peak resident memory (``ru_maxrss``); on a CPU it is mostly
  the fixed cost of Python, torch, the model and the decoder;
- ``activations``: the bytes of the tensors autograd saves for the backward pass of one
  training step (distinct storages, on a batch of the run's own loader; the memory the
  method saves, the GPU memory of the paper's claim). ``mem_k025_vs_k1`` is this ratio.

Time per step is the median of the logged ``step_time + data_time`` (compute plus waiting
for the decoded chunks). The table gives each keep ratio's average mAP (tIoU 0.3-0.7,
mean and spread over the seeds), memory and time, and both relative to keep ratio 1.0; the
last line is ``map_k0=... map_k025=... map_k05=... map_k1=... mem_k025_vs_k1=...
time_k025_vs_k1=...`` (mAP as fractions, means over the seeds).

    python benchmarks/ablation_keep_ratio.py [--seeds 10 11] [--epochs 150] [--work DIR]

Defaults: 2 seeds, the demo's 150 epochs (2250 steps), 8 runs: about 40 minutes on a free
2-core CPU. Runs that finished are reused (delete ``--work`` to start over).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

KEEP_RATIOS = (0.0, 0.25, 0.5, 1.0)
KEYS = {0.0: "k0", 0.25: "k025", 0.5: "k05", 1.0: "k1"}


def _activation_bytes(cfg: Any, run: Path) -> int:
    """Bytes autograd saves for one training step of the run's final model (one batch of its
    own loader; distinct storages)."""
    import torch

    from tallformer.data.annotations import load_annotations
    from tallformer.engine.checkpoint import load_model
    from tallformer.engine.loader import make_train_loader
    from tallformer.memory.bank import MemoryBank

    loaded = load_model(run / "checkpoints" / "last.pt", cfg)
    model = loaded.model.train()
    aset = load_annotations(cfg.data.annotations)
    bank = MemoryBank.open(run / "bank", mode="r") if (run / "bank" / "meta.json").is_file() else None
    tl = make_train_loader(cfg, aset, bank, classes=loaded.classes)
    try:
        batch = next(iter(tl.loader))
    finally:
        tl.dataset.close()
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outputs, _ = model.forward_train(batch["chunks"], batch["cached"], batch["keep_mask"])
        model.loss(outputs, batch["segments"], batch["labels"])["loss"].backward()
    if bank is not None:
        bank.close()
    return sum(seen.values())


def run_one(keep: float, seed: int, epochs: int, work: Path) -> dict[str, Any]:
    """One run in this process; returns (and writes to RUN/ablation.json) its figures."""
    from tallformer.commands.demo import (
        FULL_LENGTH_S,
        demo_config,
        initial_bank,
        loss_curve,
        synthetic_dataset,
    )
    from tallformer.engine.checkpoint import load_model
    from tallformer.engine.infer import evaluate_model
    from tallformer.engine.run_layout import SYNTHETIC_DIR
    from tallformer.engine.train import train

    run = work / f"{KEYS[keep]}_seed{seed}"
    cfg = demo_config("demo", [f"memory.keep_ratio={keep}", f"seed={seed}", f"train.max_epochs={epochs}",
                               f"train.cosine_period={epochs}", f"train.checkpoint_interval={epochs}"],
                      str(run), quick=False)
    cfg = synthetic_dataset(cfg, SYNTHETIC_DIR.resolve(), FULL_LENGTH_S, progress=False)
    t0 = time.perf_counter()
    initial_bank(cfg, run, progress=False)
    train(cfg, progress=False)
    seconds = time.perf_counter() - t0
    loaded = load_model(run / "checkpoints" / "last.pt", cfg)
    metrics = evaluate_model(cfg, loaded.model, str(cfg.data.annotations), cfg.data.test_subset, run,
                             progress=False, classes=loaded.classes, device=loaded.device)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    first, last, steps = loss_curve(run / "log.jsonl")
    result = {
        "keep_ratio": keep, "seed": seed, "epochs": epochs, "steps": steps,
        "average_mAP": metrics["average_mAP"], "mAP": metrics["mAP"],
        "step_seconds": statistics.median(r["step_time"] + r["data_time"] for r in records),
        "compute_seconds": statistics.median(r["step_time"] for r in records),
        "train_seconds": seconds, "loss_first": first, "loss_last": last,
        "activation_bytes": _activation_bytes(cfg, run),
        # ru_maxrss is in KiB on Linux
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    (run / "ablation.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _spread(values: list[float]) -> float:
    return (max(values) - min(values)) / 2 if len(values) > 1 else 0.0


def table(results: list[dict[str, Any]], seeds: list[int]) -> tuple[str, str]:
    by = {k: [r for r in results if r["keep_ratio"] == k] for k in KEEP_RATIOS}
    mean = {k: {f: statistics.fmean(r[f] for r in rs) for f in ("average_mAP", "activation_bytes",
                                                                  "peak_rss_bytes", "step_seconds")}
            for k, rs in by.items()}
    ref = mean[1.0]
    lines = [f"keep ratio ablation: {len(seeds)} seeds ({', '.join(map(str, seeds))}), "
             f"{results[0]['steps']} steps of batch 2 each, demo config and data",
             f"{'keep':>5}  {'avg mAP (%)':>14}  {'activations':>11}  {'vs k1':>5}  {'peak RSS':>8}  "
             f"{'vs k1':>5}  {'s/step':>6}  {'vs k1':>5}"]
    for k in KEEP_RATIOS:
        m = mean[k]
        maps = [100 * r["average_mAP"] for r in by[k]]
        lines.append(f"{k:>5.2f}  {statistics.fmean(maps):>7.1f} +- {_spread(maps):>4.1f}  "
                     f"{m['activation_bytes'] / 2**20:>8.1f} MiB  {m['activation_bytes'] / ref['activation_bytes']:>5.2f}  "
                     f"{m['peak_rss_bytes'] / 2**20:>4.0f} MiB  {m['peak_rss_bytes'] / ref['peak_rss_bytes']:>5.2f}  "
                     f"{m['step_seconds']:>6.3f}  {m['step_seconds'] / ref['step_seconds']:>5.2f}")
    lines.append("(+- half the range over the seeds; activations: bytes autograd saves for one step; "
                 "s/step: median compute + data wait)")
    last = " ".join(f"map_{KEYS[k]}={mean[k]['average_mAP']:.4f}" for k in KEEP_RATIOS)
    last += (f" mem_k025_vs_k1={mean[0.25]['activation_bytes'] / ref['activation_bytes']:.3f}"
             f" time_k025_vs_k1={mean[0.25]['step_seconds'] / ref['step_seconds']:.3f}")
    return "\n".join(lines), last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11], help="seeds (model init, data order)")
    parser.add_argument("--epochs", type=int, default=150, help="epochs of 15 steps per run (the demo: 150)")
    parser.add_argument("--keep", type=float, nargs="+", default=list(KEEP_RATIOS), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=Path("runs/ablation_keep_ratio"),
                        help="folder of the runs (default runs/ablation_keep_ratio; data in data/synthetic)")
    parser.add_argument("--run", nargs=2, metavar=("KEEP", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_one(float(args.run[0]), int(args.run[1]), args.epochs, args.work)
        return
    keeps = [k for k in KEEP_RATIOS if k in args.keep]
    results = []
    start = time.perf_counter()
    for seed in args.seeds:
        for keep in keeps:
            out = args.work / f"{KEYS[keep]}_seed{seed}" / "ablation.json"
            saved = json.loads(out.read_text()) if out.is_file() else None
            if saved is None or saved.get("epochs") != args.epochs:
                t0 = time.perf_counter()
                subprocess.run([sys.executable, __file__, "--run", str(keep), str(seed), "--epochs",
                                str(args.epochs), "--work", str(args.work)], check=True,
                               env={**os.environ, "PYTHONWARNINGS": "ignore"})
                saved = json.loads(out.read_text())
                print(f"keep {keep:g} seed {seed}: average mAP {100 * saved['average_mAP']:.1f}%, "
                      f"{saved['step_seconds']:.3f} s/step, {time.perf_counter() - t0:.0f} s", flush=True)
            results.append(saved)
    if set(keeps) != set(KEEP_RATIOS):
        print("(a subset of the keep ratios: no table)")
        return
    text, last = table(results, args.seeds)
    print(text)
    print(f"total {time.perf_counter() - start:.0f} s")
    print(last)


if __name__ == "__main__":
    main()
