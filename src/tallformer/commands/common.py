"""Helpers shared by subcommands: the `--config` option with dotted overrides, help epilogs."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tallformer.config import Config


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True, *,
                         override_examples: str = "memory.keep_ratio=0.25 train.max_epochs=3") -> None:
    """`--config NAME|FILE` plus positional `key.sub=value` overrides (`override_examples`:
    keys this command reads, shown in its --help)."""
    from tallformer.config import shipped_configs

    parser.add_argument(
        "--config", required=required, metavar="NAME|FILE",
        help=f"a shipped config ({', '.join(shipped_configs())}) or a YAML file",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help=f"dotted config overrides, e.g. {override_examples}",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    from tallformer.config import load_config

    return load_config(args.config, list(args.overrides or []))


def examples(*lines: str) -> str:
    """An argparse epilog that lists example invocations."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def subparser(sub: argparse._SubParsersAction, name: str, help: str, description: str,
              example_lines: tuple[str, ...]) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=help, description=description, epilog=examples(*example_lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+=")


def split_overrides(args: argparse.Namespace, dest: str) -> None:
    """Move `key.sub=value` items that a greedy list option took (``--checkpoint A.pt
    test.protocol=original``) to ``args.overrides``; an existing file of that name stays."""
    items = getattr(args, dest)
    keep = [x for x in items if not _OVERRIDE.match(x) or Path(x).exists()]
    moved = [x for x in items if x not in keep]
    setattr(args, dest, keep)
    args.overrides = [*(args.overrides or []), *moved]
