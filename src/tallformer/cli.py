"""The `tallformer` command: one subcommand per job, each a thin layer over the library.

Every subcommand lives in `tallformer.commands.<name>` and provides
`register(subparsers)`, which adds its parser and sets `func(args) -> int`. Those modules
import their heavy dependencies (torch, PyAV) inside `func`, so `tallformer --help`,
`tallformer eval` and the annotation preparation commands start without importing torch.
"""

from __future__ import annotations

import argparse
import sys

from tallformer import __version__
from tallformer.commands import bank, convert_weights, evaluate, model_info, prepare
from tallformer.commands.common import CommandError
from tallformer.config import ConfigError

_COMMANDS = (prepare, bank, evaluate, model_info, convert_weights)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tallformer",
        description=(
            "Temporal action localization with a long-term memory bank (TALLFormer). "
            "Run 'tallformer COMMAND --help' for a command's options and examples."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tallformer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for module in _COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"tallformer {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"tallformer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
