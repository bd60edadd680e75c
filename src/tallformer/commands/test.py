"""`tallformer test`: run checkpoints over a test subset, write results and metrics, compare them."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tallformer.commands.common import (
    add_config_arguments,
    config_from_args,
    split_overrides,
    subparser,
)

if TYPE_CHECKING:
    from tallformer.config import Config
    from tallformer.engine.infer import LoadedModel


def register(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub, "test",
        help="test checkpoints on a subset: results.json, metrics.json, one comparison table",
        description=(
            "Run each checkpoint over every video of the test subset (sliding windows of "
            "data.num_frames frames, all windows of a video merged by class-wise NMS, the best "
            "test.max_per_video kept), then score the detections with the ActivityNet protocol "
            "at test.tiou_thresholds (THUMOS14: 0.3 ... 0.7). Per checkpoint OUT/<name>/results.json "
            "(ActivityNet results) and OUT/<name>/metrics.json (as `tallformer eval --out`); "
            "the table comparing all checkpoints is printed and written to OUT/summary.json. "
            "test.protocol=chunk_grid (the default) puts windows on the backbone's chunk grid and "
            "runs each chunk once per video; test.protocol=original uses the original's stride "
            "360 windows exactly. Detections of classes the subset has no instance of are not "
            "scored (as `tallformer eval --ignore-unknown-labels`). Data paths left null in the "
            "config come from each checkpoint's saved config."
        ),
        example_lines=(
            "tallformer test --config thumos14_swin_b data.annotations=data/thumos14/annotations.json "
            "data.videos=data/thumos14/videos run_dir=runs/th14 "
            "--checkpoint runs/th14/checkpoints/epoch_0600.pt runs/th14/checkpoints/epoch_0700.pt",
            "tallformer test --config thumos14_swin_b run_dir=runs/th14 "
            "--checkpoint runs/th14/checkpoints/epoch_*.pt --out runs/th14/test_original "
            "test.protocol=original",
            "tallformer test --config demo --checkpoint runs/demo/checkpoints/last.pt --subset validation",
        ),
    )
    add_config_arguments(p)
    p.add_argument("--checkpoint", required=True, nargs="+", metavar="FILE",
                   help="training checkpoints (RUN_DIR/checkpoints/*.pt), one or more")
    p.add_argument("--subset", default=None, metavar="NAME",
                   help="annotation subset to test (default: data.test_subset)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: RUN_DIR/test/ with run_dir from the config)")
    p.add_argument("--device", default=None, metavar="DEV",
                   help="auto, cpu, cuda, cuda:1 (default: train.device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def checkpoint_names(paths: Sequence[Path]) -> list[str]:
    """Output folder names: the file stems, made unique by the run folder's name
    (``runs/a/checkpoints/last.pt`` -> ``a_last``), then by a counter."""
    def run_name(p: Path) -> str:
        parent = p.resolve().parent
        return parent.parent.name if parent.name == "checkpoints" else parent.name

    stems = [p.stem for p in paths]
    names = [f"{run_name(p)}_{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        k = seen.get(name, 0)
        seen[name] = k + 1
        out.append(name if k == 0 else f"{name}_{k + 1}")
    return out


def _with_data_paths(cfg: Config, loaded: LoadedModel) -> Config:
    """Fill null data.annotations / data.videos from the checkpoint's saved config."""
    import dataclasses

    d, saved = cfg.data, loaded.saved_cfg.data
    if d.annotations is not None and d.videos is not None:
        return cfg
    filled = dataclasses.replace(d, annotations=d.annotations or saved.annotations,
                                 videos=d.videos or saved.videos)
    print(f"data paths from {loaded.path}: annotations={filled.annotations} videos={filled.videos}")
    return dataclasses.replace(cfg, data=filled)


def comparison_table(rows: Sequence[Mapping[str, Any]], thresholds: Sequence[float]) -> str:
    """mAP (%) per tIoU and the average, one row per checkpoint; the best average marked."""
    width = max([10, *(len(r["name"]) for r in rows)])
    head = f"{'checkpoint':<{width}}  {'epoch':>5}  " + "  ".join(f"{t:>6.2f}" for t in thresholds) + f"  {'avg':>6}"
    best = max(range(len(rows)), key=lambda i: rows[i]["average_mAP"]) if rows else -1
    lines = [head]
    for i, r in enumerate(rows):
        epoch = "" if r.get("epoch") is None else str(r["epoch"])
        cells = "  ".join(f"{100 * m:>6.2f}" for m in r["mAP"])
        mark = "  <- best" if i == best and len(rows) > 1 else ""
        lines.append(f"{r['name']:<{width}}  {epoch:>5}  {cells}  {100 * r['average_mAP']:>6.2f}{mark}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from tallformer.atomic import write_json
    from tallformer.engine.infer import InferenceError, evaluate_model, load_model

    split_overrides(args, "checkpoint")
    cfg = config_from_args(args)
    paths = [Path(p) for p in args.checkpoint]
    names = checkpoint_names(paths)
    out = Path(args.out) if args.out else Path(cfg.run_dir) / "test"
    device = args.device  # None: train.device
    subset = args.subset or cfg.data.test_subset
    rows: list[dict[str, Any]] = []
    for path, name in zip(paths, names, strict=True):
        loaded = load_model(path, cfg, device=device)
        run_cfg = _with_data_paths(cfg, loaded)
        if run_cfg.data.annotations is None:
            raise InferenceError("data.annotations is not set (nor in the checkpoint's config): give "
                                 "the test annotations, e.g. data.annotations=data/thumos14/annotations.json")
        print(f"{name}: {path} (epoch {loaded.epoch}, step {loaded.step}) on subset {subset!r}")
        metrics = evaluate_model(run_cfg, loaded.model, run_cfg.data.annotations, subset, out / name,
                                 progress=not args.no_progress, classes=loaded.classes,
                                 device=loaded.device)
        rows.append({"name": name, "checkpoint": str(path), "epoch": loaded.epoch, "step": loaded.step,
                     "mAP": metrics["mAP"], "average_mAP": metrics["average_mAP"],
                     "results": str(out / name / "results.json"),
                     "metrics": str(out / name / "metrics.json")})
        del loaded
    thresholds = list(cfg.test.tiou_thresholds)
    table = comparison_table(rows, thresholds)
    print(table)
    best = max(rows, key=lambda r: r["average_mAP"])["name"]
    summary = {"subset": subset, "protocol": cfg.test.protocol, "tiou_thresholds": thresholds,
               "checkpoints": rows, "best": best, "table": table.splitlines()}
    write_json(out / "summary.json", summary)
    print(f"results and metrics per checkpoint in {out}/<name>/; summary in {out / 'summary.json'}")
    return 0
