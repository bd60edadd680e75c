"""`tallformer convert-weights`: a Video Swin checkpoint -> a plain tallformer backbone state dict.

The conversion is `tallformer.models.weights.convert_checkpoint` (reads the official Video
Swin release or its `_keysfrom_backbone` variant, a torchvision swin3d state dict or a
tallformer checkpoint; writes the state dict and a JSON sidecar `OUT.json` with the
architecture). torch is imported inside `run` only.
"""

from __future__ import annotations

import argparse

from tallformer.commands.common import subparser

_PRESETS = ("swin_t", "swin_s", "swin_b", "tiny")


def register(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub,
        "convert-weights",
        help="convert a Video Swin checkpoint (official/torchvision) to a tallformer backbone state dict",
        description=(
            "Convert Video Swin weights to a plain tallformer backbone state dict. Accepts the "
            "official Video Swin release files (keys 'backbone.layers.*', e.g. "
            "swin_base_patch244_window877_kinetics400_22k.pth, or its _keysfrom_backbone "
            "variant), torchvision swin3d state dicts and tallformer checkpoints. The classifier "
            "head is dropped; any missing, unexpected or mis-shaped key is an error. Writes OUT and "
            "OUT.json (the architecture the weights imply, and the config lines that use them)."
        ),
        example_lines=(
            "tallformer convert-weights --src swin_base_patch244_window877_kinetics400_22k.pth "
            "--out pretrained/swin_b_k400_22k.pth --arch swin_b",
            "tallformer convert-weights --src swin_tiny_patch244_window877_kinetics400_1k.pth "
            "--out pretrained/swin_t_k400.pth",
            "tallformer convert-weights --src runs/thumos/checkpoint_epoch600.pth "
            "--out backbone_epoch600.pth   # the backbone of a training checkpoint",
        ),
    )
    p.add_argument("--src", required=True, metavar="FILE", help="checkpoint to convert")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="output state dict (a JSON sidecar FILE.json is written next to it)")
    p.add_argument("--arch", choices=_PRESETS, default=None,
                   help="expected preset; an error if the weights do not fit it "
                        "(default: the architecture is inferred from the keys and shapes)")
    p.add_argument("--window", type=int, nargs=3, metavar=("T", "H", "W"), default=None,
                   help="attention window, only needed for files without relative_position_index "
                        "buffers whose bias tables fit several windows")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tallformer.models.weights import convert_checkpoint

    info = convert_checkpoint(args.src, args.out, args.arch, args.window)
    print(
        f"wrote {args.out} ({info['source_format']} -> tallformer, {info['num_parameters']:,} "
        f"parameters, arch {info['preset'] or info['arch']}) and {args.out}.json"
    )
    return 0
