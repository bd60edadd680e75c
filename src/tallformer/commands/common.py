"""Helpers shared by subcommands: the `--config` option with dotted overrides, the options
every command spells the same way (`--no-progress`, `--device`), help epilogs."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


DEVICES = "auto, cpu, cuda, cuda:1"


class _Renamed(argparse.Action):
    """An old option name that still works: sets the new option's value and says, in one
    stderr line, that it was renamed."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "", const: Any = True,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, const=const, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"warning: {option_string} is deprecated and will be removed; use {self.new} (the same)",
              file=sys.stderr)
        setattr(namespace, self.dest, self.const)


def add_progress_argument(parser: argparse.ArgumentParser, help: str = "no progress bars", *,
                          old: str | None = None) -> None:
    """``--no-progress`` (every command's name for it); `old`: a former name that still
    works with a one-line deprecation note (``bank``'s ``--quiet``)."""
    parser.add_argument("--no-progress", action="store_true", help=help)
    if old is not None:
        parser.add_argument(old, action=_Renamed, dest="no_progress", new="--no-progress")


def add_device_argument(parser: argparse.ArgumentParser, default: str = "train.device of the config") -> None:
    """``--device DEV`` (auto, cpu, cuda, cuda:1), default None: `default` decides."""
    parser.add_argument("--device", default=None, metavar="DEV", help=f"{DEVICES} (default: {default})")


def prepare_cpu(command: str | None) -> None:
    """Before a command imports torch: how its process uses the CPU
    (`tallformer.engine.cpu.prepare_process`; the demo's arithmetic is reproducible across
    machines). Nothing when torch is already loaded (the library inside another program)."""
    if "torch" in sys.modules:
        return
    from tallformer.engine.cpu import prepare_process

    prepare_process(reproducible=command == "demo")


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
