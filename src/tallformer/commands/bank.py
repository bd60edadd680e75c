"""`tallformer bank build|info`: fill a long-term memory bank, and describe one.

`build` runs the backbone (eval mode, no gradients) over every training video of the
config and writes the bank (`tallformer.memory.build.build_bank`); it is resumable and
exits 1 listing the videos that failed. `info` prints a bank's meta summary. torch is
imported inside `func` only (`bank info` never imports it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tallformer.commands.common import add_config_arguments, config_from_args, examples, subparser


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bank",
        help="build and inspect long-term memory banks",
        description=(
            "The long-term memory bank holds one backbone feature row per 2 frames of every "
            "training video. 'bank build' fills it by running the backbone over the videos; "
            "'bank info' describes an existing bank."
        ),
        epilog=examples(
            "tallformer bank build --config configs/thumos14_swin_b.yaml --out banks/thumos14_swin_b "
            "--weights pretrained/swin_b_k400_22k.pth --device cuda",
            "tallformer bank info banks/thumos14_swin_b",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inner = parser.add_subparsers(dest="bank_command", metavar="ACTION", title="actions")
    _register_build(inner)
    _register_info(inner)
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
            "built."
        ),
        example_lines=(
            "tallformer bank build --config configs/thumos14_swin_b.yaml --out banks/thumos14_swin_b "
            "--weights pretrained/swin_b_k400_22k.pth --device cuda --batch-chunks 16",
            "tallformer bank build --config configs/demo.yaml --out banks/demo "
            "data.annotations=data/synthetic/annotations.json data.videos=data/synthetic/videos",
            "tallformer bank build --config configs/thumos14_swin_t.yaml --out banks/t "
            "memory.dtype=float32   # fp32 rows (twice the disk)",
        ),
    )
    add_config_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="bank folder (created; an unfinished bank there is resumed)")
    p.add_argument("--weights", metavar="FILE", default=None,
                   help="backbone checkpoint (official Video Swin, torchvision or tallformer); "
                        "default: model.backbone.weights")
    p.add_argument("--device", default="cpu", metavar="cpu|cuda",
                   help="where the backbone runs: cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--batch-chunks", type=int, default=8, metavar="N",
                   help="32-frame chunks per backbone call (default: 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_build)


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


# --------------------------------------------------------------------------- build


def run_build(args: argparse.Namespace) -> int:
    from tallformer.data.annotations import AnnotationError
    from tallformer.memory.bank import BankError
    from tallformer.memory.build import BuildError, build_bank
    from tallformer.models.weights import WeightsError

    cfg = config_from_args(args)
    if args.batch_chunks < 1:
        print(f"tallformer bank build: --batch-chunks must be >= 1, got {args.batch_chunks}",
              file=sys.stderr)
        return 2
    try:
        report = build_bank(cfg, args.out, weights=args.weights, device=args.device,
                            batch_chunks=args.batch_chunks, progress=not args.quiet)
    except (BuildError, BankError, AnnotationError, WeightsError) as exc:
        print(f"tallformer bank build: error: {exc}", file=sys.stderr)
        return 2
    print(report.summary().split("\n", 1)[0])
    if report.failed:
        print(f"tallformer bank build: {len(report.failed)} video(s) failed (not in the bank "
              "or not marked complete); fix them and re-run the same command:", file=sys.stderr)
        for vid, msg in report.failed.items():
            print(f"  {vid}: {msg}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- info


def bank_info(path: str | Path) -> dict[str, Any]:
    """The summary `bank info` prints, as a dict (JSON-serialisable)."""
    from tallformer.memory.bank import META, MemoryBank

    bank = MemoryBank.open(path, "r")
    meta = bank.meta
    stats = bank.stats()
    disk = (Path(path) / META).stat().st_size
    missing_files = []
    for vid in bank.videos:
        f = bank.path(vid)
        if f.is_file():
            disk += f.stat().st_size
        else:
            missing_files.append(vid)
    return {
        "path": str(Path(path)),
        "videos": stats["videos"],
        "complete": stats["complete"],
        "incomplete": [v for v in bank.videos if not bank.is_complete(v)],
        "missing_files": missing_files,
        "rows": stats["rows"],
        "frames": sum(bank.num_frames(v) for v in bank.videos),
        "feature_dim": bank.feature_dim,
        "dtype": bank.dtype,
        "frames_per_row": bank.frames_per_row,
        "chunk_size": bank.chunk_size,
        "fps": bank.fps,
        "backbone": meta["backbone"],
        "weights": meta["weights"],
        "feature_bytes": stats["bytes"],
        "disk_bytes": disk,
        "fingerprint": bank.fingerprint(),
    }


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _shown(items: list[str], n: int = 10) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def run_info(args: argparse.Namespace) -> int:
    from tallformer.memory.bank import BankError

    try:
        info = bank_info(args.dir)
    except BankError as exc:
        print(f"tallformer bank info: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
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
        lines.append(f"incomplete    {_shown(info['incomplete'])} (re-run 'tallformer bank build' "
                     "with the same config to finish them)")
    if info["missing_files"]:
        lines.append(f"missing files {_shown(info['missing_files'])}")
    print("\n".join(lines))
    return 0
