"""`tallformer convert-weights`: Video Swin weights -> a tallformer backbone state dict, or an
original detector checkpoint -> a tallformer checkpoint.

The work is `tallformer.engine.model_import.convert_weights_file`: it recognises
the file (the official Video Swin release or its `_keysfrom_backbone` variant, a
torchvision swin3d state dict, a tallformer checkpoint, the original's THUMOS14
`epoch_N_weights.pth` or ActivityNet `checkpoint-N.ckpt`, an ActionFormer release
`epoch_NNN.pth.tar`) and converts it. torch is imported inside `run` only.
"""

from __future__ import annotations

import argparse

from tallformer.commands.common import add_config_arguments, subparser

_PRESETS = ("swin_t", "swin_s", "swin_b", "tiny")


def register(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub,
        "convert-weights",
        help="convert Video Swin weights or an original detector checkpoint to tallformer's format",
        description=(
            "Convert weights to tallformer's format. Video Swin backbones: the official release "
            "files (keys 'backbone.layers.*', e.g. swin_base_patch244_window877_kinetics400_22k.pth, "
            "or its _keysfrom_backbone variant), torchvision swin3d state dicts and tallformer "
            "checkpoints become a plain backbone state dict OUT plus OUT.json (the architecture and "
            "the config lines that use it). Detector checkpoints of the original release, THUMOS14 "
            "epoch_N_weights.pth and ActivityNet checkpoint-N.ckpt, and ActionFormer release "
            "checkpoints (epoch_NNN.pth.tar: its network on the Video Swin weights of the config's "
            "model.backbone.weights; the EMA weights unless --no-ema; --classes required) become a "
            "tallformer checkpoint (model, the config it fits, class names in the original's label-id order) that "
            "`tallformer test`, `tallformer detect` and model.init_from=OUT take; the conversion is "
            "exact (same weights, same detections). Every key is mapped explicitly; any missing, "
            "unexpected or mis-shaped key is an error."
        ),
        example_lines=(
            "tallformer convert-weights --src swin_base_patch244_window877_kinetics400_22k.pth "
            "--out pretrained/swin_b_k400_22k.pth --arch swin_b",
            "tallformer convert-weights --src swin_tiny_patch244_window877_kinetics400_1k.pth "
            "--out pretrained/swin_t_k400.pth",
            "tallformer convert-weights --src runs/thumos/checkpoint_epoch600.pth "
            "--out backbone_epoch600.pth   # the backbone of a training checkpoint",
            "tallformer convert-weights --src workdir/epoch_1000_weights.pth --out th14_epoch1000.pt",
            "tallformer convert-weights --src checkpoints/checkpoint-10.ckpt --out anet_epoch10.pt "
            "--classes data/annots/anet/action_name.txt",
            "tallformer convert-weights --src ckpt/epoch_035.pth.tar --config thumos14_swin_b_actionformer "
            "--classes names.txt --out af_epoch035.pt "
            "model.backbone.weights=pretrained/swin_base_patch244_window877_kinetics400_22k.pth",
        ),
    )
    p.add_argument("--src", required=True, metavar="FILE", help="checkpoint to convert")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="output file (for backbone weights a JSON sidecar FILE.json is written next to it)")
    p.add_argument("--arch", choices=_PRESETS, default=None,
                   help="backbone files: expected preset; an error if the weights do not fit it "
                        "(default: the architecture is inferred from the keys and shapes)")
    p.add_argument("--window", type=int, nargs=3, metavar=("T", "H", "W"), default=None,
                   help="backbone files: attention window, only needed for files without "
                        "relative_position_index buffers whose bias tables fit several windows")
    p.add_argument("--classes", default=None, metavar="FILE",
                   help="detector checkpoints: class names, one a line, in the original's label-id "
                        "order (default THUMOS14: the original's 20 classes; required for "
                        "ActivityNet, its action_name.txt, and for ActionFormer)")
    p.add_argument("--no-ema", dest="ema", action="store_false",
                   help="ActionFormer checkpoints: the plain weights (state_dict) instead of the EMA "
                        "ones (state_dict_ema, what the release evaluates)")
    add_config_arguments(p, required=False, override_examples="model.backbone.arch=swin_t")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tallformer.engine.model_import import convert_weights_file

    kind, info = convert_weights_file(args.src, args.out, arch=args.arch, window=args.window,
                                      config=args.config, overrides=args.overrides,
                                      classes=args.classes, ema=args.ema)
    if kind == "backbone":
        print(
            f"wrote {args.out} ({info['source_format']} -> tallformer, {info['num_parameters']:,} "
            f"parameters, arch {info['preset'] or info['arch']}) and {args.out}.json"
        )
        return 0
    epoch = "" if info["epoch"] is None else f", epoch {info['epoch']}"
    print(f"wrote {args.out} (original {kind} detector{epoch} -> tallformer, "
          f"{info['num_parameters']:,} parameters, {len(info['classes'])} classes; dropped "
          f"{len(info['dropped'])} buffers we rebuild)")
    print(f"  test it:   tallformer test --checkpoint {args.out} data.annotations=... data.videos=...")
    print(f"  detect:    tallformer detect VIDEO --checkpoint {args.out}")
    print(f"  fine-tune: tallformer train --config CONFIG model.init_from={args.out}")
    return 0
