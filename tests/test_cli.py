"""The `tallformer` command: subcommand listing, version, `python -m`, cheap start-up."""

from __future__ import annotations

import argparse
import os
import re
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
    assert res.returncode == 0
    assert res.stdout.strip() == f"tallformer {__version__}"


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


def test_a_library_error_is_one_line_and_exit_2(tmp_path):
    res = run("eval", "--gt", str(tmp_path / "missing.json"), "--pred", str(tmp_path / "p.json"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "missing.json" in lines[0]
    assert "Traceback" not in res.stderr


def test_a_config_error_is_one_line_and_exit_2():
    res = run("model-info", "--config", "demo", "keep_ratio=0.3")
    assert res.returncode == 2
    assert res.stderr.strip() == res.stderr.strip().splitlines()[0]
    assert res.stderr.startswith("error: command line: unknown key 'keep_ratio'. Did you mean 'memory.keep_ratio'?")


def test_warnings_are_one_line_without_source_location(tmp_path):
    import json

    gt = {"database": {"a": {"subset": "test", "annotations": [{"segment": [0, 5], "label": "x"}]}}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps({"results": {}}))
    res = run("eval", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"))
    assert res.returncode == 0, res.stderr
    warned = [ln for ln in res.stderr.splitlines() if ln]
    assert warned, "no warning for an empty results file"
    assert all(ln.startswith("warning: ") for ln in warned), res.stderr
    assert "no predictions to score" in res.stderr
    assert "UserWarning" not in res.stderr
    assert ".py:" not in res.stderr


def test_a_bug_keeps_its_traceback(monkeypatch):
    import tallformer.commands.evaluate as ev

    def boom(args):
        raise ZeroDivisionError("a real bug")

    monkeypatch.setattr(ev, "run", boom)
    with pytest.raises(ZeroDivisionError):
        main(["eval", "--gt", "a", "--pred", "b"])


def test_a_closed_pipe_ends_quietly():
    """`tallformer ... | head -1`: the reader leaves early; no traceback, no BrokenPipeError."""
    code = ("import tallformer.cli as c, tallformer.commands.evaluate as ev\n"
            "def many(args):\n"
            "    for _ in range(200000):\n"
            "        print('x' * 100)\n"
            "    return 0\n"
            "ev.run = many\n"
            "raise SystemExit(c.main(['eval', '--gt', 'a', '--pred', 'b']))\n")
    res = subprocess.run(["bash", "-c", f"{sys.executable} -c \"$CODE\" | head -1"], env={**os.environ, "CODE": code},
                         capture_output=True, text=True, timeout=120)
    assert res.stdout == "x" * 100 + "\n"
    assert res.stderr == ""


def _every_parser() -> list[tuple[str, argparse.ArgumentParser]]:
    """(command path, parser) of `tallformer` and every subcommand, nested ones included."""
    out: list[tuple[str, argparse.ArgumentParser]] = []

    def walk(path: str, parser: argparse.ArgumentParser) -> None:
        out.append((path, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(f"{path} {name}".strip(), child)

    walk("", build_parser())
    return out


def test_every_stated_default_is_the_options_default():
    """An option's help "(default N)" / "(default: WxH)" says the value argparse uses."""
    checked = 0
    for path, parser in _every_parser():
        for action in parser._actions:
            m = re.search(r"\(default:? ([^),]+)", action.help or "")
            value = action.default
            if not m or isinstance(value, bool) or not isinstance(value, (int, float, tuple)):
                continue
            stated = m.group(1).split()[0]
            shown = "x".join(str(v) for v in value) if isinstance(value, tuple) else f"{value:g}"
            assert stated == shown, f"tallformer {path} {action.option_strings}: help says {stated}, default {shown}"
            checked += 1
    assert checked >= 10


def test_every_command_spells_the_shared_options_the_same_way():
    """--no-progress (never --quiet in the help), --device DEV taking auto/cpu/cuda/cuda:1
    with the config's train.device as default, and a bare command group exits 2 with help."""
    progress = device = 0
    for path, parser in _every_parser():
        options = {s: a for a in parser._actions for s in a.option_strings}
        shown = [s for s, a in options.items() if a.help != argparse.SUPPRESS]
        assert "--quiet" not in shown, f"tallformer {path}: --quiet (use --no-progress)"
        if "--no-progress" in options:
            a = options["--no-progress"]
            assert (a.dest, a.default, a.nargs, a.const) == ("no_progress", False, 0, True), path
            progress += 1
        if "--device" in options:
            a = options["--device"]
            assert (a.metavar, a.default) == ("DEV", None), f"tallformer {path} --device"
            assert a.help.startswith("auto, cpu, cuda, cuda:1 (default: train.device"), f"tallformer {path} --device"
            device += 1
    assert progress >= 7
    assert device >= 3


@pytest.mark.parametrize("group", ["", "bank", "prepare"])
def test_a_bare_command_group_prints_help_and_exits_2(group, capsys):
    assert main([group] if group else []) == 2
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tallformer {group}".rstrip())


def test_bank_quiet_still_works_with_a_one_line_note(tmp_path):
    from tallformer.commands.common import add_progress_argument

    parser = argparse.ArgumentParser()
    add_progress_argument(parser, old="--quiet")
    assert parser.parse_args([]).no_progress is False
    assert parser.parse_args(["--no-progress"]).no_progress is True
    res = run("bank", "merge", "--quiet", "--out", str(tmp_path / "m"), str(tmp_path / "nothing"))
    assert res.stderr.splitlines()[0] == "warning: --quiet is deprecated and will be removed; use --no-progress (the same)"
    assert res.returncode == 2  # then the command runs as with --no-progress (here: no such bank)
