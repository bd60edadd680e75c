"""One run at a time in a folder (`tallformer.engine.run_lock`): a second holder is refused
in one line naming the holder; a killed holder frees the folder at once, even when a child
it forked (a data worker) lives on.

The real commands against each other (two `tallformer train` on one run_dir, `test` and
`demo` against a training run, two `bank build`) are in tests/test_train.py and
tests/test_bank_build.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tallformer.engine.run_layout import LOCK
from tallformer.engine.run_lock import FolderInUse, hold_folder

ROOT = Path(__file__).resolve().parents[1]

# holds FOLDER, forks a child that outlives it (as a DataLoader worker would), says "held"
HOLDER = """
import os, sys, time
from tallformer.engine.run_lock import hold_folder
with hold_folder(sys.argv[1], "tallformer train"):
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print("held", child, flush=True)
    time.sleep(60)
"""


def _holder(folder: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    line = proc.stdout.readline().split()
    assert line[:1] == ["held"], line
    return proc, int(line[1])


def test_a_held_folder_is_refused_naming_the_holder_and_a_killed_holder_frees_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc, child = _holder(run)
    try:
        record = json.loads((run / LOCK).read_text())
        assert record["pid"] == proc.pid
        assert record["host"] == socket.gethostname()
        assert record["command"] == "tallformer train"
        with pytest.raises(FolderInUse) as caught, hold_folder(run, "tallformer train"):
            pytest.fail("a second holder got the folder")
        message = str(caught.value)
        assert "\n" not in message
        assert re.fullmatch(
            rf"{re.escape(str(run))} is in use by tallformer train \(pid {proc.pid} on host "
            rf"{re.escape(socket.gethostname())}, since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\); wait for it to end or "
            rf"stop it \(kill {proc.pid} on {re.escape(socket.gethostname())}\), or choose another run_dir",
            message), message
        assert sorted(p.name for p in run.iterdir()) == [LOCK]  # the refused one wrote nothing
        # kill -9 of the holder alone: its forked child still runs, the folder is free at once
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert Path(f"/proc/{child}").exists()
        with hold_folder(run, "tallformer train --resume"):
            assert json.loads((run / LOCK).read_text())["pid"] == os.getpid()
    finally:
        proc.kill()
        proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_one_process_may_hold_a_folder_again_and_frees_it_with_the_outer_hold(tmp_path: Path) -> None:
    run = tmp_path / "run"
    probe = [sys.executable, "-c", "import sys\nfrom tallformer.engine.run_lock import hold_folder\n"
             "with hold_folder(sys.argv[1], 'probe'): pass", str(run)]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    with hold_folder(run, "tallformer demo"):
        with hold_folder(run, "tallformer train"):  # the demo's own training
            pass
        # still held after the inner one ended
        busy = subprocess.run(probe, env=env, capture_output=True, text=True)
        assert busy.returncode != 0
        assert "is in use by tallformer demo" in busy.stderr
    assert subprocess.run(probe, env=env, capture_output=True).returncode == 0
