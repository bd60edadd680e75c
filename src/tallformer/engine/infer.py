"""Inference on whole videos: the public functions, the same for every detector family.

The family of the config (``model.kind``, `tallformer.engine.factory.family_for`) gives the
test path once (`tallformer.engine.family.VideoInference`: how a video is planned, run and
merged); everything here runs that path:

- `infer_video`: one open frame source -> its detections (seconds, best first);
- `infer_subset` / `evaluate_model`: every video of an annotation subset, and its scores
  (the training engine's periodic test; ``tallformer test`` goes through the family's
  tester, `tallformer.engine.family.Tester`);
- `Detector` / `detect`: a checkpoint (`tallformer.engine.checkpoint.load_model`) on any
  video file or frame folder.

"detect" means one thing in the API: a video in, `tallformer.engine.results.Detection`
records out (segment in seconds, class name, score).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tallformer.config import Config
from tallformer.engine.checkpoint import load_model
from tallformer.engine.factory import family_for
from tallformer.engine.family import (
    InferenceStats,
    LoadedModel,
    ResultSet,
    VideoContext,
    check_classes,
)
from tallformer.engine.results import Detection, detection_list
from tallformer.engine.subset import evaluate, infer_videos
from tallformer.errors import TallformerError

if TYPE_CHECKING:
    from tallformer.data.annotations import AnnotationSet
    from tallformer.data.video import FrameSource
    from tallformer.models.outputs import Detections
    from tallformer.models.protocol import DetectorModel

__all__ = [
    "Detector",
    "VideoResult",
    "detect",
    "evaluate_model",
    "infer_subset",
    "infer_video",
]


def _inner(model: Any) -> DetectorModel:
    """The detector inside a DDP wrapper (or itself)."""
    from tallformer.engine.distributed import unwrap

    return unwrap(model)


def infer_video(model: DetectorModel, cfg: Config, source: FrameSource, *,
                device: torch.device | None = None, reuse_chunks: bool = True,
                stats: InferenceStats | None = None) -> Detections:
    """Detections of one video (seconds, descending score) by the test path of `cfg`'s
    family, labelled by its default result set (a family with video-level classifiers: the
    detector's own).

    Args:
        model: the detector, in eval mode (this function does not change its mode).
        cfg: the config of the model (``model.kind``, ``data``, ``test``, ...).
        source: an open frame source (`tallformer.data.video.open_source`), read at its
            own ``fps``; the caller closes it.
        device: where the model is (default: its parameters' device).
        reuse_chunks: False: a path that shares chunk features between overlapping windows
            recomputes every window (same windows; for tests and benchmarks).
        stats: filled with the windows, backbone chunks and peak buffered frames.
    """
    family = family_for(cfg)
    device = device if device is not None else next(model.parameters()).device
    inference = family.inference(model, cfg, device, reuse_chunks=reuse_chunks)
    outputs = inference.run(source, inference.plan(len(source)), stats if stats is not None else InferenceStats())
    video = VideoContext(source.path.stem, source.fps, len(source))
    return inference.merge(outputs, video, family.default_results())


def infer_subset(cfg: Config, model: DetectorModel, annotations: AnnotationSet, subset: str, *,
                 classes: Sequence[str] | None = None, device: torch.device | None = None,
                 progress: bool = True, desc: str = "test") -> dict[str, list[Detection]]:
    """Detections of every video of `subset` (file order): ``{video_id: [Detection]}``.

    Videos are found in ``cfg.data.videos`` (files or frame folders) and decoded at the rate
    the family asks for. The model must be in eval mode; its default result set labels
    them (`tallformer.engine.subset.infer_videos` for several).
    """
    names = list(classes) if classes is not None else list(annotations.classes)
    check_classes(model, names, str(annotations.source))
    family = family_for(cfg)
    device = device if device is not None else next(model.parameters()).device
    (found,) = infer_videos(family.inference(model, cfg, device), cfg, annotations.subset(subset),
                            [family.default_results()], classes=names, progress=progress, desc=desc)
    return found


def evaluate_model(cfg: Config, model: DetectorModel | torch.nn.Module,
                   annotations: AnnotationSet | str | os.PathLike[str], subset: str | None = None,
                   out_dir: str | os.PathLike[str] | None = None, progress: bool = True, *,
                   classes: Sequence[str] | None = None, device: torch.device | None = None) -> dict[str, Any]:
    """Run the test path over `subset` and score it; the training engine's periodic test.

    Args:
        cfg: the run's config (``data.videos``, ``test.*``; ``test.tiou_thresholds``).
        model: the detector (a DDP wrapper is unwrapped); put in eval mode for the run and
            given back in the mode it had.
        annotations: an `AnnotationSet`, or the annotation file (then the scores are computed
            against that file, exactly as `tallformer eval --gt FILE` does).
        subset: default ``cfg.data.test_subset``.
        out_dir: when given, ``results.json`` (ActivityNet results; with the family's
            default classifier recorded where it has one) and ``metrics.json`` (the
            evaluator's format) are written there atomically.
        classes: label-id order of the model (default: the annotations' classes).
    Returns:
        The evaluator's dict: ``tiou_thresholds``, ``mAP``, ``average_mAP``,
        ``per_class_AP``, ``num_videos``, ``num_ground_truth``, ``num_predictions``:
        `tallformer.evaluation.evaluate` with ``ignore_unknown_labels=True`` (the
        detections of classes absent from the subset's ground truth are not scored), i.e.
        ``tallformer eval --gt FILE --pred results.json --ignore-unknown-labels``.
    """
    return evaluate(family_for(cfg), cfg, _inner(model), annotations, subset, out_dir, classes=classes,
                    device=device, progress=progress)


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
    decodes the video (PyAV: any format FFmpeg reads, any rate and size) at the rate the
    model's family asks for (the config's fps, or a family's own rule) and frame size, and runs
    the family's test path (`tallformer.Detector`).

    Example (a random demo model saved first, and a 3-second synthetic video)::

        >>> import tempfile
        >>> import tallformer
        >>> from tallformer.data.synthetic import generate_synthetic_dataset
        >>> cfg = tallformer.load_config("demo")
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = generate_synthetic_dataset(tmp, 1, seed=0, size=(36, 36), min_length=3.0,
        ...                                    max_length=3.0, val_fraction=0.0, progress=False)
        ...     ckpt = tallformer.save_model(f"{tmp}/demo.pt", tallformer.build_detector(cfg), cfg,
        ...                                  ["a", "b", "c", "d"])
        ...     detector = tallformer.Detector.from_checkpoint(ckpt, device="cpu")
        ...     result = detector.detect(f"{tmp}/videos/synth_0000.mp4", top_k=3)
        >>> result.video_id, result.num_frames, len(result.detections) <= 3
        ('synth_0000', 45, True)
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.cfg = loaded.cfg
        self.classes = loaded.classes
        self.family = family_for(loaded.cfg)
        self.inference = self.family.inference(loaded.model, loaded.cfg, loaded.device)
        self.results: ResultSet = self.family.default_results()

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
               top_k: int | None = None, stats: InferenceStats | None = None) -> VideoResult:
        """Detections of the video at `path`: those scoring at least `score_threshold` (on
        top of ``test.score_thr``), at most `top_k` (on top of ``test.max_per_video``).

        Raises `tallformer.data.video.VideoError` naming the file when it cannot be decoded.
        """
        from tallformer.data.video import open_source, probe_video

        p = Path(path)
        d = self.cfg.data
        fps = self.inference.decode_rate(p, None)
        duration: float | None = None
        if p.is_file():
            with contextlib.suppress(TallformerError):
                duration = probe_video(p).duration
        source = open_source(p, fps, (int(d.frame_size[0]), int(d.frame_size[1])))
        video_id = p.stem if p.is_file() else p.name
        try:
            n = len(source)
            outputs = self.inference.run(source, self.inference.plan(n),
                                         stats if stats is not None else InferenceStats())
        finally:
            source.close()
            del source
        dets = self.inference.merge(outputs, VideoContext(video_id, fps, n, duration), self.results)
        found = detection_list(dets, self.classes)
        if score_threshold is not None:
            found = [x for x in found if x.score >= score_threshold]
        if top_k is not None:
            found = found[:top_k]
        return VideoResult(video_id=video_id, path=p, fps=fps, num_frames=n,
                           duration=duration if duration is not None else n / fps, detections=found)


def detect(path: str | os.PathLike[str], checkpoint: str | os.PathLike[str] | Detector, *,
           config: str | os.PathLike[str] | Config | None = None, overrides: Sequence[str] = (),
           score_threshold: float | None = None, top_k: int | None = None,
           device: str | torch.device | None = None) -> list[Detection]:
    """Detect actions in one video file or frame folder (`tallformer.detect`).

    Returns the detections, best first, each with `segment` (start, end) in seconds,
    `label` and `score`. `checkpoint` may also be a `Detector` (load once, detect many).
    The config and class names come from the checkpoint unless `config` is given.

    Example (a random demo model saved first, and a 3-second synthetic video)::

        >>> import tempfile
        >>> import tallformer
        >>> from tallformer.data.synthetic import generate_synthetic_dataset
        >>> cfg = tallformer.load_config("demo")
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = generate_synthetic_dataset(tmp, 1, seed=0, size=(36, 36), min_length=3.0,
        ...                                    max_length=3.0, val_fraction=0.0, progress=False)
        ...     video = f"{tmp}/videos/synth_0000.mp4"
        ...     ckpt = tallformer.save_model(f"{tmp}/demo.pt", tallformer.build_detector(cfg), cfg,
        ...                                  ["a", "b", "c", "d"])
        ...     found = tallformer.detect(video, ckpt, device="cpu", top_k=5)
        >>> len(found) <= 5 and all(0.0 <= d.start < d.end <= 3.0 for d in found)
        True
    """
    detector = checkpoint if isinstance(checkpoint, Detector) else Detector.from_checkpoint(
        checkpoint, config, overrides=overrides, device=device)
    return detector.detect(path, score_threshold=score_threshold, top_k=top_k).detections
