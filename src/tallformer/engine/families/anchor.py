"""The anchor family's engine side (``model.kind: anchor``, TALLFormer's THUMOS14 detector,
`tallformer.models.anchor_detector.TALLFormer`): sliding windows, merged by weighted NMS.

The test path of one video (original: tools/test.py:35-63, vedatad/engines/infer_engine.py:27-117):

1. windows of ``data.num_frames`` frames (`plan_windows`, the protocol below);
2. each window through backbone, neck and head; its candidates (score > ``test.score_thr``,
   at most ``test.nms_pre`` anchors per level) decoded, clamped to the window's real length
   and shifted to video frames (`TALLFormer.predict`, original:
   vedatad/bridge/converters/segment_anchor_converter.py:65-134);
3. all windows' candidates merged in one class-wise NMS pass, the best
   ``test.max_per_video`` kept, frames / fps = seconds
   (`tallformer.models.postprocess.merge_video_detections`).

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

Streaming: the frames come from a `tallformer.engine.stream.FrameStream` (decoded once, in
order, about one window ahead), so memory does not grow with the video's length (the
original holds all windows of a video at once: about 20 GB for the longest THUMOS14 test
video). What does grow, the candidates before the merge, is a few numbers per anchor.

Imported when the command line starts: torch and the model are imported inside functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tallformer.engine.errors import InferenceError
from tallformer.engine.family import (
    InferenceStats,
    ResultSet,
    TestOption,
    VideoContext,
)

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from tallformer.config import Config
    from tallformer.data.video import FrameSource
    from tallformer.engine.stream import FrameStream
    from tallformer.engine.subset import SubsetTester
    from tallformer.models.anchor_detector import TALLFormer
    from tallformer.models.outputs import Detections
    from tallformer.models.protocol import DetectorModel

__all__ = ["AnchorFamily", "AnchorInference", "plan_windows", "window_stride"]


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
    from tallformer.data.windows import sliding_windows

    if num_video_frames < 1:
        raise InferenceError(f"a video needs at least one frame, got {num_video_frames}")
    return sliding_windows(num_video_frames, cfg.data.num_frames, window_stride(cfg))


def _batched(items: Sequence[tuple[int, int]], size: int) -> Iterator[Sequence[tuple[int, int]]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _transform(cfg: Config) -> Callable[[Any], Tensor]:
    from tallformer.data.transforms import test_transform

    d = cfg.data

    def run(frames: Any) -> Tensor:
        return test_transform(frames, d.crop_size, d.mean, d.std)

    return run


# --------------------------------------------------------------------------- the test path


class AnchorInference:
    """The sliding-window test path of one `TALLFormer` on one device
    (`tallformer.engine.family.VideoInference`); it caches the all-zero chunk's features
    from one video to the next."""

    def __init__(self, model: TALLFormer, cfg: Config, device: torch.device, *,
                 reuse_chunks: bool = True) -> None:
        from tallformer.engine.device import amp_dtype_for

        self.model = model
        self.cfg = cfg
        self.device = device
        self.reuse_chunks = reuse_chunks
        self.amp = amp_dtype_for(cfg.train.amp, device)
        self._zero: dict[tuple[int, int], Tensor] = {}

    def decode_rate(self, path: Path, annotated_fps: float | None) -> float:
        """The annotation's fps when it has one, else ``data.fps``."""
        return float(annotated_fps) if annotated_fps else float(self.cfg.data.fps)

    def plan(self, num_frames: int) -> list[tuple[int, int]]:
        return plan_windows(num_frames, self.cfg)

    def run(self, source: FrameSource, plan: Sequence[tuple[int, int]],
            stats: InferenceStats) -> list[Detections]:
        """Every window's candidates (video frames, on the CPU), from one decoding pass."""
        import torch

        from tallformer.engine.device import autocast
        from tallformer.engine.stream import FrameStream

        windows = list(plan)
        chunk = self.cfg.model.backbone.chunk_size
        depth = -(-self.cfg.data.num_frames // chunk) + 2  # about one window ahead of the model
        reader = FrameStream(source, chunk, depth, _transform(self.cfg))
        try:
            with torch.no_grad(), autocast(self.amp, self.device):
                if self.cfg.test.protocol == "chunk_grid" and self.reuse_chunks:
                    return self._grid_windows(reader, windows, stats)
                return self._whole_windows(reader, windows, stats)
        finally:
            reader.close()
            stats.peak_frames = max(stats.peak_frames, reader.peak_frames)

    def merge(self, outputs: list[Detections], video: VideoContext, result_set: ResultSet) -> Detections:
        """All windows' candidates merged by ``test.nms_method`` into seconds, best first."""
        from tallformer.models.postprocess import merge_video_detections

        t = self.cfg.test
        return merge_video_detections(outputs, video.fps, method=t.nms_method, iou_threshold=t.nms_iou,
                                      sigma=t.nms_sigma, min_score=t.score_thr,
                                      max_per_video=t.max_per_video)

    # ------------------------------------------------------------------ windows

    def _backbone(self, chunks: Tensor, stats: InferenceStats) -> Tensor:
        """``[k, 3, chunk, h, w]`` -> ``[k, C, chunk / 2]``."""
        stats.backbone_chunks += chunks.shape[0]
        return self.model.backbone.forward_chunks(chunks.to(self.device, non_blocking=True))

    def _zero_chunk(self, h: int, w: int, stats: InferenceStats) -> Tensor:
        """Features of an all-padding chunk (zeros after normalisation, as the original pads)."""
        import torch

        if (h, w) not in self._zero:
            chunk = self.cfg.model.backbone.chunk_size
            self._zero[(h, w)] = self._backbone(torch.zeros(1, 3, chunk, h, w), stats)[0]
        return self._zero[(h, w)]

    def _detections(self, outputs: Any, batch: Sequence[tuple[int, int]]) -> list[Detections]:
        """Head outputs of B windows -> their candidates in video frames, on the CPU."""
        from tallformer.models.outputs import Detections

        dets = self.model.predict(outputs, [length for _, length in batch], [start for start, _ in batch])
        return [Detections(d.segments.float().cpu(), d.scores.float().cpu(), d.labels.cpu()) for d in dets]

    def _grid_windows(self, reader: FrameStream, windows: list[tuple[int, int]],
                      stats: InferenceStats) -> list[Detections]:
        """Chunk-grid windows from cached chunk features, each chunk computed once."""
        import torch

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
                    for j, feat in zip(range(lo, hi), self._backbone(chunks, stats), strict=True):
                        cache[j] = feat
                crop = self.cfg.data.crop_size
                parts = [cache[j] if j < real else self._zero_chunk(crop, crop, stats) for j in ids]
                feats.append(torch.cat(parts, dim=-1))
                for j in [j for j in cache if j < first]:
                    del cache[j]
            # backbone features [B, C, T'] of the batch -> neck, head -> candidates
            out.extend(self._detections(self.model.forward_features(torch.stack(feats)), batch))
            stats.windows += len(batch)
        return out

    def _whole_windows(self, reader: FrameStream, windows: list[tuple[int, int]],
                       stats: InferenceStats) -> list[Detections]:
        """Every window through the whole backbone (`TALLFormer.forward_infer`), zero-padded
        at the end to ``data.num_frames`` as the original pads (original:
        vedatad/datasets/pipelines/transforms.py:57-90)."""
        import torch

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
            out.extend(self._detections(outputs, batch))
            stats.windows += len(batch)
        return out


# --------------------------------------------------------------------------- the family


class AnchorFamily:
    """The anchor family (`tallformer.engine.family.Family`)."""

    kind = "anchor"
    title = "THUMOS14-style anchor"
    example_config = "thumos14_swin_b"
    summary = (
        "model.kind=anchor (e.g. --config thumos14_swin_b): sliding windows of data.num_frames "
        "frames, all windows of a video merged by class-wise NMS, the best test.max_per_video "
        "kept. test.protocol=chunk_grid (the default) puts windows on the backbone's chunk grid "
        "and runs each chunk once per video; test.protocol=original uses the original's stride "
        "360 windows exactly. Videos are decoded at data.fps (or the annotation's own fps)."
    )
    test_options: tuple[TestOption, ...] = ()

    def build(self, cfg: Config) -> TALLFormer:
        from tallformer.models.anchor_detector import build_anchor_detector

        return build_anchor_detector(cfg)

    def inference(self, model: DetectorModel, cfg: Config, device: torch.device, *,
                  reuse_chunks: bool = True) -> AnchorInference:
        from tallformer.models.anchor_detector import TALLFormer

        if not isinstance(model, TALLFormer):
            raise InferenceError(f"model.kind={cfg.model.kind}: the sliding-window test path runs the "
                                 f"anchor detector (TALLFormer), not a {type(model).__name__}")
        return AnchorInference(model, cfg, device, reuse_chunks=reuse_chunks)

    def default_results(self) -> ResultSet:
        return ResultSet()

    def tester(self, cfg: Config, options: Mapping[str, Any]) -> SubsetTester:
        from tallformer.engine.subset import SubsetTester

        return SubsetTester(self, {"protocol": cfg.test.protocol})
