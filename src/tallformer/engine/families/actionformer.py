"""The ActionFormer family's engine side (``model.kind: actionformer``,
`tallformer.models.actionformer.ActionFormerDetector`): one pass over the whole video, as
the ActionFormer release tests THUMOS14 (original: libs/modeling/meta_archs.py:597-753,
libs/utils/train_utils.py:359-440, eval.py).

One video:

1. decoded at ``data.fps`` (or the annotation's own fps), once and in order
   (`tallformer.engine.stream.FrameStream`), ``model.backbone.chunk_size`` frames at a time;
2. the backbone chunk by chunk over the WHOLE video, a training window's worth of chunks
   (``data.num_frames / chunk_size``) per call, the video's last partial chunk zero-padded
   after normalisation (as the anchor family's windows are): backbone features
   ``[1, C, ceil(frames / 2)]`` (one per 2 frames). About two calls' frames are held at
   once (the call's and those decoded ahead of it), so memory does not grow with the video's
   length (the features do: C numbers per 2 frames);
3. ActionFormer's network over the whole feature sequence at once, padded by the release's
   rule (``max_seq_len``, or the next multiple of its window x level factor), in float32
   with autocast off (the backbone before it runs in ``train.amp``'s autocast on a GPU);
4. its post-processing exactly as the release (`ActionFormerPostProcess`,
   ``model.actionformer.test_cfg``: per-level pre-NMS threshold and top-k, Gaussian soft-NMS
   per class, duration threshold, ``min_score``, ``max_seg_num``), feature index to seconds
   ``(t * feat_stride + 0.5 * num_frames) / fps`` with feat_stride = num_frames = 2 (the
   backbone's temporal stride), clamped to ``[0, duration]``;
5. then the generic ``test.score_thr`` (keep score >= it) and ``test.max_per_video`` (the
   best ones, a stable sort, so the release's own order is kept), which at the release's
   ``min_score`` 0.001 and ``max_seg_num`` 200 remove nothing (soft-NMS keeps scores >=
   ``min_score``, hard NMS > it; both cap at ``max_seg_num`` and sort); ``tallformer detect
   --score-threshold/--top-k`` apply after that.

Imported when the command line starts: torch and the model are imported inside functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    from tallformer.engine.subset import SubsetTester
    from tallformer.models.actionformer import ActionFormerDetector, ActionFormerOutputs
    from tallformer.models.outputs import Detections
    from tallformer.models.protocol import DetectorModel

__all__ = ["ActionFormerFamily", "ActionFormerInference", "keep_best"]


def keep_best(dets: Detections, score_thr: float, max_num: int) -> Detections:
    """The detections scoring at least `score_thr`, best first (a stable sort: equal scores
    keep their order), at most `max_num` of them (``test.score_thr``,
    ``test.max_per_video``).

    Example:
        >>> import torch
        >>> from tallformer.models.outputs import Detections
        >>> d = Detections(torch.tensor([[0.0, 1], [1, 2], [2, 3]]), torch.tensor([0.25, 0.5, 0.001]),
        ...                torch.tensor([0, 1, 0]))
        >>> kept = keep_best(d, 0.001, 2)
        >>> kept.scores.tolist(), kept.labels.tolist()
        ([0.5, 0.25], [1, 0])
    """
    import torch

    from tallformer.models.outputs import Detections

    keep = dets.scores >= score_thr
    scores = dets.scores[keep]
    order = torch.sort(scores, descending=True, stable=True).indices[:max_num]
    return Detections(dets.segments[keep][order], scores[order], dets.labels[keep][order])


def _transform(cfg: Config) -> Callable[[Any], Tensor]:
    from tallformer.data.transforms import test_transform

    d = cfg.data

    def run(frames: Any) -> Tensor:
        return test_transform(frames, d.crop_size, d.mean, d.std)

    return run


class ActionFormerInference:
    """The one-pass test path of one `ActionFormerDetector` on one device
    (`tallformer.engine.family.VideoInference`)."""

    def __init__(self, model: ActionFormerDetector, cfg: Config, device: torch.device) -> None:
        from tallformer.engine.device import amp_dtype_for

        self.model = model
        self.cfg = cfg
        self.device = device
        self.amp = amp_dtype_for(cfg.train.amp, device)

    def decode_rate(self, path: Path, annotated_fps: float | None) -> float:
        """The annotation's fps when it has one, else ``data.fps``."""
        return float(annotated_fps) if annotated_fps else float(self.cfg.data.fps)

    def plan(self, num_frames: int) -> list[tuple[int, int]]:
        """One piece: the whole video."""
        if num_frames < 1:
            raise InferenceError(f"a video needs at least one frame, got {num_frames}")
        return [(0, num_frames)]

    def features(self, source: FrameSource, start: int, length: int, stats: InferenceStats) -> Tensor:
        """Backbone features ``[1, C, ceil(length / 2)]`` of frames ``[start, start + length)``
        of `source`, decoded once, chunk by chunk (float32, on the device)."""
        import torch

        from tallformer.engine.device import autocast
        from tallformer.engine.stream import FrameStream

        chunk = self.cfg.model.backbone.chunk_size
        per_call = max(1, self.cfg.data.num_frames // chunk)  # chunks per backbone call
        reader = FrameStream(source, chunk, per_call + 2, _transform(self.cfg))
        stop = start + length
        parts: list[Tensor] = []
        try:
            with torch.no_grad(), autocast(self.amp, self.device):
                for lo in range(start, stop, per_call * chunk):
                    x = reader.take(lo, min(lo + per_call * chunk, stop))  # [3, f, h, w]
                    _, f, h, w = x.shape
                    n = -(-f // chunk)
                    if f < n * chunk:  # the video's last, partial chunk: zero-padded
                        x = torch.cat([x, x.new_zeros(3, n * chunk - f, h, w)], dim=1)
                    chunks = x.reshape(3, n, chunk, h, w).transpose(0, 1).contiguous()
                    feats = self.model.backbone.forward_chunks(chunks.to(self.device, non_blocking=True))
                    stats.backbone_chunks += n
                    parts.append(feats.float().permute(1, 0, 2).reshape(feats.shape[1], -1))  # [C, n * rows]
        finally:
            reader.close()
            stats.peak_frames = max(stats.peak_frames, reader.peak_frames)
        steps = -(-length // self.model.feat_stride)
        return torch.cat(parts, dim=-1)[None, :, :steps]

    def run(self, source: FrameSource, plan: Sequence[tuple[int, int]],
            stats: InferenceStats) -> ActionFormerOutputs:
        """The network's per-level outputs of the whole video (batch of one, on the CPU)."""
        import torch

        from tallformer.models.actionformer import ActionFormerOutputs

        if len(plan) != 1:
            raise InferenceError(f"the ActionFormer test path runs the whole video in one piece, got a plan "
                                 f"of {len(plan)} pieces")
        ((start, length),) = plan
        feats = self.features(source, start, length, stats)
        with torch.no_grad():
            out = self.model.forward_features(feats)  # float32, autocast off inside
        stats.windows += 1
        return ActionFormerOutputs([c.cpu() for c in out.cls_logits], [o.cpu() for o in out.offsets],
                                   [m.cpu() for m in out.masks], [p.cpu() for p in out.points])

    def merge(self, outputs: ActionFormerOutputs, video: VideoContext, result_set: ResultSet) -> Detections:
        """The release's post-processing in seconds (clamped to the video's duration, or its
        decoded frames / fps when unknown), then ``test.score_thr`` and ``test.max_per_video``."""
        duration = video.duration if video.duration is not None else video.num_frames / video.fps
        (dets,) = self.model.predict(outputs, video.fps, duration)
        t = self.cfg.test
        return keep_best(dets, t.score_thr, t.max_per_video)


class ActionFormerFamily:
    """The ActionFormer family (`tallformer.engine.family.Family`)."""

    kind = "actionformer"
    title = "ActionFormer"
    example_config = "thumos14_swin_b_actionformer"
    summary = (
        "model.kind=actionformer (e.g. --config thumos14_swin_b_actionformer): each video decoded at "
        "data.fps (or the annotation's own fps), the backbone chunk by chunk over the whole video "
        "(streaming), ActionFormer's network over the whole feature sequence at once and its "
        "post-processing as the release (model.actionformer.test_cfg: soft-NMS per class, at most "
        "max_seg_num), then test.score_thr and test.max_per_video."
    )
    test_options: tuple[TestOption, ...] = ()

    def build(self, cfg: Config) -> ActionFormerDetector:
        from tallformer.models.actionformer import build_actionformer

        return build_actionformer(cfg)

    def inference(self, model: DetectorModel, cfg: Config, device: torch.device, *,
                  reuse_chunks: bool = True) -> ActionFormerInference:
        """`reuse_chunks` has nothing to share here (every chunk goes through the backbone once)."""
        from tallformer.models.actionformer import ActionFormerDetector

        if not isinstance(model, ActionFormerDetector):
            raise InferenceError(f"model.kind={cfg.model.kind}: the ActionFormer test path runs the "
                                 f"ActionFormer detector, not a {type(model).__name__}")
        return ActionFormerInference(model, cfg, device)

    def default_results(self) -> ResultSet:
        return ResultSet()

    def tester(self, cfg: Config, options: Mapping[str, Any]) -> SubsetTester:
        from tallformer.engine.subset import SubsetTester

        return SubsetTester(self)
