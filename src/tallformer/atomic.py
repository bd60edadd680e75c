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

This module imports nothing of ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "partial_path", "remove_path", "write_bytes", "write_json", "write_text"]

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


@contextlib.contextmanager
def atomic_path(path: PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write `path` under; fsync and rename it on success.

    A leftover temporary output of a killed run is removed first. On an exception the
    temporary output is removed and the exception propagates; `path` is untouched. With
    ``directory=True`` the temporary path is an empty folder that replaces `path` whole.
    """
    target = Path(path)
    tmp = partial_path(target)
    remove_path(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        _commit(tmp, target, directory)
    except BaseException:
        remove_path(tmp)
        raise


def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def write_text(path: PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; return the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: PathLike, data: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Write `data` as JSON (UTF-8, trailing newline) to `path` atomically; return the path."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
    return write_text(path, text + "\n")
