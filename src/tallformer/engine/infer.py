"""Inference: sliding windows over whole videos, streamed, merged into detections in seconds.

The test path of one video (original: tools/test.py:35-63, vedatad/engines/infer_engine.py:27-117):

1. windows of ``data.num_frames`` frames (`plan_windows`, the protocol below);
2. each window through backbone, neck and head; its candidates (score > ``test.score_thr``,
   at most ``test.nms_pre`` anchors per level) decoded, clamped to the window's real length
   and shifted to video frames (`TALLFormer.predict`, original:
   vedatad/bridge/converters/segment_anchor_converter.py:65-134);
3. all windows' candidates merged in one class-wise NMS pass, the best
   ``test.max_per_video`` kept, frames / fps = seconds (`merge_video_detections`).

Two window protocols (``test.protocol``):

- ``"chunk_grid"`` (ours, the default of every shipped config): every window starts on a
  multiple of ``model.backbone.chunk_size``; the stride is ``int(num_frames * (1 -
  test_overlap))`` rounded down to a whole number of chunks (480 frames, overlap 0.25:
  352 instead of 360, so windows overlap by 4 chunks). The backbone sees each chunk on its
  own, so a chunk shared by two windows has the same features in both: each chunk of a
  video goes through the backbone once and the windows are assembled from the cached
  features (15 chunks per window, 11 new: 1.36x fewer backbone passes). A window past
  the video end is zero-padded as in the original, so its padding chunks all share one
  all-zero chunk's features.
- ``"original"``: the original's windows, stride 360 (original:
  vedatad/datasets/pipelines/test_time_aug.py:22-53); 360 is not a multiple of 32, so
  consecutive windows cut different chunks and each window runs the whole backbone. Use
  it to reproduce the original's test numbers exactly.

Streaming: a background thread decodes a video once, in order, ``chunk_size`` frames at a
time, applies the test transform (centre crop, normalisation) and queues at most about one
window ahead; the windows take their frames from that queue, and frames behind the
current window are dropped. So every frame is decoded once per video and memory does not
grow with the video's length (the original holds all windows of a video at once: about
20 GB for the longest THUMOS14 test video). What does grow, the candidates before the
merge, is a few numbers per anchor.

`evaluate_model` runs this over a subset and scores it (the training engine calls it every
``test.interval`` epochs); `load_model` reads a training checkpoint; `Detector` / `detect`
run it on any video file or frame folder.

The ActivityNet detector (``model.kind: afsd``) has its own test path, one pass over the
whole video and video-level label fusion (`tallformer.engine.afsd_infer`); `infer_video`,
`infer_subset`, `evaluate_model`, `load_model`, `Detector` and `detect` hand such a model
to it (with the builtin classifier where none is chosen).
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from tallformer import __version__
from tallformer.config import Config, apply_overrides, config_from_dict
from tallformer.data.windows import sliding_windows
from tallformer.engine.checkpoint import CheckpointError, load_checkpoint
from tallformer.engine.device import amp_dtype_for, resolve_device
from tallformer.errors import TallformerError, name_list
from tallformer.models.original_checkpoints import MODEL_FORMAT
from tallformer.models.outputs import Detections
from tallformer.ops.segments import NmsMethod, nms

if TYPE_CHECKING:
    from tallformer.data.annotations import AnnotationSet
    from tallformer.data.video import FrameSource
    from tallformer.models.afsd import AFSD
    from tallformer.models.detector import TALLFormer

__all__ = [
    "RESULTS_VERSION",
    "Detection",
    "Detector",
    "InferenceError",
    "LoadedModel",
    "VideoResult",
    "detect",
    "evaluate_model",
    "infer_subset",
    "infer_video",
    "load_model",
    "merge_video_detections",
    "plan_windows",
    "results_json",
    "window_stride",
]

RESULTS_VERSION = f"tallformer {__version__}"
CHECKPOINT_FORMAT = "tallformer-train"


class InferenceError(TallformerError):
    """A test or detection run that cannot start: a missing setting, a model and data that
    do not fit; the message names the file or key and the fix."""


# --------------------------------------------------------------------------- merging


def merge_video_detections(windows: list[Detections], fps: float, *, method: NmsMethod = "nmw",
                           iou_threshold: float = 0.5, sigma: float = 0.5, min_score: float = 0.0,
                           max_per_video: int = 1200) -> Detections:
    """All windows of one video -> final detections in seconds.

    Concatenates the windows' candidates (video frames) and post-processes them once
    (original: vedatad/engines/infer_engine.py:76-117): class-wise
    `tallformer.ops.segments.nms` (`method` = test.nms_method, "nmw" IoU 0.5 in the paper),
    keeps the best `max_per_video` (1200) and divides by `fps` (original:
    vedatad/datasets/custom.py:314-325).
    """
    if fps <= 0:
        raise ValueError(f"merge_video_detections: fps must be > 0, got {fps}")
    if not windows:
        return Detections(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    segs = torch.cat([w.segments for w in windows])
    scores = torch.cat([w.scores for w in windows])
    labels = torch.cat([w.labels for w in windows])
    segs, scores, labels = nms(segs, scores, labels, method, iou_threshold,
                               sigma=sigma, min_score=min_score, max_num=max_per_video)
    return Detections(segs / fps, scores, labels)


def _merge(windows: list[Detections], fps: float, cfg: Config) -> Detections:
    t = cfg.test
    return merge_video_detections(windows, fps, method=t.nms_method, iou_threshold=t.nms_iou,
                                  sigma=t.nms_sigma, min_score=t.score_thr,
                                  max_per_video=t.max_per_video)


# --------------------------------------------------------------------------- windows


def window_stride(cfg: Config) -> int:
    """Frames between consecutive test windows under ``test.protocol``.

    "original": ``int(num_frames * (1 - test_overlap))`` (360 for 480 frames at 0.25);
    "chunk_grid": that rounded down to a multiple of ``model.backbone.chunk_size``, at
    least one chunk (352).
    """
    num_frames, overlap = cfg.data.num_frames, cfg.data.test_overlap
    stride = int(num_frames * (1.0 - overlap))
    if cfg.test.protocol == "chunk_grid":
        chunk = cfg.model.backbone.chunk_size
        stride = max(chunk, stride // chunk * chunk)
    if stride < 1:
        raise InferenceError(f"data.test_overlap={overlap} leaves a stride of {stride} frames for "
                             f"{num_frames}-frame windows; lower data.test_overlap")
    return stride


def plan_windows(num_video_frames: int, cfg: Config) -> list[tuple[int, int]]:
    """Test windows ``[(start, length), ...]`` of a video of `num_video_frames` frames.

    Window k is ``[k * stride, min(k * stride + num_frames, N))``, listed until one reaches
    the video end N; the last one is truncated at N, not moved back, and zero-padded by the
    caller (original: vedatad/datasets/pipelines/test_time_aug.py:22-53). The stride is
    `window_stride` (``test.protocol``). With "original" this is exactly
    `tallformer.data.windows.test_windows`.
    """
    if num_video_frames < 1:
        raise InferenceError(f"a video needs at least one frame, got {num_video_frames}")
    return sliding_windows(num_video_frames, cfg.data.num_frames, window_stride(cfg))


# --------------------------------------------------------------------------- streaming


class _BlockReader:
    """The frames of one source, decoded once and in order by a background thread.

    The thread reads `block` frames at a time, applies `transform` (uint8 ``[b, H, W, 3]``
    -> float32 ``[3, b, h, w]``) and queues at most `depth` blocks ahead. `take(start, stop)`
    returns ``[3, stop - start, h, w]``; successive calls must not move `start` backwards,
    and the blocks wholly before `start` are dropped. `peak_frames` is the most frames held
    at once (queued and buffered), which bounds the memory whatever the video's length.
    """

    def __init__(self, source: FrameSource, block: int, depth: int,
                 transform: Callable[[Any], Tensor]) -> None:
        self.num_frames = len(source)
        self._source = source
        self._block = block
        self._transform = transform
        self._queue: queue.Queue[tuple[int, Tensor] | BaseException | None] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._blocks: deque[tuple[int, Tensor]] = deque()
        self._received = 0  # frames [0, _received) have come out of the queue
        self._dropped = 0  # frames [0, _dropped) are gone
        self.peak_frames = 0
        self._thread = threading.Thread(target=self._work, name=f"decode {source.path.name}",
                                        daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            for start in range(0, self.num_frames, self._block):
                if self._stop.is_set():
                    return
                stop = min(start + self._block, self.num_frames)
                self._put((start, self._transform(self._source.read(start, stop))))
            self._put(None)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    def _put(self, item: tuple[int, Tensor] | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def take(self, start: int, stop: int) -> Tensor:
        if not 0 <= start < stop <= self.num_frames or start < self._dropped:
            raise ValueError(f"frames [{start}, {stop}) of {self.num_frames} requested after "
                             f"frame {self._dropped} was dropped")
        while self._received < stop:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                raise RuntimeError(f"the decoder ended at frame {self._received} of {self.num_frames}")
            self._blocks.append(item)
            self._received = item[0] + item[1].shape[1]
            self._drop_before(start)
            held = self._received - self._dropped + self._queue.qsize() * self._block
            self.peak_frames = max(self.peak_frames, held)
        self._drop_before(start)
        parts = [x[:, max(start - s, 0):stop - s] for s, x in self._blocks
                 if s < stop and s + x.shape[1] > start]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _drop_before(self, start: int) -> None:
        while self._blocks and self._blocks[0][0] + self._blocks[0][1].shape[1] <= start:
            s, x = self._blocks.popleft()
            self._dropped = s + x.shape[1]

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._blocks.clear()


def _batched(items: Sequence[tuple[int, int]], size: int) -> Iterator[Sequence[tuple[int, int]]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


@dataclass
class _Stats:
    """Counters of one `infer_video` call (tests and benchmarks read them)."""

    windows: int = 0
    backbone_chunks: int = 0  # chunks through the backbone
    peak_frames: int = 0  # most decoded frames held at once


class _Runner:
    """One model on one device: runs windows, caches the all-zero chunk's features."""

    def __init__(self, model: TALLFormer, cfg: Config, device: torch.device) -> None:
        from tallformer.models.detector import TALLFormer

        if not isinstance(model, TALLFormer):
            raise InferenceError(f"model.kind={cfg.model.kind}: the sliding-window test path runs the "
                                 "THUMOS14 detector (model.kind=thumos14); this model has no "
                                 "anchor head")
        self.model = model
        self.cfg = cfg
        self.device = device
        self.amp = amp_dtype_for(cfg.train.amp, device)
        self._zero: dict[tuple[int, int], Tensor] = {}

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp)

    def backbone(self, chunks: Tensor, stats: _Stats) -> Tensor:
        """``[k, 3, chunk, h, w]`` -> ``[k, C, chunk / 2]``."""
        stats.backbone_chunks += chunks.shape[0]
        return self.model.backbone.forward_chunks(chunks.to(self.device, non_blocking=True))

    def zero_chunk(self, h: int, w: int, stats: _Stats) -> Tensor:
        """Features of an all-padding chunk (zeros after normalisation, as the original pads)."""
        if (h, w) not in self._zero:
            chunk = self.cfg.model.backbone.chunk_size
            self._zero[(h, w)] = self.backbone(torch.zeros(1, 3, chunk, h, w), stats)[0]
        return self._zero[(h, w)]

    def head(self, feats: Tensor, batch: Sequence[tuple[int, int]]) -> list[Detections]:
        """Backbone features ``[B, C, T']`` of B windows -> their candidates in video frames
        (`TALLFormer.forward_infer` after its backbone call)."""
        return self.detections(self.model.head(self.model.neck(feats)), batch)

    def detections(self, outputs: Any, batch: Sequence[tuple[int, int]]) -> list[Detections]:
        """Head outputs of B windows -> their candidates in video frames, on the CPU."""
        dets = self.model.predict(outputs, [length for _, length in batch], [start for start, _ in batch])
        return [Detections(d.segments.float().cpu(), d.scores.float().cpu(), d.labels.cpu()) for d in dets]

    def grid_windows(self, reader: _BlockReader, windows: list[tuple[int, int]],
                     stats: _Stats) -> list[Detections]:
        """Chunk-grid windows from cached chunk features, each chunk computed once."""
        chunk = self.cfg.model.backbone.chunk_size
        per_window = self.cfg.data.num_frames // chunk
        n = reader.num_frames
        real = -(-n // chunk)  # chunks holding at least one real frame
        cache: dict[int, Tensor] = {}
        out: list[Detections] = []
        for batch in _batched(windows, self.cfg.test.batch_size):
            feats = []
            for start, _ in batch:
                if start % chunk:
                    raise ValueError(f"window start {start} is not on the {chunk}-frame chunk grid")
                first = start // chunk
                ids = range(first, first + per_window)
                missing = [j for j in ids if j < real and j not in cache]
                if missing:  # always the window's last chunks: windows only move forward
                    lo, hi = missing[0], missing[-1] + 1
                    x = reader.take(lo * chunk, min(hi * chunk, n))  # [3, f, h, w]
                    _, f, h, w = x.shape
                    if f < (hi - lo) * chunk:  # the video's last, partial chunk: zero-padded
                        x = torch.cat([x, x.new_zeros(3, (hi - lo) * chunk - f, h, w)], dim=1)
                    chunks = x.reshape(3, hi - lo, chunk, h, w).transpose(0, 1).contiguous()
                    for j, feat in zip(range(lo, hi), self.backbone(chunks, stats), strict=True):
                        cache[j] = feat
                crop = self.cfg.data.crop_size
                parts = [cache[j] if j < real else self.zero_chunk(crop, crop, stats) for j in ids]
                feats.append(torch.cat(parts, dim=-1))
                for j in [j for j in cache if j < first]:
                    del cache[j]
            out.extend(self.head(torch.stack(feats), batch))
            stats.windows += len(batch)
        return out

    def whole_windows(self, reader: _BlockReader, windows: list[tuple[int, int]],
                      stats: _Stats) -> list[Detections]:
        """Every window through the whole backbone (`TALLFormer.forward_infer`), zero-padded
        at the end to ``data.num_frames`` as the original pads (original:
        vedatad/datasets/pipelines/transforms.py:57-90)."""
        num_frames = self.cfg.data.num_frames
        chunk = self.cfg.model.backbone.chunk_size
        out: list[Detections] = []
        for batch in _batched(windows, self.cfg.test.batch_size):
            clips = []
            for start, length in batch:
                x = reader.take(start, start + length)
                clip = x.new_zeros(3, num_frames, x.shape[2], x.shape[3])
                clip[:, :length] = x
                clips.append(clip)
            stats.backbone_chunks += len(batch) * -(-num_frames // chunk)
            outputs = self.model.forward_infer(torch.stack(clips).to(self.device, non_blocking=True))
            out.extend(self.detections(outputs, batch))
            stats.windows += len(batch)
        return out


def _transform(cfg: Config) -> Callable[[Any], Tensor]:
    from tallformer.data.transforms import test_transform

    d = cfg.data

    def run(frames: Any) -> Tensor:
        return test_transform(frames, d.crop_size, d.mean, d.std)

    return run


def _afsd(model: object) -> AFSD | None:
    """The ActivityNet detector in `model` (a DDP wrapper unwrapped), None for another."""
    from tallformer.models.afsd import AFSD

    inner = getattr(model, "module", model)
    return inner if isinstance(inner, AFSD) else None


def _afsd_video(model: AFSD, cfg: Config, source: FrameSource, device: torch.device | None,
                duration: float | None = None) -> Detections:
    """An ActivityNet video labelled by the builtin classifier, in seconds, best first."""
    from tallformer.engine.afsd_infer import afsd_proposals, label_proposals

    proposals, probs, _ = afsd_proposals(model, cfg, source, device=device)
    a = cfg.model.afsd
    return label_proposals(proposals, source.fps, duration, "builtin", action_probs=probs,
                           top_k=a.classifier_top_k, include_background=a.builtin_includes_background)


def infer_video(model: TALLFormer | AFSD, cfg: Config, source: FrameSource, *,
                device: torch.device | None = None, reuse_chunks: bool = True,
                stats: _Stats | None = None, _runner: _Runner | None = None) -> Detections:
    """Detections of one video (seconds, descending score) by the test path of `cfg`.

    Args:
        model: the detector, in eval mode (this function does not change its mode).
        cfg: ``data`` (fps is the source's; num_frames, crop, mean, std), ``test``
            (protocol, thresholds, NMS), ``model.backbone.chunk_size``, ``train.amp``.
        source: an open frame source (`tallformer.data.video.open_source`); read here
            once, in order, from a background thread; the caller closes it.
        device: where the model is (default: its parameters' device).
        reuse_chunks: with the chunk-grid protocol, False runs every window through the
            whole backbone instead of reusing the shared chunks (same windows; for tests
            and benchmarks).
        stats: filled with the windows, backbone chunks and peak buffered frames.

    An ActivityNet detector (`AFSD`) takes its own path instead: the first
    ``data.num_frames`` frames in one pass, proposals labelled by its builtin classifier,
    seconds at ``source.fps`` (`tallformer.engine.afsd_infer`; `stats` is not filled).
    """
    afsd = _afsd(model)
    if afsd is not None:
        return _afsd_video(afsd, cfg, source, device)
    device = device if device is not None else next(model.parameters()).device
    runner = _runner if _runner is not None else _Runner(cast("TALLFormer", model), cfg, device)
    stats = stats if stats is not None else _Stats()
    n = len(source)
    windows = plan_windows(n, cfg)
    chunk = cfg.model.backbone.chunk_size
    depth = -(-cfg.data.num_frames // chunk) + 2  # about one window ahead of the model
    reader = _BlockReader(source, chunk, depth, _transform(cfg))
    try:
        with torch.no_grad(), runner.autocast():
            if cfg.test.protocol == "chunk_grid" and reuse_chunks:
                per_window = runner.grid_windows(reader, windows, stats)
            else:
                per_window = runner.whole_windows(reader, windows, stats)
    finally:
        reader.close()
        stats.peak_frames = max(stats.peak_frames, reader.peak_frames)
    return _merge(per_window, source.fps, cfg)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Detection:
    """One detected action instance: `segment` (start, end) in seconds, `label`, `score`."""

    segment: tuple[float, float]
    label: str
    score: float

    @property
    def start(self) -> float:
        return self.segment[0]

    @property
    def end(self) -> float:
        return self.segment[1]

    def as_dict(self) -> dict[str, Any]:
        """The ActivityNet results entry ``{"segment": [s, e], "label": ..., "score": p}``."""
        return {"segment": [self.segment[0], self.segment[1]], "label": self.label, "score": self.score}


def _as_list(dets: Detections, classes: Sequence[str]) -> list[Detection]:
    segs = dets.segments.tolist()
    return [Detection((float(s), float(e)), classes[int(c)], float(p))
            for (s, e), p, c in zip(segs, dets.scores.tolist(), dets.labels.tolist(), strict=True)]


def results_json(results: Mapping[str, Iterable[Detection]]) -> dict[str, Any]:
    """``{video_id: detections}`` as ActivityNet results JSON (what `tallformer eval` reads)."""
    return {
        "version": RESULTS_VERSION,
        "results": {vid: [d.as_dict() for d in dets] for vid, dets in results.items()},
        "external_data": {},
    }


def _num_classes(model: TALLFormer | AFSD) -> int:
    """Action classes the model predicts (the AFSD action head has them + background)."""
    afsd = _afsd(model)
    if afsd is not None:
        return afsd.action_head.cls.out_features - 1
    return cast("TALLFormer", model).head.num_classes


def _check_classes(model: TALLFormer | AFSD, classes: Sequence[str], where: str) -> None:
    k = _num_classes(model)
    if len(classes) != k:
        raise InferenceError(f"{where}: {len(classes)} class names ({name_list(classes, 5)}) but the "
                             f"model predicts {k} classes; use the annotations it was trained on")


# --------------------------------------------------------------------------- a subset


def _load_set(annotations: AnnotationSet | str | os.PathLike[str]) -> tuple[AnnotationSet, Any]:
    """(the AnnotationSet, the ground truth to score against: the file when given a path,
    so the numbers equal `tallformer eval --gt FILE` on the written results)."""
    from tallformer.data.annotations import load_annotations

    if isinstance(annotations, (str, os.PathLike)):
        return load_annotations(annotations), Path(annotations)
    return annotations, annotations


def infer_subset(cfg: Config, model: TALLFormer | AFSD, annotations: AnnotationSet, subset: str, *,
                 classes: Sequence[str] | None = None, device: torch.device | None = None,
                 progress: bool = True, desc: str = "test") -> dict[str, list[Detection]]:
    """Detections of every video of `subset` (file order): ``{video_id: [Detection]}``.

    Videos are found in ``cfg.data.videos`` (files or frame folders) and decoded at their
    annotation's fps or ``data.fps``. The model must be in eval mode. An ActivityNet
    detector labels its proposals with the builtin classifier
    (`tallformer.engine.afsd_infer.infer_afsd_subset` for the others).
    """
    from tqdm import tqdm

    from tallformer.data.annotations import video_fps
    from tallformer.data.video import open_source, resolve_video

    if cfg.data.videos is None:
        raise InferenceError("data.videos is not set: give the folder of the test videos, "
                             "e.g. data.videos=data/thumos14/videos")
    names = list(classes) if classes is not None else list(annotations.classes)
    _check_classes(model, names, str(annotations.source))
    afsd = _afsd(model)
    if afsd is not None:
        from tallformer.engine.afsd_infer import ClassifierSpec, infer_afsd_subset

        return infer_afsd_subset(cfg, afsd, annotations, subset, classes=names,
                                 classifiers=[ClassifierSpec("builtin", "builtin")], device=device,
                                 progress=progress, desc=desc)["builtin"]
    videos = annotations.subset(subset)
    paths = {v.video_id: resolve_video(cfg.data.videos, v.video_id) for v in videos}
    device = device if device is not None else next(model.parameters()).device
    runner = _Runner(cast("TALLFormer", model), cfg, device)
    size = (int(cfg.data.frame_size[0]), int(cfg.data.frame_size[1]))
    results: dict[str, list[Detection]] = {}
    bar = tqdm(videos, desc=desc, unit="video", disable=not progress or None, leave=False)
    try:
        for video in bar:
            source = open_source(paths[video.video_id], video_fps(video, cfg.data), size)
            try:
                dets = infer_video(model, cfg, source, device=device, _runner=runner)
            finally:
                source.close()
                del source
            results[video.video_id] = _as_list(dets, names)
    finally:
        bar.close()
        # no PyAV decoder may be left for a later fork (training's data workers) to free
        gc.collect()
    return results


def evaluate_model(cfg: Config, model: TALLFormer | AFSD, annotations: AnnotationSet | str | os.PathLike[str],
                   subset: str | None = None, out_dir: str | os.PathLike[str] | None = None,
                   progress: bool = True, *, classes: Sequence[str] | None = None,
                   device: torch.device | None = None) -> dict[str, Any]:
    """Run the test path over `subset` and score it; the training engine's periodic test.

    Args:
        cfg: the run's config (``data.videos``, ``test.*``; ``test.tiou_thresholds``).
        model: the detector (a DDP wrapper is unwrapped); put in eval mode for the run and
            given back in the mode it had.
        annotations: an `AnnotationSet`, or the annotation file (then the scores are computed
            against that file, exactly as `tallformer eval --gt FILE` does).
        subset: default ``cfg.data.test_subset``.
        out_dir: when given, ``results.json`` (ActivityNet results) and ``metrics.json``
            (the evaluator's format) are written there atomically.
        classes: label-id order of the model (default: the annotations' classes).
    Returns:
        The evaluator's dict: ``tiou_thresholds``, ``mAP``, ``average_mAP``,
        ``per_class_AP``, ``num_videos``, ``num_ground_truth``, ``num_predictions``:
        `tallformer.evaluation.evaluate` with ``ignore_unknown_labels=True`` (the
        detections of classes absent from the subset's ground truth are not scored), i.e.
        ``tallformer eval --gt FILE --pred results.json --ignore-unknown-labels``.

    An ActivityNet detector is tested with its builtin classifier over every video of the
    subset (`tallformer.engine.afsd_infer.evaluate_afsd`; its results.json names the
    classifier); the same files and the same dict come back.
    """
    from tallformer.atomic import write_json
    from tallformer.evaluation import EvaluationWarning, evaluate

    afsd = _afsd(model)
    if afsd is not None:
        return _evaluate_afsd_builtin(cfg, afsd, annotations, subset, out_dir, progress,
                                      classes=classes, device=device)
    inner: TALLFormer = getattr(model, "module", cast("TALLFormer", model))
    aset, gt = _load_set(annotations)
    subset = subset if subset is not None else cfg.data.test_subset
    was_training = inner.training
    inner.eval()
    try:
        results = infer_subset(cfg, inner, aset, subset, classes=classes, device=device,
                               progress=progress)
    finally:
        inner.train(was_training)
    data = results_json(results)
    with warnings.catch_warnings():
        # detections of classes the subset has no instance of cannot score: the mean runs
        # over the classes with ground truth (original: vedatad/misc/evaluation/mean_ap.py:350-355)
        warnings.filterwarnings("ignore", message=r".*dropped \d+ predictions whose label",
                                category=EvaluationWarning)
        metrics = evaluate(gt, data, cfg.test.tiou_thresholds, subset, ignore_unknown_labels=True)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "results.json", data)
        write_json(out / "metrics.json", metrics)
    return metrics


def _evaluate_afsd_builtin(cfg: Config, model: AFSD, annotations: AnnotationSet | str | os.PathLike[str],
                           subset: str | None, out_dir: str | os.PathLike[str] | None, progress: bool, *,
                           classes: Sequence[str] | None, device: torch.device | None) -> dict[str, Any]:
    from tallformer.atomic import write_json
    from tallformer.engine.afsd_infer import evaluate_afsd

    found = evaluate_afsd(cfg, model, annotations, subset, None, classes=classes, device=device,
                          progress=progress)["classifiers"]["builtin"]
    metrics: dict[str, Any] = found["metrics"]["all"]
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "results.json", found["results"])
        write_json(out / "metrics.json", metrics)
    return metrics


# --------------------------------------------------------------------------- checkpoints


@dataclass
class LoadedModel:
    """A detector restored from a training checkpoint, in eval mode on `device`
    (`TALLFormer`, or `AFSD` for ``model.kind: afsd``)."""

    model: TALLFormer | AFSD
    cfg: Config  # the config the model was built from (the checkpoint's unless one was given)
    saved_cfg: Config  # the config stored in the checkpoint
    classes: list[str]  # label-id order
    path: Path
    epoch: int | None = None
    step: int | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def _state_dict_problem(model: torch.nn.Module, state: Mapping[str, Any]) -> str | None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in own.items()
              if k in state and isinstance(state[k], Tensor) and state[k].shape != v.shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({name_list(missing, 3)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({name_list(unexpected, 3)})")
    if shapes:
        parts.append(f"{len(shapes)} shapes differ ({name_list(shapes, 2)})")
    return "; ".join(parts) or None


def load_model(checkpoint: str | os.PathLike[str], cfg: Config | None = None, *,
               overrides: Sequence[str] = (), device: str | torch.device | None = None) -> LoadedModel:
    """Build the detector of a training checkpoint (``RUN_DIR/checkpoints/*.pt``) and load it.

    The model is built from `cfg` when given (its ``model`` section must describe the same
    network), else from the config saved in the checkpoint with `overrides` applied. Class
    names come from the checkpoint. `device` None means ``train.device`` of that config.
    Raises `CheckpointError` naming the file when it is not
    a training checkpoint or its weights do not fit the model. Both detectors load:
    ``model.kind`` thumos14 (`TALLFormer`) and afsd (`AFSD`).
    """
    from tallformer.models.detector import build_detector

    path = Path(checkpoint)
    state = load_checkpoint(path)
    # a training checkpoint, or a model converted from the original release
    # (`tallformer.models.original_checkpoints`: model, config and classes, no optimizer)
    if (state.get("format") not in (CHECKPOINT_FORMAT, MODEL_FORMAT) or "model" not in state
            or "config" not in state):
        raise CheckpointError(f"{path}: not a tallformer training checkpoint or converted model (format "
                              f"{state.get('format')!r}); pass a file of RUN_DIR/checkpoints/, "
                              "e.g. runs/th14/checkpoints/epoch_0600.pt, or convert the original's "
                              "with tallformer convert-weights")
    saved = config_from_dict(state["config"], f"{path} (saved config)")
    if cfg is None:
        cfg = config_from_dict(apply_overrides(state["config"], list(overrides)),
                               f"{path} (saved config) + command line") if overrides else saved
        where = f"the config saved in {path}"
    else:
        where = "the given config"
        if cfg.model.kind != saved.model.kind:
            raise CheckpointError(f"{path}: a model.kind={saved.model.kind} checkpoint, but the given "
                                  f"config has model.kind={cfg.model.kind}; test it with the config "
                                  "it was trained with (e.g. --config anet_swin_b for afsd)")
    if device is None:
        dev = resolve_device(cfg.train.device)
    else:
        dev = resolve_device(device, "--device") if isinstance(device, str) else device
    model = build_detector(cfg)
    problem = _state_dict_problem(model, state["model"])
    if problem:
        raise CheckpointError(f"{path}: its weights do not fit the model of {where}: {problem}; "
                              "test with the config the checkpoint was trained with")
    model.load_state_dict(state["model"])
    model.eval().to(dev)
    classes = [str(c) for c in state.get("classes") or []]
    if not classes:
        raise CheckpointError(f"{path}: the checkpoint has no class names")
    _check_classes(model, classes, str(path))
    return LoadedModel(model=model, cfg=cfg, saved_cfg=saved, classes=classes, path=path,
                       epoch=state.get("epoch"), step=state.get("step"), device=dev)


# --------------------------------------------------------------------------- any video


@dataclass
class VideoResult:
    """The detections of one video and what the outputs need to know about it."""

    video_id: str
    path: Path
    fps: float  # the rate it was decoded at
    num_frames: int  # frames at that rate
    duration: float  # seconds (the file's own duration; frames / fps for frame folders)
    detections: list[Detection]  # descending score


class Detector:
    """A loaded checkpoint that detects actions in any video file or frame folder.

    ``Detector.from_checkpoint("runs/th14/checkpoints/epoch_0600.pt").detect("match.mp4")``
    decodes the video at the config's fps and frame size (PyAV: any format FFmpeg reads, any
    rate and size) and runs the test path.

    An ActivityNet checkpoint (``model.kind: afsd``) decodes a video file at its own rate
    times ``min(data.num_frames / frames, 1)`` (the original's 768-frame rule, applied on the
    fly: a video prepared with ``--num-frames`` keeps its rate), runs its first
    ``data.num_frames`` frames in one pass and labels the proposals with the builtin
    classifier (`tallformer.engine.afsd_infer`).
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.cfg = loaded.cfg
        self.classes = loaded.classes
        self._afsd = _afsd(loaded.model)
        self._runner = None if self._afsd else _Runner(cast("TALLFormer", loaded.model), loaded.cfg,
                                                       loaded.device)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike[str], config: str | os.PathLike[str] | Config | None = None,
                        *, overrides: Sequence[str] = (), device: str | torch.device | None = None) -> Detector:
        """`config`: a shipped name or YAML file (with `overrides`), a `Config`, or None for
        the checkpoint's own config."""
        from tallformer.config import load_config

        cfg = config if isinstance(config, Config) or config is None else load_config(Path(config), list(overrides))
        over = overrides if config is None else ()
        return cls(load_model(checkpoint, cfg, overrides=over, device=device))

    def detect(self, path: str | os.PathLike[str], *, score_threshold: float | None = None,
               top_k: int | None = None, stats: _Stats | None = None) -> VideoResult:
        """Detections of the video at `path`: those scoring at least `score_threshold` (on
        top of ``test.score_thr``), at most `top_k` (on top of ``test.max_per_video``).

        Raises `tallformer.data.video.VideoError` naming the file when it cannot be decoded.
        """
        from tallformer.data.video import open_source, probe_video

        p = Path(path)
        d = self.cfg.data
        fps = d.fps
        if self._afsd is not None and p.exists():
            from tallformer.engine.afsd_infer import decode_rate

            fps = decode_rate(p, d.num_frames, None, d.fps)
        duration: float | None = None
        if p.is_file():
            with contextlib.suppress(TallformerError):
                duration = probe_video(p).duration
        source = open_source(p, fps, (int(d.frame_size[0]), int(d.frame_size[1])))
        try:
            n = len(source)
            if self._afsd is not None:
                dets = _afsd_video(self._afsd, self.cfg, source, self.loaded.device, duration)
            else:
                dets = infer_video(self.loaded.model, self.cfg, source, device=self.loaded.device,
                                   stats=stats, _runner=self._runner)
        finally:
            source.close()
            del source
        found = _as_list(dets, self.classes)
        if score_threshold is not None:
            found = [x for x in found if x.score >= score_threshold]
        if top_k is not None:
            found = found[:top_k]
        return VideoResult(video_id=p.stem if p.is_file() else p.name, path=p, fps=fps,
                           num_frames=n, duration=duration if duration is not None else n / fps,
                           detections=found)


def detect(path: str | os.PathLike[str], checkpoint: str | os.PathLike[str] | Detector, *,
           config: str | os.PathLike[str] | Config | None = None, overrides: Sequence[str] = (),
           score_threshold: float | None = None, top_k: int | None = None,
           device: str | torch.device | None = None) -> list[Detection]:
    """Detect actions in one video file or frame folder (`tallformer.detect`).

    ``tallformer.detect("match.mp4", "runs/th14/checkpoints/epoch_0600.pt")`` returns the
    detections, best first, each with `segment` (start, end) in seconds, `label` and
    `score`. `checkpoint` may also be a `Detector` (load once, detect many). The config
    and class names come from the checkpoint unless `config` is given.
    """
    detector = checkpoint if isinstance(checkpoint, Detector) else Detector.from_checkpoint(
        checkpoint, config, overrides=overrides, device=device)
    return detector.detect(path, score_threshold=score_threshold, top_k=top_k).detections
