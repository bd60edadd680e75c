"""`tallformer prepare videos|frames|synthetic`: re-encoded videos, frame folders, synthetic data.

The libraries (PyAV, numpy) are imported inside the command functions, so registering
these parsers costs nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from tallformer.commands.common import subparser

# tallformer.data.synthetic.TASKS, spelled out: registering the commands imports no numpy
SYNTHETIC_TASKS = ("shapes", "drift")

if TYPE_CHECKING:
    from tallformer.data.prepare import PrepareResult


def _size(text: str) -> tuple[int, int]:
    """argparse type: ``WIDTHxHEIGHT`` -> (H, W)."""
    from tallformer.data.prepare import PrepareError, parse_size

    try:
        return parse_size(text)
    except PrepareError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _report(what: str, result: PrepareResult) -> int:
    """Print the summary of a PrepareResult; exit status 1 when any input failed."""
    done, skipped, failed = result.done, result.skipped, result.failed
    print(f"prepare {what}: {len(done)} done, {len(skipped)} already finished (skipped), "
          f"{len(failed)} failed -> {result.out_dir}")
    if failed:
        print(f"prepare {what}: {len(failed)} input(s) failed and were skipped:", file=sys.stderr)
        for message in failed.values():
            print(f"  {message}", file=sys.stderr)
        print("fix or remove them and run the same command again: finished outputs are kept",
              file=sys.stderr)
        return 1
    return 0


def _run_videos(args: argparse.Namespace) -> int:
    from tallformer.data.prepare import prepare_videos

    result = prepare_videos(args.videos, args.out, args.size, fps=args.fps,
                            num_frames=args.num_frames, workers=args.workers,
                            gop=args.gop, crf=args.crf)
    return _report("videos", result)


def _run_frames(args: argparse.Namespace) -> int:
    from tallformer.data.prepare import prepare_frames

    result = prepare_frames(args.videos, args.out, args.fps, args.size, fmt=args.format,
                            workers=args.workers)
    return _report("frames", result)


def _run_synthetic(args: argparse.Namespace) -> int:
    import time

    from tallformer.atomic import check_writable
    from tallformer.data.synthetic import generate_synthetic_dataset
    from tallformer.errors import OutputError, output_error

    check_writable(args.out, "--out")
    start = time.perf_counter()
    try:
        path = generate_synthetic_dataset(
            args.out, args.num_videos, args.seed, num_classes=args.num_classes, size=args.size,
            fps=args.fps, min_length=args.min_length, max_length=args.max_length,
            val_fraction=args.val_fraction, workers=args.workers, task=args.task,
        )
    except OutputError as exc:
        raise output_error(args.out, exc, "--out") from None
    print(f"prepare synthetic: {args.num_videos} videos in {path.parent / 'videos'}, "
          f"annotations {path} ({time.perf_counter() - start:.1f} s)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `videos`, `frames` and `synthetic` to the `prepare` subparsers."""
    p = subparser(
        sub, "videos",
        help="re-encode videos to H.264 at one size and a fixed fps or frame count",
        description=(
            "Re-encode every video of --videos to OUT/NAME.mp4 (H.264, yuv420p, a keyframe "
            "every --gop frames so that chunk reads seek cheaply), resized to --size (aspect "
            "ratio not kept, as the original) and either resampled to --fps (THUMOS14: 15) or "
            "to at most --num-frames frames (ActivityNet: 768, the original's transform: "
            "fps = source fps * min(N / source frames, 1); shorter videos keep their fps and "
            "all their frames). OUT/meta.json lists each output's fps and frame count.\n\n"
            "Resumable: outputs are written under a hidden temporary name and renamed when "
            "complete; finished outputs are skipped by a new run. A corrupt or truncated "
            "input is reported and skipped, the others are done, and the command exits 1 "
            "listing the failures."
        ),
        example_lines=(
            "tallformer prepare videos --videos raw/thumos14 --out data/thumos14/videos "
            "--size 256x256 --fps 15 --workers 8",
            "tallformer prepare videos --videos raw/anet --out data/anet/videos --size 256x256 "
            "--num-frames 768 --workers 8",
        ),
    )
    p.add_argument("--videos", required=True, metavar="DIR", help="folder of input videos")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--size", type=_size, default=(256, 256), metavar="WxH",
                   help="output frame size, WIDTHxHEIGHT, both even (default 256x256)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--fps", type=_positive_float, help="fixed output frame rate, e.g. 15")
    mode.add_argument("--num-frames", type=_positive_int, metavar="N",
                      help="at most N frames per video, e.g. 768 (ActivityNet)")
    p.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                   help="parallel processes (default 1)")
    p.add_argument("--gop", type=_positive_int, default=32, metavar="FRAMES",
                   help="keyframe interval in frames (default 32, one chunk)")
    p.add_argument("--crf", type=int, default=18,
                   help="x264 quality, lower is better (default 18, near-lossless)")
    p.set_defaults(func=_run_videos)

    p = subparser(
        sub, "frames",
        help="extract frame folders (the original release's layout)",
        description=(
            "Extract every video of --videos to OUT/NAME/00001.jpg ... (numbered from 1), "
            "resampled to --fps like `ffmpeg -vf fps=F` and resized to --size (aspect ratio "
            "not kept): the layout of the original release (frames_15fps_256x256/{val,test}/). "
            "A frame folder exists under its final name only when complete; a new run skips "
            "finished folders and redoes half-written ones. A corrupt or truncated input is "
            "reported and skipped; the command exits 1 listing the failures."
        ),
        example_lines=(
            "tallformer prepare frames --videos raw/thumos14 "
            "--out data/thumos14/frames_15fps_256x256 --fps 15 --size 256x256 --workers 8",
            "tallformer prepare frames --videos raw/thumos14 "
            "--out data/thumos14/frames_png --fps 15 --size 256x256 --format png",
        ),
    )
    p.add_argument("--videos", required=True, metavar="DIR", help="folder of input videos")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--fps", type=_positive_float, default=15.0,
                   help="frame rate of the extracted frames (default 15)")
    p.add_argument("--size", type=_size, default=(256, 256), metavar="WxH",
                   help="frame size, WIDTHxHEIGHT (default 256x256)")
    p.add_argument("--format", choices=("jpg", "png"), default="jpg",
                   help="jpg (quality 2, default) or png (lossless, several times larger)")
    p.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                   help="parallel processes (default 1)")
    p.set_defaults(func=_run_frames)

    p = subparser(
        sub, "synthetic",
        help="generate the synthetic action-video dataset (demo and tests)",
        description=(
            "Write a synthetic temporal-action-localization dataset: OUT/videos/synth_NNNN.mp4 "
            "(H.264) and OUT/annotations.json (ActivityNet format, subsets training and "
            "validation). Each class is a shape with its own colour and motion unfolding over "
            "1-5 s (at most a third of the video) on a drifting textured background; "
            "distractors play the beginning of an action and stop, so boundaries need "
            "temporal context. Same --seed, same data. "
            "--task drift: 4 classes that look the same in every frame (one textured disk) and "
            "differ only in the way the texture slides (right, left, down, up)."
        ),
        example_lines=(
            "tallformer prepare synthetic --out data/synthetic --num-videos 40 --seed 0",
            "tallformer prepare synthetic --out /tmp/tiny --num-videos 4 --seed 1 "
            "--min-length 8 --max-length 12",
            "tallformer prepare synthetic --out data/synthetic_drift --task drift --size 36x36",
        ),
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--num-videos", type=_positive_int, default=40, metavar="N",
                   help="number of videos (default 40)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--num-classes", type=_positive_int, default=4, metavar="K",
                   help="action classes, 1-8 (default 4)")
    p.add_argument("--size", type=_size, default=(64, 64), metavar="WxH",
                   help="frame size, WIDTHxHEIGHT, even (default 64x64)")
    p.add_argument("--fps", type=_positive_float, default=15.0, help="frame rate (default 15)")
    p.add_argument("--min-length", type=_positive_float, default=30.0, metavar="SECONDS",
                   help="shortest video (default 30)")
    p.add_argument("--max-length", type=_positive_float, default=60.0, metavar="SECONDS",
                   help="longest video (default 60)")
    p.add_argument("--val-fraction", type=float, default=0.25, metavar="F",
                   help="share of validation videos (default 0.25)")
    p.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                   help="parallel processes (default 1)")
    p.add_argument("--task", choices=SYNTHETIC_TASKS, default="shapes",
                   help="what the classes are: shapes (default, the demo's: colour, shape and motion "
                        "differ) or drift (one textured disk, the texture slides one of 4 ways)")
    p.set_defaults(func=_run_synthetic)
