"""The training dataset and its collate function (the test path reads whole videos itself:
`tallformer.engine.families`).

Training (`TrainDataset`, one item per training video and epoch; the original's pipeline,
original: configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:25-49): a window of
``cfg.num_frames`` frames is cut at a random start (a multiple of
``cfg.train_start_stride``), the instances that pass the IoF rule are kept in window
frames, the window is split into chunks of ``chunk_size`` frames, and only the chunks
that go through the backbone (``chunk_selector``) are decoded and augmented, all with ONE
draw of augmentation parameters. The features of the other chunks come from
``feature_reader`` (the memory bank), read here, in the data worker: with a ``DataLoader``
that is up to ``num_workers x prefetch_factor`` batches ahead of the training step that
uses them (a video appears once per epoch, so the steps in between do not write its rows,
except a padded repeat in an epoch's last step).

Randomness: every sample draws from generators seeded by ``(seed, rank, epoch, index)``
(`tallformer.ops.seeding.sample_generators`; the original reseeds each worker instead, with
seeds that collide across ranks and epochs, original: vedatad/datasets/builder.py:125-142),
so a run is reproducible and ranks and workers are independent, whatever the number of
workers. The index of an epoch's padded repeat (the sampler's last step) is
``item + k * len(dataset)`` for its k-th repeat: the item is ``index % len(dataset)``, and
the repeat draws its own window, chunks and augmentation.

Frame rate: a video is decoded at, and its seconds converted with, the annotation's own
``fps`` when it has one (set by a preparation step, e.g. ActivityNet's 768-frame videos),
else ``data.fps`` (`tallformer.data.annotations.video_fps`: the nominal fps with exact
decoded frame counts, where the original derives one from metadata, original:
vedatad/datasets/thumos14.py:61).

Frame sources are opened lazily and cached per worker process (a small LRU keyed by
path); a forked worker notices the new pid and opens its own. PyAV and ``fork`` mix badly:
a decoder created in the parent and freed in a forked child deadlocks there. The cache
guards its own sources (collected in the parent on close, never freed in a child, and
``gc.freeze()`` in the child), but PyAV objects created elsewhere in the parent can still
be garbage at fork time; if the parent decodes video outside this dataset, prefer
``DataLoader(..., multiprocessing_context="forkserver")`` (the original uses spawn,
original: vedacore/parallel/dist_utils.py:11-12).
"""

from __future__ import annotations

import contextlib
import gc
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import torch
from torch.utils.data import Dataset

from tallformer.data.annotations import video_fps
from tallformer.data.transforms import (
    AugParams,
    apply_params,
    draw_params,
)
from tallformer.data.video import open_source, resolve_video
from tallformer.data.windows import (
    crop_segments,
    sample_train_window,
    seconds_to_frames,
)
from tallformer.errors import TallformerError, TallformerWarning, name_list
from tallformer.ops.chunks import chunk_runs
from tallformer.ops.seeding import sample_generators

if TYPE_CHECKING:
    from tallformer.config import DataConfig
    from tallformer.data.annotations import AnnotationSet, VideoAnnotation
    from tallformer.data.video import FrameSource

__all__ = [
    "TEMPORAL_STRIDE",
    "ChunkSelectorFn",
    "DatasetError",
    "FeatureReader",
    "TrainBatch",
    "TrainDataset",
    "TrainSample",
    "collate_train",
]

# Frames per feature row: Video Swin's temporal patch 2 (original:
# configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:15,91, feat_downsample=2).
TEMPORAL_STRIDE = 2
# Open frame sources kept per worker (file handles and decoder state).
MAX_OPEN_SOURCES = 8

ChunkSelectorFn = Callable[[int, int, int, int, int], Sequence[int]]
"""``(seed, rank, epoch, index, num_chunks) -> sorted kept chunk ids`` (a function; e.g. a
``tallformer.memory.selection.ChunkSelector``)."""
FeatureReader = Callable[[str, int, list[int], int], np.ndarray]
"""``(video_id, row_start, chunk_ids, rows_per_chunk) -> [len(chunk_ids), C, rows_per_chunk]``."""


class DatasetError(TallformerError, RuntimeError):
    """A video, annotation or setting the dataset cannot use; the message names it."""


class TrainSample(TypedDict):
    """One training window (`TrainDataset[index]`); k kept chunks of n, G instances."""

    chunks: torch.Tensor  # float32 [k, 3, chunk_size, crop, crop], kept chunks in time order
    keep: torch.Tensor  # int64 [k], sorted kept chunk ids
    cached: torch.Tensor  # float32 [n - k, C, rows] bank features, or [0, 0, rows] without a bank
    segments: torch.Tensor  # float32 [G, 2], window frames
    labels: torch.Tensor  # int64 [G]
    ignore: torch.Tensor  # float32 [I, 2], window frames
    video_id: str
    offset: int  # window start frame in the video
    fps: float  # the video's frame rate (module docstring)
    num_frames: int  # real frames in the window, before padding
    video_frames: int  # frames of the whole video
    num_chunks: int  # n


class TrainBatch(TypedDict):
    """`collate_train` of B samples (sample-major)."""

    chunks: torch.Tensor  # [B*k, 3, chunk_size, crop, crop]: sample 0's kept chunks first
    keep_mask: torch.Tensor  # bool [B, n]
    cached: torch.Tensor  # [B, n - k, C, rows]
    keep: list[torch.Tensor]  # B x int64 [k]
    segments: list[torch.Tensor]  # B x [G_b, 2]
    labels: list[torch.Tensor]  # B x [G_b]
    ignore: list[torch.Tensor]  # B x [I_b, 2]
    video_id: list[str]
    offset: list[int]
    fps: list[float]
    num_frames: list[int]
    video_frames: list[int]


class _SourceCache:
    """Per-process LRU of open frame sources, keyed by path; dropped when pickled or forked."""

    def __init__(self, size: tuple[int, int], max_open: int = MAX_OPEN_SOURCES):
        self.size = size
        self.max_open = max_open
        self._pid = os.getpid()
        self._open: OrderedDict[Path, FrameSource] = OrderedDict()
        self._orphans: list[FrameSource] = []

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        state["_orphans"] = []
        return state

    def get(self, video_id: str, path: Path, fps: float) -> FrameSource:
        if os.getpid() != self._pid:
            # A forked worker: the parent's decoders are not ours. Freeing a PyAV decoder
            # whose threads lived in the parent deadlocks the child (pthread_cond_destroy in
            # avcodec_free_context), so keep the parent's sources referenced, and move every
            # object inherited from the parent (including PyAV garbage not yet collected
            # there) out of the collector's reach.
            gc.freeze()
            self._orphans.extend(self._open.values())
            self._open = OrderedDict()
            self._pid = os.getpid()
        source = self._open.get(path)
        if source is not None:
            self._open.move_to_end(path)
            return source
        try:
            source = open_source(path, fps, self.size)
        except Exception as exc:
            raise DatasetError(f"video '{video_id}': cannot open {path}: {exc}") from exc
        self._open[path] = source
        while len(self._open) > self.max_open:
            _, old = self._open.popitem(last=False)
            old.close()
        return source

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown: nothing to protect
            self.close()

    def close(self) -> None:
        if os.getpid() != self._pid:  # never free the parent's decoders in a child
            self._open = OrderedDict()
            return
        closed = bool(self._open)
        while self._open:
            _, source = self._open.popitem(last=False)
            source.close()
        if closed:
            # PyAV containers sit in reference cycles: collect them now, in this process,
            # so that no decoder (and its threads) is left for a forked worker to free.
            gc.collect()


def _read(source: FrameSource, video_id: str, path: Path, start: int, stop: int) -> np.ndarray:
    try:
        frames = source.read(start, stop)
    except Exception as exc:
        raise DatasetError(
            f"video '{video_id}': reading frames [{start}, {stop}) of {path} failed: {exc}"
        ) from exc
    if frames.shape[0] != stop - start:
        raise DatasetError(
            f"video '{video_id}': asked {path} for frames [{start}, {stop}) and got "
            f"{frames.shape[0]} frames"
        )
    return frames


def _resolve_all(videos_dir: str | Path, video_ids: list[str]) -> dict[str, Path]:
    """Resolve every video file up front; one error listing all that are missing."""
    if not Path(videos_dir).is_dir():
        raise DatasetError(f"videos folder {videos_dir} does not exist; check data.videos")
    paths: dict[str, Path] = {}
    missing: list[str] = []
    first = ""
    for vid in video_ids:
        try:
            paths[vid] = Path(resolve_video(videos_dir, vid))
        except Exception as exc:
            missing.append(vid)
            first = first or str(exc)
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(video_ids)} videos not found under {videos_dir}: "
            f"{name_list(missing, 10)} (e.g. {first}); check data.videos, or remove these "
            "videos from the annotations"
        )
    return paths


@dataclass
class _TrainVideo:
    video_id: str
    path: Path
    fps: float
    segments: np.ndarray  # [G, 2] video frames (float)
    labels: np.ndarray  # [G] int64
    ignore: np.ndarray  # [I, 2] video frames


class TrainDataset(Dataset):
    """Training windows, one per video per epoch (original pipeline:
    configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:25-49).

    Args:
        annotations: the loaded annotations; videos of ``cfg.train_subset`` are used
            (THUMOS14 trains on "validation"). Videos without an instance of `classes`
            are skipped with a warning (the original swaps them for another video).
        videos_dir: folder of video files or frame folders (``resolve_video``).
        cfg: data settings (fps, frame_size, crop_size, num_frames, train_start_stride,
            iof_th, mean, std, augment).
        classes: class names; a label is its index here. Other labels are dropped.
        chunk_size: frames per backbone chunk (32); must divide ``cfg.num_frames``.
        chunk_selector: ``(seed, rank, epoch, index, num_chunks) -> sorted kept ids``;
            None keeps (and decodes) every chunk.
        feature_reader: ``(video_id, row_start, chunk_ids, rows_per_chunk) ->
            [len(chunk_ids), C, rows_per_chunk]`` for the dropped chunks; None = no cache.
        seed, rank: mixed into every sample's generators with the epoch and index.

    ``len(dataset)`` is the number of videos; ``dataset[index]`` is a `TrainSample` of video
    ``index % len(dataset)``, drawn with ``index`` (``index >= len``: an epoch's padded
    repeat, see the module docstring). ``rows = chunk_size / 2``.
    """

    def __init__(
        self,
        annotations: AnnotationSet,
        videos_dir: str | Path,
        cfg: DataConfig,
        classes: list[str],
        *,
        chunk_size: int = 32,
        chunk_selector: ChunkSelectorFn | None = None,
        feature_reader: FeatureReader | None = None,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        if chunk_size < 1 or cfg.num_frames % chunk_size:
            raise DatasetError(
                f"data.num_frames ({cfg.num_frames}) must be a multiple of the chunk size "
                f"({chunk_size})"
            )
        if chunk_size % TEMPORAL_STRIDE:
            raise DatasetError(f"chunk size {chunk_size} must be even (2 frames per feature row)")
        if feature_reader is not None and cfg.train_start_stride % TEMPORAL_STRIDE:
            warnings.warn(
                f"data.train_start_stride = {cfg.train_start_stride} allows odd window starts: "
                f"their bank rows (start // {TEMPORAL_STRIDE}) are one frame off the window (as "
                "in the original, original: vedatad/engines/train_engine.py:90); use an even "
                "stride (2, or 32 for the bank's chunk grid)",
                TallformerWarning, stacklevel=2,
            )
        self.cfg = cfg
        self.classes = list(classes)
        self.chunk_size = chunk_size
        self.num_chunks = cfg.num_frames // chunk_size
        self.rows_per_chunk = chunk_size // TEMPORAL_STRIDE
        self.chunk_selector = chunk_selector
        self.feature_reader = feature_reader
        self.seed = seed
        self.rank = rank
        self.epoch = 0
        self.videos_dir = Path(videos_dir)

        videos = annotations.subset(cfg.train_subset)
        class_index = {name: i for i, name in enumerate(self.classes)}
        kept: list[VideoAnnotation] = []
        unknown = 0
        empty: list[str] = []
        parsed: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for video in videos:
            segs = [inst.segment for inst in video.annotations if inst.label in class_index]
            labs = [class_index[inst.label] for inst in video.annotations if inst.label in class_index]
            unknown += len(video.annotations) - len(segs)
            if not segs:
                empty.append(video.video_id)
                continue
            kept.append(video)
            fps = video_fps(video, cfg)
            parsed.append(
                (
                    seconds_to_frames(np.asarray(segs, dtype=np.float64).reshape(-1, 2), fps),
                    np.asarray(labs, dtype=np.int64),
                    seconds_to_frames(
                        np.asarray(video.ambiguous, dtype=np.float64).reshape(-1, 2), fps
                    ),
                )
            )
        if unknown:
            warnings.warn(
                f"{annotations.source}: {unknown} instances of subset '{cfg.train_subset}' have "
                "labels outside the class list and are ignored",
                TallformerWarning, stacklevel=2,
            )
        if empty:
            warnings.warn(
                f"{annotations.source}: {len(empty)} videos of subset '{cfg.train_subset}' have no "
                f"instance of a known class and are skipped (e.g. {name_list(empty, 3)})",
                TallformerWarning, stacklevel=2,
            )
        if not kept:
            raise DatasetError(
                f"{annotations.source}: subset '{cfg.train_subset}' has no video with an "
                f"instance of the classes ({name_list(self.classes, 5)}); "
                "check data.train_subset and the annotation file"
            )
        paths = _resolve_all(videos_dir, [v.video_id for v in kept])
        self.videos = [
            _TrainVideo(v.video_id, paths[v.video_id], video_fps(v, cfg), segs, labs, ign)
            for v, (segs, labs, ign) in zip(kept, parsed, strict=True)
        ]
        self._sources = _SourceCache((cfg.frame_size[0], cfg.frame_size[1]))

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch mixed into the per-sample seeds (call before each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """The number of training videos (an epoch's items)."""
        return len(self.videos)

    def _keep_ids(self, index: int) -> list[int]:
        if self.chunk_selector is None:
            return list(range(self.num_chunks))
        keep = [int(c) for c in self.chunk_selector(self.seed, self.rank, self.epoch, index, self.num_chunks)]
        if keep != sorted(set(keep)) or any(c < 0 or c >= self.num_chunks for c in keep):
            raise DatasetError(
                f"chunk_selector returned {keep}; it must return sorted, distinct chunk ids "
                f"in [0, {self.num_chunks})"
            )
        return keep

    def __getitem__(self, index: int) -> TrainSample:
        if index < 0:
            raise IndexError(f"TrainDataset index must be >= 0, got {index}")
        # index >= len: a padded repeat of item index % len with its own draws (module doc)
        video = self.videos[index % len(self.videos)]
        cfg = self.cfg
        np_rng, torch_gen = sample_generators(self.seed, self.rank, self.epoch, index)
        source = self._sources.get(video.video_id, video.path, video.fps)
        n_video = len(source)
        if n_video < 1:
            raise DatasetError(f"video '{video.video_id}': {video.path} has no frames")

        # window and ground truth (original: vedatad/datasets/pipelines/transforms.py:366-441)
        start = sample_train_window(n_video, cfg.num_frames, cfg.train_start_stride, np_rng)
        length = min(cfg.num_frames, n_video)
        # training clips instances and ignore regions to the video and drops the empty ones
        # (original: vedatad/datasets/thumos14.py:72-76); both then follow the same keep rule
        segs = np.clip(video.segments, 0.0, float(n_video))
        valid = segs[:, 1] > segs[:, 0]
        segments, labels, _ = crop_segments(segs[valid], video.labels[valid], start, length, cfg.iof_th)
        ign = np.clip(video.ignore, 0.0, float(n_video))
        ign = ign[ign[:, 1] > ign[:, 0]]
        ignore, _, _ = crop_segments(ign, None, start, length, cfg.iof_th)

        # decode and augment only the kept chunks, one parameter draw for all of them
        keep = self._keep_ids(index)
        params = draw_params(torch_gen, source.size, cfg.crop_size, augment=cfg.augment)
        chunks = self._decode_chunks(video, source, keep, start, length, params)

        kept_set = set(keep)
        dropped = [c for c in range(self.num_chunks) if c not in kept_set]
        if self.feature_reader is not None and dropped:
            # bank rows start at offset // 2: exact for an even start stride (warned otherwise)
            row_start = start // TEMPORAL_STRIDE
            feats = np.asarray(
                self.feature_reader(video.video_id, row_start, dropped, self.rows_per_chunk)
            )
            if feats.ndim != 3 or feats.shape[0] != len(dropped) or feats.shape[2] != self.rows_per_chunk:
                raise DatasetError(
                    f"feature_reader returned shape {feats.shape} for video '{video.video_id}'; "
                    f"expected [{len(dropped)}, C, {self.rows_per_chunk}]"
                )
            cached = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
        else:
            cached = torch.zeros(0, 0, self.rows_per_chunk)

        return {
            "chunks": chunks,
            "keep": torch.tensor(keep, dtype=torch.int64),
            "cached": cached,
            "segments": torch.from_numpy(segments),
            "labels": torch.from_numpy(labels if labels is not None else np.zeros(0, np.int64)),
            "ignore": torch.from_numpy(ignore),
            "video_id": video.video_id,
            "offset": int(start),
            "fps": video.fps,
            "num_frames": int(length),
            "video_frames": int(n_video),
            "num_chunks": self.num_chunks,
        }

    def _decode_chunks(
        self,
        video: _TrainVideo,
        source: FrameSource,
        keep: list[int],
        start: int,
        length: int,
        params: AugParams,
    ) -> torch.Tensor:
        """Decode the kept chunks, one ``source.read`` per contiguous run -> ``[k, 3, cs, h, w]``.

        Frames past the video end (a short video's padding) are zero after normalisation.
        """
        cs = self.chunk_size
        crop_h, crop_w = params.height, params.width
        out: list[torch.Tensor] = []
        window_end = start + length
        for _, first, n in chunk_runs(keep):
            f0 = start + first * cs
            f1 = min(start + (first + n) * cs, window_end)
            clip = torch.zeros(3, n * cs, crop_h, crop_w)
            if f1 > f0:
                frames = _read(source, video.video_id, video.path, f0, f1)
                clip[:, : f1 - f0] = apply_params(frames, params, self.cfg.mean, self.cfg.std)
            out.append(clip.view(3, n, cs, crop_h, crop_w).permute(1, 0, 2, 3, 4))
        if not out:
            return torch.zeros(0, 3, cs, crop_h, crop_w)
        return torch.cat(out).contiguous()

    def close(self) -> None:
        """Close this process's open frame sources."""
        self._sources.close()


def collate_train(samples: list[TrainSample]) -> TrainBatch:
    """Batch training samples (all with the same number of kept chunks).

    Returns a `TrainBatch`: ``chunks`` ``[B*k, 3, cs, H, W]`` (sample-major: sample 0's
    kept chunks first), ``keep_mask`` bool ``[B, n_chunks]``, ``cached``
    ``[B, n_chunks - k, C, rows]``, ``keep`` list of ``[k]``, and lists ``segments``,
    ``labels``, ``ignore``, ``video_id``, ``offset``, ``fps``, ``num_frames``,
    ``video_frames``.
    """
    if not samples:
        raise ValueError("collate_train needs at least one sample")
    n_chunks = {s["num_chunks"] for s in samples}
    if len(n_chunks) != 1:
        raise ValueError(f"samples have different chunk counts {sorted(n_chunks)}")
    (num_chunks,) = n_chunks
    keep_counts = {int(s["keep"].numel()) for s in samples}
    if len(keep_counts) != 1:
        raise ValueError(
            f"samples keep different numbers of chunks {sorted(keep_counts)}; the chunk "
            "selector must keep the same count for every sample of a batch"
        )
    keep_mask = torch.zeros(len(samples), num_chunks, dtype=torch.bool)
    for b, s in enumerate(samples):
        keep_mask[b, s["keep"]] = True
    cached_shapes = {tuple(s["cached"].shape) for s in samples}
    if len(cached_shapes) != 1:
        raise ValueError(f"samples have cached features of different shapes {sorted(cached_shapes)}")
    return {
        "chunks": torch.cat([s["chunks"] for s in samples]),
        "keep_mask": keep_mask,
        "cached": torch.stack([s["cached"] for s in samples]),
        "keep": [s["keep"] for s in samples],
        "segments": [s["segments"] for s in samples],
        "labels": [s["labels"] for s in samples],
        "ignore": [s["ignore"] for s in samples],
        "video_id": [s["video_id"] for s in samples],
        "offset": [s["offset"] for s in samples],
        "fps": [s["fps"] for s in samples],
        "num_frames": [s["num_frames"] for s in samples],
        "video_frames": [s["video_frames"] for s in samples],
    }
