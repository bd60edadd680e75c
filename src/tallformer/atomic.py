"""Atomic writes: a file or folder appears complete under its name, or not at all.

Every writer of the library goes through here (annotations, bank meta, prepared videos
and frame folders, synthetic data, results, converted weights, checkpoints). The data
goes to a temporary name in the target's own folder (so the rename never crosses file
systems), is flushed to disk with fsync, then renamed over the target with
`os.replace`; the folder is fsynced so the rename itself survives a crash. On any
exception the temporary output is removed and the target is left as it was.

- `write_bytes`, `write_text`, `write_json`: whole contents at once (unique temp names,
  so several processes may write the same target; the last rename wins).
- `atomic_path(path)`: a context manager yielding the temporary path for writers that
  need a path (an encoder, `torch.save`, a frame folder with ``directory=True``). Its
  temp name is fixed (`partial_path`), so a re-run first removes a killed run's leftover.

A write that fails (permission, no space, read-only file system, ...) raises
`tallformer.errors.OutputError`: one line with the path, the cause in words and the fix
(`tallformer.errors.output_error`). Before long work a command checks its output folder
with `check_writable` (a probe file written and removed), and a writer that knows how many
bytes it needs checks the free space (`check_free_space`) and reserves them
(`reserve_space`), so a full disk is said before the work, never found by a signal.

This module imports only `tallformer.errors`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tallformer.errors import OPTION, OutputError, disk_words, output_error, size_words

__all__ = [
    "atomic_path",
    "check_free_space",
    "check_writable",
    "partial_path",
    "remove_path",
    "reserve_space",
    "write_bytes",
    "write_json",
    "write_text",
]

# errors only a write can give (a read never does)
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)

PathLike = str | os.PathLike[str]


def partial_path(path: PathLike) -> Path:
    """The hidden name `path` is written under: `.NAME.partial.EXT` (keeps the extension)."""
    p = Path(path)
    return p.with_name(f".{p.stem}.partial{p.suffix}")


def remove_path(path: Path) -> None:
    """Remove a file, link or folder tree at `path`; nothing if it does not exist."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot fsync a folder
        _fsync_file(path)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for root, _dirs, files in os.walk(path):
            for name in files:
                _fsync_file(Path(root) / name)
            _fsync_dir(Path(root))
    elif path.exists():
        _fsync_file(path)


def _commit(tmp: Path, path: Path, directory: bool) -> None:
    _fsync_tree(tmp)
    if directory and path.exists():
        remove_path(path)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _ours(exc: OSError, target: Path, tmp: Path) -> bool:
    """Whether `exc`, raised inside an `atomic_path` block, is the write of `target` failing
    (a write-only error, or one about the temporary output or the target's folder), not a
    read of some input failing."""
    if isinstance(exc, OutputError) or exc.errno in _WRITE_ERRNOS:
        return True
    names = [n for n in (exc.filename, exc.filename2) if n is not None]
    places = {str(tmp), str(target), str(target.parent)}
    return any(str(Path(os.fsdecode(n))) in places or Path(os.fsdecode(n)).parent == tmp for n in names)


@contextlib.contextmanager
def atomic_path(path: PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write `path` under; fsync and rename it on success.

    A leftover temporary output of a killed run is removed first. On an exception the
    temporary output is removed and the exception propagates; `path` is untouched. With
    ``directory=True`` the temporary path is an empty folder that replaces `path` whole.
    A failed write (an `OSError` of the output, not of something the block reads) is an
    `OutputError` naming `path`.
    """
    target = Path(path)
    tmp = partial_path(target)
    try:
        remove_path(tmp)
        target.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp.mkdir()
    except OSError as exc:
        raise output_error(target, exc) from exc
    try:
        yield tmp
        try:
            _commit(tmp, target, directory)
        except OSError as exc:
            raise output_error(target, exc) from exc
    except OSError as exc:
        with contextlib.suppress(OSError):
            remove_path(tmp)
        if _ours(exc, target, tmp):
            raise output_error(target, exc) from exc
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            remove_path(tmp)
        raise


def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; return the path. A failed write is an `OutputError`."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise output_error(target, exc) from exc
        raise
    return target


def write_text(path: PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; return the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: PathLike, data: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Write `data` as JSON (UTF-8, trailing newline) to `path` atomically; return the path."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
    return write_text(path, text + "\n")


# --------------------------------------------------------------------------- before the work


def check_writable(folder: PathLike, option: str | None = None) -> Path:
    """Make sure files can be written in `folder`, before the work that will write them: a
    probe file is written and removed in it, or, when it does not exist yet, in its nearest
    existing parent (where it would be created; nothing is left behind). Raises
    `OutputError` naming the folder, the cause and the fix (`option`: the setting that chose
    the folder, e.g. ``--out``). Returns the folder.

    Example::

        >>> import tempfile
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     folder = check_writable(Path(tmp) / "runs" / "x")
        ...     folder.name, sorted(Path(tmp).iterdir())
        ('x', [])
    """
    target = Path(folder)
    here = Path(os.path.abspath(target))
    while not here.exists() and here != here.parent:
        here = here.parent
    probe = here / f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        if not here.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(here))
        with open(probe, "wb") as f:
            f.write(b"\0")
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        raise output_error(target, exc, option) from exc
    return target


def check_free_space(folder: PathLike, needed: int, what: str, option: str | None = None) -> None:
    """Raise `OutputError` when the disk of `folder` (or of its nearest existing parent) has
    less than `needed` bytes free: ``no space left on DEVICE for WHAT: needs N, M free``."""
    here = Path(os.path.abspath(folder))
    while not here.exists() and here != here.parent:
        here = here.parent
    free = shutil.disk_usage(here).free
    if needed > free:
        raise OutputError.make(f"no space left on {disk_words(here)} for {what}: needs {size_words(needed)}, "
                               f"{size_words(free)} free; free space there or choose another {OPTION}",
                               option, errno.ENOSPC, Path(folder))


def reserve_space(file: Any, offset: int, length: int) -> bool:
    """Allocate bytes ``offset .. offset + length`` of an open file on its disk now
    (`os.posix_fallocate`), so that writing them later (through a memory map, where a full
    disk is a SIGBUS, not an error) cannot fail. Where the system or file system cannot
    reserve, nothing is done and False is returned (the caller's `check_free_space` is the
    guard then). A disk without that much space raises `OutputError`."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None or length <= 0:
        return False
    try:
        fallocate(file.fileno(), offset, length)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV):
            return False
        raise output_error(getattr(file, "name", "the file"), exc) from exc
    return True
