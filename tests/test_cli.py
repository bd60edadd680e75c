"""The `tallformer` command: subcommand listing, version, `python -m`, cheap start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tallformer import __version__
from tallformer.cli import build_parser, main

SUBCOMMANDS = ["prepare", "bank", "eval", "model-info", "convert-weights"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tallformer", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_subcommand_with_a_description():
    lines = build_parser().format_help().splitlines()
    for name in SUBCOMMANDS:
        at = next((i for i, ln in enumerate(lines) if ln.strip().split(" ", 1)[0] == name), None)
        assert at is not None, f"{name} missing from --help"
        # argparse puts the description beside a short name, on the next line after a long one
        rest = lines[at].strip()[len(name):].strip() or lines[at + 1].strip()
        assert len(rest) > 10, f"{name} has no one-line description"


def test_version_and_module_entry_point():
    res = run("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"tallformer {__version__}"


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "commands" in capsys.readouterr().out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help_with_examples(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: tallformer " + name in out
    assert "example" in out.lower()


def test_start_up_does_not_import_torch():
    code = (
        "import sys; import tallformer.cli as c; c.build_parser(); "
        "import tallformer.evaluation, tallformer.data.annotations, tallformer.config; "
        "bad = [m for m in ('torch', 'torchvision', 'av') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
