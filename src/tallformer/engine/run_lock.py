"""One command at a time writes into a folder: a run folder, a bank being built, a test's
output folder.

`hold_folder` takes an exclusive lock on ``FOLDER/.lock`` (`fcntl.flock`) for as long as its
block runs and writes who holds it there (host, pid, command, start time, as JSON). A
second command that wants the folder stops before it touches anything, in one line naming
the folder, the holder's host and pid and what to do (`FolderInUse`). Who holds what:

- ``tallformer train``: ``RUN_DIR`` for the run's life (under ``torchrun`` the process that
  writes the checkpoints, global rank 0); with periodic tests (``test.interval``) also
  ``RUN_DIR/test``, where they write; with ``memory.in_place`` the bank it trains in place.
- ``tallformer bank build`` (and a run building its bank): the bank folder, while building.
- ``tallformer test``: its output folder (default ``RUN_DIR/test``), so it runs beside a
  training run unless that run's periodic tests write into the same folder.
- ``tallformer demo``: its run folder.

The operating system drops the lock when the process ends, however it ends, so a
``kill -9`` never leaves a lock behind that blocks ``--resume``. A child the holder forks
(a DataLoader worker) closes its copy of the lock at once, so the lock goes with the
holder even while such a child lingers. Within one process a folder may be held again (the
demo holds its run folder, and the training inside it does too); it is released when the
outermost hold ends. The lock file stays in the folder (removing it would let two
processes lock two different files of one name); what it says is meaningful only while
it is locked. Without `fcntl` (not POSIX) nothing is locked.

Example::

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with hold_folder(f"{tmp}/run", "tallformer train") as run:
    ...         (run / ".lock").is_file()
    True
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from tallformer.engine.run_layout import LOCK
from tallformer.errors import TallformerError, TallformerWarning, output_error

__all__ = ["FolderInUse", "hold_folder"]


class FolderInUse(TallformerError):
    """The folder is held by another command; the message names it, its host and pid."""


_HELD: dict[str, list[int]] = {}  # lock file (real path) -> [descriptor, depth]


def _forget_in_child() -> None:
    """After a fork: the child holds nothing (its copies of the descriptors are closed, the
    parent's locks stay the parent's)."""
    for fd, _ in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _holder(fd: int) -> str:
    """Who holds the lock whose file is open at `fd`, in words."""
    try:
        record = json.loads(os.pread(fd, 65536, 0).decode("utf-8"))
        pid, host = int(record["pid"]), str(record["host"])
        return (f"{record['command']} (pid {pid} on host {host}, since {record['started']}); wait for it to "
                f"end or stop it (kill {pid} on {host})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process that is just starting; wait for it to end"


@contextlib.contextmanager
def hold_folder(folder: str | os.PathLike[str], command: str, *, option: str = "run_dir") -> Iterator[Path]:
    """Hold `folder` (created if needed) for the block: an exclusive lock on ``FOLDER/.lock``.

    Args:
        folder: the folder this process writes into.
        command: what holds it, as the next one is told (``"tallformer train"``).
        option: the setting that chose the folder, for the fix in the messages (``run_dir``,
            ``--out``).

    Raises:
        FolderInUse: another process holds it: ``FOLDER is in use by COMMAND (pid P on host
            H, since T); wait for it to end or stop it (kill P on H), or choose another
            OPTION``.
        OutputError: the folder or its lock file cannot be written.
    """
    root = Path(folder)
    path = root / LOCK
    key = os.path.realpath(path)
    held = _HELD.get(key)
    if held is not None:  # this process holds it already
        held[1] += 1
        try:
            yield root
        finally:
            held[1] -= 1
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield root
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise output_error(root, exc, option) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            who = _holder(fd)
            os.close(fd)
            raise FolderInUse(f"{root} is in use by {who}, or choose another {option}") from None
        warnings.warn(f"{root}: cannot lock {path} ({exc.strerror}); make sure no other command writes "
                      "into this folder at the same time", TallformerWarning, stacklevel=3)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "command": command, "argv": sys.argv,
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "started_unix": time.time()}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
    except OSError as exc:
        os.close(fd)
        raise output_error(path, exc, option) from exc
    _HELD[key] = [fd, 1]
    try:
        yield root
    finally:
        _HELD.pop(key, None)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # the lock goes with the last descriptor of it
