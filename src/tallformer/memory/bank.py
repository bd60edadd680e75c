"""The long-term memory bank: one feature row per 2 frames of every training video, on disk.

Layout of a bank folder::

    BANK/meta.json              settings + one entry per video (see below)
    BANK/features/VIDEO.npy     [num_rows, C] fp16 (or fp32), num_rows = ceil(num_frames / 2)

``meta.json``::

    {"format": "tallformer-memory-bank", "version": 1,
     "feature_dim": 1024, "dtype": "float16", "frames_per_row": 2, "chunk_size": 32,
     "rows_per_chunk": 16, "fps": 15.0, "backbone": {...} | null, "weights": "FILE" | null,
     "videos": {"VIDEO": {"num_frames": 480, "num_rows": 240, "file": "features/VIDEO.npy",
                          "complete": true, "source": {"name": "VIDEO.mp4", "bytes": 1234}}}}

``source`` (optional) identifies the file the rows were computed from, so that a build of
another dataset's videos with the same ids into this folder is refused instead of mixing
two datasets in one bank.

Each ``.npy`` is a plain numpy file: ``numpy.load(path, mmap_mode="r")`` reads it. Row ``r``
holds the features of frames ``{2r, 2r+1}`` (original: tools/data/extract_features.py:146-179;
the chunk grid starts at frame 0, so chunk ``c`` of the video is rows ``16c .. 16c+15``).

Reads and writes are contiguous slices of memory maps that stay open (an LRU cache per
process, reopened after ``fork``), never row-by-row gathers of a file opened per call (the
original: vedatad/partial_feedback/memory_bank.py:30-91). Rows outside ``[0, num_rows)``
read as zeros and are never written, like the original's padding for windows that hang
over either end of a video. Writes land in the page cache at once (visible to every process
on the host that maps the file); ``flush()`` makes them durable.

A video's ``complete`` flag is set by ``mark_complete`` after its rows were all written, so
an interrupted build is detectable and resumable; ``meta.json`` is always replaced
atomically (``tallformer.atomic``).

The disk space of a video's rows is reserved when its file is created (and for an
unfinished video when a build resumes; ``tallformer.atomic.reserve_space``), after a check
that the disk has room for every file to be written: writing rows through a memory map
into a file the disk cannot hold would end the process with SIGBUS, not an error.

This module is the storage; the folder's format and its validation are
``tallformer.memory.meta``, copies and merges ``tallformer.memory.copies``. It imports neither
``models`` nor ``data`` (building a bank is ``tallformer.engine.bank_build``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

import tallformer.memory.meta as bank_meta
from tallformer.atomic import check_free_space, reserve_space
from tallformer.errors import OutputError, name_list, output_error
from tallformer.memory.copies import merged_meta, shard_meta, write_bank
from tallformer.memory.meta import (
    DTYPES,
    FEATURES_DIR,
    META,
    REBUILD,
    BankError,
    canonical,
    write_meta,
)
from tallformer.ops.chunks import chunk_runs

__all__ = ["DTYPES", "BankError", "MemoryBank"]

# --------------------------------------------------------------------------- helpers


def _runs(chunk_ids: Sequence[int]) -> list[tuple[int, int, int]]:
    """``tallformer.ops.chunks.chunk_runs``, raising ``BankError`` for ids that are not
    strictly ascending integers >= 0."""
    try:
        return chunk_runs(chunk_ids)
    except ValueError as e:
        raise BankError(str(e)) from None


def _as_numpy(features: Any) -> np.ndarray:
    """numpy view of an array or a torch tensor (detached, on CPU; bf16 widened to fp32)
    without importing torch here."""
    if not isinstance(features, np.ndarray) and hasattr(features, "detach"):
        features = features.detach().cpu()
        if str(features.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            features = features.float()
        return features.numpy()
    return np.asarray(features)


def _npy_bytes(rows: int, dim: int, dtype: np.dtype) -> int:
    """Size of the ``.npy`` file of ``[rows, dim]`` (header of 128 bytes, as numpy writes
    it for such shapes, plus the data)."""
    return 128 + rows * dim * dtype.itemsize


def _unallocated(path: Path, size: int, block: int) -> int:
    """Bytes of disk a file of `size` bytes still needs beyond what `path` holds now."""
    want = -(-size // block) * block
    try:
        have = path.stat().st_blocks * 512
    except (OSError, AttributeError):
        have = 0
    return max(0, want - have)


def _reserve(path: Path) -> None:
    """Reserve the disk space of the whole file (`tallformer.atomic.reserve_space`)."""
    with open(path, "r+b") as f:
        reserve_space(f, 0, os.fstat(f.fileno()).st_size)


# --------------------------------------------------------------------------- the bank


class MemoryBank:
    """A memory bank folder opened for reading (``mode="r"``) or reading and writing (``"r+"``).

    Make one with ``MemoryBank.create`` or ``MemoryBank.open``. Per-process state is only the
    cache of open memory maps (at most ``max_open`` at once: every open map holds a file
    descriptor); it is dropped on pickling (spawned workers) and after ``fork``.

    Example (a bank of one 100-frame video, 8 channels; its rows written, then opened)::

        >>> import tempfile
        >>> import numpy as np
        >>> import tallformer
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     bank = tallformer.MemoryBank.create(f"{tmp}/bank", {"v1": 100}, feature_dim=8)
        ...     bank.write("v1", 0, np.ones((50, 8), dtype=np.float32))
        ...     bank.mark_complete("v1")
        ...     bank = tallformer.MemoryBank.open(f"{tmp}/bank", videos={"v1": 100}, feature_dim=8)
        ...     rows = bank.read("v1", 48, 4)
        >>> bank.num_rows("v1"), rows.shape, rows[:, 0].tolist()
        (50, (4, 8), [1.0, 1.0, 0.0, 0.0])
    """

    def __init__(self, root: Path, meta: dict[str, Any], mode: Literal["r", "r+"],
                 max_open: int = 256) -> None:
        self.root = Path(root)
        self.mode = mode
        self.max_open = max(1, int(max_open))
        self._meta = meta
        self._cache: OrderedDict[str, tuple[np.memmap, np.ndarray]] = OrderedDict()
        self._pid = os.getpid()

    # ------------------------------------------------------------------ create / open

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        videos: Mapping[str, int],
        feature_dim: int,
        *,
        dtype: str = "float16",
        frames_per_row: int = 2,
        chunk_size: int = 32,
        fps: float = 15.0,
        backbone: Any = None,
        weights: str | os.PathLike[str] | None = None,
        exist_ok: bool = False,
        sources: Mapping[str, Mapping[str, Any]] | None = None,
        overwrite: bool = False,
        max_open: int = 256,
    ) -> MemoryBank:
        """Create a bank with zero-filled (sparse) files for ``videos`` ``{video_id: num_frames}``.

        ``frames_per_row`` 2 (Video Swin's temporal patch) and ``chunk_size`` 32 are the
        paper's (original: configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:8,15).
        ``backbone`` (dict or ``BackboneConfig``) and ``weights`` record what the bank is built
        from; ``sources`` ``{video_id: {...}}`` (optional, e.g. ``{"name": "v.mp4", "bytes":
        1234}``) what each video's rows are computed from.

        With ``exist_ok`` an existing bank at ``root`` with the same settings is reused (for
        resumable builds; weights paths are compared as files, so ``./x.pth`` and its
        absolute path agree): videos it lacks get fresh zero files marked incomplete,
        finished videos keep their rows, a damaged file is recreated. A video already in the
        bank whose frame count or recorded source differs from the one given is an error
        naming the videos (another dataset with the same ids would otherwise be mixed into
        this bank), unless ``overwrite``: then those videos get fresh zero files too.
        Returns the bank opened ``"r+"``, every new video ``complete = False``.
        """
        root = Path(root)
        settings = bank_meta.settings(feature_dim, dtype, frames_per_row, chunk_size, fps, backbone, weights)
        bank_meta.check_videos(videos, sources)
        if (root / META).exists():
            if not exist_ok:
                raise BankError(
                    f"{root} already holds a memory bank; choose another folder, delete it, "
                    "or pass exist_ok=True to resume building it"
                )
            bank = cls.open(root, "r+", max_open=max_open)
            bank._check_settings(settings)
            if not overwrite:
                bank._check_same_videos(videos, sources)
        else:
            if root.exists() and any(not p.name.startswith(".") for p in root.iterdir()):  # .lock aside
                raise BankError(
                    f"{root} exists, is not empty and holds no {META}; choose an empty or new folder"
                )
            root.mkdir(parents=True, exist_ok=True)
            bank = cls(root, dict(settings, videos={}), "r+", max_open=max_open)
        bank._add_videos(videos, sources or {})
        write_meta(root / META, bank._meta)
        return bank

    def _check_settings(self, settings: Mapping[str, Any]) -> None:
        """Raise ``BankError`` listing the settings (``key: bank -> asked``) that differ."""
        have = {key: self._meta.get(key) for key in settings}
        diffs = bank_meta.differences(have, settings)
        if diffs:
            raise BankError(
                f"{self.root / META}: the existing bank was built with other settings "
                f"({'; '.join(diffs)}; bank -> asked for); build into another folder, or "
                "delete this one to rebuild it"
            )

    def _check_same_videos(self, videos: Mapping[str, int],
                           sources: Mapping[str, Mapping[str, Any]] | None) -> None:
        """Raise ``BankError`` naming the videos already here that differ from those given."""
        changed = []
        for video, n in videos.items():
            entry = self._meta["videos"].get(video)
            if entry is None:
                continue
            diffs = bank_meta.video_differences(entry, int(n), None if sources is None else sources.get(video))
            if diffs:
                changed.append(f"{video} ({', '.join(diffs)})")
        if changed:
            raise BankError(
                f"{self.root}: {len(changed)} video(s) in this bank were built from other files "
                f"than the ones given now (another dataset with the same ids, or changed "
                f"videos): {name_list(changed, 5)}; build into another folder, or rebuild "
                "these videos with overwrite=True (`tallformer bank build --overwrite`)"
            )

    def _add_videos(self, videos: Mapping[str, int], sources: Mapping[str, Mapping[str, Any]]) -> None:
        """Give every video that is new, changed or damaged a fresh zero file (incomplete),
        its disk space reserved, and reserve the space of the unfinished ones kept; first
        check that the disk holds them all (`OutputError`: ``no space left on DEVICE for
        the memory bank BANK: needs N, M free``)."""
        meta = self._meta
        taken = {e["file"].rsplit("/", 1)[-1].lower() for e in meta["videos"].values()}
        fpr, dim, dtype = meta["frames_per_row"], meta["feature_dim"], np.dtype(meta["dtype"])
        fresh: list[tuple[str, int, int, str, Mapping[str, Any] | None]] = []
        kept: list[str] = []
        for video, frames in videos.items():
            n = int(frames)
            entry = meta["videos"].get(video)
            source = sources.get(video)
            if (entry is not None and not bank_meta.video_differences(entry, n, source)
                    and self._check_file(video) is None):
                if not entry.get("complete", False):
                    kept.append(video)  # unfinished: its rows will be written
                continue  # kept as it is (finished or not)
            file = f"{FEATURES_DIR}/{bank_meta.file_name(video, taken)}" if entry is None else entry["file"]
            fresh.append((video, n, math.ceil(n / fpr), file, source))
        try:
            block = os.statvfs(self.root).f_frsize or 4096
        except (OSError, AttributeError):
            block = 4096
        needed = sum(_unallocated(self.root / file, _npy_bytes(rows, dim, dtype), block)
                     for _, _, rows, file, _ in fresh)
        needed += sum(_unallocated(self.path(video), self.path(video).stat().st_size, block) for video in kept)
        if needed:  # and room to rewrite meta.json next to the old one
            check_free_space(self.root, needed + 2 * len(canonical(meta)) + 4 * block,
                             f"the memory bank {self.root}")
        try:
            (self.root / FEATURES_DIR).mkdir(exist_ok=True)
            for video, n, rows, file, source in fresh:
                self._drop(video)
                np.lib.format.open_memmap(self.root / file, mode="w+", dtype=dtype, shape=(rows, dim))  # zeros
                _reserve(self.root / file)
                new: dict[str, Any] = {"num_frames": n, "num_rows": rows, "file": file, "complete": False}
                if source is not None:
                    new["source"] = dict(source)
                meta["videos"][video] = new
            for video in kept:
                _reserve(self.path(video))
        except OutputError:
            raise
        except OSError as exc:
            raise output_error(self.root, exc) from exc

    @classmethod
    def open(cls, root: str | os.PathLike[str], mode: Literal["r", "r+"] = "r",
             max_open: int = 256, *, videos: Mapping[str, int] | None = None,
             feature_dim: int | None = None, dtype: str | None = None,
             fps: float | None = None) -> MemoryBank:
        """Open an existing bank. ``mode="r"`` reads only; ``"r+"`` also writes rows and flags.

        With ``videos`` (``{video_id: num_frames}`` of the training videos) the whole bank is
        validated before it is returned (``validate``: every video present and complete,
        rows matching the frame counts, and ``feature_dim``, ``dtype``, ``fps`` when given);
        ``tallformer.engine.run_bank.open_training_bank`` does this from the annotation file
        and the config."""
        root = Path(root)
        if mode not in ("r", "r+"):
            raise BankError(f"mode must be 'r' or 'r+', got {mode!r}")
        path = root / META
        if not path.is_file():
            raise BankError(f"no memory bank at {root}: {META} not found; {REBUILD}")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise BankError(f"{path}: cannot read bank meta ({e}); {REBUILD}") from None
        bank_meta.check_meta(meta, path)
        bank = cls(root, meta, mode, max_open=max_open)
        if videos is not None:
            bank.validate(videos, feature_dim, dtype, fps=fps)
        return bank

    # ------------------------------------------------------------------ properties

    @property
    def meta(self) -> dict[str, Any]:
        """A copy of the parsed ``meta.json``."""
        return json.loads(canonical(self._meta))

    @property
    def feature_dim(self) -> int:
        return int(self._meta["feature_dim"])

    @property
    def dtype(self) -> str:
        return str(self._meta["dtype"])

    @property
    def frames_per_row(self) -> int:
        return int(self._meta["frames_per_row"])

    @property
    def chunk_size(self) -> int:
        return int(self._meta["chunk_size"])

    @property
    def rows_per_chunk(self) -> int:
        return int(self._meta["rows_per_chunk"])

    @property
    def fps(self) -> float:
        return float(self._meta["fps"])

    @property
    def backbone(self) -> dict[str, Any] | None:
        b = self._meta["backbone"]
        return None if b is None else dict(b)

    @property
    def weights(self) -> str | None:
        return self._meta["weights"]

    @property
    def videos(self) -> list[str]:
        return list(self._meta["videos"])

    def __len__(self) -> int:
        return len(self._meta["videos"])

    def __contains__(self, video: object) -> bool:
        return video in self._meta["videos"]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._meta["videos"]))

    def __repr__(self) -> str:
        return (f"MemoryBank({str(self.root)!r}, mode={self.mode!r}, videos={len(self)}, "
                f"C={self.feature_dim}, dtype={self.dtype})")

    def _entry(self, video: str) -> dict[str, Any]:
        try:
            return self._meta["videos"][video]
        except KeyError:
            raise BankError(
                f"video {video!r} is not in the memory bank {self.root} ({len(self)} videos); "
                f"{REBUILD} over the same annotation file"
            ) from None

    def stats(self) -> dict[str, int]:
        """Totals for reports: videos, finished videos, rows, bytes of feature data."""
        entries = self._meta["videos"].values()
        rows = sum(int(e["num_rows"]) for e in entries)
        return {
            "videos": len(self),
            "complete": sum(bool(e.get("complete", False)) for e in entries),
            "rows": rows,
            "bytes": rows * self.feature_dim * np.dtype(self.dtype).itemsize,
        }

    def summary(self) -> dict[str, Any]:
        """What ``tallformer bank info`` prints, as a JSON-serialisable dict.

        Keys: ``path``, ``videos`` and ``complete`` (counts), ``incomplete`` and
        ``missing_files`` (video ids), ``rows``, ``frames``, ``feature_dim``, ``dtype``,
        ``frames_per_row``, ``chunk_size``, ``fps``, ``backbone``, ``weights``,
        ``feature_bytes`` (rows x C x itemsize), ``disk_bytes`` (meta.json and the feature
        files as they are on disk) and ``fingerprint``.
        """
        stats = self.stats()
        disk = (self.root / META).stat().st_size
        missing_files = []
        for video in self.videos:
            file = self.path(video)
            if file.is_file():
                disk += file.stat().st_size
            else:
                missing_files.append(video)
        return {
            "path": str(self.root),
            "videos": stats["videos"],
            "complete": stats["complete"],
            "incomplete": [v for v in self.videos if not self.is_complete(v)],
            "missing_files": missing_files,
            "rows": stats["rows"],
            "frames": sum(self.num_frames(v) for v in self.videos),
            "feature_dim": self.feature_dim,
            "dtype": self.dtype,
            "frames_per_row": self.frames_per_row,
            "chunk_size": self.chunk_size,
            "fps": self.fps,
            "backbone": self.backbone,
            "weights": self.weights,
            "feature_bytes": stats["bytes"],
            "disk_bytes": disk,
            "fingerprint": self.fingerprint(),
        }

    def num_rows(self, video: str) -> int:
        return int(self._entry(video)["num_rows"])

    def num_frames(self, video: str) -> int:
        return int(self._entry(video)["num_frames"])

    def path(self, video: str) -> Path:
        """The ``.npy`` file of ``video``."""
        return self.root / self._entry(video)["file"]

    # ------------------------------------------------------------------ memmap cache

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def _array(self, video: str) -> np.ndarray:
        """The open memory map of ``video`` as a plain ndarray view (cached, LRU)."""
        if self._pid != os.getpid():  # forked: do not share the parent's cache
            self._cache = OrderedDict()
            self._pid = os.getpid()
        hit = self._cache.get(video)
        if hit is not None:
            self._cache.move_to_end(video)
            return hit[1]
        entry = self._entry(video)
        path = self.root / entry["file"]
        try:
            mm = np.load(path, mmap_mode=self.mode, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise BankError(f"video {video!r}: cannot open {path} ({e}); {REBUILD}") from None
        want = (int(entry["num_rows"]), self.feature_dim)
        if mm.shape != want or mm.dtype != np.dtype(self.dtype):
            raise BankError(
                f"video {video!r}: {path} holds {mm.dtype} {list(mm.shape)} but {META} says "
                f"{self.dtype} {list(want)}; {REBUILD}"
            )
        arr = mm.view(np.ndarray)  # slicing a plain view skips np.memmap's per-slice overhead
        self._cache[video] = (mm, arr)
        while len(self._cache) > self.max_open:
            _, (old, _) = self._cache.popitem(last=False)
            if self.mode == "r+":
                old.flush()
        return arr

    def _drop(self, video: str) -> None:
        item = self._cache.pop(video, None)
        if item is not None and self.mode == "r+":
            item[0].flush()

    def flush(self) -> None:
        """Flush every open writable map to disk (msync). Reads by other processes on the same
        host see writes without it; flush before copying the files or at checkpoints."""
        if self.mode == "r+" and self._pid == os.getpid():
            for mm, _ in self._cache.values():
                mm.flush()

    def close(self) -> None:
        """Flush and drop every open memory map (the bank stays usable; maps reopen lazily)."""
        self.flush()
        self._cache = OrderedDict()

    # ------------------------------------------------------------------ rows

    def _span(self, video: str, row_start: int, num_rows: int) -> tuple[int, int, int]:
        if num_rows < 0:
            raise BankError(f"video {video!r}: num_rows must be >= 0, got {num_rows}")
        total = self.num_rows(video)
        lo = min(max(row_start, 0), total)
        hi = max(min(row_start + num_rows, total), lo)
        return lo, hi, total

    def read(self, video: str, row_start: int, num_rows: int,
             *, dtype: str | np.dtype | None = None) -> np.ndarray:
        """Rows ``row_start .. row_start + num_rows - 1`` of ``video``: ``[num_rows, C]``.

        One contiguous slice copy; rows before 0 or at/after the video's ``num_rows`` are
        zeros. The result has the bank's dtype unless ``dtype`` is given (cast in the copy).
        """
        row_start, num_rows = int(row_start), int(num_rows)
        lo, hi, _ = self._span(video, row_start, num_rows)
        arr = self._array(video)
        out_dtype = np.dtype(self.dtype if dtype is None else dtype)
        if lo == row_start and hi == row_start + num_rows:
            return arr[lo:hi].astype(out_dtype, copy=True)
        out = np.zeros((num_rows, self.feature_dim), dtype=out_dtype)
        if hi > lo:
            out[lo - row_start:hi - row_start] = arr[lo:hi]
        return out

    def write(self, video: str, row_start: int, features: Any) -> None:
        """Write ``features`` ``[n, C]`` at rows ``row_start ..`` of ``video`` (one slice copy,
        cast to the bank dtype). Rows outside ``[0, num_rows)`` are dropped, not written.
        Accepts numpy arrays or torch tensors (detached and moved to the CPU here)."""
        if self.mode != "r+":
            raise BankError(f"memory bank {self.root} is open read-only; open it with mode='r+'")
        feats = _as_numpy(features)
        if feats.ndim != 2 or feats.shape[1] != self.feature_dim:
            raise BankError(
                f"video {video!r}: features to write must be [n, {self.feature_dim}], got "
                f"{list(feats.shape)}"
            )
        row_start = int(row_start)
        lo, hi, _ = self._span(video, row_start, feats.shape[0])
        arr = self._array(video)
        if hi > lo:
            arr[lo:hi] = feats[lo - row_start:hi - row_start]

    def read_chunks(self, video: str, row_start: int, chunk_ids: Sequence[int],
                    rows_per_chunk: int | None = None,
                    *, dtype: str | np.dtype | None = None) -> np.ndarray:
        """Chunk ``c`` = rows ``row_start + c * rows_per_chunk ..`` (+rows_per_chunk) for each
        id in ``chunk_ids`` (sorted, distinct): ``[len(chunk_ids), C, rows_per_chunk]``.

        The dataset's ``feature_reader`` contract (the original's layout,
        ``[n_chunks, C, 16]``: vedatad/partial_feedback/memory_bank.py:60-61); a contiguous run of ids is one slice copy. Rows outside the
        video are zeros. An empty ``chunk_ids`` gives ``[0, C, rows_per_chunk]``. The result
        is a transposed view of a C-contiguous ``[k, rows_per_chunk, C]`` buffer (the rows as
        stored, no strided transposing copy); ``np.ascontiguousarray`` it if C order matters.
        """
        rpc = self.rows_per_chunk if rows_per_chunk is None else int(rows_per_chunk)
        if rpc < 1:
            raise BankError(f"rows_per_chunk must be >= 1, got {rpc}")
        out = np.empty((len(chunk_ids), rpc, self.feature_dim),
                       dtype=np.dtype(self.dtype if dtype is None else dtype))
        for pos, first, length in _runs(chunk_ids):
            dst = out[pos:pos + length].reshape(length * rpc, self.feature_dim)  # a view
            start = int(row_start) + first * rpc
            lo, hi, _ = self._span(video, start, length * rpc)
            if hi - lo < length * rpc:  # hangs over an end of the video: zero padding
                dst[:] = 0
            if hi > lo:
                dst[lo - start:hi - start] = self._array(video)[lo:hi]
        return out.transpose(0, 2, 1)

    def write_chunks(self, video: str, row_start: int, chunk_ids: Sequence[int],
                     features: Any) -> None:
        """Write ``features`` ``[len(chunk_ids), C, rows_per_chunk]`` back at the chunks' rows
        (inverse of ``read_chunks``; rows_per_chunk is taken from the array). Rows outside the
        video are dropped."""
        feats = _as_numpy(features)
        if feats.ndim != 3 or feats.shape[0] != len(chunk_ids) or feats.shape[1] != self.feature_dim:
            raise BankError(
                f"video {video!r}: chunk features must be [{len(chunk_ids)}, {self.feature_dim}, "
                f"rows_per_chunk], got {list(feats.shape)}"
            )
        rpc = feats.shape[2]
        for pos, first, length in _runs(chunk_ids):
            block = feats[pos:pos + length].transpose(0, 2, 1).reshape(length * rpc, self.feature_dim)
            self.write(video, int(row_start) + first * rpc, block)

    # ------------------------------------------------------------------ completion flags

    def is_complete(self, video: str) -> bool:
        """Whether every row of ``video`` was written by a finished build."""
        return bool(self._entry(video).get("complete", False))

    def mark_complete(self, video: str, complete: bool = True) -> None:
        """Flush ``video``'s rows and record it finished in ``meta.json`` (atomic rewrite).

        The flags on disk are re-read under a lock first, so several build processes can mark
        their own videos without losing each other's flags.
        """
        if self.mode != "r+":
            raise BankError(f"memory bank {self.root} is open read-only; open it with mode='r+'")
        self._entry(video)
        item = self._cache.get(video) if self._pid == os.getpid() else None
        if item is not None:
            item[0].flush()
        with self._meta_lock():
            try:
                on_disk = json.loads((self.root / META).read_text(encoding="utf-8"))
                for vid, entry in on_disk.get("videos", {}).items():
                    if vid in self._meta["videos"] and entry.get("file") == self._meta["videos"][vid]["file"]:
                        self._meta["videos"][vid]["complete"] = bool(entry.get("complete", False))
            except (OSError, json.JSONDecodeError):
                pass
            self._meta["videos"][video]["complete"] = bool(complete)
            write_meta(self.root / META, self._meta)

    @contextlib.contextmanager
    def _meta_lock(self) -> Iterator[None]:
        try:
            import fcntl
        except ImportError:  # not POSIX: no cross-process lock
            yield
            return
        with open(self.root / ".meta.lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    # ------------------------------------------------------------------ validation

    def validate(self, videos: Mapping[str, int], feature_dim: int | None = None,
                 dtype: str | None = None, *, fps: float | None = None,
                 check_files: bool = True) -> None:
        """Check the bank before training (`tallformer.memory.meta.validate`): raises
        ``BankError`` listing every problem.

        ``videos`` ``{video_id: expected num_frames}`` (the training videos at the configured
        fps): each must be in the bank, finished (``complete``), with that frame count and
        ``ceil(frames / frames_per_row)`` rows; ``feature_dim`` (the backbone's C) and
        ``dtype`` (``memory.dtype``) and ``fps`` (``data.fps``) must match when given; with
        ``check_files`` every file's header is read to check it exists with the recorded
        shape and dtype.
        """
        bank_meta.validate(self.root, self._meta, videos, feature_dim, dtype, fps=fps, check_files=check_files)

    def _check_file(self, video: str) -> str | None:
        return bank_meta.check_file(self.root, video, self._entry(video), self.feature_dim, self.dtype)

    # ------------------------------------------------------------------ identity and copies

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the canonical JSON of ``meta.json``: settings, backbone, weights
        file, every video's frames/rows/file and completion. Row contents are not hashed (they
        change during training), so a run's copy keeps the fingerprint of its source."""
        return hashlib.sha256(canonical(self._meta)).hexdigest()

    def copy_to(self, dst: str | os.PathLike[str], *, mode: Literal["r", "r+"] = "r+",
                videos: Iterable[str] | None = None, progress: bool = True) -> MemoryBank:
        """Copy the bank to ``dst`` (a run directory's bank) and open the copy.

        Atomic (``tallformer.memory.copies.write_bank``): files go to a temp folder next to
        ``dst`` that is renamed to ``dst`` at the end, so an interrupted copy never looks
        like a bank; one process makes the copy (the temp folder's name is fixed, so a
        re-run removes a killed copy's leftover). If ``dst`` already holds a bank with the
        same fingerprint (resume), it is reused as it is; a different bank there is an
        error. ``videos`` copies only those videos (a shard for a node that trains on only
        its own videos); the shard's meta lists only them, so its fingerprint differs from
        the full bank's.
        """
        dst = Path(dst)
        meta = shard_meta(self._meta, self.root, videos)
        fingerprint = hashlib.sha256(canonical(meta)).hexdigest()
        if dst.resolve() == self.root.resolve():
            raise BankError(f"cannot copy the memory bank {self.root} onto itself")
        if (dst / META).exists():
            other = MemoryBank.open(dst, mode)
            if other.fingerprint() != fingerprint:
                raise BankError(
                    f"{dst} already holds a different memory bank (fingerprint "
                    f"{other.fingerprint()[:12]}, source {self.root} has "
                    f"{fingerprint[:12]}); delete it or use another run directory"
                )
            bad = [p for p in (other._check_file(v) for v in other.videos) if p]
            if bad:
                raise BankError(f"{dst}: existing bank copy is damaged: {bad[0]}; delete it")
            return other
        if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
            raise BankError(f"{dst} exists and is not an empty folder; cannot copy the bank there")
        self.flush()
        write_bank(dst, meta, {v: self.root / e["file"] for v, e in meta["videos"].items()},
                   desc=f"copy bank -> {dst}", progress=progress)
        return MemoryBank.open(dst, mode)

    @classmethod
    def merge(cls, dst: str | os.PathLike[str], banks: Sequence[MemoryBank], *,
              videos: Sequence[Iterable[str] | None] | None = None,
              mode: Literal["r", "r+"] = "r+", progress: bool = True) -> MemoryBank:
        """One bank at ``dst`` from the videos of several (the node shards of a node-local run).

        ``videos[i]``: the videos to take from ``banks[i]`` (the ones that bank owns; None:
        all of its videos). Every bank must have the same settings (dim, dtype, rows,
        chunk, fps, backbone, weights); a video taken from two banks is an error, so is
        a video whose rows a bank does not have (`tallformer.memory.copies.merged_meta`).
        Each video's entry is kept as it is (its frames, rows, completion and source), so
        merging the shards that ``copy_to(..., videos=...)`` made of one bank gives a bank
        with that bank's fingerprint. Written like ``copy_to``: into a temp folder renamed
        to ``dst`` at the end; ``dst`` must be new or an empty folder.
        """
        dst = Path(dst)
        meta, sources = merged_meta([(bank.root, bank._meta) for bank in banks], videos)
        if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
            raise BankError(f"{dst} exists and is not an empty folder; merge into a new folder")
        for bank in banks:
            if dst.resolve() == bank.root.resolve():
                raise BankError(f"merge: the output {dst} is one of the banks merged")
            bank.flush()
        write_bank(dst, meta, sources, desc=f"merge banks -> {dst}", progress=progress)
        return MemoryBank.open(dst, mode)
