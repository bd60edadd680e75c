"""Memory-bank I/O of one training window, side by side with two references, in one run.

One window = 480 frames = 240 bank rows of C = 1024 features (original: 480 frames,
configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:7; C = 1024, tools/data/extract_features.py:87),
in fp16 (our default) and fp32 (the original's dtype). Every measurement is the median over
``--reps`` repetitions; the methods are interleaved within each repetition (so machine noise
hits them alike), and the window start cycles over ``--windows`` positions of a longer video.
The bank's file is in the page cache (warm), as during training.

Methods:

- ``ours read``: ``MemoryBank.read(video, s, 240)`` (contiguous slice of a memory map that
  stays open, copied out).
- ``ours write``: ``MemoryBank.write(video, s, feats)`` (contiguous slice assignment into the
  open map; durability is ``flush()``, timed separately for information).
- ``memcpy``: the same bytes copied by plain numpy between in-memory arrays that already
  exist (no allocation, no page faults: the strongest reference): ``np.copyto(buf,
  src[s:s+240])`` for reads, ``dst[s:s+240] = feats`` for writes. Our read also allocates
  its output array.
- ``rowwise``: the original's reader (vedatad/partial_feedback/memory_bank.py:30-62): open
  the file as a fresh memory map on every call (shape known from meta, as the original),
  build the 240 row ids in Python, gather them with fancy indexing and copy the result.

Ratios (higher is better for us; each is the other method's time / our time, i.e. our speed
as a multiple of the other's):

- ``read_vs_memcpy  = memcpy_read_time  / our_read_time``  (target >= 0.5)
- ``write_vs_memcpy = memcpy_write_time / our_write_time`` (target >= 0.5)
- ``read_vs_rowwise = rowwise_read_time / our_read_time``  (target >= 10)

Each printed on the last line is the minimum of the fp16 and fp32 values (the worse dtype,
both sides of a ratio in the same dtype); the per-dtype figures are printed above it, and so
is the end-to-end comparison of our default (fp16 bank, slice read) with the original's
(fp32 bank, row-wise read of a fresh map): ``rowwise_fp32_time / our_fp16_read_time``. Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bank_io.py

Last line: ``read_vs_memcpy=X write_vs_memcpy=Y read_vs_rowwise=Z``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tallformer.memory.bank import MemoryBank


def _rowwise_read(path: Path, offset: int, shape: tuple[int, int], dtype: np.dtype,
                  row_start: int, num_rows: int) -> np.ndarray:
    """The original's way (vedatad/partial_feedback/memory_bank.py:30-62): fresh memmap per call, row ids
    built in Python, gathered by fancy indexing, zero-padded on the right, copied."""
    mm = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    ids = [row_start + j for j in range(num_rows)]
    inside = [i for i in ids if 0 <= i < shape[0]]
    rows = np.array(mm[inside])
    pad = num_rows - len(inside)
    if pad:
        rows = np.concatenate([rows, np.zeros((pad, shape[1]), dtype)], axis=0)
    del mm
    return rows


def _median_us(times: list[int]) -> float:
    return statistics.median(times) / 1000.0


def bench_dtype(root: Path, dtype: str, rows: int, dim: int, windows: int, reps: int,
                seed: int) -> dict[str, float]:
    """Times (median, microseconds) of every method for one dtype."""
    rng = np.random.default_rng(seed)
    total_rows = rows * (windows + 1)
    bank = MemoryBank.create(root / dtype, {"video": total_rows * 2}, dim, dtype=dtype)
    data = rng.standard_normal((total_rows, dim)).astype(dtype)
    bank.write("video", 0, data)
    bank.flush()
    starts = [int(s) for s in rng.integers(0, total_rows - rows, size=windows)]
    feats = [rng.standard_normal((rows, dim)).astype(dtype) for _ in range(4)]
    src = data.copy()  # memcpy references: the same bytes in ordinary memory
    dst = np.zeros_like(data)
    buf = np.zeros((rows, dim), dtype)
    path = bank.path("video")
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        header = f.tell()

    # check once that every reader returns the same rows
    s0 = starts[0]
    ref = bank.read("video", s0, rows)
    assert np.array_equal(ref, src[s0:s0 + rows])
    assert np.array_equal(ref, _rowwise_read(path, header, data.shape, np.dtype(dtype), s0, rows))

    state = {"i": 0}

    def start() -> int:
        return starts[state["i"] % windows]

    methods: dict[str, Callable[[], object]] = {
        "ours_read": lambda: bank.read("video", start(), rows),
        "memcpy_read": lambda: np.copyto(buf, src[start():start() + rows]),
        "rowwise_read": lambda: _rowwise_read(path, header, data.shape, np.dtype(dtype),
                                              start(), rows),
        "ours_read_chunks": lambda: bank.read_chunks("video", start(), range(rows // 16), 16),
        "ours_write": lambda: bank.write("video", start(), feats[state["i"] % 4]),
        "memcpy_write": lambda: dst.__setitem__(slice(start(), start() + rows),
                                                feats[state["i"] % 4]),
    }
    times: dict[str, list[int]] = {name: [] for name in methods}
    names = list(methods)
    for _ in range(3):  # warm-up: page cache, first touch of every window
        for i in range(windows):
            state["i"] = i
            for name in names:
                methods[name]()
    for rep in range(reps):
        state["i"] = rep
        order = names[rep % len(names):] + names[:rep % len(names)]  # rotate the order
        for name in order:
            t0 = time.perf_counter_ns()
            methods[name]()
            times[name].append(time.perf_counter_ns() - t0)
    flush_times = []
    for rep in range(min(reps, 50)):
        state["i"] = rep
        bank.write("video", start(), feats[rep % 4])
        t0 = time.perf_counter_ns()
        bank.flush()
        flush_times.append(time.perf_counter_ns() - t0)
    out = {name: _median_us(t) for name, t in times.items()}
    out["flush"] = _median_us(flush_times)
    bank.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=240, help="rows per window (480 frames)")
    parser.add_argument("--dim", type=int, default=1024, help="feature dim C (Swin-B)")
    parser.add_argument("--windows", type=int, default=16, help="window positions cycled over")
    parser.add_argument("--reps", type=int, default=400, help="repetitions per method")
    parser.add_argument("--dir", default=None, help="folder for the bank files (default: temp)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    per_dtype: dict[str, dict[str, float]] = {}
    ratios: dict[str, list[float]] = {"read_vs_memcpy": [], "write_vs_memcpy": [],
                                      "read_vs_rowwise": []}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for dtype in ("float16", "float32"):
            t = bench_dtype(Path(tmp), dtype, args.rows, args.dim, args.windows, args.reps,
                            args.seed)
            per_dtype[dtype] = t
            mb = args.rows * args.dim * np.dtype(dtype).itemsize / 2**20
            print(f"{dtype}: window {args.rows} rows x {args.dim} = {mb:.2f} MiB, "
                  f"median of {args.reps} (microseconds)")
            for name in ("ours_read", "memcpy_read", "rowwise_read", "ours_read_chunks",
                         "ours_write", "memcpy_write", "flush"):
                print(f"  {name:<17} {t[name]:9.1f} us  ({mb / t[name] * 1e6 / 1024:6.2f} GiB/s)")
            r = {
                "read_vs_memcpy": t["memcpy_read"] / t["ours_read"],
                "write_vs_memcpy": t["memcpy_write"] / t["ours_write"],
                "read_vs_rowwise": t["rowwise_read"] / t["ours_read"],
            }
            print("  " + " ".join(f"{k}={v:.2f}" for k, v in r.items()))
            for k, v in r.items():
                ratios[k].append(v)
    system = per_dtype["float32"]["rowwise_read"] / per_dtype["float16"]["ours_read"]
    print(f"our default (fp16 bank, slice read) vs the original (fp32 bank, rowwise read): "
          f"{system:.2f}x")
    print("targets: read_vs_memcpy >= 0.5, write_vs_memcpy >= 0.5, read_vs_rowwise >= 10 "
          "(each the worse of fp16/fp32)")
    print(" ".join(f"{k}={min(v):.2f}" for k, v in ratios.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
