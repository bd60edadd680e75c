"""The format of a memory bank folder and its validation: what ``meta.json`` must hold, how
a bank is compared with the settings and videos a run asks for, and the checks of the
feature files' headers (`tallformer.memory.bank.MemoryBank` stores; this module checks).

Imports neither torch nor ``models`` / ``data``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from tallformer.atomic import write_text
from tallformer.errors import TallformerError, name_list

__all__ = [
    "DTYPES",
    "FEATURES_DIR",
    "FORMAT",
    "META",
    "REBUILD",
    "VERSION",
    "BankError",
    "backbone_dict",
    "canonical",
    "check_file",
    "check_meta",
    "check_videos",
    "differences",
    "file_name",
    "settings",
    "validate",
    "video_differences",
    "write_meta",
]

FORMAT = "tallformer-memory-bank"
VERSION = 1
META = "meta.json"
FEATURES_DIR = "features"
DTYPES: tuple[str, ...] = ("float16", "float32")
REBUILD = "rebuild it with `tallformer bank build --config FILE --out DIR`"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,150}$")
_MISSING = object()  # a key one side of a comparison lacks


class BankError(TallformerError, ValueError):
    """A bank that is missing, malformed or does not fit the videos/config. Names the bank
    folder, the video and the numbers, and says how to fix it."""


def write_meta(path: Path, meta: Mapping[str, Any]) -> None:
    """Write ``meta.json`` atomically (indent 1, sorted keys, ASCII, trailing newline)."""
    write_text(path, json.dumps(meta, indent=1, sort_keys=True) + "\n")


def canonical(meta: Mapping[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")


def file_name(video: str, taken: set[str]) -> str:
    """A file name for ``video``'s rows: the id itself when it is a safe file name, else a
    sanitised form plus a hash; unique ignoring case (case-insensitive file systems)."""
    digest = hashlib.sha1(video.encode("utf-8")).hexdigest()[:12]
    if _SAFE_NAME.match(video) and video.lower() not in taken:
        stem = video
    else:
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", video)[:100].lstrip(".") + "-" + digest
    name = f"{stem}.npy"
    n = 1
    while name.lower() in taken:  # only on pathological collisions
        name = f"{stem}-{n}.npy"
        n += 1
    taken.add(name.lower())
    return name


def backbone_dict(backbone: Any) -> dict[str, Any] | None:
    """The backbone settings as meta.json holds them: a mapping or any dataclass instance
    (e.g. ``tallformer.config.BackboneConfig``), as plain JSON values."""
    if backbone is None:
        return None
    if dataclasses.is_dataclass(backbone) and not isinstance(backbone, type):
        backbone = dataclasses.asdict(backbone)
    if not isinstance(backbone, Mapping):
        raise BankError(f"backbone must be a dict or a dataclass (e.g. BackboneConfig), got "
                        f"{type(backbone).__name__}")
    try:  # as meta.json will hold it (tuples -> lists), so a resumed build compares equal
        return json.loads(json.dumps(dict(backbone)))
    except (TypeError, ValueError) as e:
        raise BankError(f"backbone config is not JSON-serialisable: {e}") from None


def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < lo:
        raise BankError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def settings(feature_dim: int, dtype: str, frames_per_row: int, chunk_size: int, fps: float,
              backbone: Any, weights: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The bank-wide part of ``meta.json``, checked."""
    if dtype not in DTYPES:
        raise BankError(f"bank dtype must be one of {list(DTYPES)} (memory.dtype), got {dtype!r}")
    feature_dim = _check_int("feature_dim", feature_dim, 1)
    frames_per_row = _check_int("frames_per_row", frames_per_row, 1)
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    if chunk_size % frames_per_row:
        raise BankError(
            f"chunk_size {chunk_size} must be a multiple of frames_per_row {frames_per_row}"
        )
    if isinstance(fps, bool) or not isinstance(fps, Real) or not fps > 0:
        raise BankError(f"fps must be > 0, got {fps!r}")
    return {
        "format": FORMAT,
        "version": VERSION,
        "feature_dim": feature_dim,
        "dtype": dtype,
        "frames_per_row": frames_per_row,
        "chunk_size": chunk_size,
        "rows_per_chunk": chunk_size // frames_per_row,
        "fps": float(fps),
        "backbone": backbone_dict(backbone),
        "weights": None if weights is None else str(weights),
    }


def check_videos(videos: Mapping[str, int],
                  sources: Mapping[str, Mapping[str, Any]] | None) -> None:
    for video, n in videos.items():
        if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
            raise BankError(
                f"video {video!r}: num_frames must be an integer >= 1, got {n!r} "
                "(a video with no decodable frames cannot go in a bank)"
            )
    for video, source in (sources or {}).items():
        if not isinstance(source, Mapping):
            raise BankError(f"video {video!r}: source must be a dict, got {type(source).__name__}")


def _same_path(a: str, b: str) -> bool:
    """Two spellings of one file: equal strings, or equal once resolved (``./x.pth`` and
    its absolute path)."""
    if a == b:
        return True
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError):
        return False


def _same_setting(key: str, have: Any, want: Any) -> bool:
    if key.rsplit(".", 1)[-1] == "weights" and isinstance(have, str) and isinstance(want, str):
        return _same_path(have, want)  # a file path
    return bool(have == want)


def differences(have: Mapping[str, Any], want: Mapping[str, Any],
                 prefix: str = "") -> list[str]:
    """``key: old -> new`` for every key whose value differs (nested dicts key by key)."""
    def show(value: Any) -> str:
        return "(unset)" if value is _MISSING else repr(value)

    out: list[str] = []
    for key in dict.fromkeys([*have, *want]):
        old, new = have.get(key, _MISSING), want.get(key, _MISSING)
        name = f"{prefix}{key}"
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            out.extend(differences(old, new, f"{name}."))
        elif not _same_setting(name, old, new):
            out.append(f"{name}: {show(old)} -> {show(new)}")
    return out


def video_differences(entry: Mapping[str, Any], num_frames: int,
                       source: Mapping[str, Any] | None) -> list[str]:
    """How a video in the bank differs from the one given now: its frame count, and its
    source file when both sides record one."""
    out = []
    if entry["num_frames"] != num_frames:
        out.append(f"{entry['num_frames']} -> {num_frames} frames")
    old = entry.get("source")
    if source is not None and isinstance(old, Mapping):
        out.extend(differences(old, source, "source."))
    return out


def check_meta(meta: Any, path: Path) -> None:
    """Validate the structure of a parsed ``meta.json``; errors name the file and the key."""
    def bad(what: str) -> BankError:
        return BankError(f"{path}: {what}; {REBUILD}")

    if not isinstance(meta, dict):
        raise bad("not a JSON object")
    _check_meta_settings(meta, bad)
    videos = meta.get("videos")
    if not isinstance(videos, dict):
        raise bad("'videos' must be an object {video_id: {...}}")
    for video, entry in videos.items():
        _check_meta_video(video, entry, bad)


def _check_meta_settings(meta: dict[str, Any], bad: Callable[[str], BankError]) -> None:
    if meta.get("format") != FORMAT:
        raise bad(f"'format' is {meta.get('format')!r}, expected {FORMAT!r} (not a tallformer bank)")
    if meta.get("version") != VERSION:
        raise bad(f"'version' is {meta.get('version')!r}; this tallformer reads version {VERSION}")
    for key in ("feature_dim", "frames_per_row", "chunk_size", "rows_per_chunk"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad(f"{key!r} must be an integer >= 1, got {value!r}")
    if meta.get("dtype") not in DTYPES:
        raise bad(f"'dtype' must be one of {list(DTYPES)}, got {meta.get('dtype')!r}")
    if not isinstance(meta.get("fps"), (int, float)) or meta["fps"] <= 0:
        raise bad(f"'fps' must be > 0, got {meta.get('fps')!r}")
    if "backbone" not in meta or not (meta["backbone"] is None or isinstance(meta["backbone"], dict)):
        raise bad("'backbone' must be an object or null")
    if "weights" not in meta or not (meta["weights"] is None or isinstance(meta["weights"], str)):
        raise bad("'weights' must be a string or null")


def _check_meta_video(video: str, entry: Any, bad: Callable[[str], BankError]) -> None:
    if not isinstance(entry, dict):
        raise bad(f"videos[{video!r}] must be an object")
    for key in ("num_frames", "num_rows"):
        if isinstance(entry.get(key), bool) or not isinstance(entry.get(key), int) or entry[key] < 1:
            raise bad(f"videos[{video!r}][{key!r}] must be an integer >= 1, got {entry.get(key)!r}")
    file = entry.get("file")
    if not isinstance(file, str) or not file or file.startswith("/") or ".." in file.split("/"):
        raise bad(f"videos[{video!r}]['file'] must be a relative path inside the bank, got {file!r}")
    if not isinstance(entry.get("complete", False), bool):
        raise bad(f"videos[{video!r}]['complete'] must be true or false")
    if not isinstance(entry.get("source", {}), dict):
        raise bad(f"videos[{video!r}]['source'] must be an object")


def check_file(root: Path, video: str, entry: Mapping[str, Any], feature_dim: int, dtype: str) -> str | None:
    """What is wrong with `video`'s feature file (its header's shape and dtype against the
    entry), or None."""
    path = root / entry["file"]
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dt = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dt = np.lib.format.read_array_header_2_0(f)
    except (OSError, ValueError) as e:
        return f"video {video!r}: cannot read {path} ({e})"
    want = (int(entry["num_rows"]), feature_dim)
    if tuple(shape) != want or dt != np.dtype(dtype):
        return (f"video {video!r}: {path} holds {dt} {list(shape)}, meta says {dtype} "
                f"{list(want)}")
    return None


def validate(root: Path, meta: Mapping[str, Any], videos: Mapping[str, int], feature_dim: int | None = None,
             dtype: str | None = None, *, fps: float | None = None, check_files: bool = True) -> None:
    """Check a bank (folder `root`, parsed `meta`) before training: raises `BankError`
    listing every problem.

    ``videos`` ``{video_id: expected num_frames}`` (the training videos at the configured
    fps): each must be in the bank, finished (``complete``), with that frame count and
    ``ceil(frames / frames_per_row)`` rows; ``feature_dim`` (the backbone's C) and
    ``dtype`` (``memory.dtype``) and ``fps`` (``data.fps``) must match when given; with
    ``check_files`` every file's header is read to check it exists with the recorded shape
    and dtype.
    """
    problems: list[str] = []
    have_dim, have_dtype, have_fps = int(meta["feature_dim"]), str(meta["dtype"]), float(meta["fps"])
    if feature_dim is not None and int(feature_dim) != have_dim:
        problems.append(
            f"feature dim is {have_dim} but the model's backbone gives {feature_dim} "
            f"(bank built with backbone {meta['backbone']})"
        )
    if dtype is not None and str(dtype) != have_dtype:
        problems.append(f"dtype is {have_dtype} but the config asks for {dtype} (memory.dtype)")
    if fps is not None and abs(float(fps) - have_fps) > 1e-6:
        problems.append(f"fps is {have_fps:g} but the config decodes at {float(fps):g} "
                        "(data.fps)")
    fpr = int(meta["frames_per_row"])
    missing = [repr(v) for v in videos if v not in meta["videos"]]
    if missing:
        problems.append(f"{len(missing)} training video(s) missing: {name_list(missing, 10)}")
    for video, frames in videos.items():
        entry = meta["videos"].get(video)
        if entry is None:
            continue
        want_rows = math.ceil(int(frames) / fpr)
        if entry["num_frames"] != int(frames) or entry["num_rows"] != want_rows:
            problems.append(
                f"video {video!r}: bank has {entry['num_frames']} frames / {entry['num_rows']} "
                f"rows, the video has {frames} frames -> {want_rows} rows "
                f"(ceil({frames}/{fpr}))"
            )
            continue
        if not entry.get("complete", False):
            problems.append(f"video {video!r}: rows not all written (the build was "
                            "interrupted or failed for it)")
            continue
        if check_files:
            problem = check_file(root, video, entry, have_dim, have_dtype)
            if problem:
                problems.append(problem)
    if problems:
        raise BankError(
            f"memory bank {root} does not fit the training data:\n  - "
            + name_list(problems, 20, sep="\n  - ")
            + f"\nFix: {REBUILD} (same config and annotations), or point memory.bank_dir at "
            "the right bank."
        )
