"""`tallformer model-info`: parameter counts per model part for a config.

The model is built on the meta device (no memory, no weights), so Swin-B is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from tallformer.commands.common import add_config_arguments, config_from_args, subparser

if TYPE_CHECKING:
    from torch import nn

PARTS = ("backbone", "srm", "tcm", "tdm", "fpn", "head")


def register(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub, "model-info",
        help="parameter counts per model part for a config",
        description=(
            "Build the detector of a config on the meta device (nothing is allocated, no "
            "weights are read) and print the number of parameters, total and trainable, of "
            "each part (backbone, srm, tcm, tdm, fpn, head) and of the whole model. Trainable "
            "excludes the backbone's frozen stages."
        ),
        example_lines=(
            "tallformer model-info --config configs/thumos14_swin_b.yaml",
            "tallformer model-info --config configs/demo.yaml --json",
            "tallformer model-info --config configs/thumos14_swin_b.yaml model.backbone.frozen_stages=0",
        ),
    )
    add_config_arguments(p)
    p.add_argument("--json", action="store_true",
                   help='print {"parts": {name: {"total": n, "trainable": n}}, "total": n, '
                        '"trainable": n} instead of a table')
    p.set_defaults(func=run)


def _count(module: nn.Module) -> dict[str, int]:
    params = list(module.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


def parameter_counts(cfg: Any) -> dict[str, Any]:
    """`{"parts": {name: {"total", "trainable"}}, "total", "trainable"}` for a `Config`."""
    import torch

    from tallformer.models.detector import build_detector

    with torch.device("meta"):
        model = build_detector(cfg)
    modules = {
        "backbone": model.backbone, "srm": model.neck.srm, "tcm": model.neck.tcm,
        "tdm": model.neck.tdm, "fpn": model.neck.fpn, "head": model.head,
    }
    parts = {name: _count(modules[name]) for name in PARTS}
    return {"parts": parts, **_count(model)}


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    try:
        info = parameter_counts(cfg)
    except ValueError as exc:
        print(f"tallformer model-info: {args.config}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{'part':<10} {'total':>14} {'trainable':>14}")
    for name, c in info["parts"].items():
        print(f"{name:<10} {c['total']:>14,} {c['trainable']:>14,}")
    print(f"{'all':<10} {info['total']:>14,} {info['trainable']:>14,}")
    return 0
