"""Shared test fixtures: tiny synthetic H.264 videos written with PyAV.

`write_video` draws each frame's index as a 4x4 grid of black/white blocks (16 bits,
most significant first, row-major), so a decoded frame can be identified with
`frame_index` even after resizing and lossy coding. Other tests may use the `make_video`
fixture (a factory bound to nothing but PyAV) or import the two functions.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

GRID = 4  # blocks per side; GRID * GRID bits encode the frame index

# The real annotation files beside the repository (../shared/reference/data).
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


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `make_video(name_or_path, num_frames, fps=30, size=(64, 64), gop=32, ...)`.

    A relative name is written under the test's tmp_path.
    """

    def _make(path: Path | str, num_frames: int, fps: float = 30, size=(64, 64), **kw) -> Path:
        path = Path(path)
        if not path.is_absolute():
            path = tmp_path / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_video(path, num_frames, fps, size, **kw)

    return _make
