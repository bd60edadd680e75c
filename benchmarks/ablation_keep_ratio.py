"""The paper's claim in miniature: memory-bank training against full end-to-end, and both
against a backbone that never learns.

Same data, model, number of steps and seeds; only ``memory.keep_ratio`` changes:

- 0: bank features only (the backbone never runs in training, so it never learns: the neck
  and head learn on the features of the initial, random backbone);
- 0.25, 0.5: that share of a window's chunks through the backbone, the rest from the bank;
- 1.0: every chunk through the backbone (full end-to-end, no bank).

Two halves of the claim: training the backbone pays (keep 0.25 well above keep 0), and the
bank gets it for less (keep 0.25 as good as keep 1.0, at a fraction of the activation
memory and step time). The default config is ``synthetic_drift`` (the built-in synthetic
task ``drift``: the four classes are one textured disk whose texture slides right, left,
down or up; `benchmarks/linear_probe.py` measures how well the random and the trained
backbone's features tell them apart); ``--config demo`` runs the demo's ``shapes`` task, whose
classes differ in colour and shape, which the random backbone already separates.

Where the seed-to-seed spread comes from, and what is done about it:

- the data order, the training windows and the kept chunks are drawn from generators seeded
  by ``(seed, rank, epoch, index)`` (`tallformer.ops.seeding`), not from one shared stream,
  so every keep ratio of a seed sees the same windows in the same order from the same initial
  weights; the drift config has no dropout or stochastic depth (whose draws would depend on
  how many chunks went through the backbone);
- every run computes with the demo's reproducible CPU arithmetic (`tallformer.engine.cpu`:
  one intra-op thread, AVX2 kernels, MKL_CBWR=AVX2, no oneDNN), so a run gives the same
  figures on any machine and next to any other process;
- the test set: ``--val-videos`` validation videos (default 40; the demo's dataset has 10),
  appended to the config's training videos (the same training videos: the plan of video
  ``i`` does not depend on the videos after it); the schedule: the config's unless
  ``--epochs`` is given.

Each run is its own process (``--run KEEP SEED``; ``--jobs`` of them at a time): the bank
from the initial backbone, training, the test on the validation videos, then two memory
figures of that process:

- ``peak RSS``: the process's peak resident memory (``ru_maxrss``); on a CPU it is mostly
  the fixed cost of Python, torch, the model and the decoder;
- ``activations``: the bytes of the tensors autograd saves for the backward pass of one
  training step (distinct storages, on a batch of the run's own loader; the memory the
  method saves, the GPU memory of the paper's claim). ``mem_k025_vs_k1`` is this ratio.

Time per step is the median of the logged ``step_time + data_time`` (compute plus waiting
for the decoded chunks). The table gives each keep ratio's average mAP (tIoU 0.3-0.7) per
seed, their mean and sample standard deviation, memory and time, and both relative to keep
ratio 1.0, then the claims checked; the last line is ``map_k0=... map_k025=... map_k05=...
map_k1=... mem_k025_vs_k1=... time_k025_vs_k1=... sd_max=...`` (mAP as fractions, means
over the seeds; ``sd_max`` the largest standard deviation over the keep ratios).

    python benchmarks/ablation_keep_ratio.py                    # synthetic_drift, seeds 10 11 12
    python benchmarks/ablation_keep_ratio.py --config demo      # the demo's task
    python benchmarks/ablation_keep_ratio.py --quick            # a tiny version, for the tests

Defaults: 3 seeds, 12 runs, 2 at a time: 28 minutes on the 2-core CPU here (docs/ablation.md). Runs that
finished are reused (delete ``--work`` to start over); an interrupted one starts again.
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
SEEDS = (10, 11, 12)
VAL_VIDEOS = 40
VIDEO_LENGTH_S = (30.0, 60.0)  # the lengths `tallformer train` generates the synthetic dataset with
# --quick: 3 training and 1 validation video of 8-10 s, 2 steps, 2 seeds
QUICK_SEEDS = (10, 11)
QUICK_VAL_VIDEOS = 1
QUICK_LENGTH_S = (8.0, 10.0)
QUICK_OVERRIDES = ("data.synthetic_videos=4", "train.max_epochs=1", "train.cosine_period=1",
                   "train.warmup_iters=1", "train.log_interval=1", "data.batch_size=2")


def default_work(config: str, quick: bool, name: str | None = None) -> Path:
    """``runs/<name>[_quick]/<config>``: the folder of a config's runs (name: ablation_keep_ratio)."""
    return Path("runs") / f"{name or 'ablation_keep_ratio'}{'_quick' if quick else ''}" / Path(config).stem


def run_config(config: str, keep: float, seed: int, quick: bool, work: Path, epochs: int | None = None,
               val_videos: int | None = None, quiet: bool = False) -> Any:
    """The config of one run (RUN = WORK/k<keep>_seed<seed>), its dataset generated in WORK/data
    (reused when there): the config's training videos and `val_videos` validation videos."""
    import contextlib
    import io

    from tallformer.commands.demo import synthetic_dataset
    from tallformer.config import load_config

    over = [*(QUICK_OVERRIDES if quick else ()), f"memory.keep_ratio={keep}", f"seed={seed}",
            f"run_dir={work / f'{KEYS[keep]}_seed{seed}'}"]
    if epochs is not None:
        over += [f"train.max_epochs={epochs}", f"train.cosine_period={epochs}"]
    cfg = load_config(config, over)
    over.append(f"train.checkpoint_interval={cfg.train.max_epochs}")
    # the config's split: round(N * 0.25) validation videos (tallformer.data.synthetic.plan_dataset)
    n = cfg.data.synthetic_videos
    train_videos = n - min(max(round(n * 0.25), 1), n - 1)
    val = (QUICK_VAL_VIDEOS if quick else VAL_VIDEOS) if val_videos is None else val_videos
    over.append(f"data.synthetic_videos={train_videos + val}")
    cfg = load_config(config, over)
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        return synthetic_dataset(cfg, (work / "data").resolve(), QUICK_LENGTH_S if quick else VIDEO_LENGTH_S,
                                 progress=False, val_fraction=val / (train_videos + val))


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
        losses, _ = model.forward_losses(batch["chunks"], batch["cached"], batch["keep_mask"], batch["segments"],
                                         batch["labels"], batch["ignore"], batch.get("num_frames"))
        losses["loss"].backward()
    if bank is not None:
        bank.close()
    return sum(seen.values())


def run_one(config: str, keep: float, seed: int, quick: bool, work: Path, epochs: int | None,
            val_videos: int | None) -> dict[str, Any]:
    """One run in this process; returns (and writes to RUN/ablation.json) its figures."""
    from tallformer.engine import cpu

    cpu.prepare_process(reproducible=True)  # the demo's CPU arithmetic (a no-op once torch is loaded)
    cpu.apply(reproducible=True)
    from tallformer.atomic import write_json
    from tallformer.commands.demo import initial_bank, loss_curve
    from tallformer.engine.checkpoint import load_model
    from tallformer.engine.infer import evaluate_model
    from tallformer.engine.train import train

    cfg = run_config(config, keep, seed, quick, work, epochs, val_videos, quiet=True)
    run = Path(cfg.run_dir)
    t0 = time.perf_counter()
    initial_bank(cfg, progress=False)
    train(cfg, progress=False)
    seconds = time.perf_counter() - t0
    loaded = load_model(run / "checkpoints" / "last.pt", cfg)
    metrics = evaluate_model(cfg, loaded.model, str(cfg.data.annotations), cfg.data.test_subset, run,
                             progress=False, classes=loaded.classes, device=loaded.device)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    records = [r for r in records if "step_time" in r]
    first, last, steps = loss_curve(run / "log.jsonl")
    result = {
        "config": config, "keep_ratio": keep, "seed": seed, "epochs": cfg.train.max_epochs, "steps": steps,
        "val_videos": metrics["num_videos"],
        "average_mAP": metrics["average_mAP"], "mAP": metrics["mAP"],
        "step_seconds": statistics.median(r["step_time"] + r["data_time"] for r in records),
        "compute_seconds": statistics.median(r["step_time"] for r in records),
        "train_seconds": seconds, "loss_first": first, "loss_last": last,
        "activation_bytes": _activation_bytes(cfg, run),
        "arithmetic": cpu.describe(),
        # ru_maxrss is in KiB on Linux
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    write_json(run / "ablation.json", result)
    return result


def _sd(values: list[float]) -> float:
    """Sample standard deviation (0 for one value)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def table(results: list[dict[str, Any]], seeds: list[int]) -> tuple[str, str]:
    """The printed table and the last line of a full set of runs (every keep ratio, every seed).

    Example:
        >>> runs = [{"config": "c", "keep_ratio": k, "seed": s, "steps": 4, "val_videos": 2,
        ...          "average_mAP": 0.5 + k / 4 + s / 100, "activation_bytes": 100 + 100 * k,
        ...          "peak_rss_bytes": 2**30, "step_seconds": 1 + k} for k in KEEP_RATIOS for s in (1, 2)]
        >>> table(runs, [1, 2])[1]
        'map_k0=0.5150 map_k025=0.5775 map_k05=0.6400 map_k1=0.7650 mem_k025_vs_k1=0.625 time_k025_vs_k1=0.625 sd_max=0.0071'
    """
    by = {k: sorted((r for r in results if r["keep_ratio"] == k), key=lambda r: r["seed"]) for k in KEEP_RATIOS}
    mean = {k: {f: statistics.fmean(r[f] for r in rs) for f in ("average_mAP", "activation_bytes",
                                                                  "peak_rss_bytes", "step_seconds")}
            for k, rs in by.items()}
    sd = {k: _sd([r["average_mAP"] for r in rs]) for k, rs in by.items()}
    ref = mean[1.0]
    first = results[0]
    width = 6 * len(seeds)
    lines = [f"keep ratio ablation, {first['config']}: {len(seeds)} seeds ({', '.join(map(str, seeds))}), "
             f"{first['steps']} steps of each run, tested on {first['val_videos']} validation videos",
             f"{'keep':>5}  {'avg mAP (%) per seed':>{width}}  {'mean':>5}  {'SD':>4}  {'activations':>11}  "
             f"{'vs k1':>5}  {'peak RSS':>8}  {'vs k1':>5}  {'s/step':>6}  {'vs k1':>5}"]
    for k in KEEP_RATIOS:
        m = mean[k]
        per_seed = " ".join(f"{100 * r['average_mAP']:5.1f}" for r in by[k])
        lines.append(f"{k:>5.2f}  {per_seed:>{width}}  {100 * m['average_mAP']:5.1f}  {100 * sd[k]:4.1f}  "
                     f"{m['activation_bytes'] / 2**20:>7.1f} MiB  {m['activation_bytes'] / ref['activation_bytes']:>5.2f}  "
                     f"{m['peak_rss_bytes'] / 2**20:>4.0f} MiB  {m['peak_rss_bytes'] / ref['peak_rss_bytes']:>5.2f}  "
                     f"{m['step_seconds']:>6.3f}  {m['step_seconds'] / ref['step_seconds']:>5.2f}")
    lines.append("(SD: sample standard deviation over the seeds; activations: bytes autograd saves for "
                 "one step; s/step: median compute + data wait)")
    gap = mean[0.25]["average_mAP"] - mean[0.0]["average_mAP"]
    near = mean[0.25]["average_mAP"] - ref["average_mAP"]
    sd_max = max(sd.values())
    mem = mean[0.25]["activation_bytes"] / ref["activation_bytes"]
    step = mean[0.25]["step_seconds"] / ref["step_seconds"]

    def holds(ok: bool) -> str:
        return "holds" if ok else "does NOT hold"

    lines += [
        f"training the backbone pays: keep 0.25 - keep 0 = {100 * gap:+.1f} points (wanted >= +5.0 and "
        f"> 2 x the largest SD = {200 * sd_max:.1f}): {holds(gap >= 0.05 and gap > 2 * sd_max)}",
        f"the bank gets it for less: keep 0.25 - keep 1.0 = {100 * near:+.1f} points (wanted within 2.0): "
        f"{holds(abs(near) <= 0.02)}; activations {mem:.2f} (wanted <= 0.5): {holds(mem <= 0.5)}; "
        f"step time {step:.2f} (wanted <= 0.6): {holds(step <= 0.6)}",
    ]
    last = " ".join(f"map_{KEYS[k]}={mean[k]['average_mAP']:.4f}" for k in KEEP_RATIOS)
    last += f" mem_k025_vs_k1={mem:.3f} time_k025_vs_k1={step:.3f} sd_max={sd_max:.4f}"
    return "\n".join(lines), last


def _report(saved: dict[str, Any], started: float) -> None:
    """The line of one finished run (its ``ablation.json``), started at `started`."""
    print(f"keep {saved['keep_ratio']:g} seed {saved['seed']}: average mAP {100 * saved['average_mAP']:.1f}%, "
          f"{saved['step_seconds']:.3f} s/step, {time.perf_counter() - started:.0f} s", flush=True)


def _command(args: argparse.Namespace, work: Path, keep: float, seed: int) -> list[str]:
    cmd = [sys.executable, __file__, "--config", args.config, "--work", str(work), "--run", str(keep), str(seed)]
    cmd += ["--epochs", str(args.epochs)] if args.epochs is not None else []
    cmd += ["--val-videos", str(args.val_videos)] if args.val_videos is not None else []
    return cmd + (["--quick"] if args.quick else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="synthetic_drift",
                        help="synthetic_drift (default: the drift task) or demo (the demo's shapes task)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help=f"seeds: model init and data order (default {' '.join(map(str, SEEDS))}; "
                             f"--quick: {' '.join(map(str, QUICK_SEEDS))})")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the config's)")
    parser.add_argument("--val-videos", type=int, default=None,
                        help=f"validation videos (default {VAL_VIDEOS}; --quick: {QUICK_VAL_VIDEOS})")
    parser.add_argument("--jobs", type=int, default=2,
                        help="runs at a time, each its own process computing with one thread (default 2)")
    parser.add_argument("--in-process", action="store_true",
                        help="every run in this process, one after the other (the --quick default: no "
                             "start-up per run; peak RSS is then this process's so far, not the run's)")
    parser.add_argument("--keep", type=float, nargs="+", default=list(KEEP_RATIOS),
                        help="keep ratios to run, among 0 0.25 0.5 1 (default all four; a subset prints no table)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder of the runs and their data (default runs/ablation_keep_ratio/CONFIG)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny version for the tests (4 short videos, 2 steps, 2 seeds, in this process; its "
                             "mAP means nothing)")
    parser.add_argument("--run", nargs=2, metavar=("KEEP", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work or default_work(args.config, args.quick)
    from tallformer.engine import cpu

    cpu.prepare_process(reproducible=True)  # before torch loads (and inherited by the runs)
    if args.run:
        run_one(args.config, float(args.run[0]), int(args.run[1]), args.quick, work, args.epochs, args.val_videos)
        return
    seeds = args.seeds or list(QUICK_SEEDS if args.quick else SEEDS)
    keeps = [k for k in KEEP_RATIOS if k in args.keep]
    start = time.perf_counter()
    # the dataset once, here, before the runs share it
    epochs = run_config(args.config, keeps[0], seeds[0], args.quick, work, args.epochs, args.val_videos).train.max_epochs
    todo: list[tuple[float, int]] = []
    for seed in seeds:
        for keep in keeps:
            out = work / f"{KEYS[keep]}_seed{seed}" / "ablation.json"
            saved = json.loads(out.read_text()) if out.is_file() else None
            if saved is None or saved.get("epochs") != epochs:
                todo.append((keep, seed))
    # the slowest runs first, so that the last ones to start are short
    todo.sort(key=lambda ks: (-ks[0], ks[1]))
    if args.in_process or args.quick:
        for keep, seed in todo:
            t0 = time.perf_counter()
            _report(run_one(args.config, keep, seed, args.quick, work, args.epochs, args.val_videos), t0)
        todo = []
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    running: dict[tuple[float, int], tuple[subprocess.Popen[bytes], float]] = {}
    failed = []
    while todo or running:
        while todo and len(running) < max(1, args.jobs):
            keep, seed = todo.pop(0)
            running[(keep, seed)] = (subprocess.Popen(_command(args, work, keep, seed), env=env), time.perf_counter())
        time.sleep(0.2)
        for (keep, seed), (proc, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[(keep, seed)]
            if proc.returncode != 0:
                failed.append(f"keep {keep:g} seed {seed} (exit {proc.returncode})")
                continue
            _report(json.loads((work / f"{KEYS[keep]}_seed{seed}" / "ablation.json").read_text()), t0)
    if failed:
        raise SystemExit("failed runs (the others are kept; run again to retry): " + ", ".join(failed))
    if set(keeps) != set(KEEP_RATIOS):
        print("(a subset of the keep ratios: no table)")
        return
    results = [json.loads((work / f"{KEYS[k]}_seed{s}" / "ablation.json").read_text()) for s in seeds for k in keeps]
    text, last = table(results, seeds)
    print(text)
    print(f"total {time.perf_counter() - start:.0f} s")
    print(last)


if __name__ == "__main__":
    main()
