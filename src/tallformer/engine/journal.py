"""The bank's undo journal: restore a run's memory bank to its state at the last checkpoint.

Every training step overwrites bank rows, so after a kill the bank holds writes that the
last checkpoint does not know about. Copying the whole bank at each checkpoint costs a
full bank write (0.65 GB for THUMOS14 Swin-B fp16, 8 GB for ActivityNet); the journal
instead records, just before each write, the OLD values of exactly the rows the write
overwrites (a few KiB per sample). On resume the records written since the checkpoint
are replayed backwards, newest first, which puts every row back to its checkpoint value.

- One file per rank per segment, ``RUN_DIR/journal/from_<step>.rank<r>.bin``: the
  segment that starts at checkpoint step ``<step>``. A checkpoint cuts the journal: the
  ranks start a new segment and delete the old one, after the checkpoint file is
  complete. So the segment named by the checkpoint's step holds exactly the writes after it.
- A record is appended and flushed to the operating system BEFORE the bank rows change,
  so a killed process (SIGKILL) never leaves a bank change without its record. A record
  cut short by the kill is ignored: its bank write had not started. (fsync is not needed
  for a killed process; it would be for a power loss, which the page cache does not survive.)
- Records from several ranks are ordered by (step, rank's sequence number); within one
  step two ranks never write the same video (the video-exclusive sampler), so the
  rollback order is the reverse of the real one wherever it matters.

Record layout: ``b"TJR1"``, u32 header length, JSON header ``{"step", "seq", "video",
"row", "rows", "dtype", "dim"}``, u64 payload length, the rows' raw bytes (bank dtype).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from tallformer.memory.bank import MemoryBank
from tallformer.ops.chunks import chunk_runs

__all__ = ["BankJournal", "JournaledBank", "rollback", "segment_steps"]

MAGIC = b"TJR1"


def _segment_name(step: int, rank: int) -> str:
    return f"from_{step:09d}.rank{rank}.bin"


def segment_steps(directory: str | os.PathLike[str]) -> list[int]:
    """The checkpoint steps of the journal segments in ``directory`` (any rank), sorted: a
    run's journal holds one, the step of its latest checkpoint, whose state it restores."""
    steps = set()
    for path in Path(directory).glob("from_*.rank*.bin"):
        with contextlib.suppress(ValueError):
            steps.add(int(path.name[len("from_"):].split(".", 1)[0]))
    return sorted(steps)


class BankJournal:
    """One rank's undo journal (see the module). ``begin(step)`` starts a segment."""

    def __init__(self, directory: str | os.PathLike[str], rank: int = 0) -> None:
        self.directory = Path(directory)
        self.rank = rank
        self._file: IO[bytes] | None = None
        self._seq = 0
        self.step = 0  # the step the next records belong to
        self.bytes_written = 0

    def begin(self, step: int) -> None:
        """Start the segment of the writes after checkpoint ``step``; drop this rank's older ones."""
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        name = _segment_name(step, self.rank)
        self._file = open(self.directory / name, "wb")  # noqa: SIM115 - kept open across steps
        self._seq = 0
        for old in self.directory.glob(f"from_*.rank{self.rank}.bin"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def record(self, video: str, row: int, old_rows: np.ndarray) -> None:
        """Append the old values ``[n, C]`` of rows ``row ..`` of ``video``; flushed at once."""
        if self._file is None:
            raise RuntimeError("BankJournal.record before begin()")
        rows = np.ascontiguousarray(old_rows)
        header = json.dumps({"step": self.step, "seq": self._seq, "video": video, "row": int(row),
                             "rows": int(rows.shape[0]), "dtype": rows.dtype.str,
                             "dim": int(rows.shape[1])}).encode()
        payload = rows.tobytes()
        self._file.write(MAGIC + struct.pack("<I", len(header)) + header
                         + struct.pack("<Q", len(payload)) + payload)
        self._file.flush()  # in the OS before the bank changes: survives a SIGKILL
        self._seq += 1
        self.bytes_written += len(payload)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _records(path: Path) -> Iterator[tuple[dict[str, Any], bytes]]:
    """The complete records of one segment file; a record cut short by a kill ends it."""
    data = path.read_bytes()
    pos = 0
    while pos + 8 <= len(data) and data[pos:pos + 4] == MAGIC:
        (hlen,) = struct.unpack_from("<I", data, pos + 4)
        hend = pos + 8 + hlen
        if hend + 8 > len(data):
            return
        header = json.loads(data[pos + 8:hend])
        (plen,) = struct.unpack_from("<Q", data, hend)
        if hend + 8 + plen > len(data):
            return
        yield header, data[hend + 8:hend + 8 + plen]
        pos = hend + 8 + plen


def rollback(bank: MemoryBank, directory: str | os.PathLike[str], step: int) -> int:
    """Undo every journaled write after checkpoint ``step`` (all ranks), newest first.

    Deletes every journal file afterwards (segments of other steps hold writes the
    checkpoint already includes, or belong to an abandoned run). Returns the rows restored.
    """
    folder = Path(directory)
    if not folder.is_dir():
        return 0
    records: list[tuple[dict[str, Any], bytes]] = []
    for path in sorted(folder.glob(_segment_name(step, 0).replace(".rank0.", ".rank*."))):
        records.extend(_records(path))
    records.sort(key=lambda r: (r[0]["step"], r[0]["seq"]), reverse=True)
    restored = 0
    for header, payload in records:
        rows = np.frombuffer(payload, dtype=np.dtype(header["dtype"])).reshape(header["rows"], header["dim"])
        bank.write(header["video"], header["row"], rows)
        restored += header["rows"]
    bank.flush()
    for path in folder.glob("from_*.bin"):
        path.unlink(missing_ok=True)
    return restored


class JournaledBank:
    """A `MemoryBank` whose chunk writes are journaled first; everything else is the bank's.

    Pass it to `train_step` in place of the bank: `write_back` calls ``write_chunks``.
    """

    def __init__(self, bank: MemoryBank, journal: BankJournal) -> None:
        self.bank = bank
        self.journal = journal

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bank, name)

    def write_chunks(self, video: str, row_start: int, chunk_ids: Sequence[int], features: Any) -> None:
        """Journal the rows the write will overwrite, then `MemoryBank.write_chunks`.

        ``features`` ``[len(chunk_ids), C, rows_per_chunk]``, as the bank takes them.
        """
        rpc = int(features.shape[2])
        total = self.bank.num_rows(video)
        for _pos, first, length in chunk_runs(chunk_ids):
            start = int(row_start) + first * rpc
            lo, hi = min(max(start, 0), total), max(min(start + length * rpc, total), 0)
            if hi > lo:
                self.journal.record(video, lo, self.bank.read(video, lo, hi - lo))
        self.bank.write_chunks(video, row_start, chunk_ids, features)
