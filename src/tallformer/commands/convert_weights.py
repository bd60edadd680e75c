"""`tallformer convert-weights`: a Video Swin checkpoint -> a plain tallformer backbone state dict.

Reads the official Video Swin release (or its `_keysfrom_backbone` variant), a torchvision
swin3d state dict or a tallformer checkpoint, renames the keys to ours (spec model-thumos14
§4), checks every key and shape against the backbone it implies, and writes
`torch.save(backbone.state_dict())` plus a JSON sidecar `OUT.json` with that architecture.
torch is imported inside `func` only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

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
    from tallformer.models.weights import WeightsError

    try:
        info = convert(Path(args.src), Path(args.out), args.arch, args.window)
    except (WeightsError, ValueError) as exc:
        print(f"tallformer convert-weights: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out} ({info['source_format']} -> tallformer, {info['num_parameters']:,} "
        f"parameters, arch {info['preset'] or info['arch']}) and {args.out}.json"
    )
    return 0


def convert(src: Path, out: Path, arch: str | None = None,
            window: list[int] | None = None) -> dict:
    """Convert `src` to a plain backbone state dict at `out`; return the sidecar's content."""
    import torch

    from tallformer.models.backbone import PRESETS, build_backbone
    from tallformer.models.weights import (
        WeightsError,
        check_state_dict,
        extract_backbone_state,
        infer_arch,
        match_preset,
        read_checkpoint,
    )

    state, fmt = extract_backbone_state(read_checkpoint(src), str(src))
    prefer = tuple(window) if window else (PRESETS[arch].window_size if arch else None)
    shape = infer_arch(state, prefer_window=prefer, source=str(src))
    if arch is not None and PRESETS[arch].shape_dict() != shape:
        want = PRESETS[arch].shape_dict()
        diffs = ", ".join(f"{k}: file {shape[k]} vs {arch} {want[k]}" for k in want if want[k] != shape[k])
        raise WeightsError(f"{src}: the weights are not {arch} ({diffs}); drop --arch to convert them as they are")
    preset = arch or match_preset(shape)
    with torch.device("cpu"):
        backbone = build_backbone(preset if preset else shape, chunk_size=None)
    state = check_state_dict(backbone, state, str(src))
    backbone.load_state_dict(state, strict=False)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(backbone.state_dict(), tmp)
    os.replace(tmp, out)
    backbone_cfg: dict = {"arch": preset} if preset else {"arch": "custom", **shape}
    backbone_cfg["weights"] = str(out)
    info = {
        "arch": shape,
        "preset": preset,
        "num_features": backbone.num_features,
        "num_parameters": sum(p.numel() for p in backbone.parameters()),
        "source": str(src),
        "source_format": fmt,
        "config": {"model": {"backbone": backbone_cfg}},
    }
    sidecar = Path(str(out) + ".json")
    sidecar.write_text(json.dumps(info, indent=2) + "\n")
    return info
