"""`tallformer bank build|import|info|merge`: fill a long-term memory bank, import the
original's, describe one, merge shards.

`build` runs the backbone (eval mode, no gradients) over every training video of the
config and writes the bank (`tallformer.engine.bank_build.build_bank`); it is resumable and
exits 1 listing the videos that failed. `info` prints a bank's summary
(`MemoryBank.summary`). `merge` puts the node shards of a `memory.placement=node_local`
run back into one bank (`tallformer.engine.run_bank.merge_node_banks`). `import` copies the
original release's bank folder into ours (`tallformer.engine.bank_import.import_bank`). torch is imported inside `func` only (`bank info` never imports
it). Errors propagate to `tallformer.cli.main`, which prints them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tallformer.commands.common import (
    add_config_arguments,
    add_device_argument,
    add_progress_argument,
    config_from_args,
    examples,
    subparser,
)
from tallformer.errors import TallformerError, name_list

# config keys `bank build` reads (the override examples of its --help)
_BUILD_OVERRIDES = ("data.annotations=FILE data.videos=DIR data.train_subset=NAME data.fps=15 "
                    "memory.dtype=float32 model.backbone.arch=swin_t")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bank",
        help="build and inspect long-term memory banks",
        description=(
            "The long-term memory bank holds one backbone feature row per 2 frames of every "
            "training video. 'bank build' fills it by running the backbone over the videos; "
            "'bank import' copies the original release's bank; 'bank info' describes an existing bank."
        ),
        epilog=examples(
            "tallformer bank build --config thumos14_swin_b --out banks/thumos14_swin_b "
            "--weights pretrained/swin_b.pth --device cuda "
            "data.annotations=data/thumos14/annotations.json data.videos=data/thumos14/videos",
            "tallformer bank import data/thumos14/memory_mechanism/feat_swinb_15fps_256x256_crop224x224/val "
            "--out banks/thumos14_swin_b --config thumos14_swin_b data.annotations=data/thumos14/annotations.json",
            "tallformer bank info banks/thumos14_swin_b",
            "tallformer bank merge --run runs/th14 --out banks/th14_merged nodes/node0 nodes/node1",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inner = parser.add_subparsers(dest="bank_command", metavar="ACTION", title="actions")
    _register_build(inner)
    _register_import(inner)
    _register_info(inner)
    _register_merge(inner)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _register_build(inner: argparse._SubParsersAction) -> None:
    p = subparser(
        inner, "build",
        help="run the backbone over every training video and write the bank",
        description=(
            "Run the backbone (eval mode, no gradients) over every video of data.train_subset "
            "in data.annotations, chunk by chunk (32 frames from frame 0; the last partial "
            "chunk zero-padded, its padded rows dropped), on centre-cropped, normalised frames "
            "decoded from data.videos at data.fps, and write one feature row per 2 frames to "
            "OUT (fp16 unless memory.dtype=float32). Resumable: re-running the same command "
            "skips the videos already finished and redoes any half-written one. Videos that "
            "cannot be read are listed at the end and the exit status is 1; the others are "
            "built. An existing bank in OUT must have the same settings, and its videos the "
            "same source files (another dataset's videos with the same ids are refused; "
            "--overwrite rebuilds them). Before the backbone runs: the annotations' classes "
            "are checked against model.num_classes (as `tallformer train` does), OUT is held "
            "(another build into it stops at once, naming this one) and its disk must hold the "
            "whole bank (the space of each file is reserved when it is created)."
        ),
        example_lines=(
            "tallformer bank build --config thumos14_swin_b --out banks/thumos14_swin_b "
            "--weights pretrained/swin_b.pth --device cuda --batch-chunks 16 "
            "data.annotations=data/thumos14/annotations.json data.videos=data/thumos14/videos",
            "tallformer bank build --config demo --out banks/demo "
            "data.annotations=data/synthetic/annotations.json data.videos=data/synthetic/videos",
            "tallformer bank build --config thumos14_swin_b --out banks/thumos14_swin_b_fp32 "
            "--weights pretrained/swin_b.pth data.annotations=data/thumos14/annotations.json "
            "data.videos=data/thumos14/videos memory.dtype=float32   # fp32 rows (twice the disk)",
        ),
    )
    add_config_arguments(p, override_examples=_BUILD_OVERRIDES)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="bank folder (created; an unfinished bank there is resumed)")
    p.add_argument("--weights", metavar="FILE", default=None,
                   help="backbone checkpoint (official Video Swin, torchvision or tallformer); "
                        "default: model.backbone.weights")
    add_device_argument(p, "train.device of the config; auto: CUDA when available")
    p.add_argument("--batch-chunks", type=int, default=8, metavar="N",
                   help="32-frame chunks per backbone call (default: 8)")
    p.add_argument("--overwrite", action="store_true",
                   help="rebuild the videos already in OUT whose frame count or source file "
                        "differs from the videos now (default: refuse, naming them)")
    add_progress_argument(p, old="--quiet")
    p.set_defaults(func=run_build)


def _register_import(inner: argparse._SubParsersAction) -> None:
    p = subparser(
        inner, "import",
        help="copy the original release's bank (<video>.mmap + meta JSON) into a tallformer bank",
        description=(
            "Read the original's bank folder ORIG_DIR (one raw float32 <video>.mmap per video, the "
            "shapes only in a side meta JSON: meta_val.json beside THUMOS14's val/ folder, meta.json "
            "in ActivityNet's) and write our bank OUT (fp16 unless --dtype float32 or "
            "memory.dtype=float32). Every video is checked against the meta (file size, rows = "
            "ceil(num_frames / 2)), the config (the backbone's feature dim) and the annotations "
            "(data.annotations, its data.train_subset: the video is there and its frame count fits "
            "the duration); what does not fit is listed, one line per problem, and left out (exit "
            "status 1). Finished videos are marked complete one by one: re-running the same command "
            "resumes. meta.json records where each video came from."
        ),
        example_lines=(
            "tallformer bank import data/thumos14/memory_mechanism/feat_swinb_15fps_256x256_crop224x224/val "
            "--out banks/thumos14_swin_b --config thumos14_swin_b "
            "data.annotations=data/thumos14/annotations.json",
            "tallformer bank import data/anet/memory_mechanism/feat_swinb_k600_256x256_768frames "
            "--out banks/anet_swin_b --config anet_swin_b data.annotations=data/anet/annotations.json",
            "tallformer bank import ORIG_DIR --meta ORIG_DIR/../meta_val.json --out banks/th14_fp32 "
            "--config thumos14_swin_b --dtype float32 data.annotations=data/thumos14/annotations.json",
        ),
    )
    p.add_argument("orig_dir", metavar="ORIG_DIR", help="the original's bank folder of <video>.mmap files")
    add_config_arguments(p, override_examples="data.annotations=FILE data.train_subset=NAME")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="our bank folder (created; an unfinished import there is resumed)")
    p.add_argument("--meta", default=None, metavar="FILE",
                   help="the original's meta JSON (default: the one meta*.json in or beside ORIG_DIR)")
    p.add_argument("--dtype", choices=("float16", "float32"), default=None,
                   help="row type of our bank (default: memory.dtype of the config, float16)")
    add_progress_argument(p, "no progress bar", old="--quiet")
    p.set_defaults(func=run_import)


def _register_info(inner: argparse._SubParsersAction) -> None:
    p = subparser(
        inner, "info",
        help="print a bank's summary: videos, rows, dim, dtype, completeness, size, fingerprint",
        description=(
            "Read DIR/meta.json and print what the bank holds: number of videos and how many "
            "are complete (the others were interrupted or failed: re-run 'bank build'), rows, "
            "feature dim, dtype, frames per row, chunk size, fps, the backbone and weights it "
            "was built from, the size of its files on disk and its fingerprint (the SHA-256 "
            "that training runs record)."
        ),
        example_lines=(
            "tallformer bank info banks/thumos14_swin_b",
            "tallformer bank info banks/demo --json",
        ),
    )
    p.add_argument("dir", metavar="DIR", help="bank folder (holds meta.json)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run_info)


def _register_merge(inner: argparse._SubParsersAction) -> None:
    p = subparser(
        inner, "merge",
        help="merge the node shards of a node-local run (or any banks of one build) into one bank",
        description=(
            "Write one bank to OUT from the node folders of a memory.placement=node_local run "
            "(each node's memory.node_dir: its shard.json says which videos that node owns, "
            "and those are taken from its bank) or from bank folders (all their videos). "
            "Every video must come from exactly one source and every source must have the same "
            "settings. A node folder whose journal holds bank writes after the last checkpoint "
            "(a killed run) is first rolled back to the checkpoint of --run (the node folder's "
            "bank is changed, as a resume would change it); with --run every node's shard must "
            "be given and match the checkpoint. Use it to re-shard a run for another number of "
            "nodes (a new run with memory.bank_dir=OUT), or to keep the trained bank."
        ),
        example_lines=(
            "tallformer bank merge --run runs/th14 --out banks/th14_merged shards/node0 shards/node1",
            "tallformer bank merge --out banks/full banks/part0 banks/part1",
        ),
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="node folders (memory.node_dir of each node, copied to this machine) or banks")
    p.add_argument("--out", required=True, metavar="DIR", help="the merged bank (a new or empty folder)")
    p.add_argument("--run", metavar="RUN_DIR", default=None,
                   help="the run the shards belong to: undo writes after its last checkpoint and "
                        "check every shard against it")
    add_progress_argument(p, "no progress bar", old="--quiet")
    p.set_defaults(func=run_merge)


# --------------------------------------------------------------------------- build


def run_build(args: argparse.Namespace) -> int:
    from tallformer.atomic import check_writable
    from tallformer.data.annotations import check_num_classes, load_annotations
    from tallformer.errors import OutputError, output_error

    if args.batch_chunks < 1:
        raise TallformerError(f"--batch-chunks must be >= 1, got {args.batch_chunks}")
    cfg = config_from_args(args)
    if cfg.data.annotations:  # the check `tallformer train` makes, before a long build
        check_num_classes(load_annotations(cfg.data.annotations), cfg.model.num_classes)
    check_writable(args.out, "--out")  # before torch loads

    from tallformer.engine.bank_build import build_bank
    from tallformer.engine.device import resolve_device

    # --device, else the config's train.device (an error then names that key)
    device = resolve_device(cfg.train.device) if args.device is None else args.device
    try:
        report = build_bank(cfg, args.out, weights=args.weights, device=device,
                            batch_chunks=args.batch_chunks, overwrite=args.overwrite,
                            progress=not args.no_progress)
    except OutputError as exc:
        raise output_error(args.out, exc, "--out") from None
    print(report.summary().split("\n", 1)[0])
    if report.failed:
        print(f"tallformer bank build: {len(report.failed)} video(s) failed (not in the bank "
              "or not marked complete); fix them and re-run the same command:", file=sys.stderr)
        for vid, msg in report.failed.items():
            print(f"  {vid}: {msg}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- import


def run_import(args: argparse.Namespace) -> int:
    from tallformer.engine.bank_import import import_bank

    report = import_bank(config_from_args(args), args.orig_dir, args.out, meta_file=args.meta,
                         dtype=args.dtype, progress=not args.no_progress)
    head, *rest = report.summary().split("\n")
    print(head)
    for line in rest:
        print(line, file=sys.stderr if not line.startswith("  not in the training") else sys.stdout)
    return 0 if report.ok else 1


# --------------------------------------------------------------------------- info


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _lines(info: dict[str, Any]) -> list[str]:
    bb = info["backbone"] or {}
    seconds = info["frames"] / info["fps"] if info["fps"] else 0.0
    span = f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
    lines = [
        f"memory bank   {info['path']}",
        f"videos        {info['videos']} ({info['complete']} complete)",
        f"rows          {info['rows']:,} ({info['frames']:,} frames, {span} at "
        f"{info['fps']:g} fps; {info['frames_per_row']} frames per row)",
        f"features      dim {info['feature_dim']}, {info['dtype']}, chunk {info['chunk_size']} frames",
        f"backbone      {bb.get('arch', 'unknown')}, weights {info['weights'] or 'none (random init)'}",
        f"size          {_size(info['disk_bytes'])} on disk ({_size(info['feature_bytes'])} of features)",
        f"fingerprint   {info['fingerprint']}",
    ]
    if info["incomplete"]:
        lines.append(f"incomplete    {name_list(info['incomplete'])} (re-run 'tallformer bank "
                     "build' with the same config to finish them)")
    if info["missing_files"]:
        lines.append(f"missing files {name_list(info['missing_files'])}")
    return lines


def run_info(args: argparse.Namespace) -> int:
    from tallformer.memory.bank import MemoryBank

    info = MemoryBank.open(args.dir, "r").summary()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print("\n".join(_lines(info)))
    return 0


# --------------------------------------------------------------------------- merge


def run_merge(args: argparse.Namespace) -> int:
    from tallformer.engine.run_bank import merge_node_banks

    bank = merge_node_banks(args.sources, args.out, run_dir=args.run, progress=not args.no_progress)
    stats = bank.stats()
    print(f"merged {len(args.sources)} source(s) into {bank.root}: {stats['videos']} videos, "
          f"{stats['rows']:,} rows, fingerprint {bank.fingerprint()[:12]}")
    return 0
