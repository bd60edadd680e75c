"""The `tallformer` command: one subcommand per job, each a thin layer over the library.

Every subcommand lives in `tallformer.commands.<name>` and provides
`register(subparsers)`, which adds its parser and sets `func(args) -> int`. Those modules
import their heavy dependencies (torch, PyAV) inside `func`, so `tallformer --help`,
`tallformer eval` and the annotation preparation commands start without importing torch.

Errors: a `TallformerError` (anything the library raises on purpose) is printed once here
as `error: <message>` on stderr, exit status 2; any other exception is a bug and keeps its
traceback. Warnings reach the user as one line `warning: <message>`. A closed pipe
(`tallformer bank info DIR | head -1`) ends quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

from tallformer.commands import (
    bank,
    convert_weights,
    demo,
    detect,
    evaluate,
    model_info,
    prepare,
    test,
    train,
)
from tallformer.commands.common import prepare_cpu
from tallformer.errors import TallformerError
from tallformer.version import __version__

_COMMANDS = (prepare, bank, train, test, detect, evaluate, model_info, convert_weights, demo)


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


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """`warnings.showwarning` for the CLI: one line, no source location."""
    stream = file if file is not None else sys.stderr
    with contextlib.suppress(OSError):
        stream.write(f"warning: {message}\n")


@contextlib.contextmanager
def _cli_warnings() -> Iterator[None]:
    saved = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        yield
    finally:
        warnings.showwarning = saved


def _quiet_broken_pipe() -> int:
    """stdout's reader went away: silence the final flush and exit like a tool killed by SIGPIPE."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 141


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # dotted overrides may stand anywhere, also after an option (`--resume a.b=1`)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*(args.overrides or []), *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    func: Any = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    prepare_cpu(args.command)  # before any command imports torch
    try:
        with _cli_warnings():
            code = int(func(args) or 0)
        sys.stdout.flush()
        return code
    except TallformerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
