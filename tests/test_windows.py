"""Training window sampling, the IoF keep rule, test windows and the mapping back."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tallformer.data import windows as W

FAST = settings(max_examples=150, deadline=None)


# ----------------------------------------------------------------- sample_train_window


@FAST
@given(
    n=st.integers(1, 3000),
    length=st.integers(1, 600),
    stride=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_train_start_is_a_stride_multiple_inside_the_video(n, length, stride, seed):
    start = W.sample_train_window(n, length, stride, np.random.default_rng(seed))
    assert start % stride == 0
    assert 0 <= start <= n - min(length, n)


def test_short_video_starts_at_zero():
    rng = np.random.default_rng(0)
    assert {W.sample_train_window(133, 480, 2, rng) for _ in range(20)} == {0}


def test_train_start_is_uniform_over_all_multiples():
    # N - L = 10, stride 2 -> starts {0, 2, 4, 6, 8, 10}, each about 1/6 of the time
    rng = np.random.default_rng(1)
    draws = np.array([W.sample_train_window(490, 480, 2, rng) for _ in range(6000)])
    values, counts = np.unique(draws, return_counts=True)
    assert values.tolist() == [0, 2, 4, 6, 8, 10]
    assert np.all(np.abs(counts / 6000 - 1 / 6) < 0.03)


def test_train_start_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="num_video_frames"):
        W.sample_train_window(0, 480, 2, rng)
    with pytest.raises(ValueError, match="start_stride"):
        W.sample_train_window(500, 480, 0, rng)


# ----------------------------------------------------------------- crop_segments

segment_lists = st.lists(
    st.tuples(st.floats(0, 2000, allow_nan=False), st.floats(0, 600, allow_nan=False)),
    min_size=0,
    max_size=12,
).map(lambda pairs: np.array([[s, s + d] for s, d in pairs], dtype=np.float64).reshape(-1, 2))


@FAST
@given(segs=segment_lists, start=st.integers(0, 1500), length=st.integers(1, 600),
       th=st.sampled_from([0.0, 0.5, 0.75, 0.9]))
def test_kept_instances_follow_the_iof_rule(segs, start, length, th):
    labels = np.arange(len(segs), dtype=np.int64)
    out, out_labels, keep = W.crop_segments(segs, labels, start, length, th)
    assert out.dtype == np.float32
    assert out.shape == (int(keep.sum()), 2)
    assert out_labels.tolist() == labels[keep].tolist()
    for (s, e), kept in zip(segs, keep, strict=True):
        inter = max(0.0, min(e, start + length) - max(s, start))
        iof = max(inter / (e - s) if e > s else 0.0, inter / length)
        # strictly greater (original: vedatad/datasets/pipelines/transforms.py:382-388)
        assert kept == (iof > th)
    # clipped into the window, in window frames, and mapping back gives the clipped video segment
    assert np.all(out >= 0)
    assert np.all(out <= length)
    back = W.window_to_video_frames(out, start)
    clipped = np.clip(segs[keep], start, start + length)
    np.testing.assert_allclose(back, clipped, rtol=1e-6, atol=1e-3)


def test_crop_segments_examples():
    segs = np.array(
        [
            [100, 200],  # fully inside
            [0, 130],  # 30 of 130 inside: dropped
            [440, 560],  # 60 of 120 inside (0.5): dropped
            [420, 500],  # 60 of 80 inside: exactly 0.75, not strictly greater: dropped
            [419, 500],  # 61 of 81 inside: kept
            [50, 600],  # covers 380 of the 380-frame window: kept (second part of the rule)
        ],
        dtype=np.float64,
    )
    out, labels, keep = W.crop_segments(segs, np.arange(6), 100, 380, 0.75)
    assert keep.tolist() == [True, False, False, False, True, True]
    assert labels.tolist() == [0, 4, 5]
    np.testing.assert_allclose(out, [[0, 100], [319, 380], [0, 380]])


def test_crop_segments_without_labels_and_empty():
    out, labels, keep = W.crop_segments(np.zeros((0, 2)), None, 0, 480)
    assert out.shape == (0, 2)
    assert labels is None
    assert keep.shape == (0,)
    out, labels, _ = W.crop_segments(np.array([[10.0, 20.0]]), None, 0, 480)
    assert labels is None
    assert out.tolist() == [[10.0, 20.0]]


def test_crop_segments_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[G, 2\]"):
        W.crop_segments(np.zeros((3, 3)), None, 0, 10)
    with pytest.raises(ValueError, match="labels has 1 entries"):
        W.crop_segments(np.zeros((2, 2)), np.zeros(1), 0, 10)


# ----------------------------------------------------------------- test windows


@FAST
@given(n=st.integers(1, 20000), length=st.integers(8, 700),
       overlap=st.sampled_from([0.0, 0.25, 0.5, 0.75]))
def test_test_windows_cover_every_frame(n, length, overlap):
    wins = W.test_windows(n, length, overlap)
    stride = int(length * (1 - overlap))
    covered = np.zeros(n, dtype=bool)
    for k, (start, size) in enumerate(wins):
        assert start == k * stride
        assert 1 <= size <= length
        assert start + size <= n
        if k < len(wins) - 1:
            assert size == length
            assert start + size < n
        covered[start : start + size] = True
    assert covered.all()
    assert wins[-1][0] + wins[-1][1] == n
    expected = 1 if n <= length else math.ceil((n - length) / stride) + 1
    assert len(wins) == expected  # original: vedatad/datasets/pipelines/test_time_aug.py:22-53


def test_test_windows_thumos_numbers():
    # stride 360, the last window truncated, not moved back (original: test_time_aug.py:33)
    assert W.test_windows(1000, 480, 0.25) == [(0, 480), (360, 480), (720, 280)]
    assert W.test_windows(840, 480, 0.25) == [(0, 480), (360, 480)]
    assert W.test_windows(133, 480, 0.25) == [(0, 133)]


def test_test_windows_rejects_bad_overlap():
    with pytest.raises(ValueError, match="overlap"):
        W.test_windows(100, 480, 1.0)
    with pytest.raises(ValueError, match="stride of 0"):
        W.test_windows(100, 4, 0.9)


# ----------------------------------------------------------------- mapping


@FAST
@given(offset=st.integers(0, 50000), fps=st.sampled_from([15.0, 25.0, 29.97, 30.0]),
       s=st.floats(0, 480, allow_nan=False), d=st.floats(0, 480, allow_nan=False))
def test_offsets_map_back_exactly(offset, fps, s, d):
    video_secs = np.array([[(offset + s) / fps, (offset + s + d) / fps]])
    window = W.seconds_to_frames(video_secs, fps) - offset
    back = W.window_to_seconds(window, offset, fps)
    np.testing.assert_allclose(back, video_secs, rtol=1e-6, atol=1e-6)
    # integer frame positions are exact
    frames = np.array([[float(offset), float(offset + 480)]])
    np.testing.assert_array_equal(W.window_to_video_frames(frames - offset, offset), frames)
    np.testing.assert_array_equal(W.frames_to_seconds(frames, fps), frames / fps)
