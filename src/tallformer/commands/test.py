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
            "config come from each checkpoint's saved config.\n\n"
            "ActivityNet (model.kind=afsd, e.g. --config anet_swin_b): each video in one pass (its "
            "first data.num_frames frames, black-padded), class-agnostic soft-NMS proposals "
            "labelled by the video-level classifier(s) of --classifier: builtin (the detector's "
            "action head, top-2), gt (the ground-truth label: an oracle upper bound, marked so in "
            "the results and the table) or FILE (a classifier file {\"results\": {video: [scores]}, "
            "\"class\": [names]}, e.g. the CUHK ActivityNet-2016 validation file; top-2); several "
            "share one pass. Per checkpoint and classifier OUT/<name>/<classifier>/results.json "
            "(naming its classifier), metrics.json (protocol all) and, with --videos-list, "
            "metrics_list.json. Protocols: 'all' scores against every video of the subset "
            "(ActivityNet-1.3 validation: 4926; videos not tested count as misses); 'list' against "
            "the videos of --videos-list only (e.g. BSN's video_info_new.csv: the 4728 still "
            "downloadable). The table states the protocol of every number."
        ),
        example_lines=(
            "tallformer test --config thumos14_swin_b data.annotations=data/thumos14/annotations.json "
            "data.videos=data/thumos14/videos run_dir=runs/th14 "
            "--checkpoint runs/th14/checkpoints/epoch_0600.pt runs/th14/checkpoints/epoch_0700.pt",
            "tallformer test --config thumos14_swin_b run_dir=runs/th14 "
            "--checkpoint runs/th14/checkpoints/epoch_*.pt --out runs/th14/test_original "
            "test.protocol=original",
            "tallformer test --config demo --checkpoint runs/demo/checkpoints/last.pt --subset validation",
            "tallformer test --config anet_swin_b data.annotations=data/anet/annotations.json "
            "data.videos=data/anet/videos run_dir=runs/anet --checkpoint runs/anet/checkpoints/epoch_0010.pt "
            "--classifier builtin gt cuhk_val_simp_share.json --videos-list video_info_new.csv",
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
    p.add_argument("--classifier", nargs="+", default=None, metavar="builtin|gt|FILE",
                   help="ActivityNet (model.kind=afsd) only: video-level classifier(s) labelling the "
                        "proposals: builtin (default; the action head's top-2), gt (oracle: the "
                        "ground-truth label, an upper bound) or a classifier FILE "
                        '({"results": {video: [scores]}, "class": [names]}); one results set each')
    p.add_argument("--videos-list", default=None, metavar="FILE",
                   help="ActivityNet (model.kind=afsd) only: test only these videos (a CSV with a "
                        "'video' column such as BSN's video_info_new.csv, a JSON list or one id per "
                        "line) and score both protocols: all videos of the subset (the untested "
                        "ones count as misses) and the listed ones")
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


def afsd_table(rows: Sequence[Mapping[str, Any]], thresholds: Sequence[float]) -> str:
    """mAP (%) per tIoU and the average, one row per (checkpoint, classifier, protocol); the
    best average of each (classifier, protocol) marked when several checkpoints are tested;
    the protocols and the oracle explained under the table."""
    def protocol(r: Mapping[str, Any]) -> str:
        return f"{r['protocol']} ({r['num_videos']})"

    width = max([10, *(len(r["name"]) for r in rows)])
    cw = max([10, *(len(r["classifier_title"]) for r in rows)])
    pw = max([8, *(len(protocol(r)) for r in rows)])
    head = (f"{'checkpoint':<{width}}  {'classifier':<{cw}}  {'protocol':<{pw}}  {'epoch':>5}  "
            + "  ".join(f"{t:>6.2f}" for t in thresholds) + f"  {'avg':>6}")
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["classifier"], r["protocol"]), []).append(i)
    best = {max(ids, key=lambda i: rows[i]["average_mAP"]) for ids in groups.values()
            if len({rows[i]["name"] for i in ids}) > 1}
    lines = [head]
    for i, r in enumerate(rows):
        epoch = "" if r.get("epoch") is None else str(r["epoch"])
        cells = "  ".join(f"{100 * m:>6.2f}" for m in r["mAP"])
        mark = "  <- best" if i in best else ""
        lines.append(f"{r['name']:<{width}}  {r['classifier_title']:<{cw}}  {protocol(r):<{pw}}  "
                     f"{epoch:>5}  {cells}  {100 * r['average_mAP']:>6.2f}{mark}")
    described: dict[str, str] = {}
    for r in rows:
        described.setdefault(r["protocol"], r["protocol_description"])
    for name, text in described.items():
        lines.append(f"protocol {name}: {text}")
    if any(r["oracle"] for r in rows):
        lines.append("gt (oracle): the ground-truth video labels; an upper bound, not comparable "
                     "with published numbers")
    return "\n".join(lines)


def _run_afsd(args: argparse.Namespace, cfg: Config) -> int:
    """`tallformer test` of ActivityNet checkpoints: classifiers x protocols per checkpoint."""
    from tallformer.atomic import write_json
    from tallformer.engine.afsd_infer import (
        evaluate_afsd,
        parse_classifier,
        unique_names,
    )
    from tallformer.engine.infer import InferenceError, load_model
    from tallformer.models.afsd import AFSD

    specs = unique_names([parse_classifier(v) for v in (args.classifier or ["builtin"])])
    paths = [Path(p) for p in args.checkpoint]
    names = checkpoint_names(paths)
    out = Path(args.out) if args.out else Path(cfg.run_dir) / "test"
    subset = args.subset or cfg.data.test_subset
    thresholds = list(cfg.test.tiou_thresholds)
    rows: list[dict[str, Any]] = []
    protocols: dict[str, Any] = {}
    for path, name in zip(paths, names, strict=True):
        loaded = load_model(path, cfg, device=args.device)
        run_cfg = _with_data_paths(cfg, loaded)
        if run_cfg.data.annotations is None:
            raise InferenceError("data.annotations is not set (nor in the checkpoint's config): give "
                                 "the test annotations, e.g. data.annotations=data/anet/annotations.json")
        print(f"{name}: {path} (epoch {loaded.epoch}, step {loaded.step}) on subset {subset!r}, "
              f"classifiers {', '.join(s.title for s in specs)}")
        model = loaded.model
        if not isinstance(model, AFSD):
            raise InferenceError(f"{path}: not an ActivityNet (model.kind=afsd) checkpoint")
        found = evaluate_afsd(run_cfg, model, run_cfg.data.annotations, subset, out / name,
                              classifiers=specs, video_list=args.videos_list, classes=loaded.classes,
                              device=loaded.device, progress=not args.no_progress)
        protocols = found["protocols"]
        for spec in specs:
            metrics = found["classifiers"][spec.name]["metrics"]
            for protocol, m in metrics.items():
                where = out / name / spec.name
                rows.append({"name": name, "checkpoint": str(path), "epoch": loaded.epoch,
                             "step": loaded.step, "classifier": spec.name,
                             "classifier_title": spec.title, "oracle": spec.oracle,
                             "protocol": protocol, "num_videos": m["num_videos"],
                             "protocol_description": protocols[protocol]["description"],
                             "mAP": m["mAP"], "average_mAP": m["average_mAP"],
                             "results": str(where / "results.json"),
                             "metrics": str(where / ("metrics.json" if protocol == "all"
                                                     else f"metrics_{protocol}.json"))})
        del loaded
    table = afsd_table(rows, thresholds)
    print(table)
    first = [r for r in rows if r["classifier"] == specs[0].name and r["protocol"] == "all"]
    summary = {"subset": subset, "model_kind": cfg.model.kind, "tiou_thresholds": thresholds,
               "classifiers": [s.record() for s in specs], "video_list": args.videos_list,
               "protocols": protocols, "checkpoints": rows,
               "best": max(first, key=lambda r: r["average_mAP"])["name"],
               "best_by": f"average mAP, classifier {specs[0].name}, protocol all",
               "table": table.splitlines()}
    write_json(out / "summary.json", summary)
    print(f"results and metrics per checkpoint and classifier in {out}/<name>/<classifier>/; "
          f"summary in {out / 'summary.json'}")
    return 0


def run(args: argparse.Namespace) -> int:
    from tallformer.atomic import write_json
    from tallformer.engine.infer import InferenceError, evaluate_model, load_model
    from tallformer.errors import TallformerError

    split_overrides(args, "checkpoint")
    if args.classifier:
        split_overrides(args, "classifier")
    cfg = config_from_args(args)
    if cfg.model.kind == "afsd":
        return _run_afsd(args, cfg)
    given = [opt for opt, value in (("--classifier", args.classifier), ("--videos-list", args.videos_list))
             if value]
    if given:
        raise TallformerError(f"{' and '.join(given)}: only for ActivityNet configs (model.kind=afsd, "
                              f"e.g. --config anet_swin_b); this config is model.kind={cfg.model.kind}, "
                              "whose detector labels every detection itself: drop the option")
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
