"""Synthetic action videos: real H.264 mp4 files plus an ActivityNet-format annotation JSON.

The project's built-in dataset: the default data of the demo and of the end-to-end tests. Each class is a visually distinct event that unfolds
over time (a shape with a class colour and a class motion), drawn over a textured,
drifting background. Between the actions, *distractors* play the first 15-35 % of an
action of some class and then vanish: a single frame near an action's start cannot tell a
true action from a distractor, only the temporal context can (where it goes on, where it
stops).

Layout written by :func:`generate_synthetic_dataset`::

    OUT/annotations.json          ActivityNet JSON (`tallformer.data.annotations`), subsets training / validation
    OUT/videos/synth_0000.mp4     H.264, yuv420p, keyframe every 32 frames (prepare.write_video)

Running it again into the same folder rewrites every file (and removes ``synth_*.mp4``
files that are not part of the new dataset). Every file is written atomically
(`tallformer.atomic`): it appears complete under its name, or not at all.

Timing: an event covers the frames ``[start, stop)``; its annotated segment is
``[start / fps, stop / fps]`` seconds, so ``segment * fps`` gives back exact frame indices.

Determinism: the plan (which events, where) comes from one generator seeded by ``seed``;
each video is drawn from its own generator seeded by ``(seed, index)``, so the same seed
gives the same annotations and the same decoded frames whatever the number of workers.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from tallformer.atomic import atomic_path, write_text
from tallformer.data.prepare import PrepareError, write_video

# Class names, in class-id order. The first `num_classes` are used.
CLASS_NAMES: tuple[str, ...] = (
    "SlidingSquare",    # red square moving left to right
    "GrowingCircle",    # green disk growing from a dot
    "BlinkingBar",      # blue horizontal bar, blinking, getting longer
    "RotatingLine",     # yellow bar turning half a turn about its centre
    "FallingSquare",    # magenta square moving top to bottom
    "ShrinkingCircle",  # cyan disk shrinking to a dot
    "ExpandingRing",    # orange ring growing
    "SweepingBar",      # purple vertical bar moving right to left
)

# RGB colour of each class (saturated; the background is muted grey).
CLASS_COLOURS = np.array(
    [
        (225, 35, 35),
        (35, 205, 60),
        (45, 80, 235),
        (235, 215, 30),
        (215, 45, 205),
        (30, 205, 215),
        (245, 140, 20),
        (125, 35, 225),
    ],
    dtype=np.float32,
)

# The "drift" task: every class is the same orange disk filled with a random-dot texture;
# only the direction in which the texture slides under the disk (one pixel a frame) tells
# the classes apart. (dx, dy) in pixels per frame, in class-id order.
DRIFT_CLASS_NAMES: tuple[str, ...] = ("DriftRight", "DriftLeft", "DriftDown", "DriftUp")
DRIFT_VELOCITY: tuple[tuple[int, int], ...] = ((1, 0), (-1, 0), (0, 1), (0, -1))
DRIFT_COLOUR = np.array((200, 120, 50), dtype=np.float32)
_DRIFT_RADIUS = 0.45     # of the frame side
_DRIFT_CONTRAST = 60.0   # texture amplitude on the 0-255 scale
_DRIFT_PERIOD = 32       # the texture repeats every 32 pixels
_DRIFT_BLOB = 1.5        # texture grain: Gaussian smoothing of white noise, pixels
DRIFT_SPEED = 2         # pixels per frame
_DRIFT_LIFETIME = 8      # frames: a fresh texture every 8 frames of an event
_DRIFT_JITTER = 0

TASKS: tuple[str, ...] = ("shapes", "drift")
TASK_CLASS_NAMES: dict[str, tuple[str, ...]] = {"shapes": CLASS_NAMES, "drift": DRIFT_CLASS_NAMES}

VIDEO_PREFIX = "synth_"
MIN_INSTANCE_S = 1.0  # instance lengths 1-5 s: at most 75 frames at 15 fps, well inside the
MAX_INSTANCE_S = 5.0  # demo's 128-frame windows (the paper's THUMOS14 windows: 32 s)
_GAP_S = (0.5, 3.0)  # background-only time between events
_DISTRACTOR_PROGRESS = (0.15, 0.35)  # how far a distractor gets before it vanishes
_DISTRACTOR_PROB = 0.3
_BLINK_HZ = 2.5  # BlinkingBar: on for 2/3 of each period
# shapes are drawn this much larger than their base sizes below, and the background texture
# is faint (waves of amplitude 4-8 on the 0-255 scale): the backbone averages its features
# over the frame, so a small shape on a strong texture barely moves them, and a network
# trained from random weights on a CPU for a few minutes cannot find it
_SHAPE_SCALE = 1.6


@dataclass(frozen=True)
class SyntheticEvent:
    """One drawn event: an annotated instance (`complete`) or a distractor.

    Frames ``[start, stop)`` of the video. The event's progress runs from 0 to
    `progress_end` (1.0 for an instance) over those frames.
    """

    label: int
    start: int
    stop: int
    complete: bool
    progress_end: float = 1.0
    position: tuple[float, float] = (0.5, 0.5)  # (x, y), fractions of the frame
    scale: float = 1.0
    colour_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class SyntheticVideo:
    """The plan of one video: enough to draw every frame and to write its annotations."""

    video_id: str
    subset: str  # "training" | "validation"
    num_frames: int
    fps: float
    size: tuple[int, int]  # (H, W)
    seed: int  # seeds the background of this video
    events: tuple[SyntheticEvent, ...] = field(default_factory=tuple)
    task: str = "shapes"  # what the classes are (`TASKS`)

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    @property
    def instances(self) -> list[SyntheticEvent]:
        return [e for e in self.events if e.complete]

    @property
    def distractors(self) -> list[SyntheticEvent]:
        return [e for e in self.events if not e.complete]


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise PrepareError(f"unknown synthetic task {task!r}; choose one of {', '.join(TASKS)}")


def class_names(num_classes: int, task: str = "shapes") -> list[str]:
    """The first `num_classes` class names of `task` (``shapes``: at most 8, ``drift``: 4)."""
    _check_task(task)
    names = TASK_CLASS_NAMES[task]
    if not 1 <= num_classes <= len(names):
        raise PrepareError(
            f"num_classes must be between 1 and {len(names)} (the {task!r} task has "
            f"{len(names)} synthetic event kinds), got {num_classes}"
        )
    return list(names[:num_classes])


def _check_settings(num_videos: int, num_classes: int, fps: float, size: tuple[int, int],
                    min_length: float, max_length: float, val_fraction: float,
                    instance_length: tuple[float, float], task: str = "shapes") -> None:
    class_names(num_classes, task)
    if num_videos < 1:
        raise PrepareError(f"num_videos must be at least 1, got {num_videos}")
    if not fps > 0:
        raise PrepareError(f"fps must be positive, got {fps}")
    h, w = size
    if h < 16 or w < 16 or h % 2 or w % 2:
        raise PrepareError(f"size must be even and at least 16x16 (H.264 yuv420p), got {w}x{h} (WxH)")
    if not 0 < min_length <= max_length:
        raise PrepareError(
            f"need 0 < min_length <= max_length (seconds), got {min_length} and {max_length}"
        )
    lo, hi = instance_length
    if not 0 < lo <= hi:
        raise PrepareError(f"instance_length must be (min, max) seconds with 0 < min <= max, got {lo} and {hi}")
    if min_length < lo + 2 * _GAP_S[0]:
        raise PrepareError(
            f"min_length {min_length} s is too short: a video needs room for one "
            f"{lo:g} s instance and {_GAP_S[0]:g} s of background on each side "
            f"(use at least {lo + 2 * _GAP_S[0]:g} s)"
        )
    if not 0 <= val_fraction < 1:
        raise PrepareError(f"val_fraction must be in [0, 1), got {val_fraction}")


def _label_stream(rng: np.random.Generator, num_classes: int) -> Iterator[int]:
    """Class ids in shuffled rounds of all classes: balanced counts, every class early."""
    while True:
        yield from (int(c) for c in rng.permutation(num_classes))


def _plan_events(rng: np.random.Generator, labels: Iterator[int], num_classes: int,
                 num_frames: int, fps: float,
                 instance_length: tuple[float, float] = (MIN_INSTANCE_S, MAX_INSTANCE_S),
                 ) -> tuple[SyntheticEvent, ...]:
    """Non-overlapping instances and distractors separated by background gaps.

    Instances last `instance_length` seconds (default `MIN_INSTANCE_S` to `MAX_INSTANCE_S`:
    1-5 s; the longest capped at a third of the video, so short test videos still get
    several); at least one instance per video.
    """
    length_s = num_frames / fps
    min_inst = instance_length[0]
    max_inst = min(instance_length[1], max(min_inst, length_s / 3))
    min_frames = max(1, math.ceil(min_inst * fps))
    events: list[SyntheticEvent] = []
    t = round(rng.uniform(*_GAP_S) * fps)
    end_margin = round(_GAP_S[0] * fps)
    while True:
        room = num_frames - end_margin - t
        has_instance = any(e.complete for e in events)
        # a distractor may come first when there is room for an instance after it
        distractor = ((has_instance or room > 3 * max_inst * fps)
                      and rng.random() < _DISTRACTOR_PROB)
        # Every draw happens whether or not the event fits, so the plan stays a pure
        # function of the generator's state.
        length_s = rng.uniform(min_inst, max_inst)
        progress = rng.uniform(*_DISTRACTOR_PROGRESS)
        position = (float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7)))
        scale = float(rng.uniform(0.85, 1.15))
        shift = tuple(float(v) for v in rng.uniform(-20, 20, size=3))
        gap = rng.uniform(*_GAP_S)
        if distractor:
            frames = max(2, round(progress * length_s * fps))
        else:
            frames = max(min_frames, round(length_s * fps))
            progress = 1.0
            if frames > room and not has_instance and room >= min_frames:
                frames = room  # the video's one instance: shorten it to fit
        if frames > room:
            break
        # instance labels come in balanced rounds; a distractor's class is drawn freely
        label = int(rng.integers(num_classes)) if distractor else next(labels)
        events.append(SyntheticEvent(label, t, t + frames, not distractor, progress,
                                     position, scale, shift))  # type: ignore[arg-type]
        t += frames + max(1, round(gap * fps))
    return tuple(events)


def plan_dataset(num_videos: int, seed: int, *, num_classes: int = 4, fps: float = 15.0,
                 size: tuple[int, int] = (64, 64), min_length: float = 30.0,
                 max_length: float = 60.0, val_fraction: float = 0.25,
                 instance_length: tuple[float, float] = (MIN_INSTANCE_S, MAX_INSTANCE_S),
                 task: str = "shapes") -> list[SyntheticVideo]:
    """Plan every video of a synthetic dataset (cheap; no drawing).

    The first ``num_videos - round(num_videos * val_fraction)`` videos are `training`,
    the rest `validation` (at least one of each when ``num_videos >= 2`` and
    ``val_fraction > 0``). Same arguments, same plan.
    """
    _check_settings(num_videos, num_classes, fps, size, min_length, max_length, val_fraction,
                    instance_length, task)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    labels = _label_stream(rng, num_classes)
    num_val = round(num_videos * val_fraction)
    if val_fraction > 0 and num_videos >= 2:
        num_val = min(max(num_val, 1), num_videos - 1)
    num_train = num_videos - num_val
    width = max(4, len(str(num_videos - 1)))
    videos = []
    for index in range(num_videos):
        length_s = rng.uniform(min_length, max_length)
        num_frames = max(1, round(length_s * fps))
        events = _plan_events(rng, labels, num_classes, num_frames, fps, instance_length)
        render_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        videos.append(SyntheticVideo(
            video_id=f"{VIDEO_PREFIX}{index:0{width}d}",
            subset="training" if index < num_train else "validation",
            num_frames=num_frames, fps=float(fps), size=(int(size[0]), int(size[1])),
            seed=render_seed, events=events, task=task,
        ))
    return videos


def annotation_dict(videos: list[SyntheticVideo], num_classes: int) -> dict[str, Any]:
    """The ActivityNet JSON (`tallformer.data.annotations`) of planned videos, in video order."""
    names = class_names(num_classes, videos[0].task if videos else "shapes")
    database = {}
    for video in videos:
        database[video.video_id] = {
            "subset": video.subset,
            "duration": round(video.duration, 6),
            "fps": video.fps,
            "annotations": [
                {"segment": [round(e.start / video.fps, 6), round(e.stop / video.fps, 6)],
                 "label": names[e.label]}
                for e in video.instances
            ],
        }
    return {"version": "tallformer-synthetic-1", "database": database}


# ----------------------------------------------------------------------------- drawing


class _Background:
    """A textured grey background that drifts: a sum of plane waves with moving phases.

    Muted colours (low saturation), so every class colour stands out against it.
    """

    def __init__(self, rng: np.random.Generator, size: tuple[int, int], fps: float) -> None:
        h, w = size
        s = float(min(h, w))
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        self.x, self.y = x / s, y / s
        n = 4
        angle = rng.uniform(0, 2 * np.pi, n)
        freq = rng.uniform(2.0, 7.0, n)  # cycles per frame side
        self.kx = (2 * np.pi * freq * np.cos(angle)).astype(np.float32)
        self.ky = (2 * np.pi * freq * np.sin(angle)).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
        # radians per frame: the texture drifts by about 0.2-1 cycle per second
        self.speed = (2 * np.pi * rng.uniform(0.2, 1.0, n) * rng.choice([-1, 1], n)
                      / fps).astype(np.float32)
        self.amp = rng.uniform(4, 8, n).astype(np.float32)
        self.base = np.float32(rng.uniform(95, 140))
        self.tint = rng.uniform(-12, 12, 3).astype(np.float32)
        self.weights = rng.uniform(0.6, 1.0, (n, 3)).astype(np.float32)

    def frames(self, indices: np.ndarray) -> np.ndarray:
        """Float32 [T, H, W, 3] on the 0-255 scale for frame `indices` [T]."""
        t = indices.astype(np.float32)[:, None, None]
        out = np.empty((len(indices), *self.x.shape, 3), np.float32)
        out[...] = self.base + self.tint
        for k in range(len(self.amp)):
            wave = self.amp[k] * np.sin((self.kx[k] * self.x + self.ky[k] * self.y)[None]
                                        + (self.phase[k] + self.speed[k] * t))
            out += wave[..., None] * self.weights[k]
        return out


def _event_mask(label: int, progress: np.ndarray, seconds: np.ndarray, event: SyntheticEvent,
                size: tuple[int, int], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Coverage in [0, 1] of the event's shape, float32 [T, H, W].

    `progress` [T, 1, 1] in [0, 1] is how far the action has got in each frame,
    `seconds` [T, 1, 1] the time since it began; `xs`, `ys` [H, W] pixel centres. Shapes
    have a one-pixel soft edge (coverage = clip(0.5 - signed distance in pixels)).
    """
    h, w = size
    s = float(min(h, w))
    sc = event.scale * _SHAPE_SCALE
    px, py = event.position[0] * w, event.position[1] * h
    on = None
    if label == 0:  # SlidingSquare: left to right
        cx = (0.12 + 0.76 * progress) * w
        d = np.maximum(np.abs(xs - cx), np.abs(ys - py)) - 0.11 * s * sc
    elif label == 1:  # GrowingCircle
        d = np.hypot(xs - px, ys - py) - (0.04 + 0.26 * progress) * s * sc
    elif label == 2:  # BlinkingBar: on 2/3 of each period, growing from the centre
        on = (seconds * _BLINK_HZ) % 1.0 < 2 / 3
        hx = (0.10 + 0.30 * progress) * w * sc
        d = np.maximum(np.abs(xs - 0.5 * w) - hx, np.abs(ys - py) - 0.06 * s * sc)
    elif label == 3:  # RotatingLine: half a turn
        theta = np.pi * progress
        c, si = np.cos(theta), np.sin(theta)
        u = (xs - px) * c + (ys - py) * si
        v = (ys - py) * c - (xs - px) * si
        d = np.maximum(np.abs(u) - 0.3 * s * sc, np.abs(v) - 0.035 * s * sc)
    elif label == 4:  # FallingSquare: top to bottom
        cy = (0.12 + 0.76 * progress) * h
        d = np.maximum(np.abs(xs - px), np.abs(ys - cy)) - 0.11 * s * sc
    elif label == 5:  # ShrinkingCircle
        d = np.hypot(xs - px, ys - py) - (0.30 - 0.25 * progress) * s * sc
    elif label == 6:  # ExpandingRing
        r = (0.06 + 0.30 * progress) * s * sc
        d = np.abs(np.hypot(xs - px, ys - py) - r) - 0.035 * s
    elif label == 7:  # SweepingBar: right to left
        cx = (0.88 - 0.76 * progress) * w
        d = np.maximum(np.abs(xs - cx) - 0.06 * s * sc, np.abs(ys - 0.5 * h) - 0.3 * h)
    else:
        raise ValueError(f"no synthetic event kind for class id {label}")
    mask = np.clip(0.5 - np.broadcast_to(d, (len(progress), h, w)), 0.0, 1.0)
    if on is not None:
        mask = mask * on
    return mask.astype(np.float32, copy=False)


def render_frames(video: SyntheticVideo, block: int = 32) -> Iterator[np.ndarray]:
    """Every frame of a planned video: uint8 [H, W, 3] RGB, in order (streaming).

    Frames are drawn `block` at a time (vectorised); the result does not depend on `block`.
    """
    _check_task(video.task)
    rng = np.random.default_rng(video.seed)
    h, w = video.size
    background = _Background(rng, video.size, video.fps)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    textures = ([np.stack([_drift_texture(np.random.default_rng([video.seed, i, k]))
                           for k in range(-(-(e.stop - e.start) // _DRIFT_LIFETIME))])
                 for i, e in enumerate(video.events)] if video.task == "drift" else [])
    for b0 in range(0, video.num_frames, block):
        b1 = min(b0 + block, video.num_frames)
        frames = background.frames(np.arange(b0, b1))
        for i, e in enumerate(video.events):
            lo, hi = max(e.start, b0), min(e.stop, b1)
            if lo >= hi:
                continue
            part = frames[lo - b0:hi - b0]
            if video.task == "drift":
                mask, colour = _drift_event(e, textures[i], np.arange(lo, hi), video.size, xs, ys)
                part += mask * (colour - part)
                continue
            idx = np.arange(lo, hi, dtype=np.float32)[:, None, None]
            progress = e.progress_end * (idx - e.start + 0.5) / (e.stop - e.start)
            seconds = (idx - e.start) / video.fps
            mask = _event_mask(e.label, progress, seconds, e, video.size, xs, ys)[..., None]
            colour = np.clip(CLASS_COLOURS[e.label] + np.asarray(e.colour_shift, np.float32), 0, 255)
            part += mask * (colour - part)
        yield from np.clip(frames + 0.5, 0, 255).astype(np.uint8)


def _drift_texture(rng: np.random.Generator) -> np.ndarray:
    """A periodic random-dot texture in [-1, 1]: float32 [P, P] (P = 32), white noise
    smoothed by a Gaussian of `_DRIFT_BLOB` pixels (in the Fourier domain, so it wraps)."""
    noise = rng.standard_normal((_DRIFT_PERIOD, _DRIFT_PERIOD))
    f = np.fft.fftfreq(_DRIFT_PERIOD)
    gain = np.exp(-2 * (np.pi * _DRIFT_BLOB) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    tex = np.fft.ifft2(np.fft.fft2(noise) * gain).real
    tex /= tex.std()
    return np.tanh(tex).astype(np.float32)


def _drift_event(event: SyntheticEvent, texture: np.ndarray, frames: np.ndarray, size: tuple[int, int],
                 xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A "drift" event on `frames` [T]: coverage [T, H, W, 1] of the disk and its colour
    [T, H, W, 3], the texture slid by the class's velocity times the frames since the start."""
    h, w = size
    jitter = _DRIFT_JITTER
    radius = _DRIFT_RADIUS * min(h, w) * (event.scale if jitter else 1.0)
    px, py = event.position if jitter else (0.5, 0.5)
    d = np.hypot(xs - px * w, ys - py * h) - radius
    mask = np.broadcast_to(np.clip(0.5 - d, 0.0, 1.0), (len(frames), h, w))
    dx, dy = (DRIFT_SPEED * v for v in DRIFT_VELOCITY[event.label])
    t = (frames - event.start)[:, None, None]
    iy, ix = np.mgrid[0:h, 0:w]
    tex = texture[t // _DRIFT_LIFETIME, (iy[None] - dy * t) % _DRIFT_PERIOD, (ix[None] - dx * t) % _DRIFT_PERIOD]
    shift = np.asarray(event.colour_shift, np.float32) if jitter else np.zeros(3, np.float32)
    colour = DRIFT_COLOUR + shift + _DRIFT_CONTRAST * tex[..., None]
    return mask[..., None].astype(np.float32), np.clip(colour, 0, 255).astype(np.float32)


def _write_one(video: SyntheticVideo, path: str, gop: int) -> str:
    target = Path(path)
    with atomic_path(target) as tmp:
        write_video(tmp, render_frames(video), video.fps, video.size, gop=gop, threads=1)
    return video.video_id


def generate_synthetic_dataset(out_dir: str | os.PathLike[str], num_videos: int, seed: int, *,
                               num_classes: int = 4, size: tuple[int, int] = (64, 64),
                               fps: float = 15.0, min_length: float = 30.0,
                               max_length: float = 60.0, val_fraction: float = 0.25,
                               instance_length: tuple[float, float] = (MIN_INSTANCE_S, MAX_INSTANCE_S),
                               workers: int = 1, gop: int = 32, progress: bool = True,
                               task: str = "shapes") -> Path:
    """Write the synthetic dataset to `out_dir`; return the path of its annotations.json.

    Args:
        out_dir: output folder; gets ``annotations.json`` and ``videos/<id>.mp4``.
        num_videos: number of videos; ``seed``: the dataset's seed (same seed, same data).
        num_classes: K event kinds (1-8). size: (H, W), even. fps: frames per second.
        min_length, max_length: video length range in seconds.
        val_fraction: share of `validation` videos (the rest is `training`).
        instance_length: (min, max) length of an annotated instance in seconds.
        workers: processes drawing and encoding videos in parallel.
        gop: keyframe interval of the mp4 files. progress: show a tqdm bar.
        task: what the classes are: ``shapes`` (the demo's: colour, shape and motion differ)
            or ``drift`` (one disk, a texture sliding right, left, down or up; `TASKS`).
    """
    from tqdm import tqdm

    videos = plan_dataset(num_videos, seed, num_classes=num_classes, fps=fps, size=size,
                          min_length=min_length, max_length=max_length,
                          val_fraction=val_fraction, instance_length=instance_length, task=task)
    out = Path(out_dir)
    video_dir = out / "videos"
    video_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(v, str(video_dir / f"{v.video_id}.mp4"), gop) for v in videos]
    # videos of an earlier, larger dataset in the same folder would be listed as videos
    # without annotations: remove our own files that are not part of this one
    names = {Path(job[1]).name for job in jobs}
    for stale in video_dir.glob(f"{VIDEO_PREFIX}*.mp4"):
        if stale.name not in names:
            stale.unlink()
    bar = tqdm(total=len(jobs), desc="synthetic videos", unit="video", disable=not progress)
    try:
        if workers <= 1:
            for job in jobs:
                _write_one(*job)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(_write_one, *job) for job in jobs]
                for fut in as_completed(futures):
                    fut.result()
                    bar.update()
    finally:
        bar.close()
    ann_path = out / "annotations.json"
    write_text(ann_path, json.dumps(annotation_dict(videos, num_classes), indent=1) + "\n")
    return ann_path
