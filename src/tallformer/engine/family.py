"""The seam between a detector family and the engine: what a family provides.

A detector family is a network (an ``nn.Module`` satisfying
`tallformer.models.protocol.DetectorModel`, in ``tallformer/models/``) plus its engine side,
one `Family` in ``tallformer/engine/families/<kind>.py``, named in one line of the factory
table `tallformer.engine.factory.FAMILIES` under its ``model.kind``. The engine trains every
family the same way (the memory-bank step calls `DetectorModel.forward_losses`); to test and
detect it asks the family, once, for its inference path:

- `Family.inference` returns a `VideoInference` bound to a model, a config and a device: how
  it plans a video (`decode_rate`, `plan`: the frame rate and the pieces of the video it
  reads), runs it (`run`: the model over the pieces) and merges (`merge`: one result set's
  detections of the video, in seconds, best first);
- `Family.test_options` are the options it adds to ``tallformer test`` and `Family.tester`
  runs one checkpoint under them and prints their table (`Tester`).

The family modules are imported when the command line starts (for their test options), so
like ``tallformer/commands/`` they import torch, numpy-heavy code and ``tallformer.models``
inside functions only. This module imports none of them either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tallformer.engine.errors import InferenceError
from tallformer.errors import name_list

if TYPE_CHECKING:
    import torch

    from tallformer.config import Config
    from tallformer.data.annotations import VideoAnnotation
    from tallformer.data.video import FrameSource
    from tallformer.models.outputs import Detections
    from tallformer.models.protocol import DetectorModel

__all__ = [
    "Family",
    "InferenceStats",
    "LoadedModel",
    "ResultSet",
    "TestOption",
    "Tester",
    "VideoContext",
    "VideoInference",
    "check_classes",
]


def check_classes(model: DetectorModel, classes: Sequence[str], where: str) -> None:
    """One class name per class the model predicts, or an `InferenceError` naming `where`."""
    if len(classes) != model.num_classes:
        raise InferenceError(f"{where}: {len(classes)} class names ({name_list(classes, 5)}) but the "
                             f"model predicts {model.num_classes} classes; use the annotations it was "
                             "trained on")


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")


@dataclass
class LoadedModel:
    """A detector restored from a checkpoint (`tallformer.engine.checkpoint.load_model`), in
    eval mode on `device`."""

    model: DetectorModel
    cfg: Config  # the config the model was built from (the checkpoint's unless one was given)
    saved_cfg: Config  # the config stored in the checkpoint
    classes: list[str]  # label-id order
    path: Path
    epoch: int | None = None
    step: int | None = None
    device: torch.device = field(default_factory=_cpu)


@dataclass
class InferenceStats:
    """Counters of one video's inference (tests and benchmarks read them): the pieces
    (windows) run, the chunks through the backbone and the most decoded frames held at once.
    A family fills what applies to its path."""

    windows: int = 0
    backbone_chunks: int = 0
    peak_frames: int = 0


@dataclass(frozen=True)
class VideoContext:
    """What a family's merge knows of the video: its id, the rate it was decoded at, the
    frames decoded, its duration in seconds (None: unknown, nothing clipped to it) and its
    annotation when it comes from an annotation file (None for any other video)."""

    video_id: str
    fps: float
    num_frames: int
    duration: float | None = None
    annotation: VideoAnnotation | None = None


@dataclass(frozen=True)
class ResultSet:
    """One set of results a test writes from the same model outputs.

    A family without choices has one, `ResultSet()`: its results go into the checkpoint's
    output folder itself. A family that labels its detections in several ways (the
    video-level classifiers of a family with class-agnostic proposals) has one per way, each
    ``name``d (its
    results go into ``OUT/<checkpoint>/<name>/``), with ``classifier`` (recorded in the
    results JSON under that key) and ``external_data`` (the evaluator's own key).
    ``labels`` is the family's own (how its `VideoInference.merge` labels).
    """

    name: str | None = None
    title: str = ""
    oracle: bool = False
    classifier: Mapping[str, Any] | None = None
    external_data: Mapping[str, Any] = field(default_factory=dict)
    labels: Any = None


@dataclass(frozen=True)
class TestOption:
    """An option a family adds to ``tallformer test`` (given to another family's config it
    is an error naming its family)."""

    __test__ = False  # not a pytest test class

    flag: str
    help: str
    metavar: str
    nargs: str | None = None

    @property
    def dest(self) -> str:
        """The argparse attribute: ``--videos-list`` -> ``videos_list``."""
        return self.flag.lstrip("-").replace("-", "_")


class VideoInference(Protocol):
    """A family's test path for one model, config and device (the engine runs it per video:
    ``merge(run(source, plan(len(source)), stats), video, result_set)``)."""

    def decode_rate(self, path: Path, annotated_fps: float | None) -> float:
        """The frame rate to decode the video at `path` with (the annotation's own fps when
        a preparation step set one)."""
        ...

    def plan(self, num_frames: int) -> Sequence[tuple[int, int]]:
        """The pieces ``[(start, length), ...]`` (frames) of a video of `num_frames` frames
        that the model sees (sliding windows; or one piece)."""
        ...

    def run(self, source: FrameSource, plan: Sequence[tuple[int, int]], stats: InferenceStats) -> Any:
        """The model over the planned pieces of `source`: the raw per-video outputs `merge`
        reads (on the CPU). The caller opens and closes `source`."""
        ...

    def merge(self, outputs: Any, video: VideoContext, result_set: ResultSet) -> Detections:
        """The detections of one video under `result_set`: seconds, best first, labels
        indices into the model's classes."""
        ...


class Tester(Protocol):
    """What a family does for ``tallformer test`` with the options it was given."""

    def describe(self) -> str:
        """Added to the line announcing each checkpoint (e.g. the classifiers used)."""
        ...

    def test(self, cfg: Config, loaded: LoadedModel, out_dir: Path, *, name: str, subset: str,
             progress: bool) -> list[dict[str, Any]]:
        """Test one checkpoint: its results and metrics under `out_dir`, and its rows of the
        table (each with ``name``, ``checkpoint``, ``epoch``, ``step``, ``mAP``,
        ``average_mAP``, ``results``, ``metrics``)."""
        ...

    def table(self, rows: Sequence[Mapping[str, Any]], thresholds: Sequence[float]) -> str:
        """The printed table of every checkpoint's rows."""
        ...

    def summary(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The family's keys of ``summary.json`` (``best`` at least)."""
        ...


class Family(Protocol):
    """A detector family's engine side (one line of `tallformer.engine.factory.FAMILIES`)."""

    kind: str  # model.kind
    title: str  # in messages: "only for ActivityNet configs"
    example_config: str  # a shipped config of the family
    summary: str  # its test and detect path in a few sentences (command-line help)
    test_options: tuple[TestOption, ...]

    def build(self, cfg: Config) -> DetectorModel:
        """The detector of `cfg` (no weights loaded; works under ``torch.device("meta")``)."""
        ...

    def inference(self, model: DetectorModel, cfg: Config, device: torch.device, *,
                  reuse_chunks: bool = True) -> VideoInference:
        """The test path of `model` (in eval mode) on `device`. `reuse_chunks` False: a path
        that shares chunk features between overlapping pieces recomputes every piece
        instead (tests and benchmarks)."""
        ...

    def default_results(self) -> ResultSet:
        """The result set of `tallformer.detect`, ``tallformer detect`` and the training
        engine's periodic test."""
        ...

    def tester(self, cfg: Config, options: Mapping[str, Any]) -> Tester:
        """``tallformer test`` with `options` (``{dest: value}`` of `test_options`, None when
        not given); raises `InferenceError` for a bad value."""
        ...
