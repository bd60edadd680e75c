"""The one base of every error tallformer raises on purpose, and how such errors list things.

`TallformerError` is what the CLI catches and prints as one line (`error: <message>`,
exit status 2); any other exception is a bug and keeps its traceback. Each part of the
library derives its own error from it (`ConfigError`, `VideoError`, `BankError`, ...), so
a caller can catch one part's errors or all of them.

A file that cannot be written is an `OutputError` (`output_error` turns the `OSError` into
one: the path, the cause in words, the fix); every writer says it in these words.
`Interrupted` is a run stopped on purpose by a signal (SIGINT, SIGTERM), after it saved
what it had.

This module imports nothing of ours (the bottom layer, with `ops`, `config`, `atomic`).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "OPTION",
    "Interrupted",
    "OutputError",
    "TallformerError",
    "TallformerWarning",
    "disk_words",
    "name_list",
    "os_error_words",
    "output_error",
    "size_words",
]


class TallformerError(Exception):
    """A failure the user can fix: the message names the file or key and the fix."""


class TallformerWarning(UserWarning):
    """A problem that does not stop the work; the CLI prints it as `warning: <message>`."""


def name_list(names: Iterable[object], limit: int = 10, sep: str = ", ") -> str:
    """The first `limit` names joined by `sep`, then `... and M more` when there are more.

    `name_list(["a", "b", "c"], 2)` -> `"a, b, ... and 1 more"`. With ``sep="\\n  - "``
    it makes an indented list (the caller writes the first bullet).
    """
    items = [str(n) for n in names]
    shown = items[:limit]
    if len(items) > limit:
        shown.append(f"... and {len(items) - limit} more")
    return sep.join(shown)


# --------------------------------------------------------------------------- files that cannot be written

_WORDS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EISDIR: "it is a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENOENT: "no such file or folder",
    errno.EFBIG: "file too large for the file system",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error (a failing disk, or a network file system gone)",
    errno.EMFILE: "too many open files",
    errno.ENFILE: "too many open files",
}
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class OutputError(TallformerError, OSError):
    """A file or folder that cannot be written: the message names the path, the cause in
    words and the fix (`output_error`). It is an `OSError` too (its ``errno`` kept), so code
    that handles failed writes as OSErrors still does. ``path`` is the file or folder, and
    `output_error` says it again with the name of a command's own option."""

    path: Path | None = None
    template: str | None = None  # the message with OPTION where the option's name goes

    @classmethod
    def make(cls, template: str, option: str | None, code: int | None, path: Path | None) -> OutputError:
        """The error of `template` with `option` in the place of `OPTION` (default: "output
        folder"); `output_error` can say it again with another option."""
        error = cls(template.replace(OPTION, option or "output folder"))
        error.errno = code
        error.path = path
        error.template = template
        return error


OPTION = "\x00option\x00"  # where an OutputError's message names the option that chose the place


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal after it saved its work; the message (empty on the ranks
    that do not print) says what was saved and how to go on. The CLI prints it as
    ``interrupted: <message>`` and exits with `exit_status` (128 + the signal: 130 for SIGINT,
    143 for SIGTERM, as a shell reports a process the signal ended)."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = int(signal_number)
        self.exit_status = 128 + self.signal_number


def size_words(n: float) -> str:
    """Bytes in decimal units as ``df -H`` gives them: ``512 B``, ``34.2 kB``, ``1.30 GB``."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.2f} {unit}" if unit in ("GB", "TB") else f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def _existing(path: Path) -> Path:
    """`path` or its nearest existing parent folder."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _mount(path: Path) -> tuple[str, Path]:
    """(device, mount point) of the file system that holds `path` (its device from
    /proc/self/mounts where there is one, else the mount point alone)."""
    real = Path(os.path.realpath(_existing(path)))
    point = real
    while not os.path.ismount(point) and point != point.parent:
        point = point.parent
    device = ""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[1].encode().decode("unicode_escape") == str(point):
                    device = fields[0]  # the last mount at that point is the visible one
    except OSError:
        pass
    return device, point


def disk_words(path: str | os.PathLike[str]) -> str:
    """The disk that holds `path`, in words: ``tmpfs at /mnt/small``, ``/dev/sda1 at /data``."""
    device, point = _mount(Path(path))
    return f"{device} at {point}" if device else f"the disk at {point}"


def os_error_words(exc: OSError) -> str:
    """The cause of a failed file operation in words: ``permission denied``, ``no space left
    on the device``, ``read-only file system``; else the system's own message."""
    words = _WORDS.get(exc.errno or 0)
    if words is None:
        words = (exc.strerror or str(exc) or type(exc).__name__).rstrip(".")
        words = words[:1].lower() + words[1:]
    return words


def output_error(path: str | os.PathLike[str], exc: OSError, option: str | None = None) -> OutputError:
    """The `OutputError` for `exc` raised while writing `path`: one line with the path, the
    cause in words (`os_error_words`; with no space, how much is free where) and the fix;
    `option` names the setting that chose the place (``--out``, ``run_dir``; default: "output
    folder"). An `OutputError` is said again with `option` (given back as it is without one).

    Example: ``cannot write runs/x/log.jsonl: permission denied; make runs/x writable
    (chmod u+w runs/x) or choose another run_dir``.
    """
    if isinstance(exc, OutputError):
        if option is None or exc.template is None:
            return exc
        return OutputError.make(exc.template, option, exc.errno, exc.path)
    target = Path(path)
    code = exc.errno or 0
    words = os_error_words(exc)
    if code in _NO_SPACE:
        here = _existing(target)
        try:
            free = f"{size_words(shutil.disk_usage(here).free)} free on {disk_words(here)}"
        except OSError:
            free = disk_words(here)
        words = f"{words} ({free})"
    folder = target if target.is_dir() else _existing(target.parent)
    other = f"another {OPTION}"
    if code in _NO_SPACE:
        fix = f"free space on that disk or choose {other}"
    elif code in (errno.EACCES, errno.EPERM):
        fix = f"make {folder} writable (chmod u+w {folder}) or choose {other}"
    elif code == errno.EROFS:
        fix = f"choose {other} on a writable disk"
    elif code == errno.EISDIR:
        fix = f"remove it or choose {other}"
    else:
        fix = f"choose {other}"
    return OutputError.make(f"cannot write {target}: {words}; {fix}", option, exc.errno, target)
