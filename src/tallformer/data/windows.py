"""Temporal windows: the training crop, the test sliding windows, and the way back.

All positions are frame indices at the dataset's nominal fps (0-based; frame ``f`` is the
time ``f / fps`` s). A window is ``[start, start + length)``; segments are ``[G, 2]``
arrays of ``(start, end)`` in frames, either in *video* coordinates or in *window*
coordinates (video frames minus the window's ``start``, its "offset").

- Training (TemporalRandomCrop, original: vedatad/datasets/pipelines/transforms.py:366-441):
  `sample_train_window` draws the start, `crop_segments` keeps the instances (and ignore
  regions) that pass the IoF rule, clips them to the window and shifts them into window
  frames. No retries: a window with no instance left is an all-background sample, as in
  the original (its retry code is commented out, original: transforms.py:413-416).
- Testing (OverlapCropAug, original: vedatad/datasets/pipelines/test_time_aug.py:22-53):
  `test_windows` lists the sliding windows.
- Back to the video: `window_to_video_frames`, `frames_to_seconds`, `window_to_seconds`;
  and `seconds_to_frames` for the annotations.

Pure numpy; no torch import.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "crop_segments",
    "frames_to_seconds",
    "sample_train_window",
    "seconds_to_frames",
    "test_windows",
    "window_to_seconds",
    "window_to_video_frames",
]


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _as_segments(segments: np.ndarray, name: str = "segments") -> np.ndarray:
    """`segments` as a float64 ``[G, 2]`` array (an empty input gives ``[0, 2]``)."""
    arr = np.asarray(segments, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape [G, 2] (start, end), got {arr.shape}")
    return arr


def sample_train_window(
    num_video_frames: int, num_frames: int, start_stride: int, rng: np.random.Generator
) -> int:
    """Draw a training window start.

    The window length is ``L = min(num_frames, num_video_frames)``; the start is uniform
    among the multiples of `start_stride` in ``[0, num_video_frames - L]`` (our choice: the
    original draws any integer, original: vedatad/datasets/pipelines/transforms.py:402,408,
    which puts odd starts one frame off the bank rows; stride 2 makes ``start // 2`` exact).

    Args:
        num_video_frames: N, frames of the video at the nominal fps.
        num_frames: window length (480 for THUMOS14).
        start_stride: ``data.train_start_stride``.
        rng: numpy generator (per sample, see `tallformer.data.dataset`).
    Returns:
        The start frame ``s``; the window is ``[s, s + min(num_frames, N))``.
    """
    _check_positive_int("num_video_frames", num_video_frames)
    _check_positive_int("num_frames", num_frames)
    _check_positive_int("start_stride", start_stride)
    length = min(num_frames, num_video_frames)
    choices = (num_video_frames - length) // start_stride + 1
    return int(start_stride * rng.integers(choices))


def crop_segments(
    segments: np.ndarray,
    labels: np.ndarray | None,
    start: int,
    length: int,
    iof_th: float = 0.75,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Keep, clip and shift the segments that belong to a window.

    Keep rule (strict inequality, original: vedatad/datasets/pipelines/transforms.py:382-388,
    418-421): a segment ``g`` is kept when ``max(|g ∩ w| / |g|, |g ∩ w| / |w|) > iof_th``,
    i.e. more than `iof_th` of it lies in the window ``w = [start, start + length]`` or it
    covers more than `iof_th` of the window. A zero-length segment has
    ``|g ∩ w| / |g| = 0``. Kept segments are clipped to the window and shifted by
    ``-start``. The same function serves ignore regions (pass ``labels=None``).

    Args:
        segments: ``[G, 2]`` video frames.
        labels: ``[G]`` class indices, or None.
        start: window start (video frame).
        length: window length ``L`` in frames (real frames, not padding).
        iof_th: ``data.iof_th``.
    Returns:
        ``(segments [K, 2] float32 in window frames within [0, L], labels [K] int64 or None,
        keep [G] bool)``.
    """
    _check_positive_int("length", length)
    segs = _as_segments(segments)
    w_start, w_end = float(start), float(start + length)
    inter = np.clip(np.minimum(segs[:, 1], w_end) - np.maximum(segs[:, 0], w_start), 0.0, None)
    seg_len = segs[:, 1] - segs[:, 0]
    iof_seg = np.divide(inter, seg_len, out=np.zeros_like(inter), where=seg_len > 0)
    iof_win = inter / float(length)
    keep = np.maximum(iof_seg, iof_win) > iof_th
    out = np.clip(segs[keep], w_start, w_end) - w_start
    out_labels = None
    if labels is not None:
        lab = np.asarray(labels, dtype=np.int64).reshape(-1)
        if lab.shape[0] != segs.shape[0]:
            raise ValueError(
                f"labels has {lab.shape[0]} entries but segments has {segs.shape[0]} rows"
            )
        out_labels = lab[keep]
    return out.astype(np.float32), out_labels, keep


def test_windows(num_video_frames: int, num_frames: int, overlap: float) -> list[tuple[int, int]]:
    """Sliding test windows over a video (original: vedatad/datasets/pipelines/test_time_aug.py:22-53).

    Stride ``int(num_frames * (1 - overlap))`` (480 x 0.75 = 360; `int` truncates as the
    original does). Window ``k`` is ``[k * stride, min(k * stride + num_frames, N))``; windows
    are listed until one reaches the video end N. The last window is truncated at N, not
    moved back (the dataset pads it). A video with ``N <= num_frames`` has one window
    ``(0, N)``. Count: 1 if ``N <= num_frames``, else ``ceil((N - num_frames) / stride) + 1``.

    Returns:
        ``[(start, length), ...]`` in video frames; ``length <= num_frames``.
    """
    _check_positive_int("num_video_frames", num_video_frames)
    _check_positive_int("num_frames", num_frames)
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    stride = int(num_frames * (1.0 - overlap))
    if stride < 1:
        raise ValueError(
            f"overlap {overlap} leaves a stride of {stride} frames for {num_frames}-frame "
            "windows; lower data.test_overlap"
        )
    return sliding_windows(num_video_frames, num_frames, stride)


def sliding_windows(num_video_frames: int, num_frames: int, stride: int) -> list[tuple[int, int]]:
    """Windows ``[(start, length), ...]``: window k is ``[k * stride, min(k * stride +
    num_frames, N))``, listed until one reaches the video end N (the last one truncated)."""
    windows: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + num_frames, num_video_frames)
        windows.append((start, end - start))
        if end >= num_video_frames:
            return windows
        start += stride


# pytest would collect `test_windows` as a test wherever a test module imports it by name.
test_windows.__test__ = False  # type: ignore[attr-defined]


def seconds_to_frames(segments: np.ndarray, fps: float) -> np.ndarray:
    """``[G, 2]`` seconds -> ``[G, 2]`` float64 frames (``t * fps``, as the original,
    original: vedatad/datasets/pipelines/loading.py:204-205)."""
    return _as_segments(segments) * float(fps)


def window_to_video_frames(segments: np.ndarray, offset: int) -> np.ndarray:
    """``[G, 2]`` window frames -> video frames (add the window's start `offset`)."""
    return _as_segments(segments) + float(offset)


def frames_to_seconds(segments: np.ndarray, fps: float) -> np.ndarray:
    """``[G, 2]`` video frames -> seconds (divide by the nominal fps, as the original divides by
    its fps, original: vedatad/datasets/custom.py:314-325)."""
    return _as_segments(segments) / float(fps)


def window_to_seconds(segments: np.ndarray, offset: int, fps: float) -> np.ndarray:
    """``[G, 2]`` window frames -> video seconds: ``(x + offset) / fps``."""
    return frames_to_seconds(window_to_video_frames(segments, offset), fps)
