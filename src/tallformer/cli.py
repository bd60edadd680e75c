"""The `tallformer` command: one subcommand per job, each a thin layer over the library.

Every subcommand lives in `tallformer.commands.<name>` and provides
`register(subparsers)`, which adds its parser and sets `func(args) -> int`. Those modules
import their heavy dependencies (torch, PyAV) inside `func`, so `tallformer --help`,
`tallformer eval` and the annotation preparation commands start without importing torch.

Errors: a `TallformerError` (anything the library raises on purpose) is printed once here
as `error: <message>` on stderr, exit status 2; so is an `OSError` of a file that cannot be
written or read for a reason of the machine (permission, no space, read-only file system),
in the same words as the library's own (`tallformer.errors.output_error`); any other
exception is a bug and keeps its traceback. Warnings reach the user as one line
`warning: <message>`. A closed pipe (`tallformer bank info DIR | head -1`) ends quietly.
Ctrl-C is `interrupted` (exit status 130); a run that stopped on a signal after saving its
work (`tallformer.errors.Interrupted`) says what it saved and how to go on, with exit
status 128 + the signal (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
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
from tallformer.errors import Interrupted, TallformerError, os_error_words, output_error
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
    except Interrupted as exc:
        if str(exc):  # the processes of a run under torchrun other than the first say nothing
            print(f"interrupted: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        message = _file_error(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


# the machine's reasons a file cannot be written (or read): the user's to fix, not bugs
_WRITE_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
_ACCESS = (errno.EACCES, errno.EPERM)


def _file_error(exc: OSError) -> str | None:
    """One line for an `OSError` the library did not put in words itself; None for others
    (a bug: the traceback stays)."""
    if exc.errno in _WRITE_ONLY:
        return str(output_error(exc.filename or "a file", exc))
    if exc.errno in _ACCESS and exc.filename is not None:
        return f"{exc.filename}: {os_error_words(exc)}; check who may read and write it (ls -l)"
    return None


if __name__ == "__main__":
    raise SystemExit(main())
