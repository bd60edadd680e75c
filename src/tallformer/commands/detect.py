"""`tallformer detect`: run a checkpoint on any videos; JSON, CSV, timeline PNG and HTML viewer per video."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tallformer.commands.common import (
    add_config_arguments,
    add_device_argument,
    add_progress_argument,
    split_overrides,
    subparser,
)
from tallformer.viewer import DISPLAY_MAX_THRESHOLD, DISPLAY_SHOWN

if TYPE_CHECKING:
    from tallformer.data.annotations import AnnotationSet
    from tallformer.engine.infer import VideoResult

Segment = tuple[float, float, str, float]


def register(sub: argparse._SubParsersAction) -> None:
    from tallformer.engine.factory import FAMILIES

    families = "\n\n".join(family.summary for family in FAMILIES.values())
    p = subparser(
        sub, "detect",
        help="detect actions in your own videos: JSON, CSV, timeline PNG and an HTML viewer each",
        description=(
            "Run a trained checkpoint on video files (any format and frame rate FFmpeg reads; "
            "decoded at the config's fps and frame size) or frame folders in the original layout. "
            "Per video, in OUT (default detections/): NAME.json (ActivityNet results with this one "
            "video, plus its path, duration and fps: `tallformer eval` scores it), NAME.csv "
            "(start,end,label,score in seconds), NAME.png (a timeline, one lane per class, bars "
            "shaded by score) and NAME.html (a self-contained viewer: the video with a clickable "
            "timeline; keep the video at its place relative to the HTML file). JSON and CSV keep "
            "every detection (down to --score-threshold); the PNG draws, and the viewer's score "
            "slider starts at, the display threshold (--display-threshold; by default the demo's: "
            "the best 25 detections, and all scoring 0.3 or more). The config and the "
            "class names come from the checkpoint unless --config is given; KEY=VALUE overrides "
            "apply to that config. OUT is checked before the model runs; a video that cannot be "
            "decoded, or whose outputs cannot be written, is reported in one line and the others "
            "are done; the exit status is then 1. How a video is decoded and run depends on the detector family "
            "of the checkpoint (model.kind):\n\n" + families
        ),
        example_lines=(
            "tallformer detect match.mp4 --checkpoint runs/th14/checkpoints/epoch_0600.pt",
            "tallformer detect data/thumos14/videos/video_test_0000004.mp4 --checkpoint "
            "runs/th14/checkpoints/epoch_0600.pt --gt data/thumos14/annotations.json --out runs/th14/detect",
            "tallformer detect clips/*.mkv --checkpoint runs/th14/checkpoints/epoch_0600.pt "
            "--score-threshold 0.3 --top-k 50",
            "tallformer detect data/thumos14/frames_15fps_256x256/test/video_test_0000004 "
            "--checkpoint runs/th14/checkpoints/epoch_0600.pt test.protocol=original",
            "tallformer detect data/anet/videos/v_-1IBHYS3L-Y.mp4 --checkpoint "
            "runs/anet/checkpoints/epoch_0010.pt --top-k 20",
        ),
    )
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or frame folders")
    p.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="a training checkpoint (RUN_DIR/checkpoints/*.pt)")
    add_config_arguments(p, required=False)
    p.add_argument("--out", default="detections", metavar="DIR", help="output folder (default: detections/)")
    p.add_argument("--score-threshold", type=float, default=None, metavar="T",
                   help="keep detections scoring at least T, 0 to 1, in every output (default: all, "
                        "down to test.score_thr)")
    p.add_argument("--display-threshold", type=float, default=None, metavar="T",
                   help="draw detections scoring at least T, 0 to 1, in the PNG and start the viewer's "
                        f"slider there (default: the demo's, the best {DISPLAY_SHOWN} and all scoring "
                        f"{DISPLAY_MAX_THRESHOLD:g} or more)")
    p.add_argument("--top-k", type=int, default=None, metavar="K",
                   help="keep the K best detections per video (default: test.max_per_video)")
    p.add_argument("--gt", default=None, metavar="FILE",
                   help="ground truth (ActivityNet JSON): drawn in the timeline and the viewer "
                        "for the videos it has (by file name, with or without a v_ prefix)")
    add_device_argument(p)
    add_progress_argument(p, "no progress bar")
    p.set_defaults(func=run)


def ground_truth_for(aset: AnnotationSet, video_id: str) -> list[Segment] | None:
    """The instances of `video_id` in `aset` (also tried with a ``v_`` prefix added or
    removed) as (start_s, end_s, label, 1.0); None when the video is not there."""
    for name in (video_id, f"v_{video_id}", video_id[2:] if video_id.startswith("v_") else None):
        if name and name in aset.videos:
            return [(float(a.segment[0]), float(a.segment[1]), a.label, 1.0)
                    for a in aset.videos[name].annotations]
    return None


def source_fps(path: str | Path | None) -> float | None:
    """A video file's own frame rate (the viewer shows it beside the decode rate); None for
    a frame folder or a file whose rate cannot be read."""
    from tallformer.data.video import VideoError, probe_video

    if path is None or not Path(path).is_file():
        return None
    try:
        return probe_video(path).fps
    except VideoError:
        return None


def csv_text(result: VideoResult) -> str:
    """``start,end,label,score``, one row per detection (seconds), best first."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["start", "end", "label", "score"])
    for d in result.detections:
        writer.writerow([repr(d.start), repr(d.end), d.label, repr(d.score)])
    return buf.getvalue()


def write_outputs(result: VideoResult, out_dir: str | Path, classes: Sequence[str], *,
                  name: str | None = None, ground_truth: list[Segment] | None = None,
                  source: str | None = None, display_threshold: float | None = None) -> dict[str, Path]:
    """Write NAME.json, NAME.csv, NAME.png and NAME.html of one video into `out_dir`.

    `name` defaults to the video's id (file stem or folder name). JSON, CSV and the viewer
    hold every detection; the PNG draws those scoring `display_threshold` or more, where
    the viewer's slider starts (default `tallformer.viewer.default_threshold`, the demo's).
    Returns the paths by kind.
    """
    from tallformer.atomic import write_json, write_text
    from tallformer.engine.results import results_json
    from tallformer.plots import plot_timeline
    from tallformer.viewer import displayed, displayed_summary, write_viewer

    out = Path(out_dir)
    stem = name or result.video_id
    data = results_json({result.video_id: result.detections})
    data["video"] = {"id": result.video_id, "path": str(result.path), "duration": result.duration,
                     "fps": result.fps, "num_frames": result.num_frames}
    if source is not None:
        data["checkpoint"] = source
    paths = {"json": out / f"{stem}.json", "csv": out / f"{stem}.csv",
             "png": out / f"{stem}.png", "html": out / f"{stem}.html"}
    write_json(paths["json"], data)
    write_text(paths["csv"], csv_text(result))
    segs = [(d.start, d.end, d.label, d.score) for d in result.detections]
    shown, cut = displayed(segs, display_threshold)
    plot_timeline(paths["png"], shown, classes, result.duration, ground_truth=ground_truth,
                  title=f"{result.video_id}: {displayed_summary(len(shown), len(segs), cut)}"
                        + (f" ({source})" if source else ""))
    write_viewer(paths["html"], video=result.path, title=result.video_id, classes=classes,
                 detections=segs, duration=result.duration, fps=result.fps,
                 ground_truth=ground_truth, threshold=cut, source=source, source_fps=source_fps(result.path))
    return paths


def run(args: argparse.Namespace) -> int:
    from tallformer.atomic import check_writable

    out = check_writable(args.out, "--out")  # at once, before the model (and torch) loads

    from tqdm import tqdm

    from tallformer.data.annotations import load_annotations
    from tallformer.data.video import VideoError
    from tallformer.engine.infer import Detector
    from tallformer.engine.results import unique_name
    from tallformer.errors import OutputError, TallformerError, output_error

    split_overrides(args, "videos")
    if not args.videos:
        raise TallformerError("give at least one VIDEO (a video file or a frame folder)")
    if args.top_k is not None and args.top_k < 1:
        raise TallformerError(f"--top-k must be at least 1, got {args.top_k}")
    for option in ("score_threshold", "display_threshold"):
        value = getattr(args, option)
        if value is not None and not 0.0 <= value <= 1.0:
            raise TallformerError(f"--{option.replace('_', '-')} must be a score from 0 to 1, got {value:g}")
    gt = load_annotations(args.gt) if args.gt else None
    detector = Detector.from_checkpoint(args.checkpoint, args.config, overrides=args.overrides or [],
                                        device=args.device)
    source = Path(args.checkpoint).stem
    failed: list[str] = []
    unwritten: list[str] = []
    used: set[str] = set()
    bar = tqdm(args.videos, desc="detect", unit="video", disable=args.no_progress or None)
    for video in bar:
        try:
            result = detector.detect(video, score_threshold=args.score_threshold, top_k=args.top_k)
        except VideoError as exc:
            bar.clear()
            print(f"error: {exc}", file=sys.stderr)
            failed.append(str(video))
            continue
        truth = ground_truth_for(gt, result.video_id) if gt is not None else None
        if gt is not None and truth is None:
            print(f"warning: {args.gt} has no video {result.video_id!r}; no ground truth drawn for it",
                  file=sys.stderr)
        name = unique_name(result.video_id, used)
        try:
            write_outputs(result, out, detector.classes, name=name, ground_truth=truth, source=source,
                          display_threshold=args.display_threshold)
        except OSError as exc:  # an OutputError, or a writer's own OSError
            bar.clear()
            path = exc.filename if exc.filename is not None and not isinstance(exc, OutputError) else out
            print(f"error: {output_error(path, exc, '--out')}", file=sys.stderr)
            unwritten.append(str(video))
            continue
        bar.clear()
        best = result.detections[0] if result.detections else None
        top = f"; best {best.label} {best.start:.1f}-{best.end:.1f} s ({best.score:.2f})" if best else ""
        print(f"{video}: {len(result.detections)} detections{top} -> {out / name}.{{json,csv,png,html}}")
    bar.close()
    if failed:
        print(f"{len(failed)} of {len(args.videos)} videos could not be decoded: "
              f"{', '.join(failed)}", file=sys.stderr)
    if unwritten:
        print(f"{len(unwritten)} of {len(args.videos)} videos could not be written: "
              f"{', '.join(unwritten)}", file=sys.stderr)
    return 1 if failed or unwritten else 0
