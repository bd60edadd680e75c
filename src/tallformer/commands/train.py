"""`tallformer train`: train a detector on one process or under `torchrun`, with exact resume."""

from __future__ import annotations

import argparse

from tallformer.commands.common import (
    add_config_arguments,
    add_progress_argument,
    config_from_args,
    subparser,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub, "train",
        help="train a detector (one process or torchrun); resumes exactly after a kill",
        description=(
            "Train TALLFormer with the memory bank. Everything goes to run_dir: config.yaml, "
            "log.jsonl, checkpoints/ (epoch_NNNN.pt, step_NNNNNN.pt, last.pt), the run's bank "
            "and its undo journal. With memory.bank_dir null and keep_ratio < 1 the bank is "
            "built first from the initial backbone. A run that has a checkpoint resumes from "
            "last.pt (train.resume=auto, the default): weights, optimizer, schedule, random "
            "states, data order and the bank are restored exactly. Under torchrun every process "
            "trains its share of each step (DDP; gloo on CPU, nccl on GPU). Ctrl-C (or SIGTERM) "
            "finishes the step, writes a checkpoint and prints the command that resumes (exit "
            "status 130, or 143); a second one stops at once. The run holds run_dir while it runs: "
            "another run, test or demo writing there stops at once, naming this one."
        ),
        example_lines=(
            "tallformer train --config demo",
            "tallformer train --config demo train.max_steps=6 run_dir=runs/try",
            "tallformer train --config thumos14_swin_b data.annotations=data/thumos14/annotations.json "
            "data.videos=data/thumos14/videos memory.bank_dir=banks/thumos14_swin_b run_dir=runs/th14",
            "torchrun --nproc_per_node 4 -m tallformer train --config thumos14_swin_b "
            "data.annotations=data/thumos14/annotations.json data.videos=data/thumos14/videos "
            "memory.bank_dir=banks/thumos14_swin_b run_dir=runs/th14",
            "tallformer train --config thumos14_swin_b run_dir=runs/th14 --resume",
        ),
    )
    add_config_arguments(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", dest="resume", action="store_true", default=None,
                       help="continue the run in run_dir (an error if it has no checkpoint)")
    group.add_argument("--fresh", dest="resume", action="store_false",
                       help="start a new run (an error if run_dir already has checkpoints)")
    add_progress_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tallformer.atomic import check_writable

    cfg = config_from_args(args)
    check_writable(cfg.run_dir, "run_dir")  # at once, before torch loads

    from tallformer.engine.train import train

    train(cfg, resume=args.resume, progress=not args.no_progress)
    return 0
