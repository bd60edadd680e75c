"""Preparing media: H.264 re-encoding (fixed fps or fixed frame count) and frame folders.

Two jobs over a folder of videos:

- :func:`prepare_videos`: re-encode every video to H.264 (yuv420p) at one frame size and
  either a fixed fps (THUMOS14: 15 fps, original: tools/data/extract_frames.sh:16) or a
  fixed number of frames (ActivityNet: the original's 768-frame transform, original:
  tools/data/anet/transform_videos.py:31-45). A keyframe every `gop` frames (32 by
  default, one chunk) keeps chunk reads cheap.
- :func:`prepare_frames`: the original release's frame-folder layout
  (``OUT/VIDEO/00001.jpg``, numbered from 1; original: tools/data/extract_frames.sh:10-16).

Both decode through :mod:`tallformer.data.video` (resampled like ``ffmpeg -vf fps=F``,
resized without keeping the aspect ratio, like the original), run videos in parallel
worker processes, and are resumable: an output is written under a hidden temporary name
(``.NAME.partial.mp4`` / ``.NAME.partial/``, `tallformer.atomic.atomic_path`) and renamed
when complete, so an output that exists under its final name is finished and is skipped by
the next run, and a leftover temporary output is removed and redone. A corrupt or truncated input is reported and
skipped; the other videos are done, and the failures are returned (the command lists
them and exits non-zero). ``OUT/meta.json`` records the settings and, per video, the
output's fps and frame count.

Fixed frame count (``num_frames``), as the original (original:
tools/data/anet/transform_videos.py:31-45):
``target_fps = source_fps * min(num_frames / source_frames, 1)``. A longer video is
resampled to about `num_frames` frames (frame-rate resampling gives N or N+1; we cut
at N, so no output has more than `num_frames` frames). A shorter video keeps its own fps
and all its frames (no upsampling); padding to the window happens in the dataset.
Each output's fps and frame count are in ``meta.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from tallformer.atomic import atomic_path, remove_path, write_text
from tallformer.errors import TallformerError

META_FILE = "meta.json"
# An input whose decoded frames fall short of what its header promises by more than this
# is reported as truncated.
_TRUNCATION_TOLERANCE = 0.9


class PrepareError(TallformerError, ValueError):
    """Bad arguments, an output folder that holds another preparation, or no encoder."""


def parse_size(text: str) -> tuple[int, int]:
    """``"WIDTHxHEIGHT"`` (as ffmpeg's ``-s``) -> ``(H, W)``, the order the library uses."""
    parts = str(text).lower().split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise PrepareError(f"bad size {text!r}: expected WIDTHxHEIGHT, e.g. 256x256") from None
    if w < 2 or h < 2:
        raise PrepareError(f"bad size {text!r}: width and height must be at least 2")
    return h, w


def _as_rate(fps: float | Fraction) -> Fraction:
    """A frame rate as the fraction the encoder stores (29.97 -> 30000/1001)."""
    if not fps or fps <= 0 or not math.isfinite(float(fps)):
        raise PrepareError(f"bad frame rate {fps!r}: it must be a positive number")
    rate = Fraction(fps).limit_denominator(1001)
    return rate if rate > 0 else Fraction(fps).limit_denominator(10**6)


# ----------------------------------------------------------------------------- encoding


def _pick_encoder() -> str:
    """libx264 if PyAV's FFmpeg has it, else another H.264 encoder, else MPEG-4 part 2."""
    import av

    for name in ("libx264", "h264", "libopenh264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
        except Exception:
            continue
        return name
    raise PrepareError("PyAV's FFmpeg has no H.264 or MPEG-4 encoder (tried libx264, h264, "
                       "libopenh264, mpeg4); install the PyAV wheel from PyPI (`pip install av`)")


def write_video(path: str | os.PathLike[str], frames: Iterable[np.ndarray], fps: float | Fraction,
                size: tuple[int, int], gop: int = 32, crf: int = 18, *, preset: str = "veryfast",
                threads: int = 0, container_format: str = "mp4") -> int:
    """Encode RGB frames to an H.264 (yuv420p) video file; return the number of frames.

    Args:
        path: output file (written directly; wrap in `tallformer.atomic.atomic_path` for a
            resumable job).
        frames: uint8 [H, W, 3] RGB arrays, each of `size`.
        fps: frame rate (stored as a fraction: 15 -> 15/1, 29.97 -> 30000/1001).
        size: (H, W), both even (yuv420p).
        gop: keyframe interval in frames: with libx264 keyframes fall exactly every `gop`
            frames (scene-cut detection off), so a read seeks back at most `gop - 1`.
        crf: libx264 constant rate factor (lower = better; 18 is visually near-lossless).
        preset: libx264 speed preset. threads: encoder threads (0 = automatic).
        container_format: FFmpeg muxer name (``mp4``, ``matroska``...).

    Raises ValueError for an odd size, a frame of the wrong shape or dtype, or no frames.
    """
    import av

    h, w = int(size[0]), int(size[1])
    if h % 2 or w % 2 or h < 2 or w < 2:
        raise ValueError(f"video size must be even for yuv420p H.264, got {w}x{h} (WxH)")
    if gop < 1:
        raise ValueError(f"gop (keyframe interval) must be at least 1, got {gop}")
    rate = _as_rate(fps)
    codec = _pick_encoder()
    count = 0
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.thread_count = threads
        if codec == "libx264":
            # mbtree off: with it, this libx264 build gave run-to-run different bytes and
            # pictures for identical input (~1 run in 10 on 64x64 clips; it reads memory it
            # never wrote); without it the output is a pure function of the input
            # (synthetic data must be deterministic). Costs a few % of bitrate at equal crf.
            stream.options = {
                "crf": str(crf), "preset": preset,
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:mbtree=0",
            }
        else:
            stream.codec_context.bit_rate = max(500_000, 6 * w * h * math.ceil(rate))
        for frame in frames:
            if frame.shape != (h, w, 3) or frame.dtype != np.uint8:
                raise ValueError(
                    f"{path}: frame {count} is {frame.dtype} {tuple(frame.shape)}, "
                    f"expected uint8 {(h, w, 3)} (H, W, 3) RGB"
                )
            # Convert explicitly: PyAV's implicit conversion inside encode() was seen to
            # give run-to-run different pictures; reformat() is deterministic.
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            picture = picture.reformat(format="yuv420p")
            picture.pts = count
            for packet in stream.encode(picture):
                container.mux(packet)
            count += 1
        if count == 0:
            raise ValueError(f"{path}: no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    return count


# ----------------------------------------------------------------------------- jobs


def list_videos(videos_dir: str | os.PathLike[str]) -> list[Path]:
    """The video files (by extension, hidden files excluded) of a folder, sorted by name."""
    from tallformer.data.video import VIDEO_EXTENSIONS

    folder = Path(videos_dir)
    if not folder.is_dir():
        raise PrepareError(f"videos folder {folder} does not exist or is not a folder")
    found = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not found:
        raise PrepareError(f"no video files in {folder} (looked for {', '.join(VIDEO_EXTENSIONS)})")
    return found


@dataclass
class PrepareResult:
    """What a preparation run did: output names done now, skipped (finished before), failed."""

    out_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # input file -> error message
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def _check_truncation(src: Path, decoded: int, expected: float) -> None:
    if decoded < _TRUNCATION_TOLERANCE * expected - 2:
        raise RuntimeError(
            f"{src}: decoded only {decoded} frames where its header promises about "
            f"{expected:.0f}: the file is truncated or corrupt (re-download it)"
        )


def _target_fps(info: Any, fps: float | None, num_frames: int | None) -> Fraction:
    if fps is not None:
        return _as_rate(fps)
    assert num_frames is not None
    if not info.num_frames or info.num_frames <= 0 or not info.fps or info.fps <= 0:
        raise RuntimeError(f"cannot tell the frame count / fps of the video "
                           f"(frames={info.num_frames}, fps={info.fps})")
    # target_fps = src_fps * min(max_frame / frame_count, 1) (original:
    # tools/data/anet/transform_videos.py:31-45)
    return _as_rate(info.fps * min(num_frames / info.num_frames, 1.0))


def _source_entry(src: Path, info: Any) -> dict[str, Any]:
    return {"source": src.name, "source_fps": info.fps, "source_frames": info.num_frames,
            "duration": info.duration}


def _video_job(src: Path, dst: Path, size: tuple[int, int], fps: float | None,
               num_frames: int | None, gop: int, crf: int, threads: int) -> dict[str, Any]:
    from tallformer.data.video import iter_frames, probe_video

    info = probe_video(src)
    rate = _target_fps(info, fps, num_frames)
    frames: Iterable[np.ndarray] = iter_frames(src, float(rate), size)
    expected = info.duration * float(rate) if info.duration else 0.0
    if num_frames is not None:
        frames = islice(frames, num_frames)
        expected = min(expected, num_frames)
    with atomic_path(dst) as tmp:
        count = write_video(tmp, frames, rate, size, gop=gop, crf=crf, threads=threads)
        _check_truncation(src, count, expected)
    return {"file": dst.name, "fps": float(rate), "num_frames": count, **_source_entry(src, info)}


def _frames_job(src: Path, dst: Path, size: tuple[int, int], fps: float,
                fmt: str) -> dict[str, Any]:
    from tallformer.data.video import iter_frames, probe_video, save_image

    info = probe_video(src)
    rate = _as_rate(fps)
    expected = info.duration * float(rate) if info.duration else 0.0
    # %05d like the original (original: tools/data/extract_frames.sh:16); wider past 99,999
    # frames so that names still sort (the original's lexical order breaks there).
    digits = max(5, len(str(int(expected * 1.1) + 10)))
    count = 0
    with atomic_path(dst, directory=True) as tmp:
        for count, frame in enumerate(iter_frames(src, float(rate), size), start=1):
            # JPEG at qscale 2 (`ffmpeg -q:v 2`), or lossless PNG
            save_image(tmp / f"{count:0{digits}d}.{fmt}", frame)
        if count == 0:
            raise RuntimeError(f"{src}: no frames decoded")
        _check_truncation(src, count, expected)
    return {"dir": dst.name, "fps": float(rate), "num_frames": count,
            **_source_entry(src, info)}


def _run_job(kind: str, src: str, dst: str, kwargs: dict[str, Any]) -> tuple[bool, Any]:
    """Run one job, returning (True, meta entry) or (False, error message): never raises,
    so one bad input cannot stop a worker pool."""
    try:
        job = _video_job if kind == "videos" else _frames_job
        return True, job(Path(src), Path(dst), **kwargs)
    except Exception as exc:
        message = str(exc) or type(exc).__name__
        return False, message if src in message else f"{src}: {message}"


def _existing_entry(kind: str, dst: Path, old: dict[str, Any], name: str,
                    settings: dict[str, Any]) -> dict[str, Any]:
    """The meta entry of a finished output from an earlier run."""
    if name in old:
        return old[name]
    if kind == "frames":
        n = sum(1 for p in dst.iterdir() if p.is_file() and not p.name.startswith("."))
        return {"dir": dst.name, "fps": float(settings["fps"]), "num_frames": n}
    from tallformer.data.video import probe_video

    info = probe_video(dst)
    return {"file": dst.name, "fps": info.fps, "num_frames": info.num_frames}


def _read_meta(out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Entries of an earlier run into the same folder; an error if its settings differ."""
    path = out / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    old = {k: meta.get(k) for k in settings}
    if old != settings:
        diff = ", ".join(f"{k}: {old[k]!r} there, {settings[k]!r} now"
                         for k in settings if old[k] != settings[k])
        raise PrepareError(
            f"{out} holds outputs prepared with other settings ({diff}); finished outputs "
            f"would be kept as they are: use another --out folder or delete {out}"
        )
    return dict(meta.get("videos") or {})


def _run(kind: str, videos_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
         settings: dict[str, Any], kwargs: dict[str, Any], output_name: Callable[[Path], str],
         workers: int, progress: bool) -> PrepareResult:
    from tqdm import tqdm

    sources = list_videos(videos_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    old = _read_meta(out, settings)
    for stale in out.glob(f".{META_FILE}.*.tmp"):  # a killed run's half-written meta file
        remove_path(stale)
    result = PrepareResult(out_dir=out)
    entries: dict[str, dict[str, Any]] = {}
    todo: list[tuple[str, Path, Path]] = []
    seen: dict[str, Path] = {}
    for src in sources:
        name = src.stem
        dst = out / output_name(src)
        if name in seen:
            result.failed[str(src)] = (f"{src}: same name as {seen[name].name}, both would "
                                       f"write {dst.name}; rename one of them")
            continue
        seen[name] = src
        if dst.exists():
            try:
                entries[name] = _existing_entry(kind, dst, old, name, settings)
                result.skipped.append(name)
                continue
            except Exception:
                remove_path(dst)
        todo.append((name, src, dst))
    bar = tqdm(total=len(todo), desc=f"prepare {kind}", unit="video", disable=not progress)

    def record(name: str, src: Path, ok: bool, value: Any) -> None:
        if ok:
            entries[name] = value
            result.done.append(name)
        else:
            result.failed[str(src)] = value
            bar.write(f"failed: {value}")
        bar.update()
        bar.set_postfix(failed=len(result.failed))

    try:
        if workers <= 1 or len(todo) <= 1:
            for name, src, dst in todo:
                record(name, src, *_run_job(kind, str(src), str(dst), kwargs))
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(todo)),
                                     mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(_run_job, kind, str(src), str(dst), kwargs): (name, src)
                           for name, src, dst in todo}
                for fut in as_completed(futures):
                    record(*futures[fut], *fut.result())
    finally:
        bar.close()
        meta = {**settings, "videos": {k: entries[k] for k in sorted(entries)}}
        write_text(out / META_FILE, json.dumps(meta, indent=1) + "\n")
        result.meta = meta
    return result


def prepare_videos(videos_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                   size: tuple[int, int], *, fps: float | None = None,
                   num_frames: int | None = None, workers: int = 1, gop: int = 32,
                   crf: int = 18, progress: bool = True) -> PrepareResult:
    """Re-encode every video of `videos_dir` to ``out_dir/<name>.mp4`` (H.264, yuv420p).

    Args:
        size: (H, W) of the output, both even; the aspect ratio is not kept (as the original).
        fps: a fixed output frame rate (THUMOS14: 15); or
        num_frames: a fixed frame budget per video (ActivityNet: 768; see the module
            docstring for shorter videos). Exactly one of `fps` and `num_frames`.
        workers: parallel processes. gop: keyframe interval (frames). crf: x264 quality.

    Returns a :class:`PrepareResult`; the inputs that failed are in ``result.failed``.
    """
    if (fps is None) == (num_frames is None):
        raise PrepareError("give exactly one of fps (e.g. 15) and num_frames (e.g. 768)")
    if num_frames is not None and num_frames < 1:
        raise PrepareError(f"num_frames must be at least 1, got {num_frames}")
    if fps is not None:
        _as_rate(fps)
    h, w = size
    if h % 2 or w % 2:
        raise PrepareError(f"size must be even for H.264 yuv420p, got {w}x{h} (WxH)")
    if gop < 1:
        raise PrepareError(f"gop must be at least 1, got {gop}")
    settings = {"kind": "videos", "size": [h, w], "fps": fps, "num_frames": num_frames,
                "gop": gop, "crf": crf}
    kwargs = {"size": (h, w), "fps": fps, "num_frames": num_frames, "gop": gop, "crf": crf,
              "threads": 1 if workers > 1 else 0}
    return _run("videos", videos_dir, out_dir, settings, kwargs,
                lambda src: f"{src.stem}.mp4", workers, progress)


def prepare_frames(videos_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                   fps: float, size: tuple[int, int], *, fmt: str = "jpg", workers: int = 1,
                   progress: bool = True) -> PrepareResult:
    """Extract every video of `videos_dir` to ``out_dir/<name>/00001.<fmt>...`` (RGB frames
    at `fps`, resized to `size` (H, W)), the original release's layout.

    `fmt` is ``jpg`` (JPEG quality 2 on ffmpeg's 2-31 scale) or ``png`` (lossless, larger).
    """
    if fmt not in ("jpg", "png"):
        raise PrepareError(f"unknown frame format {fmt!r}: use jpg or png")
    _as_rate(fps)
    h, w = size
    settings = {"kind": "frames", "size": [h, w], "fps": fps, "format": fmt}
    kwargs = {"size": (h, w), "fps": fps, "fmt": fmt}
    return _run("frames", videos_dir, out_dir, settings, kwargs, lambda src: src.stem,
                workers, progress)
