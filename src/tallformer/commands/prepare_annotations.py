"""`tallformer prepare thumos14|anet`: convert dataset annotations to one ActivityNet JSON.

No torch here: the library module is imported inside `func`, and it is standard library only.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING

from tallformer.commands.common import subparser

if TYPE_CHECKING:
    from tallformer.data.annotations import AnnotationSet


def register(sub: argparse._SubParsersAction) -> None:
    """Add `thumos14` and `anet` to the `prepare` subparsers."""
    p = subparser(
        sub, "thumos14",
        help="convert the THUMOS14 per-class txt annotations to one ActivityNet JSON",
        description=textwrap.fill(
            "Read the original THUMOS14 temporal annotations (annotations_val/<Class>_val.txt, "
            "annotations_test/<Class>_test.txt; lines 'video start end' in seconds) and write "
            "one ActivityNet-format JSON with subsets 'validation' (200 videos, 3,007 "
            "instances) and 'test' (212 videos, 3,358 instances), 20 classes, videos sorted. "
            "'Ambiguous' lines become per-video ignore regions. With durations (from a "
            "video-info JSON or from the videos), instances past a video's end are clipped.", width=88,
        ),
        example_lines=(
            "tallformer prepare thumos14 --annotations data/thumos14 "
            "--video-info TH14_video_info.json --out data/thumos14/annotations.json",
            "tallformer prepare thumos14 --annotations data/thumos14 --videos data/thumos14/videos "
            "--drop-mislabelled --out data/thumos14/annotations_210.json",
        ),
    )
    p.add_argument("--annotations", required=True, metavar="DIR",
                   help="folder holding annotations_val/ and annotations_test/ (or directly "
                        "the txt files of one split)")
    durations = p.add_mutually_exclusive_group()
    durations.add_argument("--videos", metavar="DIR",
                           help="read each video's duration from the video files (PyAV)")
    durations.add_argument("--video-info", metavar="FILE",
                           help="JSON {video: {'duration': seconds, ...}}, like "
                                "TH14_video_info.json")
    p.add_argument("--drop-mislabelled", action="store_true",
                   help="drop test videos video_test_0000270 and video_test_0001496 (G-TAD/AFSD "
                        "protocol, 210 test videos); off by default, as in the paper's code")
    p.add_argument("--out", required=True, metavar="FILE.json", help="output annotation JSON")
    p.set_defaults(func=_run_thumos14)

    p = subparser(
        sub, "anet",
        help="validate ActivityNet-1.3 annotations and write them as one ActivityNet JSON",
        description=textwrap.fill(
            "Read ActivityNet-1.3 annotations, either the official activity_net.v1-3.min.json "
            "or BSN's anet_anno_action.json (which needs --video-info video_info_new.csv for "
            "the subsets), validate them (subsets training/validation/testing, 200 classes) "
            "and write one ActivityNet-format JSON with video ids without the 'v_' prefix. "
            "With --videos, videos missing on disk (and files not annotated) are reported in "
            "one summary.", width=88,
        ),
        example_lines=(
            "tallformer prepare anet --annotations activity_net.v1-3.min.json "
            "--videos data/anet/videos --out data/anet/annotations.json",
            "tallformer prepare anet --annotations anet_anno_action.json "
            "--video-info video_info_new.csv --out data/anet/annotations.json",
        ),
    )
    p.add_argument("--annotations", required=True, metavar="FILE",
                   help="activity_net.v1-3.min.json or BSN's anet_anno_action.json")
    p.add_argument("--video-info", metavar="CSV",
                   help="BSN's video_info_new.csv (columns video, subset, seconds, ...)")
    p.add_argument("--videos", metavar="DIR",
                   help="folder of the videos (VIDEO.mp4 or v_VIDEO.mp4, or frame folders), to "
                        "report which are missing")
    p.add_argument("--out", required=True, metavar="FILE.json", help="output annotation JSON")
    p.set_defaults(func=_run_anet)


def _run_thumos14(args: argparse.Namespace) -> int:
    from tallformer.data.importers import import_thumos14

    return _convert(args.out, lambda: import_thumos14(
        args.annotations, video_info=args.video_info, videos_dir=args.videos,
        drop_mislabelled=args.drop_mislabelled,
    ))


def _run_anet(args: argparse.Namespace) -> int:
    from tallformer.data.importers import import_activitynet

    return _convert(args.out, lambda: import_activitynet(
        args.annotations, video_info_csv=args.video_info, videos_dir=args.videos,
    ))


def _convert(out: str, importer: Callable[[], AnnotationSet]) -> int:
    """Run the importer, save, print a per-subset summary.

    Errors (`AnnotationError`) and warnings reach the user through the CLI, one line each.
    """
    from tallformer.data.annotations import save_annotations

    aset = importer()
    save_annotations(aset, out)
    for subset in aset.subset_sizes():
        videos = aset.subset(subset)
        instances = sum(len(v.annotations) for v in videos)
        ambiguous = sum(len(v.ambiguous) for v in videos)
        line = f"{subset}: {len(videos)} videos, {instances} instances"
        print(line + (f", {ambiguous} ambiguous regions" if ambiguous else ""))
    print(f"{len(aset.classes)} classes")
    print(f"wrote {out}")
    return 0
