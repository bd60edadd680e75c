"""`prepare videos` / `prepare frames` and the H.264 writer, on real tiny mp4 files.

Source videos come from conftest's `make_video`: frame i shows its index as a 4x4 bit
grid, so every decoded frame says which source frame it is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest

from helpers import frame_index, index_image
from tallformer.atomic import partial_path
from tallformer.cli import main
from tallformer.data.prepare import (
    META_FILE,
    PrepareError,
    parse_size,
    prepare_frames,
    prepare_videos,
    write_video,
)
from tallformer.data.video import iter_frames, open_source, probe_video
from tallformer.errors import TallformerError

SIZE = (64, 64)


def _decode(path: Path) -> tuple[list[int], list[int], float]:
    """(frame indices drawn in the frames, keyframe positions, average rate) of a video."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate)
        frames = list(container.decode(stream))
    indices = [frame_index(f.to_ndarray(format="rgb24")) for f in frames]
    keys = [i for i, f in enumerate(frames) if f.key_frame]
    return indices, keys, rate


def _source_indices(src: Path, fps: float) -> list[int]:
    """Which source frame each frame of `src` resampled to `fps` shows (the decoder's rule)."""
    return [frame_index(f) for f in iter_frames(src, fps, SIZE)]


@pytest.fixture
def sources(tmp_path: Path, make_video) -> Path:
    folder = tmp_path / "raw"
    make_video(folder / "a.mp4", 60, fps=30)  # 2 s
    make_video(folder / "b.mp4", 45, fps=25, size=(48, 80))  # 1.8 s, 80x48
    (folder / "notes.txt").write_text("not a video")
    return folder


def test_write_video_rate_keyframes_and_content(tmp_path: Path) -> None:
    path = tmp_path / "w.mp4"
    frames = (index_image(i, SIZE) for i in range(70))
    assert write_video(path, frames, 15, SIZE, gop=8) == 70
    indices, keys, rate = _decode(path)
    assert indices == list(range(70))
    assert keys == list(range(0, 70, 8))
    assert rate == 15.0
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width) == (70, 64, 64)
    assert info.duration == pytest.approx(70 / 15)


def test_write_video_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "x.mp4", [np.zeros((63, 64, 3), np.uint8)], 15, (63, 64))
    with pytest.raises(ValueError, match="frame 1"):
        write_video(tmp_path / "x.mp4", [np.zeros((64, 64, 3), np.uint8),
                                         np.zeros((32, 64, 3), np.uint8)], 15, SIZE)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "x.mp4", [], 15, SIZE)


def test_prepare_videos_fixed_fps(sources: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = prepare_videos(sources, out, SIZE, fps=15, gop=8, workers=2, progress=False)
    assert result.ok
    assert sorted(result.done) == ["a", "b"]
    assert result.skipped == []
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4", "meta.json"]
    for name in ("a", "b"):
        expected = _source_indices(sources / f"{name}.mp4", 15)
        indices, keys, rate = _decode(out / f"{name}.mp4")
        assert indices == expected  # the same frames as the decoder's fps resampling
        assert keys == list(range(0, len(indices), 8))
        assert rate == 15.0
        info = probe_video(out / f"{name}.mp4")
        assert (info.height, info.width) == SIZE
        entry = result.meta["videos"][name]
        assert entry["num_frames"] == len(expected) == info.num_frames
        assert entry["fps"] == 15.0
        assert entry["source"] == f"{name}.mp4"
    assert len(_source_indices(sources / "a.mp4", 15)) == 30  # 2 s at 15 fps
    assert result.meta["size"] == [64, 64]
    assert result.meta["fps"] == 15
    # meta.json: the settings and entries, indent 1, sorted videos, a final newline
    assert (out / META_FILE).read_text() == json.dumps(result.meta, indent=1) + "\n"


def test_prepare_videos_fixed_frame_count(tmp_path: Path, make_video) -> None:
    make_video(tmp_path / "raw" / "long.mp4", 90, fps=30)  # 3 s: resampled to 40 frames
    make_video(tmp_path / "raw" / "short.mp4", 20, fps=30)  # fewer than 40: kept as is
    result = prepare_videos(tmp_path / "raw", tmp_path / "out", SIZE, num_frames=40,
                            progress=False)
    assert result.ok
    long_entry, short_entry = result.meta["videos"]["long"], result.meta["videos"]["short"]
    # fps = 30 * min(40 / 90, 1) (original: tools/data/anet/transform_videos.py:31-45)
    assert long_entry["fps"] == pytest.approx(30 * 40 / 90, rel=1e-4)
    assert 39 <= long_entry["num_frames"] <= 40
    indices, _, rate = _decode(tmp_path / "out" / "long.mp4")
    assert len(indices) == long_entry["num_frames"]
    assert rate == pytest.approx(40 / 3, rel=1e-4)
    assert indices == _source_indices(tmp_path / "raw" / "long.mp4", long_entry["fps"])[:40]
    assert short_entry["fps"] == pytest.approx(30.0)
    assert short_entry["num_frames"] == 20
    assert _decode(tmp_path / "out" / "short.mp4")[0] == list(range(20))
    assert result.meta["num_frames"] == 40
    assert result.meta["fps"] is None


def test_prepare_frames_layout(sources: Path, tmp_path: Path) -> None:
    out = tmp_path / "frames"
    result = prepare_frames(sources, out, 15, SIZE, progress=False)
    assert result.ok
    assert sorted(result.done) == ["a", "b"]
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "meta.json"]
    for name in ("a", "b"):
        expected = _source_indices(sources / f"{name}.mp4", 15)
        files = sorted((out / name).iterdir())
        assert [f.name for f in files] == [f"{i:05d}.jpg" for i in range(1, len(expected) + 1)]
        folder = open_source(out / name, 15, SIZE)
        assert len(folder) == len(expected) == result.meta["videos"][name]["num_frames"]
        assert [frame_index(f) for f in folder.read(0, len(folder))] == expected
    # png is lossless: exactly the decoder's frames
    png = prepare_frames(sources, tmp_path / "png", 15, SIZE, fmt="png", progress=False)
    assert png.ok
    decoded = np.stack(list(iter_frames(sources / "b.mp4", 15, SIZE)))
    folder = open_source(tmp_path / "png" / "b", 15, SIZE)
    np.testing.assert_array_equal(folder.read(0, len(folder)), decoded)


def test_resume_skips_finished_and_redoes_partial(sources: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_videos(sources, out, SIZE, fps=15, progress=False)
    stamp = (out / "b.mp4").stat().st_mtime_ns
    again = prepare_videos(sources, out, SIZE, fps=15, progress=False)
    assert again.done == []
    assert sorted(again.skipped) == ["a", "b"]
    assert again.ok
    assert (out / "b.mp4").stat().st_mtime_ns == stamp
    assert again.meta["videos"]["a"]["num_frames"] == 30
    # a run killed while writing a.mp4 (and its meta file) leaves only temporary files
    (out / "a.mp4").unlink()
    partial_path(out / "a.mp4").write_bytes(b"\x00" * 100)
    (out / f".{META_FILE}.1234-abcdef12.tmp").write_text("{")
    third = prepare_videos(sources, out, SIZE, fps=15, progress=False)
    assert third.done == ["a"]
    assert third.skipped == ["b"]
    assert not partial_path(out / "a.mp4").exists()
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4", META_FILE]
    assert _decode(out / "a.mp4")[0] == _source_indices(sources / "a.mp4", 15)

    frames = tmp_path / "frames"
    prepare_frames(sources, frames, 15, SIZE, progress=False)
    os.rename(frames / "a", partial_path(frames / "a"))  # half-written: never renamed
    (partial_path(frames / "a") / "00002.jpg").unlink()
    redo = prepare_frames(sources, frames, 15, SIZE, progress=False)
    assert redo.done == ["a"]
    assert redo.skipped == ["b"]
    assert len(list((frames / "a").iterdir())) == 30
    assert not partial_path(frames / "a").exists()


def test_settings_change_in_same_folder_is_an_error(sources: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    prepare_videos(sources, out, SIZE, fps=15, progress=False)
    with pytest.raises(PrepareError, match="other settings"):
        prepare_videos(sources, out, (32, 32), fps=15, progress=False)
    rc = main(["prepare", "videos", "--videos", str(sources), "--out", str(out),
               "--size", "64x64", "--fps", "10"])
    assert rc == 2
    assert "fps: 15" in capsys.readouterr().err


def test_corrupt_inputs_are_reported_and_the_others_done(tmp_path: Path, make_video,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw"
    good = make_video(raw / "good.mp4", 30, fps=30)
    whole = make_video(tmp_path / "whole.mp4", 90, fps=30).read_bytes()
    (raw / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (raw / "cut.mp4").write_bytes(whole[: len(whole) // 2])  # index at the end: lost
    fast = make_video(tmp_path / "fast.mp4", 90, fps=30, faststart=True).read_bytes()
    (raw / "cut_fast.mp4").write_bytes(fast[: len(fast) // 2])  # index kept, data cut
    out = tmp_path / "out"
    rc = main(["prepare", "videos", "--videos", str(raw), "--out", str(out), "--size", "64x64",
               "--fps", "15"])
    err = capsys.readouterr().err
    assert rc == 1
    for bad in ("junk.mp4", "cut.mp4", "cut_fast.mp4"):
        assert bad in err
        assert not (out / bad).exists()
        assert not partial_path(out / bad).exists()
    assert "3 input(s) failed" in err
    assert _decode(out / "good.mp4")[0] == _source_indices(good, 15)
    assert sorted(p.name for p in out.iterdir()) == ["good.mp4", "meta.json"]

    rc = main(["prepare", "frames", "--videos", str(raw), "--out", str(tmp_path / "fr"),
               "--size", "64x64", "--fps", "15", "--format", "png"])
    assert rc == 1
    assert "cut_fast.mp4" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "fr").iterdir()) == ["good", "meta.json"]


def test_size_and_argument_errors(tmp_path: Path) -> None:
    assert parse_size("320x180") == (180, 320)
    for bad in ("256", "axb", "0x10"):
        with pytest.raises(PrepareError, match=r"WIDTHxHEIGHT|at least"):
            parse_size(bad)
    with pytest.raises(PrepareError, match="exactly one"):
        prepare_videos(tmp_path, tmp_path / "o", SIZE, fps=15, num_frames=768)
    with pytest.raises(PrepareError, match="no video files"):
        prepare_videos(tmp_path, tmp_path / "o", SIZE, fps=15)
    with pytest.raises(PrepareError, match="does not exist"):
        prepare_frames(tmp_path / "missing", tmp_path / "o", 15, SIZE)
    with pytest.raises(SystemExit):  # --fps or --num-frames is required
        main(["prepare", "videos", "--videos", str(tmp_path), "--out", str(tmp_path / "o")])
    assert issubclass(PrepareError, TallformerError)  # the CLI prints it as one line, exit 2
