"""Helpers shared by subcommands: the `--config` option with dotted overrides, and errors."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tallformer.config import Config


class CommandError(Exception):
    """A user-facing failure: printed as one message, exit status 2."""


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """`--config FILE` plus positional `key.sub=value` overrides."""
    parser.add_argument("--config", required=required, metavar="FILE", help="YAML config file")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="dotted config overrides, e.g. memory.keep_ratio=0.25 train.max_epochs=3",
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
