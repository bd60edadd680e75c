"""`tallformer prepare ...`: annotation import, video re-encoding, frame folders, synthetic data."""

from __future__ import annotations

import argparse

from tallformer.commands import prepare_annotations, prepare_media
from tallformer.commands.common import examples


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "prepare",
        help="prepare annotations (thumos14, anet), videos, frame folders or the synthetic dataset",
        description="Turn raw datasets into what tallformer reads: one ActivityNet-format "
        "annotation JSON, re-encoded videos or frame folders, or a synthetic dataset.",
        epilog=examples(
            "tallformer prepare thumos14 --annotations data/thumos14 --video-info TH14_video_info.json "
            "--out data/thumos14/annotations.json",
            "tallformer prepare videos --videos raw/thumos14 --out data/thumos14/videos --size 256x256 "
            "--fps 15 --workers 8",
            "tallformer prepare synthetic --out data/synthetic --num-videos 40 --seed 0",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inner = parser.add_subparsers(dest="prepare_command", metavar="WHAT", title="what to prepare")
    prepare_annotations.register(inner)
    prepare_media.register(inner)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
