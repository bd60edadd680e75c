"""Copies and merges of memory banks: which videos and entries go into the new bank
(`shard_meta` for a copy of some videos, `merged_meta` for the videos of several banks) and
the one copy loop that writes it (`write_bank`). `tallformer.memory.bank.MemoryBank.copy_to`
and `MemoryBank.merge` are built on these.

Imports neither torch nor ``models`` / ``data``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tallformer.atomic import atomic_path
from tallformer.memory.meta import (
    FEATURES_DIR,
    META,
    REBUILD,
    BankError,
    differences,
    file_name,
    write_meta,
)

__all__ = ["merged_meta", "shard_meta", "write_bank"]


def shard_meta(meta: Mapping[str, Any], root: Path, videos: Iterable[str] | None) -> dict[str, Any]:
    """`meta` (a bank's, folder `root`) with only `videos` (None: all, unchanged); an unknown
    video is a `BankError` naming the bank."""
    if videos is None:
        return dict(meta)
    wanted = list(dict.fromkeys(videos))
    unknown = [v for v in wanted if v not in meta["videos"]]
    if unknown:
        raise BankError(f"video {unknown[0]!r} is not in the memory bank {root} ({len(meta['videos'])} "
                        f"videos); {REBUILD} over the same annotation file")
    return dict(meta, videos={v: meta["videos"][v] for v in wanted})


def merged_meta(banks: Sequence[tuple[Path, Mapping[str, Any]]], videos: Sequence[Iterable[str] | None] | None
                ) -> tuple[dict[str, Any], dict[str, Path]]:
    """The meta of one bank made of the videos of several (`banks`: each bank's folder and
    meta; ``videos[i]`` the videos taken from bank i, None: all of them), and each video's
    source file.

    Every bank must have the same settings; a video taken from two banks, or one a bank
    does not have, is a `BankError`. Each video's entry is kept as it is (frames, rows,
    completion, source); file names that would clash ignoring case get a new name.
    """
    if not banks:
        raise BankError("merge: no banks given")
    if videos is not None and len(videos) != len(banks):
        raise BankError(f"merge: {len(videos)} video lists for {len(banks)} banks")
    first_root, first = banks[0]
    keys = [k for k in first if k != "videos"]
    for root, meta in banks[1:]:
        diffs = differences({k: first.get(k) for k in keys}, {k: meta.get(k) for k in keys})
        if diffs:
            raise BankError(f"merge: {root} was built with other settings than {first_root} "
                            f"({'; '.join(diffs)}); only shards of one bank can be merged")
    entries: dict[str, dict[str, Any]] = {}
    origin: dict[str, Path] = {}
    sources: dict[str, Path] = {}
    for i, (root, meta) in enumerate(banks):
        wanted = list(meta["videos"]) if videos is None or videos[i] is None else list(dict.fromkeys(videos[i] or []))
        for video in wanted:
            if video not in meta["videos"]:
                raise BankError(f"video {video!r} is not in the memory bank {root} ({len(meta['videos'])} "
                                f"videos); {REBUILD} over the same annotation file")
            if video in origin:
                raise BankError(f"merge: video {video!r} is taken from both {origin[video]} and "
                                f"{root}; each video must come from the one bank that owns it")
            origin[video] = root
            entries[video] = dict(meta["videos"][video])
            sources[video] = root / meta["videos"][video]["file"]
    taken: set[str] = set()
    for video, entry in entries.items():  # file names unique ignoring case in the merged bank
        name = entry["file"].rsplit("/", 1)[-1]
        if name.lower() in taken:
            entry["file"] = f"{FEATURES_DIR}/{file_name(video, taken)}"
        else:
            taken.add(name.lower())
    out = {k: first[k] for k in keys}
    out["videos"] = {v: entries[v] for v in sorted(entries)}
    return out, sources


def write_bank(dst: Path, meta: Mapping[str, Any], sources: Mapping[str, Path], *, desc: str,
               progress: bool = True) -> None:
    """Write a bank at `dst`: every video of `meta` copied from its file in `sources`, then
    ``meta.json``; into a temp folder renamed to `dst` at the end (atomic: an interrupted
    copy never looks like a bank; a re-run removes a killed copy's leftover). A missing
    source file is a `BankError`."""
    from tqdm import tqdm

    entries = list(meta["videos"].items())
    with atomic_path(dst, directory=True) as tmp:  # an empty dst is replaced at the end
        (tmp / FEATURES_DIR).mkdir()
        for video, entry in tqdm(entries, desc=desc, unit="video", disable=not progress or not entries,
                                 leave=False):
            src = sources[video]
            if not src.exists():
                raise BankError(f"video {video!r}: {src} is missing; {REBUILD}")
            shutil.copyfile(src, tmp / entry["file"])
        write_meta(tmp / META, meta)
