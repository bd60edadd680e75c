"""Linear probe: do a backbone's pooled features tell the action classes apart?

The first half of the paper's claim needs a task on which the random initial backbone is
not enough: training it must add what the neck and head cannot get from its features. This
benchmark measures that directly, on clips:

- a clip is one annotated instance; its feature is the backbone's pooled features
  (``forward``: mean over the spatial map; `[C, T/2]` rows, as the memory bank holds them)
  averaged over the instance's rows: ``[C]``. The rows come from a memory bank built over the
  videos of each subset (``build_bank``: chunk by chunk, centre crop, the test-time transform);
- a logistic regression (multinomial, L2 weight decay chosen by 5-fold cross-validation on
  the training clips, full-batch L-BFGS on standardised features) is fitted on the clips of
  the `training` videos and scored on the clips of the `validation` videos (held out);
- twice: on the features of the **random initial backbone** (the weights every run of the
  keep-ratio ablation starts from, and the bank of its keep ratio 0 run) and on those of the
  backbone **trained end to end** (the ablation's keep ratio 1.0 run: its ``last.pt``;
  trained here by ``benchmarks/ablation_keep_ratio.py --run 1.0 SEED`` when that run is not
  there yet, and then reused by the ablation).

Last line: ``probe_random=... probe_trained=...`` (accuracies on the held-out clips; chance
is 1 / classes).

    python benchmarks/linear_probe.py [--config synthetic_drift] [--seed 10] [--work DIR]
    python benchmarks/linear_probe.py --config demo      # the demo's task (shapes)
    python benchmarks/linear_probe.py --random-only      # no training: the random backbone only

Defaults: the drift task (``synthetic_drift``), the ablation's first seed and folder; about
10 minutes on a free 2-core CPU when the keep ratio 1.0 run has to be trained, 1 minute
when it is there.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from tallformer.config import Config

HERE = Path(__file__).resolve().parent
WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
FOLDS = 5


def clip_features(cfg: Config, backbone: torch.nn.Module, bank_dir: Path, subset: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Features ``[N, C]`` (float64) and class ids ``[N]`` of every instance of `subset`.

    Builds (afresh) a memory bank of the subset's videos in `bank_dir` with `backbone`,
    then averages each instance's rows ``floor(start * fps / 2) .. ceil(end * fps / 2)``.
    """
    from tallformer.data.annotations import load_annotations, video_fps
    from tallformer.engine.bank_build import build_bank
    from tallformer.memory.bank import MemoryBank

    sub = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_subset=subset))
    shutil.rmtree(bank_dir, ignore_errors=True)  # another backbone's features may be there
    with warnings.catch_warnings():  # "no backbone weights given": the random one is meant
        warnings.simplefilter("ignore")
        report = build_bank(sub, bank_dir, backbone=backbone, device="cpu",  # type: ignore[arg-type]
                            progress=False)
    if not report.ok:
        raise SystemExit(report.summary())
    aset = load_annotations(str(cfg.data.annotations))
    bank = MemoryBank.open(bank_dir)
    stride = bank.rows_per_chunk and cfg.model.backbone.chunk_size // bank.rows_per_chunk
    feats, labels = [], []
    try:
        for video in aset.subset(subset):
            fps = video_fps(video, cfg.data)
            for inst, label in zip(video.annotations, video.label_ids(aset.classes), strict=True):
                lo = math.floor(inst.segment[0] * fps / stride)
                hi = max(lo + 1, math.ceil(inst.segment[1] * fps / stride))
                rows = bank.read(video.video_id, lo, hi - lo, dtype=np.dtype(np.float32))
                feats.append(rows.mean(axis=0))
                labels.append(label)
    finally:
        bank.close()
    return np.asarray(feats, np.float64), np.asarray(labels, np.int64)


def _fit(x: torch.Tensor, y: torch.Tensor, classes: int, weight_decay: float) -> torch.Tensor:
    """Multinomial logistic regression, ``[N, C+1]`` inputs (bias column included): the
    weights ``[C+1, K]`` minimising cross-entropy + weight_decay * |W|^2 (bias not decayed)."""
    import torch

    w = torch.zeros(x.shape[1], classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w, y) + weight_decay * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def probe_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                   seed: int = 0) -> tuple[float, float]:
    """(held-out accuracy, the weight decay chosen by cross-validation on the training clips).

    Features are standardised with the training clips' mean and standard deviation.

    Example:
        >>> x = np.r_[np.zeros((20, 3)), np.ones((20, 3))] + np.random.default_rng(0).normal(0, .1, (40, 3))
        >>> y = np.r_[np.zeros(20, int), np.ones(20, int)]
        >>> probe_accuracy(x, y, x, y)[0]
        1.0
    """
    import torch

    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    classes = int(max(y_train.max(), y_test.max())) + 1

    def design(x: np.ndarray) -> torch.Tensor:
        z = (x - mean) / std
        return torch.from_numpy(np.c_[z, np.ones(len(z))])

    xtr, ytr = design(x_train), torch.from_numpy(y_train)
    folds = np.random.default_rng(seed).permutation(len(y_train)) % FOLDS
    best, best_acc = WEIGHT_DECAYS[0], -1.0
    for wd in WEIGHT_DECAYS:
        hits = 0
        for f in range(FOLDS):
            fit, held = torch.from_numpy(folds != f), torch.from_numpy(folds == f)
            w = _fit(xtr[fit], ytr[fit], classes, wd)
            hits += int(((xtr[held] @ w).argmax(1) == ytr[held]).sum())
        if hits / len(y_train) > best_acc:
            best, best_acc = wd, hits / len(y_train)
    w = _fit(xtr, ytr, classes, best)
    acc = float(((design(x_test) @ w).argmax(1) == torch.from_numpy(y_test)).double().mean())
    return acc, best


def initial_backbone(cfg: Config) -> torch.nn.Module:
    """The backbone a run of `cfg` starts from (`tallformer.engine.train.initial_detector`:
    the global random states seeded with ``cfg.seed``, the detector built as training builds
    it), on the CPU."""
    import torch

    from tallformer.data.annotations import load_annotations
    from tallformer.engine.train import initial_detector

    classes = list(load_annotations(str(cfg.data.annotations)).classes)
    return initial_detector(cfg, torch.device("cpu"), classes).backbone


def probe(cfg: Config, backbone: torch.nn.Module, work: Path, name: str) -> float:
    """Held-out probe accuracy of `backbone`'s clip features (banks in WORK/NAME_<subset>)."""
    x_train, y_train = clip_features(cfg, backbone, work / f"{name}_{cfg.data.train_subset}", cfg.data.train_subset)
    x_test, y_test = clip_features(cfg, backbone, work / f"{name}_{cfg.data.test_subset}", cfg.data.test_subset)
    acc, wd = probe_accuracy(x_train, y_train, x_test, y_test)
    print(f"{name} backbone: {len(y_train)} training clips, {len(y_test)} held-out clips "
          f"({np.bincount(y_test).tolist()} per class), weight decay {wd:g}: accuracy {acc:.3f}", flush=True)
    return acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="synthetic_drift",
                        help="the ablation's config: synthetic_drift (default) or demo (the shapes task)")
    parser.add_argument("--seed", type=int, default=10, help="the run's seed (default 10, the ablation's first)")
    parser.add_argument("--work", type=Path, default=None,
                        help="the ablation's folder (default runs/ablation_keep_ratio/CONFIG; --quick: "
                             "runs/ablation_keep_ratio_quick/CONFIG)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny version for the tests (the ablation's --quick data and schedule)")
    parser.add_argument("--random-only", action="store_true", help="probe the random initial backbone only")
    args = parser.parse_args()

    from tallformer.engine import cpu

    cpu.prepare_process(reproducible=True)  # before torch loads: the ablation's CPU arithmetic
    cpu.apply(reproducible=True)
    sys.path.insert(0, str(HERE))
    import ablation_keep_ratio as ablation
    from tallformer.atomic import write_json
    from tallformer.engine.checkpoint import load_model

    start = time.perf_counter()
    work = args.work or ablation.default_work(args.config, args.quick)
    run = work / f"{ablation.KEYS[1.0]}_seed{args.seed}"
    probes = work / f"probe_seed{args.seed}"
    if args.random_only:
        cfg = ablation.run_config(args.config, 1.0, args.seed, args.quick, work)
        random_acc = probe(cfg, initial_backbone(cfg), probes, "random")
        print(f"total {time.perf_counter() - start:.0f} s")
        print(f"probe_random={random_acc:.4f}")
        return
    if not (run / "ablation.json").is_file():
        print(f"training the keep ratio 1.0 run (seed {args.seed}) in {run}", flush=True)
        subprocess.run([sys.executable, str(HERE / "ablation_keep_ratio.py"), "--config", args.config,
                        "--work", str(work), "--run", "1.0", str(args.seed)]
                       + (["--quick"] if args.quick else []), check=True)
    loaded = load_model(run / "checkpoints" / "last.pt", device="cpu")
    cfg = loaded.cfg
    random_acc = probe(cfg, initial_backbone(cfg), probes, "random")
    trained_acc = probe(cfg, loaded.model.backbone, probes, "trained")
    write_json(probes / "probe.json", {"config": args.config, "seed": args.seed, "trained_from": str(run),
                                       "probe_random": random_acc, "probe_trained": trained_acc})
    print(f"total {time.perf_counter() - start:.0f} s")
    print(f"probe_random={random_acc:.4f} probe_trained={trained_acc:.4f}")


if __name__ == "__main__":
    main()
