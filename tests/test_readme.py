"""The README and every `docs/*.md` page, as a reader uses them.

- every ```python block runs as written: each in its own process, the blocks of one page in
  page order in one scratch folder (a later block may use what an earlier one wrote);
- every `tallformer ...` command line of a shell block (```, ```bash, ```sh, ```console;
  `torchrun ... -m tallformer ...` too) parses with the real command-line parser;
- every relative link points to an existing file, and its `#anchor` to a heading there.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tallformer.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^[ \t]*```([\w-]*)[ \t]*\n(.*?)^[ \t]*```[ \t]*$", flags=re.S | re.M)
_SHELL = {"", "bash", "sh", "shell", "console"}


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _fences(page: Path) -> list[tuple[str, str]]:
    """(language, text) of every fenced block of `page`, in order."""
    return [(m.group(1), m.group(2)) for m in _FENCE.finditer(page.read_text())]


def _python_blocks(page: Path) -> list[str]:
    return [text for lang, text in _fences(page) if lang == "python"]


def _commands(page: Path) -> list[list[str]]:
    """The tallformer arguments of every `tallformer ...` / `... -m tallformer ...` line of
    the page's shell blocks (backslash continuations joined, indentation ignored)."""
    out = []
    for lang, block in _fences(page):
        if lang not in _SHELL:
            continue
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if "tallformer" not in line or line.startswith("#"):
                continue
            words = shlex.split(line, comments=True)
            if not words:
                continue
            if words[0] == "tallformer":
                at = 0
            elif "-m" in words and words.index("-m") + 1 < len(words) and words[words.index("-m") + 1] == "tallformer":
                at = words.index("-m") + 1
            else:
                continue
            if "--help" not in words:
                out.append(words[at + 1:])
    return out


PYTHON = [pytest.param(page, i, id=f"{_name(page)}:{i}")
          for page in PAGES for i in range(len(_python_blocks(page)))]


def test_the_pages_exist_and_have_python_blocks():
    names = {_name(p) for p in PAGES}
    assert {"README.md", "docs/getting-started.md", "docs/python-api.md", "docs/cluster.md",
            "docs/differences.md"} <= names
    assert len(PYTHON) >= 6
    assert len(_python_blocks(ROOT / "docs" / "python-api.md")) >= 4


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> dict[str, Path]:
    """One scratch folder per page (created on first use)."""
    return {_name(p): tmp_path_factory.mktemp(_name(p).replace("/", "_").removesuffix(".md"))
            for p in PAGES if _python_blocks(p)}


@pytest.mark.slow
@pytest.mark.parametrize(("page", "index"), PYTHON)
def test_python_block_runs(page: Path, index: int, scratch: dict[str, Path]):
    block = _python_blocks(page)[index]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, "-c", block], cwd=scratch[_name(page)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{_name(page)} block {index} failed:\n{block}\n{proc.stderr[-3000:]}"


@cache
def _parser():
    return build_parser()


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_command_lines_parse(page: Path):
    for words in _commands(page):
        args, extra = _parser().parse_known_args(words)
        assert getattr(args, "func", None) is not None, (_name(page), words)
        assert all("=" in e for e in extra), (_name(page), words, extra)


def test_the_pages_show_commands():
    counts = {_name(p): len(_commands(p)) for p in PAGES}
    assert counts["README.md"] >= 6, counts
    assert sum(counts.values()) >= 40, counts


def test_the_readme_keeps_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme
    assert "make test" in readme
    assert len(readme.splitlines()) <= 200


# --------------------------------------------------------------------------- links

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    """The page without fenced blocks and inline code (links there are not links)."""
    text = _FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def _anchors(page: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t]*#*$", _FENCE.sub("", page.read_text()), flags=re.M):
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return frozenset(out)


def _relative_links(page: Path) -> list[str]:
    return [t for t in _LINK.findall(_prose(page.read_text()))
            if not re.match(r"[a-z][a-z0-9+.-]*:", t, flags=re.I)]


def _broken_links(page: Path) -> list[str]:
    broken = []
    for target in _relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and (dest.suffix != ".md" or anchor not in _anchors(dest)):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_resolve(page: Path):
    broken = _broken_links(page)
    assert not broken, f"{_name(page)}:\n" + "\n".join(broken)


def test_the_readme_links_every_page():
    links = {(ROOT / t.partition("#")[0]).resolve() for t in _relative_links(ROOT / "README.md")}
    missing = [_name(p) for p in PAGES[1:] if p.resolve() not in links]
    assert not missing, f"README.md does not link {missing}"


def test_the_link_checker_finds_broken_links(tmp_path: Path):
    (tmp_path / "b.md").write_text("# B\n\n## The `memory_bank`, step 2\n\n```\n# not a heading\n```\n")
    page = tmp_path / "a.md"
    page.write_text("# A page\n\n[ok](#a-page) [ok](b.md#the-memory_bank-step-2) [no file](c.md) "
                    "[no heading](b.md#not-a-heading) `[code](x.md)` [web](https://example.org)\n"
                    "```\n[in a block](y.md)\n```\n")
    assert _relative_links(page) == ["#a-page", "b.md#the-memory_bank-step-2", "c.md", "b.md#not-a-heading"]
    assert [b.split(":")[0] for b in _broken_links(page)] == ["c.md", "b.md#not-a-heading"]
