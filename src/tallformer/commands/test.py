"""`tallformer test`: run checkpoints over a test subset, write results and metrics, compare them."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
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
    from tallformer.engine.family import Family, LoadedModel, Tester, TestOption


def register(sub: argparse._SubParsersAction) -> None:
    from tallformer.engine.factory import FAMILIES

    families = "\n\n".join(family.summary for family in FAMILIES.values())
    p = subparser(
        sub, "test",
        help="test checkpoints on a subset: results.json, metrics.json, one comparison table",
        description=(
            "Run each checkpoint over every video of the test subset by the test path of its "
            "detector family (model.kind, below), then score the detections with the ActivityNet "
            "protocol at test.tiou_thresholds (THUMOS14: 0.3 ... 0.7). Per checkpoint "
            "OUT/<name>/results.json (ActivityNet results) and OUT/<name>/metrics.json (as "
            "`tallformer eval --out`); the table comparing all checkpoints is printed and written "
            "to OUT/summary.json. Detections of classes the subset has no instance of are not "
            "scored (as `tallformer eval --ignore-unknown-labels`). Without --config each "
            "checkpoint is tested with the config it holds (KEY=VALUE overrides apply to it, e.g. "
            "data paths); with --config its model section must be the checkpoint's, and data "
            "paths left null in it come from each checkpoint's saved config. OUT is checked "
            "before the first checkpoint runs and held while the command writes there (a training "
            "run whose periodic tests write into the same folder holds it too).\n\n" + families
        ),
        example_lines=(
            "tallformer test --config thumos14_swin_b data.annotations=data/thumos14/annotations.json "
            "data.videos=data/thumos14/videos run_dir=runs/th14 "
            "--checkpoint runs/th14/checkpoints/epoch_0600.pt runs/th14/checkpoints/epoch_0700.pt",
            "tallformer test --config thumos14_swin_b run_dir=runs/th14 "
            "--checkpoint runs/th14/checkpoints/epoch_*.pt --out runs/th14/test_original "
            "test.protocol=original",
            "tallformer test --checkpoint runs/demo/checkpoints/last.pt --subset validation",
            "tallformer test --config anet_swin_b data.annotations=data/anet/annotations.json "
            "data.videos=data/anet/videos run_dir=runs/anet --checkpoint runs/anet/checkpoints/epoch_0010.pt "
            "--classifier builtin gt cuhk_val_simp_share.json --videos-list video_info_new.csv",
        ),
    )
    add_config_arguments(p, required=False, override_examples="test.protocol=original data.videos=DIR")
    p.add_argument("--checkpoint", required=True, nargs="+", metavar="FILE",
                   help="training checkpoints (RUN_DIR/checkpoints/*.pt), one or more")
    p.add_argument("--subset", default=None, metavar="NAME",
                   help="annotation subset to test (default: data.test_subset)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: RUN_DIR/test/, RUN_DIR the run folder of the first checkpoint, "
                        "or run_dir of --config)")
    p.add_argument("--device", default=None, metavar="DEV",
                   help="auto, cpu, cuda, cuda:1 (default: train.device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    for option in _family_options().values():  # the options the detector families add
        p.add_argument(option.flag, nargs=option.nargs, default=None, metavar=option.metavar, help=option.help)
    p.set_defaults(func=run)


def _family_options() -> dict[str, TestOption]:
    """Every family's test options by flag (a flag two families declare is one option)."""
    from tallformer.engine.factory import FAMILIES

    options: dict[str, TestOption] = {}
    for family in FAMILIES.values():
        for option in family.test_options:
            options.setdefault(option.flag, option)
    return options


def checkpoint_names(paths: Sequence[Path]) -> list[str]:
    """Output folder names: the file stems, made unique by the run folder's name
    (``runs/a/checkpoints/last.pt`` -> ``a_last``), then by a counter (``_2``, ...)."""
    from tallformer.engine.results import unique_name
    from tallformer.engine.run_layout import CHECKPOINTS

    def run_name(p: Path) -> str:
        parent = p.resolve().parent
        return parent.parent.name if parent.name == CHECKPOINTS else parent.name

    stems = [p.stem for p in paths]
    taken: set[str] = set()
    return [unique_name(f"{run_name(p)}_{p.stem}" if stems.count(p.stem) > 1 else p.stem, taken)
            for p in paths]


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


def _family_options_given(args: argparse.Namespace, cfg: Config, family: Family) -> dict[str, Any]:
    """The values of `family`'s test options; an option of another family is an error."""
    from tallformer.engine.factory import FAMILIES
    from tallformer.errors import TallformerError

    own = {option.flag for option in family.test_options}
    for option in _family_options().values():
        if option.flag in own or getattr(args, option.dest, None) is None:
            continue
        owners = [f for f in FAMILIES.values() if option.flag in {o.flag for o in f.test_options}]
        where = " or ".join(f"{f.title} configs (model.kind={f.kind}, e.g. --config {f.example_config})"
                            for f in owners)
        raise TallformerError(f"{option.flag}: only for {where}; this config is model.kind={cfg.model.kind}, "
                              "which has no such option: drop it")
    return {option.dest: getattr(args, option.dest, None) for option in family.test_options}


def _default_out(cfg: Config | None, first: Path) -> Path:
    """RUN_DIR/test: run_dir of --config, else the run folder of the first checkpoint (the
    folder above its ``checkpoints/``), else run_dir of the config it holds."""
    from tallformer.engine.checkpoint import load_checkpoint
    from tallformer.engine.run_layout import CHECKPOINTS, TEST_DIR

    if cfg is not None:
        return Path(cfg.run_dir) / TEST_DIR
    if first.parent.name == CHECKPOINTS:
        return first.parent.parent / TEST_DIR
    saved = load_checkpoint(first).get("config") or {}
    return Path(str(saved.get("run_dir", "runs/test"))) / TEST_DIR


def run(args: argparse.Namespace) -> int:
    from tallformer.atomic import check_writable
    from tallformer.errors import OutputError, output_error

    split_overrides(args, "checkpoint")
    for option in _family_options().values():
        if option.nargs in ("+", "*") and getattr(args, option.dest, None):
            split_overrides(args, option.dest)
    given = config_from_args(args) if args.config else None
    paths = [Path(p) for p in args.checkpoint]
    names = checkpoint_names(paths)
    out = Path(args.out) if args.out else _default_out(given, paths[0])
    check_writable(out, "--out")  # before any checkpoint runs

    from tallformer.engine.factory import family_for
    from tallformer.engine.run_lock import hold_folder

    tester = None
    if given is not None:  # a wrong option is said before anything runs
        family = family_for(given)
        tester = family.tester(given, _family_options_given(args, given, family))
    try:
        with hold_folder(out, "tallformer test", option="--out"):
            return _test(args, given, tester, paths, names, out)
    except OutputError as exc:
        raise output_error(out, exc, "--out") from None


def _test(args: argparse.Namespace, given: Config | None, tester: Tester | None, paths: list[Path],
          names: list[str], out: Path) -> int:
    """Each checkpoint tested into ``out/<name>/``, then the table and ``out/summary.json``;
    without --config (`given` None) each with the config it holds, the first one's family
    testing them all."""
    from tallformer.atomic import write_json
    from tallformer.engine.checkpoint import load_model
    from tallformer.engine.errors import InferenceError
    from tallformer.engine.factory import family_for

    rows: list[dict[str, Any]] = []
    cfg: Config | None = given
    for path, name in zip(paths, names, strict=True):
        loaded = load_model(path, given, overrides=[] if given is not None else list(args.overrides or []),
                            device=args.device)
        run_cfg = _with_data_paths(given, loaded) if given is not None else loaded.cfg
        if cfg is None:
            cfg = run_cfg
        if tester is None:
            family = family_for(cfg)
            tester = family.tester(cfg, _family_options_given(args, cfg, family))
        elif run_cfg.model.kind != cfg.model.kind:
            raise InferenceError(f"{path}: a model.kind={run_cfg.model.kind} checkpoint, but {paths[0]} is "
                                 f"model.kind={cfg.model.kind}; test them in separate commands")
        if run_cfg.data.annotations is None:
            raise InferenceError("data.annotations is not set (nor in the checkpoint's config): give "
                                 "the test annotations, e.g. data.annotations=data/thumos14/annotations.json")
        subset = args.subset or cfg.data.test_subset
        print(f"{name}: {path} (epoch {loaded.epoch}, step {loaded.step}) on subset {subset!r}"
              f"{tester.describe()}")
        rows += tester.test(run_cfg, loaded, out / name, name=name, subset=subset, progress=not args.no_progress)
        del loaded
    assert cfg is not None  # --checkpoint takes at least one
    assert tester is not None
    subset = args.subset or cfg.data.test_subset
    thresholds = list(cfg.test.tiou_thresholds)
    table = tester.table(rows, thresholds)
    print(table)
    summary = {"subset": subset, "model_kind": cfg.model.kind, "tiou_thresholds": thresholds,
               "checkpoints": rows, **tester.summary(rows), "table": table.splitlines()}
    write_json(out / "summary.json", summary)
    print(f"results and metrics per checkpoint in {out}/<name>/; summary in {out / 'summary.json'}")
    return 0
