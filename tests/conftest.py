"""Shared test fixtures. Plain helper functions live in `helpers.py`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import write_video


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
