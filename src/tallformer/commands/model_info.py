"""`tallformer model-info`: parameter counts per model part for a config.

The counting is `tallformer.models.info.parameter_counts` (the model is built on the meta
device: no memory, no weights). torch is imported inside `run` only.
"""

from __future__ import annotations

import argparse
import json

from tallformer.commands.common import add_config_arguments, config_from_args, subparser


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
            "tallformer model-info --config thumos14_swin_b",
            "tallformer model-info --config demo --json",
            "tallformer model-info --config thumos14_swin_b model.backbone.frozen_stages=0",
        ),
    )
    add_config_arguments(p)
    p.add_argument("--json", action="store_true",
                   help='print {"parts": {name: {"total": n, "trainable": n}}, "total": n, '
                        '"trainable": n} instead of a table')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tallformer.engine.factory import parameter_counts

    info = parameter_counts(config_from_args(args))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    w = max(len(name) for name in ["part", "all", *info["parts"]])
    print(f"{'part':<{w}} {'total':>14} {'trainable':>14}")
    for name, c in info["parts"].items():
        print(f"{name:<{w}} {c['total']:>14,} {c['trainable']:>14,}")
    print(f"{'all':<{w}} {info['total']:>14,} {info['trainable']:>14,}")
    return 0
