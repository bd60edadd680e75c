"""`tallformer demo`: the whole method on the built-in synthetic data, on a CPU, in one command.

Five stages, each announced with its number and timed:

1. the synthetic dataset (real mp4 files, ActivityNet JSON, training and validation subsets),
   generated once into ``data/synthetic/`` (the folder `tallformer train --config demo` uses)
   and reused while it matches the config;
2. the memory bank of the training videos, built with the initial (random) demo backbone:
   the very weights training starts from (the engine's own start-up,
   `tallformer.engine.train.prepare_run_bank`);
3. training from scratch with the memory bank (`tallformer.engine.train.train`; a finished
   run in the output folder is reused, an interrupted one resumed);
4. the test on the validation subset: ``results.json``, ``metrics.json`` and the mAP table
   (tIoU 0.3 to 0.7 and their average);
5. figures: ``timeline.png`` (detections against ground truth for three validation videos,
   one above the other; each also in ``timelines/``) and ``viewer_<video>.html`` for the
   first of them, then where everything is and the `tallformer detect` command to try.

``--quick`` is a small version for the tests (12 short videos in ``OUT/data/synthetic``, 50
steps): every stage and output, in about two minutes; its mAP means nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tallformer.commands.common import add_progress_argument, subparser

if TYPE_CHECKING:
    from tallformer.config import Config
    from tallformer.data.annotations import AnnotationSet

NUM_STAGES = 5
TIMELINE_VIDEOS = 3
# --quick: 12 videos of 10-14 s (9 training, 3 validation), 10 epochs of 5 steps
QUICK_VIDEOS = 12
QUICK_LENGTH_S = (10.0, 14.0)
QUICK_OVERRIDES = (f"data.synthetic_videos={QUICK_VIDEOS}", "train.max_epochs=10", "train.cosine_period=10",
                   "train.checkpoint_interval=5", "train.warmup_iters=5", "train.log_interval=1")
# the video lengths `tallformer train` generates the synthetic dataset with (plan_dataset's defaults)
FULL_LENGTH_S = (30.0, 60.0)


def register(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub, "demo",
        help="the whole method on built-in synthetic videos: data, bank, training, test, figures",
        description=(
            "Generate the synthetic dataset (data/synthetic/), build the memory bank with the "
            "initial demo backbone, train TALLFormer with the bank from scratch, test it on the "
            "validation subset (the mAP table, tIoU 0.3 to 0.7) and write OUT (default "
            "runs/demo/): metrics.json, results.json, log.jsonl, checkpoints/, timeline.png "
            "(detections against ground truth for three validation videos) and an HTML viewer "
            "of one. A finished run in OUT is reused (delete OUT to train again); an interrupted "
            "one is resumed. About 6 minutes on a free 2-core CPU with the shipped demo config; "
            "--quick is a small version of every stage (about 2 minutes).\n\n"
            "On a CPU the demo computes with one intra-op thread, ATen's AVX2 kernels, MKL's "
            "reproducible AVX2 branch and torch's own convolutions (OMP_NUM_THREADS=1 "
            "ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2, oneDNN off): for one torch build its numbers "
            "depend neither on the number of cores nor on AVX-512 (MKL's reproducibility holds on "
            "Intel CPUs with AVX2), and it keeps its pace next to other busy processes. Setting one of those variables yourself overrides it "
            "(on AMD CPUs MKL_CBWR=COMPATIBLE is the one that matches across vendors, slower)."
        ),
        example_lines=(
            "tallformer demo",
            "tallformer demo --quick --out runs/demo_quick",
            "tallformer demo --out runs/demo_k025 memory.keep_ratio=0.25",
        ),
    )
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: run_dir of the config, runs/demo)")
    p.add_argument("--quick", action="store_true",
                   help="a small version of every stage, for tests (12 short videos, 50 steps)")
    p.add_argument("--config", default="demo", metavar="NAME|FILE",
                   help="the config (default: the shipped demo config)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted config overrides, e.g. memory.keep_ratio=0.25 train.max_epochs=50")
    add_progress_argument(p, "no progress bars (the stage lines stay)")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- stages


@dataclass
class _Stages:
    """Numbered stage lines with their durations."""

    start: float = field(default_factory=time.perf_counter)
    seconds: dict[str, float] = field(default_factory=dict)
    _name: str | None = None
    _t0: float = 0.0

    def begin(self, number: int, name: str, what: str) -> None:
        self.end()
        self._name, self._t0 = name, time.perf_counter()
        print(f"[{number}/{NUM_STAGES}] {what}", flush=True)

    def end(self) -> None:
        if self._name is not None:
            took = time.perf_counter() - self._t0
            self.seconds[self._name] = took
            print(f"      {self._name}: {_duration(took)}", flush=True)
            self._name = None

    @property
    def total(self) -> float:
        return time.perf_counter() - self.start


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{seconds:.1f} s"


def synthetic_dataset(cfg: Config, out_dir: Path, lengths: tuple[float, float], progress: bool,
                      val_fraction: float = 0.25) -> Config:
    """Stage 1: the synthetic dataset of ``cfg`` (``data.synthetic_task``) in `out_dir`
    (generated unless the one there is the same plan); returns `cfg` with
    ``data.annotations`` / ``data.videos`` set to it."""
    from tallformer.data.synthetic import (
        annotation_dict,
        generate_synthetic_dataset,
        plan_dataset,
    )
    from tallformer.errors import TallformerError

    d = cfg.data
    if d.synthetic_videos < 1:
        raise TallformerError("the demo trains on the synthetic dataset: set data.synthetic_videos "
                              "to at least 4 (the demo config: 40)")
    size = (int(d.frame_size[0]), int(d.frame_size[1]))
    classes = cfg.model.num_classes
    kw: dict[str, Any] = {"num_classes": classes, "fps": d.fps, "size": size,
                          "min_length": lengths[0], "max_length": lengths[1],
                          "val_fraction": val_fraction, "task": d.synthetic_task}
    ann = out_dir / "annotations.json"
    wanted = json.loads(json.dumps(annotation_dict(plan_dataset(d.synthetic_videos, d.synthetic_seed, **kw),
                                                   classes)))
    have = json.loads(ann.read_text()) if ann.is_file() else None
    videos = out_dir / "videos"
    complete = have == wanted and all((videos / f"{vid}.mp4").is_file() for vid in wanted["database"])
    if complete:
        print(f"      reusing {ann} ({d.synthetic_videos} videos)")
    else:
        print(f"      generating {d.synthetic_videos} videos ({size[1]}x{size[0]}, {d.fps:g} fps) in {out_dir}")
        generate_synthetic_dataset(out_dir, d.synthetic_videos, d.synthetic_seed, progress=progress, **kw)
    counts = {s: sum(1 for v in wanted["database"].values() if v["subset"] == s)
              for s in ("training", "validation")}
    print(f"      {counts['training']} training and {counts['validation']} validation videos")
    return replace(cfg, data=replace(d, annotations=str(ann), videos=str(videos)))


def initial_bank(cfg: Config, progress: bool) -> None:
    """Stage 2: ``RUN/bank``, the bank training uses, from the backbone it starts with: the
    training engine's own start-up up to its bank (`tallformer.engine.train.prepare_run_bank`:
    the detector seeded and built as training builds it, the bank built from its backbone or
    copied from ``memory.bank_dir``); training then finds it ready."""
    from tallformer.engine.train import prepare_run_bank

    print("      " + prepare_run_bank(cfg, progress=progress))


def loss_curve(log: Path) -> tuple[float, float, int]:
    """(mean loss of the first 10 % of the logged steps, of the last 10 %, steps) of a log.jsonl."""
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    losses = [float(r["loss"]) for r in records if "loss" in r]
    if not losses:
        return float("nan"), float("nan"), 0
    k = max(1, len(losses) // 10)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k, int(records[-1].get("step", len(records)))


def _segments(dets: Sequence[dict[str, Any]]) -> list[tuple[float, float, str, float]]:
    return [(float(d["segment"][0]), float(d["segment"][1]), str(d["label"]), float(d["score"])) for d in dets]


def figures(run: Path, aset: AnnotationSet, subset: str, results: dict[str, Any], classes: list[str],
            videos_dir: Path, fps: float, source: str) -> dict[str, Path]:
    """Stage 5: the timelines of the first `TIMELINE_VIDEOS` videos of `subset` (one PNG each
    in ``timelines/`` and all stacked in ``timeline.png``) and the viewer of the first one.

    The timelines draw the detections the viewer's score slider starts with: the display
    threshold `tallformer detect` uses too (`tallformer.viewer.displayed`: the best 25, and
    all scoring 0.3 or more)."""
    from tallformer.atomic import atomic_path
    from tallformer.commands.detect import source_fps
    from tallformer.data.video import resolve_video
    from tallformer.plots import plot_timeline
    from tallformer.viewer import displayed, displayed_summary, write_viewer

    chosen = aset.subset(subset)[:TIMELINE_VIDEOS]
    pngs: list[Path] = []
    for video in chosen:
        dets = _segments(results.get(video.video_id, []))
        shown, cut = displayed(dets)
        truth = [(a.segment[0], a.segment[1], a.label, 1.0) for a in video.annotations]
        duration = video.duration or max([d[1] for d in dets + truth] or [1.0])
        pngs.append(plot_timeline(run / "timelines" / f"{video.video_id}.png", shown, classes, duration,
                                  ground_truth=truth, title=f"{video.video_id}: "
                                  f"{displayed_summary(len(shown), len(dets), cut)} against {len(truth)} "
                                  f"ground-truth instances ({source})"))
    out = {"timeline": run / "timeline.png"}
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in pngs]
    width = max(im.width for im in images)
    sheet = Image.new("RGB", (width, sum(im.height for im in images)), "white")
    y = 0
    for im in images:
        sheet.paste(im, (0, y))
        y += im.height
    with atomic_path(out["timeline"]) as tmp:
        sheet.save(tmp, format="PNG")
    first = chosen[0]
    dets = _segments(results.get(first.video_id, []))
    video_path = resolve_video(videos_dir, first.video_id)
    out["viewer"] = write_viewer(
        run / f"viewer_{first.video_id}.html", video=video_path,
        title=first.video_id, classes=classes, detections=dets,
        duration=first.duration or max([d[1] for d in dets] or [1.0]), fps=fps,
        ground_truth=[(a.segment[0], a.segment[1], a.label, 1.0) for a in first.annotations], source=source,
        source_fps=source_fps(video_path))
    return out


# --------------------------------------------------------------------------- the command


def demo_config(config: str, overrides: Sequence[str], out: str | None, quick: bool) -> Config:
    """The demo's config: `config` with `overrides` (after the ``--quick`` ones) and ``run_dir`` = `out`."""
    from tallformer.config import load_config

    over = [*(QUICK_OVERRIDES if quick else ()), *overrides]
    if out is not None:
        over.append(f"run_dir={out}")
    return load_config(config, over)


def run(args: argparse.Namespace) -> int:
    from tallformer.engine.run_lock import hold_folder
    from tallformer.errors import OutputError, output_error

    cfg = demo_config(args.config, args.overrides or [], args.out, args.quick)
    try:  # the run folder is the demo's from the start (a training run there stops it at once)
        with hold_folder(cfg.run_dir, "tallformer demo", option="--out"):
            return _demo(args, cfg)
    except OutputError as exc:
        raise output_error(cfg.run_dir, exc, "--out") from None


def _demo(args: argparse.Namespace, cfg: Config) -> int:
    from tallformer.data.annotations import load_annotations
    from tallformer.engine import cpu
    from tallformer.engine.checkpoint import load_model
    from tallformer.engine.device import resolve_device
    from tallformer.engine.factory import family_for
    from tallformer.engine.infer import evaluate_model
    from tallformer.engine.results import results_table
    from tallformer.engine.run_layout import CHECKPOINTS, LAST, LOG, synthetic_dir
    from tallformer.engine.train import train
    from tallformer.memory.selection import num_kept

    progress = not args.no_progress
    run_dir = Path(cfg.run_dir)
    stages = _Stages()
    device = resolve_device(cfg.train.device)
    if cpu.prepared(reproducible=True):  # the `tallformer` command set the process up
        cpu.apply(reproducible=True)
    print(f"tallformer demo{' --quick' if args.quick else ''}: {family_for(cfg).title} detector trained with a "
          f"memory bank (keep ratio {cfg.memory.keep_ratio:g}) on synthetic action videos, on {device}; "
          f"outputs in {run_dir}/")
    arithmetic = cpu.describe() if device.type == "cpu" else str(device)
    if device.type == "cpu":
        print(f"      CPU arithmetic: {arithmetic}")

    stages.begin(1, "data", "synthetic dataset: mp4 videos and ActivityNet annotations")
    # absolute, as `tallformer train` records it: the two commands share the data and a run
    folder = synthetic_dir(cfg.data.synthetic_task)
    data_dir = (run_dir / folder if args.quick else folder).resolve()
    cfg = synthetic_dataset(cfg, data_dir, QUICK_LENGTH_S if args.quick else FULL_LENGTH_S, progress)

    stages.begin(2, "bank", "memory bank of the training videos, from the initial (random) backbone")
    initial_bank(cfg, progress)

    chunks = cfg.data.num_frames // cfg.model.backbone.chunk_size
    stages.begin(3, "training", f"training from scratch: {cfg.train.max_epochs} epochs of batch "
                 f"{cfg.data.batch_size}, {num_kept(chunks, cfg.memory.keep_ratio)} of {chunks} chunks a "
                 "clip through the backbone, the rest from the bank")
    train(cfg, progress=progress)
    first, last, steps = loss_curve(run_dir / LOG)
    print(f"      loss {first:.3f} -> {last:.3f} (mean of the first and last 10 % of the logged steps, {steps} steps)")

    subset = cfg.data.test_subset
    stages.begin(4, "test", f"test on the {subset} subset")
    checkpoint = run_dir / CHECKPOINTS / LAST
    loaded = load_model(checkpoint, cfg)
    metrics = evaluate_model(cfg, loaded.model, str(cfg.data.annotations), subset, run_dir,
                             progress=progress, classes=loaded.classes, device=loaded.device)
    thresholds = list(cfg.test.tiou_thresholds)
    row = {"name": checkpoint.stem, "epoch": loaded.epoch, "mAP": metrics["mAP"],
           "average_mAP": metrics["average_mAP"]}
    print(results_table([row], thresholds))

    stages.begin(5, "figures", "timelines and the viewer")
    aset = load_annotations(str(cfg.data.annotations))
    results = json.loads((run_dir / "results.json").read_text())["results"]
    paths = figures(run_dir, aset, subset, results, loaded.classes, Path(str(cfg.data.videos)),
                    cfg.data.fps, f"{run_dir.name}/{checkpoint.name}")
    stages.end()
    _summary(run_dir, cfg, args.quick, stages, metrics, (first, last, steps), paths, arithmetic)
    lo, hi = min(thresholds), max(thresholds)
    print(f"\ndone in {_duration(stages.total)}: average mAP (tIoU {lo:g} to {hi:g}) "
          f"{100 * metrics['average_mAP']:.1f}% on {metrics['num_videos']} {subset} videos")
    print(f"outputs in {run_dir}/:")
    for name, what in (("metrics.json", "the evaluator's numbers"), ("results.json", "every detection"),
                       (LOG, "the training log"), (f"{CHECKPOINTS}/", "checkpoints (last.pt: the final one)"),
                       ("timeline.png", f"detections against ground truth, {TIMELINE_VIDEOS} {subset} videos"),
                       (paths["viewer"].name, "the HTML viewer (open it in a browser)"),
                       ("summary.json", "stage times, loss, mAP")):
        print(f"  {name:<28} {what}")
    video = aset.subset(subset)[min(1, len(aset.subset(subset)) - 1)].video_id
    print("try it on a video:")
    print(f"  tallformer detect {Path(str(cfg.data.videos)) / (video + '.mp4')} --checkpoint {checkpoint} "
          f"--gt {cfg.data.annotations} --out {run_dir / 'detect'}")
    return 0


def _summary(run_dir: Path, cfg: Config, quick: bool, stages: _Stages, metrics: dict[str, Any],
             loss: tuple[float, float, int], paths: dict[str, Path], arithmetic: str) -> None:
    from tallformer.atomic import write_json
    from tallformer.version import __version__

    write_json(run_dir / "summary.json", {
        "version": f"tallformer {__version__}",
        "arithmetic": arithmetic,  # the figures hold for these settings (tallformer.engine.cpu)
        "quick": quick,
        "keep_ratio": cfg.memory.keep_ratio,
        "seconds": {**{k: round(v, 1) for k, v in stages.seconds.items()}, "total": round(stages.total, 1)},
        "loss": {"first": loss[0], "last": loss[1], "steps": loss[2]},
        "tiou_thresholds": metrics["tiou_thresholds"],
        "mAP": metrics["mAP"],
        "average_mAP": metrics["average_mAP"],
        "data": {"annotations": cfg.data.annotations, "videos": cfg.data.videos},
        "timeline": paths["timeline"].name,
        "viewer": paths["viewer"].name,
    })
