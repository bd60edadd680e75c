"""Frame sources: one interface over video files (PyAV) and frame folders (original layout).

`open_source(path, fps, size)` returns a `FrameSource`: `len(source)` frames at the target
fps, `source.read(start, stop)` -> uint8 `[stop - start, H, W, 3]` RGB.

Video files (`VideoFileSource`) are resampled to the target fps the way
`ffmpeg -i VIDEO -vf fps=F -s WxH %05d.png` does it (the original release's frame
extraction, original: tools/data/extract_frames.sh:10-16):

- Timestamps are taken relative to the file's start time (the FFmpeg command line
  subtracts `start_time` before filtering), so frame i sits at i / F seconds from the
  start of the file, the time base of the annotations.
- Source frame j at relative time t_j gets the output slot q_j = round(t_j * F), rounded
  half away from zero (FFmpeg's default `AV_ROUND_NEAR_INF`). Output frame i is the last
  source frame (in presentation order) with q_j <= i; output slots before the first
  source frame (a video stream that starts after the file does) repeat the first frame,
  as FFmpeg's constant-frame-rate output does.
- The frame count is round(t_end * F) where t_end is the end of the last source frame
  (its timestamp plus its duration): the end-of-stream timestamp FFmpeg's `fps` filter
  stops at. Tests check count and timing against FFmpeg's own `fps` filter (through
  `av.filter.Graph`).
- Frames are resized to `size` without keeping the aspect ratio, bicubic (FFmpeg's
  default scaler for `-s`).

The frame count is computed once, at open, from a demux-only pass over the packets'
timestamps (no decoding; it reads the file once, about as fast as the disk). The same pass
records the keyframes, so `read(start, stop)` seeks to the last keyframe at or before the
first source frame it needs and decodes forward only up to the last one; consecutive
reads continue decoding without a seek when that is cheaper. `source.decoded_frames`
counts the source frames decoded so far.

Frame folders (`FrameFolderSource`) are the original release's layout
(`frames_15fps_256x256/{val,test}/VIDEO/00001.png`, or `.jpg`; original:
tools/data/extract_frames.sh:16): one image per frame at the target fps, already extracted; frame i is the i-th
file in sorted order. Images are decoded with PyAV and resized only when their size
differs from `size`.
"""

from __future__ import annotations

import bisect
import gc
import math
import numbers
import os
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol, cast, runtime_checkable

import av
import numpy as np
from av.video.codeccontext import VideoCodecContext

from tallformer.errors import TallformerError

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "FrameFolderSource",
    "FrameSource",
    "VideoError",
    "VideoFileSource",
    "VideoInfo",
    "iter_frames",
    "open_source",
    "output_frame_map",
    "probe_video",
    "resolve_video",
    "save_image",
]

# The video file extensions tallformer looks for (lower case; the upper-case form is found
# too), everywhere: resolving a video id, listing a folder to prepare, checking which
# annotated videos are on disk. Each one is opened by PyAV in tests/test_video.py.
VIDEO_EXTENSIONS = (
    ".mp4",
    ".mkv",
    ".webm",
    ".avi",
    ".mov",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".flv",
    ".wmv",
    ".3gp",
)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_INTERPOLATION = "BICUBIC"  # FFmpeg's default scaler flags for `-s` / the scale filter


class VideoError(TallformerError, RuntimeError):
    """A video file or frame folder that cannot be opened or decoded; names the file."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {message}")


@runtime_checkable
class FrameSource(Protocol):
    """Frames of one video at a target fps and size."""

    fps: float
    size: tuple[int, int]  # (H, W)
    path: Path

    def __len__(self) -> int:
        """Number of frames at the target fps."""
        ...

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames start..stop-1: uint8 [stop - start, H, W, 3] RGB."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class VideoInfo:
    """What a video file says about itself (source frame rate, not the target one)."""

    duration: float  # seconds
    fps: float  # source frames per second (average rate)
    num_frames: int  # source frames
    width: int
    height: int


# --------------------------------------------------------------------------- helpers


def _fraction(value: float | Fraction, what: str) -> Fraction:
    """A rate as FFmpeg parses it (av_d2q with max denominator 1001000): 29.97 -> 2997/100."""
    if isinstance(value, Fraction):
        frac = value
    else:
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{what} must be a positive finite number, got {value!r}")
        frac = Fraction(value).limit_denominator(1001000)
    if frac <= 0:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return frac


def _round_half_away(num: int, den: int) -> int:
    """round(num / den) with halves away from zero (FFmpeg's AV_ROUND_NEAR_INF); den > 0."""
    if num >= 0:
        return (2 * num + den) // (2 * den)
    return -((-2 * num + den) // (2 * den))


def _check_size(size: tuple[int, int] | list[int]) -> tuple[int, int]:
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise ValueError(f"size must be (height, width) with two positive ints, got {size!r}")
    return int(size[0]), int(size[1])


_REFORMATTERS = threading.local()


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """An av frame as uint8 [H, W, 3] RGB at `size` (bicubic, aspect ratio not kept).

    One `VideoReformatter` per thread keeps FFmpeg's scaler context between frames (a
    frame's own `to_ndarray(width=...)` builds a new one every time, about 12x slower for
    small frames); the pixels are the same.
    """
    import av.video.reformatter

    h, w = size
    if frame.width == w and frame.height == h:
        return frame.to_ndarray(format="rgb24")
    reformatter = getattr(_REFORMATTERS, "value", None)
    if reformatter is None:
        reformatter = _REFORMATTERS.value = av.video.reformatter.VideoReformatter()
    out = reformatter.reformat(frame, width=w, height=h, format="rgb24", interpolation=_INTERPOLATION)
    return out.to_ndarray()


def output_frame_map(
    source_times: list[Fraction], end_time: Fraction, fps: float | Fraction
) -> np.ndarray:
    """Which source frame every output frame of `ffmpeg -vf fps=F` shows.

    source_times: presentation times (s, relative to the file start, ascending) of the
    source frames; end_time: end of the last frame (s). Returns int64 [N] of indices into
    source_times, N = round(end_time * F) (module docstring for the rule).
    """
    rate = _fraction(fps, "fps")
    if not source_times:
        return np.zeros(0, dtype=np.int64)
    slots = [_round_half_away((t * rate).numerator, (t * rate).denominator) for t in source_times]
    shift = min(slots[0], 0)  # a first frame before the start (rounding): slot 0 is the first frame
    end = end_time * rate
    count = _round_half_away(end.numerator, end.denominator) - shift
    slots_arr = np.asarray(slots, dtype=np.int64) - shift
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.searchsorted(slots_arr, np.arange(count, dtype=np.int64), side="right") - 1
    return np.maximum(idx, 0).astype(np.int64)


# --------------------------------------------------------------------------- video files


def _check_range(path: Path, n: int, start: int, stop: int, has: str) -> None:
    """IndexError unless 0 <= start <= stop <= n (the caller pads past the end)."""
    if not (0 <= start <= stop):
        raise IndexError(f"{path}: invalid frame range [{start}, {stop}) (need 0 <= start <= stop)")
    if stop > n:
        raise IndexError(
            f"{path}: frames [{start}, {stop}) requested but {has}; read at most up to {n} "
            "and pad the rest"
        )


def _open_container(path: Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    if not path.is_file():
        raise VideoError(path, "no such file")
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        raise VideoError(
            path, f"not a readable video file ({exc}); is it corrupt or truncated?"
        ) from exc
    if not container.streams.video:
        container.close()
        raise VideoError(path, "contains no video stream")
    return container, container.streams.video[0]


_LIVE_SOURCES: weakref.WeakSet[VideoFileSource] = weakref.WeakSet()
_INHERITED: list[object] = []  # decoder state inherited through fork(): kept, never freed


def _after_fork_in_child() -> None:
    """FFmpeg's decoder threads do not survive fork(): closing or freeing a container the
    parent had open would wait for them forever (a data-loader worker hangs). The child
    parks every inherited container (never freed in this process) and each source reopens
    its file on its next read. The same holds for the scalers `_to_rgb` keeps (FFmpeg's
    scaler runs slice threads): parked too, so the child makes its own. And the parent's
    uncollected garbage (a container in a reference cycle) must not be collected in the
    child either: `gc.freeze` leaves everything inherited to the parent's collector."""
    global _REFORMATTERS
    gc.freeze()
    _INHERITED.append(_REFORMATTERS)
    _REFORMATTERS = threading.local()
    for source in list(_LIVE_SOURCES):
        _INHERITED.append((source._container, source._stream, source._decoder))
        source._decoder = None
        if source._container is not None:
            source._container = None
            source._reopen = True


os.register_at_fork(after_in_child=_after_fork_in_child)


class VideoFileSource:
    """A video file decoded with PyAV, resampled like `ffmpeg -vf fps=F`, resized to size.

    Attributes: `fps` (target), `size` (H, W), `path`, `decoded_frames` (source frames
    decoded so far), `seeks` (seeks done so far), `frame_map` (int64 [len]: source frame
    shown by each output frame), `keyframes` (source indices of keyframes).
    """

    def __init__(self, path: Path | str, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        self._rate = _fraction(fps, "fps")
        self.fps = float(fps)
        self.size = _check_size(size)
        self.decoded_frames = 0
        self.seeks = 0
        container, self._stream = _open_container(self.path)
        self._container: av.container.InputContainer | None = container
        try:
            self._index()
        except VideoError:
            self.close()
            raise
        except av.error.FFmpegError as exc:
            self.close()
            raise VideoError(
                self.path, f"cannot read packets ({exc}); is it corrupt or truncated?"
            ) from exc
        self._decoder: Iterator[av.VideoFrame] | None = None
        self._next_j = 0  # source index of the frame the decoder yields next (when not None)
        self._reopen = False  # set in a forked child: open the file again on the next read
        _LIVE_SOURCES.add(self)

    def _index(self) -> None:
        """Demux-only pass: every packet's pts, duration and keyframe flag (no decoding)."""
        stream, container = self._stream, self._container
        assert container is not None  # called from __init__, right after opening
        tb = stream.time_base
        if tb is None:
            raise VideoError(self.path, "video stream has no time base")
        packets: list[tuple[int, int, bool]] = []
        missing = 0
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            pts = packet.pts if packet.pts is not None else packet.dts
            if pts is None:
                missing += 1
                continue
            packets.append((pts, packet.duration or 0, bool(packet.is_keyframe)))
        if missing:
            raise VideoError(
                self.path,
                f"{missing} packets have no timestamp; re-encode it "
                "(`tallformer prepare videos`) to get a seekable file",
            )
        if not packets:
            raise VideoError(self.path, "contains no video frames (empty or truncated)")
        listed = stream.frames
        if listed and len(packets) < listed:
            raise VideoError(
                self.path,
                f"truncated: the index lists {listed} frames but only {len(packets)} are present",
            )
        packets.sort(key=lambda p: p[0])
        self._pts = [p[0] for p in packets]
        self._pts_index = {pts: j for j, pts in enumerate(self._pts)}
        self.keyframes = [j for j, p in enumerate(packets) if p[2]]
        if not self.keyframes or self.keyframes[0] != 0:
            self.keyframes.insert(0, 0)  # decoding from the start always works
        # Time origin: the file's start time, as the FFmpeg command line does (rescaled to
        # the stream time base with its rounding).
        start_us = container.start_time
        if start_us is None:
            offset = self._pts[0]
        else:
            offset = _round_half_away(start_us * tb.denominator, 1_000_000 * tb.numerator)
        self._offset = offset
        avg = stream.average_rate or stream.guessed_rate
        default_dur = round(1 / (avg * tb)) if avg else 0
        last_end = max(p[0] + (p[1] or default_dur) for p in packets)
        times = [Fraction(p - offset) * tb for p in self._pts]
        self.frame_map = output_frame_map(times, Fraction(last_end - offset) * tb, self._rate)

    def __len__(self) -> int:
        return int(self.frame_map.shape[0])

    @property
    def num_source_frames(self) -> int:
        return len(self._pts)

    def __repr__(self) -> str:
        return f"VideoFileSource({str(self.path)!r}, fps={self.fps}, size={self.size}, frames={len(self)})"

    def __enter__(self) -> VideoFileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._decoder = None
        self._reopen = False
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
            self._container = None

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames start..stop-1 at the target fps: uint8 [stop - start, H, W, 3] RGB.

        Raises IndexError when stop > len(self) (the caller pads), VideoError when the
        file turns out to be undecodable.
        """
        _check_range(self.path, len(self), start, stop, f"the video has {len(self)} frames at {self.fps:g} fps")
        h, w = self.size
        out = np.empty((stop - start, h, w, 3), dtype=np.uint8)
        if stop == start:
            return out
        if self._container is None:
            if not self._reopen:
                raise VideoError(self.path, "read after close()")
            self._container, self._stream = _open_container(self.path)
            self._reopen = False
        need = self.frame_map[start:stop]
        images = self._decode(int(need[0]), int(need[-1]), set(need.tolist()))
        for k, j in enumerate(need.tolist()):
            out[k] = images[j]
        return out

    def _seek(self, key: int) -> None:
        """Position the decoder at keyframe `key` (a source index)."""
        assert self._container is not None
        self._container.seek(self._pts[key], stream=self._stream, backward=True, any_frame=False)
        self.seeks += 1
        self._decoder = self._container.decode(self._stream)
        self._next_j = key

    def _frames(self) -> Iterator[tuple[int, av.VideoFrame]]:
        """Decoded frames from the current position as (source index, frame)."""
        assert self._decoder is not None
        while True:
            try:
                frame = next(self._decoder)
            except StopIteration:
                self._decoder = None
                return
            except av.error.FFmpegError as exc:
                self._decoder = None
                raise VideoError(self.path, f"decoding failed ({exc}); is it corrupt?") from exc
            self.decoded_frames += 1
            j = self._pts_index.get(frame.pts) if frame.pts is not None else None
            if j is None:
                continue  # a frame the packet index does not know (corrupt data): skip it
            self._next_j = j + 1
            yield j, frame

    def _decode(self, lo: int, hi: int, wanted: set[int]) -> dict[int, np.ndarray]:
        """RGB images of the source frames in `wanted` (all within [lo, hi])."""
        key_pos = bisect.bisect_right(self.keyframes, lo) - 1
        images: dict[int, np.ndarray] = {}
        previous: av.VideoFrame | None = None  # last frame before lo (stands in for lost frames)
        # Continue from the current position when that decodes no more than a seek would.
        sought: int | None = None  # keyframe position of the last seek (None: continuing)
        if self._decoder is None or not (self.keyframes[key_pos] <= self._next_j <= lo):
            sought = key_pos
            self._seek(self.keyframes[sought])
        while True:
            first = None
            for j, frame in self._frames():
                if first is None:
                    first = j
                    if j > lo and sought != 0:
                        break  # landed after lo (or frames were lost): start further back
                if j < lo:
                    previous = frame
                    continue
                if j in wanted:
                    images[j] = _to_rgb(frame, self.size)
                if j >= hi:
                    break
            if (first is None or first > lo) and sought != 0:
                sought = key_pos if sought is None else sought - 1
                self._seek(self.keyframes[sought])
                continue
            break
        missing = sorted(wanted - images.keys())
        if missing:
            # Frames the decoder did not return (damaged data): repeat the frame before,
            # as FFmpeg's fps filter would, or fail when there is none.
            for j in missing:
                earlier = [k for k in images if k < j]
                if earlier:
                    images[j] = images[max(earlier)]
                elif previous is not None:
                    images[j] = _to_rgb(previous, self.size)
                else:
                    later = [k for k in images if k > j]
                    if not later:
                        raise VideoError(
                            self.path,
                            f"could not decode source frames {lo}..{hi} "
                            f"(of {len(self._pts)}); is the file corrupt or truncated?",
                        )
                    images[j] = images[min(later)]
        return images


# --------------------------------------------------------------------------- frame folders


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    if not files:
        raise VideoError(
            folder,
            f"frame folder holds no images ({', '.join(IMAGE_EXTENSIONS)}); expected 00001.png ...",
        )
    if all(p.stem.isdigit() for p in files):
        files.sort(key=lambda p: (int(p.stem), p.name))
    else:
        files.sort(key=lambda p: p.name)
    return files


def _read_image(path: Path) -> av.VideoFrame:
    try:
        with av.open(str(path), mode="r") as container:
            for frame in container.decode(video=0):
                return frame
    except av.error.FFmpegError as exc:
        raise VideoError(path, f"cannot decode image ({exc})") from exc
    raise VideoError(path, "image file holds no picture")


class FrameFolderSource:
    """A folder of frames (`00001.png` ...) already extracted at the target fps.

    `len` is the number of image files; frame i is the i-th file in sorted (numeric) order.
    """

    def __init__(self, path: Path | str, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        _fraction(fps, "fps")
        self.fps = float(fps)
        self.size = _check_size(size)
        self.files = _image_files(self.path)
        self.decoded_frames = 0

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"FrameFolderSource({str(self.path)!r}, fps={self.fps}, size={self.size}, frames={len(self)})"

    def __enter__(self) -> FrameFolderSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames start..stop-1: uint8 [stop - start, H, W, 3] RGB."""
        _check_range(self.path, len(self), start, stop, f"the folder has {len(self)} frames")
        h, w = self.size
        out = np.empty((stop - start, h, w, 3), dtype=np.uint8)
        for k, file in enumerate(self.files[start:stop]):
            out[k] = _to_rgb(_read_image(file), self.size)
            self.decoded_frames += 1
        return out


def save_image(path: Path | str, image: np.ndarray) -> None:
    """Write uint8 [H, W, 3] RGB as PNG or JPEG (by suffix) with PyAV (frame-folder layout)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise ValueError(f"{path}: image suffix must be one of {IMAGE_EXTENSIONS}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{path}: image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    codec, pix_fmt = ("png", "rgb24") if suffix == ".png" else ("mjpeg", "yuvj420p")
    encoder = cast(VideoCodecContext, av.CodecContext.create(codec, "w"))
    encoder.height, encoder.width = image.shape[:2]
    encoder.pix_fmt = pix_fmt
    encoder.time_base = Fraction(1, 25)
    if codec == "mjpeg":
        encoder.qmin, encoder.qmax = 2, 2  # high quality (`ffmpeg -q:v 2`)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    if pix_fmt != "rgb24":
        frame = frame.reformat(format=pix_fmt)
    data = b"".join(bytes(p) for p in [*encoder.encode(frame), *encoder.encode(None)])
    path.write_bytes(data)


# --------------------------------------------------------------------------- public API


def open_source(
    path: Path | str, fps: float, size: tuple[int, int]
) -> VideoFileSource | FrameFolderSource:
    """Open a video file (PyAV) or a frame folder (original layout) as a FrameSource.

    size: (H, W) of the returned frames. Raises VideoError naming the file when it cannot
    be read (missing, corrupt, truncated, not a video).
    """
    path = Path(path)
    if path.is_dir():
        return FrameFolderSource(path, fps, size)
    return VideoFileSource(path, fps, size)


def resolve_video(videos_dir: Path | str, video_id: str, *, setting: str = "data.videos") -> Path:
    """The file (VIDEO.mp4, .mkv, ...; `VIDEO_EXTENSIONS`) or frame folder (VIDEO/) of
    `video_id` in videos_dir.

    Tries the id as given, then with the `v_` prefix added or removed (ActivityNet videos
    are distributed both ways). Raises VideoError naming the id, the folder and what was
    tried; its hint names `setting`, where the caller's user gave the folder (the config key
    ``data.videos``, or a command-line option such as ``--videos``).
    """
    folder = Path(videos_dir)
    if not folder.is_dir():
        raise VideoError(folder, f"videos folder does not exist (looking for video {video_id!r}); "
                                 f"check {setting}")
    names = [video_id, video_id[2:] if video_id.startswith("v_") else f"v_{video_id}"]
    tried: list[str] = []
    for name in names:
        if not name:
            continue
        for ext in VIDEO_EXTENSIONS:
            for cand in (folder / f"{name}{ext}", folder / f"{name}{ext.upper()}"):
                if cand.is_file():
                    return cand
        tried.append(f"{name}{{{','.join(VIDEO_EXTENSIONS)}}}")
        if (folder / name).is_dir():
            return folder / name
        tried.append(f"{name}/ (frame folder)")
    raise VideoError(
        folder,
        f"no video or frame folder for video id {video_id!r}; tried {'; '.join(tried)}. "
        f"Check {setting} and the ids in the annotation file",
    )


def probe_video(path: Path | str) -> VideoInfo:
    """Duration, source fps, source frame count and size of a video file.

    Uses the container's metadata when it is exact (the mp4 index lists every frame) and
    otherwise counts packets (demux only, no decoding).
    """
    path = Path(path)
    if path.is_dir():
        raise VideoError(
            path, "is a frame folder; frame folders have no duration (give a video-info file)"
        )
    container, stream = _open_container(path)
    try:
        tb = stream.time_base
        rate = stream.average_rate or stream.guessed_rate
        num_frames = stream.frames
        duration: float | None = None
        if stream.duration is not None and tb is not None:
            duration = float(stream.duration * tb)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        if not num_frames or duration is None or rate is None:
            first, end, count = None, None, 0
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                count += 1
                pts = packet.pts if packet.pts is not None else packet.dts
                if pts is None or tb is None:
                    continue
                first = pts if first is None else min(first, pts)
                stop = pts + (packet.duration or 0)
                end = stop if end is None else max(end, stop)
            num_frames = num_frames or count
            if duration is None and first is not None and end is not None and tb is not None:
                duration = float((end - first) * tb)
            if rate is None and duration:
                rate = Fraction(num_frames) / Fraction(duration)
        if not num_frames or not duration or rate is None:
            raise VideoError(path, "cannot determine frame count, duration or frame rate")
        return VideoInfo(
            duration=duration,
            fps=float(rate),
            num_frames=int(num_frames),
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
        )
    except av.error.FFmpegError as exc:
        raise VideoError(path, f"cannot read packets ({exc}); is it corrupt or truncated?") from exc
    finally:
        container.close()


def iter_frames(
    path: Path | str, fps: float, size: tuple[int, int], block: int = 64
) -> Iterator[np.ndarray]:
    """Every frame of a video (or frame folder) at fps and size, streaming: uint8 [H, W, 3] RGB.

    Decodes sequentially (one pass, no seeks after the first), `block` frames at a time.
    """
    source = open_source(path, fps, size)
    try:
        n = len(source)
        for start in range(0, n, block):
            yield from source.read(start, min(start + block, n))
    finally:
        source.close()
