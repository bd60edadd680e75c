"""Frame sources: frame count and timing as `ffmpeg -vf fps=F`, seeking, frame folders, errors."""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import frame_index, index_image, write_video
from tallformer.data.video import (
    VIDEO_EXTENSIONS,
    FrameFolderSource,
    FrameSource,
    VideoError,
    VideoFileSource,
    iter_frames,
    open_source,
    output_frame_map,
    probe_video,
    resolve_video,
    save_image,
)

TARGET_FPS = [15, 7, 12.5, 29.97, 60]


def expected_map(
    num_src: int, src_fps: float, fps: float, start: Fraction = Fraction(0)
) -> list[int]:
    """The rule, written independently: source frame j at t = start + j / src_fps (seconds
    from the file start) takes slot floor(t * F + 1/2); output i shows the last j with
    slot <= i (the first frame before it); count = floor(end * F + 1/2), end = the last
    frame's end."""
    s = Fraction(src_fps).limit_denominator(1001000)
    f = Fraction(fps).limit_denominator(1001000)
    slots = [int((start + Fraction(j) / s) * f + Fraction(1, 2)) for j in range(num_src)]
    count = int((start + Fraction(num_src) / s) * f + Fraction(1, 2))
    return [max([0] + [j for j in range(num_src) if slots[j] <= i]) for i in range(count)]


def ffmpeg_fps_filter(path: Path, fps: float, shift_to_zero: bool) -> list[int]:
    """Source indices shown by FFmpeg's own fps filter (av.filter.Graph), frame by frame.

    shift_to_zero: subtract the first timestamp first, as the ffmpeg command line does."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        graph = av.filter.Graph()
        src = graph.add_buffer(template=stream)
        fps_node = graph.add("fps", f"fps={fps}")
        sink = graph.add("buffersink")
        src.link_to(fps_node)
        fps_node.link_to(sink)
        graph.configure()
        out: list[int] = []

        def drain() -> None:
            while True:
                try:
                    frame = graph.vpull()
                except (av.error.BlockingIOError, av.error.EOFError):
                    return
                out.append(frame_index(frame.to_ndarray(format="rgb24")))

        start = None
        for frame in container.decode(stream):
            start = frame.pts if start is None else start
            if shift_to_zero:
                frame.pts -= start
            graph.vpush(frame)
            drain()
        graph.vpush(None)
        drain()
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {
        # 30 fps, B-frames, 301 frames (an odd count: the last output frame rounds up)
        "v30": write_video(root / "v30.mp4", 301, 30, (64, 64), gop=32),
        # 25 fps, first timestamp 0.28 s (not 0), B-frames
        "v25_start": write_video(root / "v25.mp4", 100, 25, (64, 64), gop=32, start_pts=7),
        # 20 s at 30 fps, no B-frames, gop 32: the window-read cost test
        "long": write_video(root / "long.mp4", 600, 30, (48, 64), gop=32, bframes=False),
    }


# --------------------------------------------------------------------------- count, timing


@pytest.mark.parametrize(("name", "src_fps", "num_src"), [("v30", 30, 301), ("v25_start", 25, 100)])
@pytest.mark.parametrize("fps", TARGET_FPS)
def test_count_and_timing_follow_ffmpeg_rule(videos, name, src_fps, num_src, fps) -> None:
    with open_source(videos[name], fps, (64, 64)) as source:
        assert isinstance(source, FrameSource)
        expected = expected_map(num_src, src_fps, fps)
        assert len(source) == len(expected)
        frames = source.read(0, len(source))
    assert frames.shape == (len(expected), 64, 64, 3)
    assert frames.dtype == np.uint8
    assert [frame_index(f) for f in frames] == expected


@pytest.mark.parametrize("fps", TARGET_FPS)
def test_matches_ffmpeg_fps_filter(videos, fps) -> None:
    for name in ("v30", "v25_start"):
        # the command line shifts timestamps to start at 0; v30 already does
        reference = ffmpeg_fps_filter(videos[name], fps, shift_to_zero=True)
        with open_source(videos[name], fps, (64, 64)) as source:
            got = [frame_index(f) for f in source.read(0, len(source))]
        assert got == reference, name


def test_video_stream_starting_after_the_file(tmp_path) -> None:
    """Audio from 0 s, video from 0.28 s: frame i is still at i / F from the file start, and
    the slots before the first video frame repeat it (FFmpeg's constant-rate output)."""
    path = tmp_path / "gap.mkv"
    with av.open(str(path), mode="w") as container:
        audio = container.add_stream("aac", rate=16000)
        video = container.add_stream("libx264", rate=25)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        packets = []
        for i in range(70):
            samples = np.zeros((1, 1024), np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            packets += audio.encode(frame)
        packets += audio.encode()
        for i in range(100):
            frame = av.VideoFrame.from_ndarray(index_image(i, (64, 64)), format="rgb24")
            frame.pts = 7 + i  # 0.28 s
            packets += video.encode(frame)
        packets += video.encode()
        for packet in packets:
            container.mux(packet)
    with open_source(path, 15, (64, 64)) as source:
        expected = expected_map(100, 25, 15, start=Fraction(7, 25))
        assert len(source) == len(expected) == 64
        got = [frame_index(f) for f in source.read(0, len(source))]
    assert got == expected
    assert got[:5] == [0] * 5


def test_resize_and_probe(videos) -> None:
    with open_source(videos["v30"], 15, (40, 24)) as source:
        frames = source.read(10, 20)
    assert frames.shape == (10, 40, 24, 3)
    assert [frame_index(f) for f in frames] == list(range(20, 40, 2))
    info = probe_video(videos["v25_start"])
    assert (info.num_frames, info.width, info.height) == (100, 64, 64)
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(4.0, abs=0.05)


@settings(max_examples=60, deadline=None)
@given(
    src=st.sampled_from([24, 25, 30, 29.97, 50, 60, 12.5]),
    fps=st.sampled_from([15, 7, 10, 12.5, 29.97, 30]),
    num=st.integers(1, 200),
)
def test_output_frame_map_rule(src, fps, num) -> None:
    s = Fraction(src).limit_denominator(1001000)
    times = [Fraction(j) / s for j in range(num)]
    got = output_frame_map(times, Fraction(num) / s, fps).tolist()
    assert got == expected_map(num, src, fps)
    # timing: output frame i never shows a frame that starts more than half a slot after i / F
    f = Fraction(fps).limit_denominator(1001000)
    assert all(times[j] * f <= i + Fraction(1, 2) for i, j in enumerate(got))


# --------------------------------------------------------------------------- seeking


def test_seek_reads_equal_sequential_reads(videos) -> None:
    path = videos["v30"]
    sequential = np.stack(list(iter_frames(path, 15, (64, 64))))
    with open_source(path, 15, (64, 64)) as source:
        assert sequential.shape[0] == len(source)
        rng = np.random.default_rng(0)
        for _ in range(12):
            start = int(rng.integers(0, len(source)))
            stop = int(rng.integers(start, len(source) + 1))
            np.testing.assert_array_equal(source.read(start, stop), sequential[start:stop])
        assert source.seeks >= 2  # backward ranges needed seeks


def test_window_read_decodes_only_what_it_needs(videos) -> None:
    """Two 16-frame chunks (15 fps) of a 240-frame window cost the decode from the keyframe
    before each chunk to its last frame, not the window."""
    path = videos["long"]  # 600 source frames, 30 fps, keyframe every 32 frames
    with open_source(path, 15, (48, 64)) as source:
        assert isinstance(source, VideoFileSource)
        assert len(source) == 300
        assert source.keyframes == list(range(0, 600, 32))
        window = 40  # window start (output frames); chunk c = window frames 16c .. 16c+15
        total = 0
        for c in (2, 9):
            start = window + 16 * c
            before = source.decoded_frames
            frames = source.read(start, start + 16)
            assert [frame_index(f) for f in frames] == list(range(2 * start, 2 * start + 32, 2))
            first, last = 2 * start, 2 * (start + 15)  # source frames needed
            key = max(k for k in source.keyframes if k <= first)
            assert source.decoded_frames - before == last - key + 1
            total += source.decoded_frames - before
        assert total <= 2 * (32 + 31)  # each chunk: at most a gop of lead-in plus the chunk
        # the next chunk continues without a seek
        seeks = source.seeks
        source.read(window + 16 * 10, window + 16 * 11)
        assert source.seeks == seeks


def test_read_past_end_and_bad_ranges(videos) -> None:
    with open_source(videos["v30"], 15, (64, 64)) as source:
        n = len(source)
        assert source.read(n, n).shape == (0, 64, 64, 3)
        with pytest.raises(IndexError, match=rf"has {n} frames"):
            source.read(n - 5, n + 1)
        with pytest.raises(IndexError, match="invalid frame range"):
            source.read(-1, 3)
        with pytest.raises(IndexError, match="invalid frame range"):
            source.read(5, 3)


# --------------------------------------------------------------------------- frame folders


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_frame_folder_matches_video(videos, tmp_path, ext) -> None:
    path = videos["v30"]
    folder = tmp_path / "frames_15fps_64x64" / "val" / "v30"
    folder.mkdir(parents=True)
    for i, frame in enumerate(iter_frames(path, 15, (64, 64)), start=1):
        save_image(folder / f"{i:05d}{ext}", frame)
    with open_source(path, 15, (64, 64)) as video, open_source(folder, 15, (64, 64)) as frames:
        assert isinstance(frames, FrameFolderSource)
        assert len(frames) == len(video) == 151
        a, b = video.read(30, 60), frames.read(30, 60)
    assert [frame_index(f) for f in a] == [frame_index(f) for f in b] == list(range(60, 120, 2))
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    if ext == ".png":
        assert diff.max() == 0  # lossless
    else:
        assert diff.mean() < 4  # codec noise only
    # stored 64x64, asked for 32x48: resized on read, same frames
    with open_source(folder, 15, (32, 48)) as small:
        resized = small.read(0, 10)
    assert resized.shape == (10, 32, 48, 3)
    assert [frame_index(f) for f in resized] == list(range(0, 20, 2))
    with pytest.raises(IndexError, match="has 151 frames"):
        FrameFolderSource(folder, 15, (64, 64)).read(150, 152)


def test_frame_folder_errors(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoError, match="holds no images") as err:
        open_source(empty, 15, (64, 64))
    assert str(empty) in str(err.value)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "00001.png").write_bytes(b"not a png")
    with pytest.raises(VideoError, match=r"00001\.png"):
        open_source(bad, 15, (64, 64)).read(0, 1)


# --------------------------------------------------------------------------- bad files


def test_corrupt_truncated_and_non_video_files(videos, tmp_path) -> None:
    data = videos["v30"].read_bytes()
    truncated = tmp_path / "truncated.mp4"  # index (moov) at the end: lost
    truncated.write_bytes(data[: len(data) // 2])
    fast = write_video(tmp_path / "fast.mp4", 301, 30, (64, 64), faststart=True)
    fast_cut = tmp_path / "fast_cut.mp4"  # index first, half of the frames lost
    fast_cut.write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for bad in (truncated, fast_cut, text, garbage, empty, tmp_path / "missing.mp4"):
        with pytest.raises(VideoError) as err, open_source(bad, 15, (64, 64)) as source:
            source.read(0, len(source))
        assert str(bad) in str(err.value), err.value
        with pytest.raises(VideoError, match=bad.name):
            probe_video(bad) if bad != fast_cut else open_source(bad, 15, (64, 64))
    # the intact faststart file reads fine
    with open_source(fast, 15, (64, 64)) as source:
        assert len(source) == 151


def test_no_video_stream(tmp_path) -> None:
    path = tmp_path / "audio.m4a"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 16000
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(VideoError, match="no video stream"):
        open_source(path, 15, (64, 64))


# --------------------------------------------------------------------------- resolve_video


def test_resolve_video(tmp_path) -> None:
    (tmp_path / "video_test_0000004.mp4").write_bytes(b"x")
    (tmp_path / "v_abc123.mkv").write_bytes(b"x")
    (tmp_path / "def456.webm").write_bytes(b"x")
    (tmp_path / "frames_only").mkdir()
    assert resolve_video(tmp_path, "video_test_0000004") == tmp_path / "video_test_0000004.mp4"
    assert resolve_video(tmp_path, "abc123") == tmp_path / "v_abc123.mkv"  # prefix added
    assert resolve_video(tmp_path, "v_abc123") == tmp_path / "v_abc123.mkv"
    assert resolve_video(tmp_path, "v_def456") == tmp_path / "def456.webm"  # prefix removed
    assert resolve_video(tmp_path, "frames_only") == tmp_path / "frames_only"
    with pytest.raises(VideoError) as err:
        resolve_video(tmp_path, "v_missing")
    msg = str(err.value)
    assert "'v_missing'" in msg
    assert str(tmp_path) in msg
    assert "v_missing{.mp4" in msg
    assert "missing{.mp4" in msg
    assert "frame folder" in msg
    assert "Check data.videos" in msg  # the setting the folder came from (default)
    with pytest.raises(VideoError, match="does not exist"):
        resolve_video(tmp_path / "nope", "abc123")
    with pytest.raises(VideoError, match=r"Check --videos and") as err:
        resolve_video(tmp_path, "v_missing", setting="--videos")
    assert "data.videos" not in str(err.value)
    (tmp_path / "upper.MKV").write_bytes(b"x")
    assert resolve_video(tmp_path, "upper") == tmp_path / "upper.MKV"


# Every extension in VIDEO_EXTENSIONS, written by PyAV with a codec that container takes.
_CONTAINERS = {
    ".mp4": ("mp4", "libx264", 15), ".mkv": ("matroska", "libx264", 15),
    ".webm": ("webm", "libvpx-vp9", 15), ".avi": ("avi", "mpeg4", 15),
    ".mov": ("mov", "libx264", 15), ".m4v": ("ipod", "libx264", 15),
    ".mpg": ("mpeg", "mpeg2video", 25), ".mpeg": ("mpeg", "mpeg1video", 25),
    ".flv": ("flv", "flv", 15), ".wmv": ("asf", "wmv2", 15), ".3gp": ("3gp", "h263", 15),
}


def test_every_listed_extension_is_found_and_opened(tmp_path) -> None:
    # one list for all: resolve_video, prepare's folder listing, the ActivityNet disk check
    assert set(_CONTAINERS) == set(VIDEO_EXTENSIONS)
    for ext, (fmt, codec, fps) in _CONTAINERS.items():
        path = tmp_path / f"clip{ext[1:]}{ext}"
        with av.open(str(path), "w", format=fmt) as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height, stream.pix_fmt = 176, 144, "yuv420p"  # h263's size
            for i in range(12):
                frame = av.VideoFrame.from_ndarray(index_image(i, (144, 176)), format="rgb24")
                frame = frame.reformat(format="yuv420p")
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        assert resolve_video(tmp_path, f"clip{ext[1:]}") == path
        with open_source(path, fps, (144, 176)) as source:
            assert len(source) == 12, ext
            frames = source.read(0, 12)
        assert [frame_index(f) for f in frames] == list(range(12)), ext


def test_fork_after_reading_does_not_hang_and_child_reads(tmp_path):
    """A forked data-loader worker inherits open containers whose decoder threads did not
    survive the fork: dropping them must not hang, and reads reopen the file."""
    import multiprocessing as mp

    path = tmp_path / "v.mp4"
    write_video(path, 60, fps=15, size=(64, 64), gop=16)
    src = open_source(path, 15, (64, 64))
    want = src.read(20, 30)

    def child(q):
        got = src.read(20, 30)
        src.close()
        q.put(bool((got == want).all()))

    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=child, args=(q,))
    proc.start()
    proc.join(60)
    alive = proc.is_alive()
    if alive:
        proc.kill()
    assert not alive, "forked reader hung"
    assert proc.exitcode == 0
    assert q.get(timeout=5)
    assert src.read(0, 5).shape == (5, 64, 64, 3)


def _read_resized(path: str, out: multiprocessing.queues.Queue) -> None:
    out.put(open_source(path, 15.0, (36, 36)).read(0, 10).shape)


def test_a_forked_worker_resizes_after_the_parent_did(tmp_path: Path) -> None:
    """A DataLoader worker forked after the parent resized frames (a periodic test, then the
    next epoch's workers) decodes; reusing or freeing the parent's scaler hung the child."""
    path = write_video(tmp_path / "a.mp4", 20, fps=15)
    assert open_source(path, 15.0, (36, 36)).read(0, 10).shape == (10, 36, 36, 3)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_read_resized, args=(str(path), out))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        child.join()
    assert child.exitcode == 0, "the forked reader hung or failed"
    assert out.get(timeout=5) == (10, 36, 36, 3)
