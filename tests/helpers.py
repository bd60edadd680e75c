"""Helpers shared by the tests (imported as `helpers`; pytest puts tests/ on the path).

- Synthetic H.264 videos written with PyAV: `write_video` draws each frame's index as a
  4x4 grid of black/white blocks (16 bits, most significant first, row-major), so a
  decoded frame can be identified with `frame_index` even after resizing and lossy coding.
- `REFERENCE_DATA`: the real THUMOS14 / ActivityNet annotation files beside the repository.
- `train_epochs`: a minimal loop of `train_step` (no schedule, no checkpoints).
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tallformer.engine.step import train_step

if TYPE_CHECKING:
    from torch import nn

    from tallformer.config import Config
    from tallformer.engine.loader import TrainLoader
    from tallformer.memory.bank import MemoryBank

GRID = 4  # blocks per side; GRID * GRID bits encode the frame index

# The real annotation files beside the repository: put the shared folder next to the clone.
REFERENCE_DATA = Path(__file__).resolve().parents[2] / "shared" / "reference" / "data"


def index_image(index: int, size: tuple[int, int]) -> np.ndarray:
    """The picture of frame `index`: uint8 [H, W, 3] RGB, bit b of the index as block b."""
    h, w = size
    bits = [(index >> (GRID * GRID - 1 - b)) & 1 for b in range(GRID * GRID)]
    grid = np.array(bits, dtype=np.uint8).reshape(GRID, GRID) * 255
    ys = np.arange(h) * GRID // h
    xs = np.arange(w) * GRID // w
    img = grid[ys][:, xs]
    return np.repeat(img[:, :, None], 3, axis=2)


def frame_index(frame: np.ndarray) -> int:
    """Read back the index drawn by `index_image` from a decoded uint8 [H, W, 3] frame."""
    h, w = frame.shape[:2]
    gray = frame.astype(np.float32).mean(axis=2)
    value = 0
    for b in range(GRID * GRID):
        r, c = divmod(b, GRID)
        y0, y1 = r * h // GRID, (r + 1) * h // GRID
        x0, x1 = c * w // GRID, (c + 1) * w // GRID
        cy, cx = (y1 - y0) // 4, (x1 - x0) // 4  # the block's central half, away from edges
        centre = gray[y0 + cy : y1 - cy, x0 + cx : x1 - cx]
        value = (value << 1) | int(centre.mean() > 127.5)
    return value


def write_video(
    path: Path | str,
    num_frames: int,
    fps: float = 30,
    size: tuple[int, int] = (64, 64),
    *,
    gop: int = 32,
    start_pts: int = 0,
    faststart: bool = False,
    bframes: bool = True,
) -> Path:
    """Write an H.264 mp4 of `num_frames` frames (frame i shows `index_image(i)`).

    size is (H, W); `gop` the keyframe interval (scene-cut keyframes disabled);
    `start_pts` the first frame's timestamp in frames (a non-zero start);
    `faststart` puts the index (moov) before the data, so a truncated file still opens.
    """
    import av

    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001000)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {
            "preset": "veryfast",
            "crf": "18",
            "x264-params": f"scenecut=0:keyint={gop}:min-keyint={gop}:bframes={3 if bframes else 0}",
        }
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_image(i, size), format="rgb24")
            frame.pts = start_pts + i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path



def train_epochs(
    cfg: Config,
    model: nn.Module,
    loader: TrainLoader,
    optimizer: torch.optim.Optimizer,
    bank: MemoryBank | None = None,
    *,
    device: torch.device | str = "cpu",
    epochs: int = 1,
    start_epoch: int = 0,
    max_steps: int | None = None,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    on_step: Callable[[int, int, dict[str, Any], dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """A minimal loop for tests and benchmarks: ``epochs`` epochs of ``train_step`` (no
    schedule, no checkpoints: that is the training engine's job).

    ``on_step(epoch, step, batch, stats)`` is called after each step. Stops after
    ``max_steps`` steps in all. Flushes the bank at the end. Returns every step's stats.
    """
    from tqdm import tqdm

    # fp16 autocast needs loss scaling (small gradients underflow to zero); bf16 does not
    scaler = (torch.amp.GradScaler(torch.device(device).type) if amp_dtype == torch.float16
              else None)
    history: list[dict[str, float]] = []
    for epoch in range(start_epoch, start_epoch + epochs):
        loader.set_epoch(epoch)
        bar = tqdm(loader, desc=f"epoch {epoch}", unit="step", disable=not progress, leave=False)
        for step, batch in enumerate(bar):
            if max_steps is not None and len(history) >= max_steps:
                break
            stats = train_step(model, batch, optimizer, bank, frozen=cfg.memory.frozen,
                               device=device, amp_dtype=amp_dtype, grad_clip=cfg.train.grad_clip,
                               scaler=scaler)
            history.append(stats)
            bar.set_postfix(loss=f"{stats['loss']:.4f}")
            if on_step is not None:
                on_step(epoch, step, batch, stats)
        if max_steps is not None and len(history) >= max_steps:
            break
    if bank is not None:
        bank.flush()
    return history


def train_lockstep(model: nn.Module, loaders: list[TrainLoader], optimizer: torch.optim.Optimizer,
                   bank: MemoryBank, steps: int, on_step: Callable[[int], None] | None = None) -> None:
    """Replay `steps` steps of several ranks (or nodes) in one process: each step takes one
    batch from every loader, in order, and trains on them one after another; the epochs
    advance together. `on_step(done)` runs after each step."""
    done, epoch = 0, 0
    while done < steps:
        for loader in loaders:
            loader.set_epoch(epoch)
        for batches in zip(*loaders, strict=True):
            if done == steps:
                break
            for batch in batches:
                train_step(model, batch, optimizer, bank, device="cpu")
            done += 1
            if on_step is not None:
                on_step(done)
        epoch += 1


def random_bank(root: Path, frames: dict[str, int], dim: int = 192, seed: int = 0) -> MemoryBank:
    """A complete float32-noise bank of `frames` (video -> frame count) at `root`."""
    from tallformer.memory.bank import MemoryBank

    bank = MemoryBank.create(root, frames, dim)
    rng = np.random.default_rng(seed)
    for video, n in frames.items():
        bank.write(video, 0, rng.standard_normal((-(-n // 2), dim)).astype(np.float32))
        bank.mark_complete(video)
    bank.flush()
    return bank


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc). torchrun starts its workers in sessions of
    their own, so killing the launcher's process group would leave them running."""
    import contextlib

    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it, all at once (a kill -9 of a whole run)."""
    import contextlib
    import os
    import signal

    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


# --------------------------------------------------------------------------- unwritable folders and small disks


# Run in the child before the command: as root, drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
# from the bounding set, then exec the command, so it obeys file modes as any user does (root
# would write into a ``chmod 555`` folder otherwise). A program of its own rather than a
# `preexec_fn`: Python code between fork and exec can deadlock when the parent has other
# threads (an import or allocator lock held by one of them at the fork), and
# tests/test_write_failures.py starts its commands from a thread pool.
_DROP_FILE_ACCESS = """
import ctypes, os, sys
if os.geteuid() == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            sys.exit(f"cannot drop capability {cap}: {os.strerror(ctypes.get_errno())}")
os.execvp(sys.argv[1], sys.argv[1:])
"""


def run_as_user(cmd: list[str], **kwargs: Any) -> Any:
    """`subprocess.run(cmd, **kwargs)` with file modes applying to the command even under
    root (the command is exec'd by a small program that drops root's file-access override
    first); pytest.skip when that cannot be arranged."""
    import subprocess
    import sys

    import pytest

    problem = _file_access_drop_problem()
    if problem:
        pytest.skip(f"cannot drop root's file-access override for the command: {problem}")
    return subprocess.run([sys.executable, "-c", _DROP_FILE_ACCESS, *map(str, cmd)], **kwargs)


@functools.cache
def _file_access_drop_problem() -> str:
    """Why `_DROP_FILE_ACCESS` cannot run here ("" when it can): tried once per session."""
    import sys

    probe = subprocess.run([sys.executable, "-c", _DROP_FILE_ACCESS, sys.executable, "-c", ""],
                           capture_output=True, text=True, timeout=60)
    return "" if probe.returncode == 0 else probe.stderr.strip() or f"exit {probe.returncode}"


def unwritable_folder(path: Path) -> Path:
    """A folder with mode 555 (no one may create files in it); pytest.skip when a command
    started by `run_as_user` could still write there."""
    import sys

    import pytest

    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    probe = run_as_user([sys.executable, "-c", f"open({str(path / 'probe')!r}, 'w')"], capture_output=True)
    if probe.returncode == 0:
        (path / "probe").unlink()
        pytest.skip("file modes do not stop this user from writing (cannot test an unwritable folder)")
    return path


class SmallDisk:
    """A real file system of a few MiB: a tmpfs mounted at `path` (root only; the tests skip
    where mounting is not permitted). `fill(leave)` takes all but `leave` bytes of its free
    space with a filler file, `free()` removes the filler, `resize(size)` changes its size."""

    def __init__(self, path: Path, size: str) -> None:
        import subprocess

        import pytest

        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.strip()}")
        self.filler = path / ".filler"

    def fill(self, leave: int = 0) -> None:
        import os
        import shutil

        take = shutil.disk_usage(self.path).free - leave
        if take > 0:
            with open(self.filler, "ab") as f:
                os.posix_fallocate(f.fileno(), os.fstat(f.fileno()).st_size, take)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def resize(self, size: str) -> None:
        import subprocess

        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def unmount(self) -> None:
        import subprocess

        subprocess.run(["umount", "-l", str(self.path)], check=False)


def run_cli(argv: list[str], *, threads: int = 1) -> subprocess.CompletedProcess:
    """`tallformer ARGV` through the command line's entry point (`tallformer.cli.main`) in this
    process, stdout and stderr captured, on `threads` intra-op threads: what a process of its
    own with OMP_NUM_THREADS=1 gives, less its start-up (most of a small run's time). For
    what needs no process of its own: no kill, no torchrun, no environment read at start-up."""
    import contextlib
    import io

    from tallformer.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        torch.set_num_threads(saved)
    return subprocess.CompletedProcess(["tallformer", *argv], code, out.getvalue(), err.getvalue())


# --------------------------------------------------------------------------- comparing runs


def deep_equal(a: object, b: object) -> bool:
    """Bit-for-bit equality of nested dicts, lists and tensors (dtype included): two
    checkpoints' states, or the figures of two runs."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(deep_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(deep_equal(x, y) for x, y in zip(a, b, strict=True)))
    return a == b


def final_state(run: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """A run folder's last checkpoint (its state dict) and every array of its bank, by file name."""
    from tallformer.engine.checkpoint import load_checkpoint

    state = load_checkpoint(run / "checkpoints" / "last.pt")
    bank = {p.name: np.load(p) for p in sorted((run / "bank").rglob("*.npy"))}
    return state, bank
