"""Every Python block of README.md runs as written (each in its own process, in one scratch
folder, in README order), and every command line the README shows parses."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tallformer.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_block_runs(index: int, scratch: Path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, "-c", BLOCKS[index]], cwd=scratch, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"README block {index} failed:\n{BLOCKS[index]}\n{proc.stderr[-3000:]}"


def _commands() -> list[list[str]]:
    """`tallformer ...` lines of the README's shell blocks (continuations joined)."""
    out = []
    for block in re.findall(r"```\n(.*?)```", README, flags=re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            if not line.startswith(("tallformer ", "torchrun ")):
                continue
            words = shlex.split(line, comments=True)
            if "tallformer" in words and "--help" not in words:
                out.append(words[words.index("tallformer") + 1:])
    return out


def test_readme_commands_parse():
    commands = _commands()
    assert len(commands) >= 6
    parser = build_parser()
    for words in commands:
        args, extra = parser.parse_known_args(words)
        assert getattr(args, "func", None) is not None, words
        assert all("=" in e for e in extra), (words, extra)
