"""The ActivityNet family's engine side (``model.kind: afsd``, `tallformer.models.afsd.AFSD`):
one pass per video, class-agnostic proposals, video-level label fusion and the two
evaluation protocols (original: AFSD/anet_video_cls/test.py, AFSD/anet_video_cls/eval.py).

One video (original: AFSD/anet_video_cls/test.py:97-241):

1. decoded at its own frame rate (`decode_rate`): the annotation's ``fps`` when a
   preparation step set one, else the file's rate under the original's re-encoding rule
   ``fps * min(T / frames, 1)`` (T = ``data.num_frames``, 768; original:
   tools/data/anet/transform_videos.py:31-45), which is the file's own rate for a video
   made by ``tallformer prepare videos --num-frames 768`` and resamples any other video on
   the fly, so seconds come out right for every video;
2. its first T frames, padded with black frames to T (black before normalisation, as the
   original), centre-cropped and normalised: ``[1, 3, T, crop, crop]`` (`afsd_clip`);
3. `AFSD.forward_infer` (the whole backbone, no memory bank) and `AFSD.predict`:
   soft-NMS'd class-agnostic proposals clipped to the video's frames (`afsd_proposals`);
4. frames / fps = seconds, clipped to [0, duration], empty ones dropped, then labelled by
   the video-level classifier (`tallformer.models.afsd_fusion.label_proposals`):
   ``builtin`` (the action head's top-2), a classifier FILE (its top-2) or ``gt`` (the
   ground-truth label: an oracle, an upper bound); best first.

The proposals of a video are computed once and labelled by every requested classifier
(one `tallformer.engine.family.ResultSet` each), as the original writes its builtin / cuhk
/ gt results from one pass.

Protocols (`evaluate_afsd`): ``all`` scores against every video of the subset in the
ground truth (ActivityNet-1.3 validation: 4,926 videos; a video without detections, e.g.
one no longer downloadable and so not tested, counts as misses); ``list`` against the
videos of a list file only (`load_video_list`; e.g. BSN's ``video_info_new.csv``: the
4,728 validation videos still downloadable). A number is comparable only under the same
protocol.

Imported when the command line starts: torch, numpy and the model are imported inside
functions.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tallformer.engine.errors import InferenceError
from tallformer.engine.family import (
    InferenceStats,
    LoadedModel,
    ResultSet,
    TestOption,
    VideoContext,
)
from tallformer.engine.results import (
    load_ground_truth,
    results_json,
    score,
    unique_name,
)
from tallformer.errors import TallformerWarning, name_list

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import Tensor

    from tallformer.config import Config
    from tallformer.data.annotations import AnnotationSet, VideoAnnotation
    from tallformer.data.video import FrameSource
    from tallformer.models.afsd import AFSD
    from tallformer.models.outputs import Detections
    from tallformer.models.protocol import DetectorModel

__all__ = [
    "AfsdFamily",
    "AfsdInference",
    "AfsdTester",
    "ClassifierSpec",
    "afsd_clip",
    "afsd_proposals",
    "afsd_table",
    "decode_rate",
    "evaluate_afsd",
    "load_video_list",
    "parse_classifier",
    "unique_names",
]

ClassifierKind = Literal["builtin", "gt", "file"]
LIST_HINT = ("to test only the videos you have, pass --videos-list FILE (e.g. BSN's "
             "video_info_new.csv); the others then count as misses under protocol 'all'")


# --------------------------------------------------------------------------- classifiers


@dataclass(frozen=True)
class ClassifierSpec:
    """Which video-level classifier labels the proposals.

    `kind` "builtin" (the detector's action head), "gt" (the ground-truth video label: an
    oracle) or "file" (a classifier file at `source`); `name` names its outputs
    (``builtin``, ``gt``, or the file's stem).
    """

    kind: ClassifierKind
    name: str
    source: str | None = None

    @property
    def oracle(self) -> bool:
        return self.kind == "gt"

    @property
    def title(self) -> str:
        """The name in tables: ``gt (oracle)`` for the oracle."""
        return f"{self.name} (oracle)" if self.oracle else self.name

    def describe(self) -> str:
        if self.kind == "builtin":
            return ("the detector's own action head (the top model.afsd.classifier_top_k of its "
                    "video-level softmax)")
        if self.kind == "gt":
            return ("oracle: the ground-truth video label (first instance's class); an upper "
                    "bound, not comparable with published numbers")
        return (f"video-level class scores from the classifier file {self.source} (its top "
                "model.afsd.classifier_top_k)")

    def record(self) -> dict[str, Any]:
        """What a results JSON says about its classifier."""
        return {"name": self.name, "kind": self.kind, "source": self.source,
                "oracle": self.oracle, "description": self.describe()}

    def result_set(self, labels: Any = None) -> ResultSet:
        """This classifier's results: named, recorded in the results JSON (``classifier``,
        and the official ``external_data``: was a classifier file or the oracle used?);
        `labels` how `AfsdInference.merge` labels (`result_sets` fills it)."""
        return ResultSet(name=self.name, title=self.title, oracle=self.oracle, classifier=self.record(),
                         external_data={"used": self.kind != "builtin",
                                        "details": f"video labels: {self.describe()}"},
                         labels=labels)


BUILTIN = ClassifierSpec("builtin", "builtin")


@dataclass(frozen=True)
class _Oracle:
    """The ``gt`` labels: the index of every class name (the first instance's class)."""

    index: Mapping[str, int]


def parse_classifier(value: str) -> ClassifierSpec:
    """``builtin``, ``gt`` or the path of a classifier file (``{"results": {video: [scores]},
    "class": [names]}``, the CUHK ActivityNet-2016 file) -> a `ClassifierSpec`."""
    if value == "builtin":
        return ClassifierSpec("builtin", "builtin")
    if value == "gt":
        return ClassifierSpec("gt", "gt")
    path = Path(value)
    if not path.is_file():
        raise InferenceError(f"--classifier {value}: neither builtin, gt nor an existing classifier "
                             "file; give builtin, gt or the path of a JSON file "
                             '{"results": {video: [scores]}, "class": [names]}')
    return ClassifierSpec("file", path.stem, str(path))


def unique_names(specs: Sequence[ClassifierSpec]) -> list[ClassifierSpec]:
    """`specs` with distinct names (a file stem that repeats gets ``_2``, ``_3``, ...)."""
    taken: set[str] = set()
    return [ClassifierSpec(spec.kind, unique_name(spec.name, taken), spec.source) for spec in specs]


def result_sets(specs: Sequence[ClassifierSpec], classes: Sequence[str]) -> list[ResultSet]:
    """One result set per classifier, its labels ready (a classifier file read and matched
    to `classes`)."""
    from tallformer.models.afsd_fusion import load_video_classifier

    out = []
    for spec in specs:
        labels: Any = spec.kind
        if spec.kind == "file" and spec.source is not None:
            labels = load_video_classifier(spec.source, list(classes))
        elif spec.kind == "gt":
            labels = _Oracle({c: i for i, c in enumerate(classes)})
        out.append(spec.result_set(labels))
    return out


# --------------------------------------------------------------------------- video lists


def _strip_v(video_id: str) -> str:
    return video_id[2:] if video_id.startswith("v_") else video_id


def load_video_list(path: str | os.PathLike[str]) -> list[str]:
    """Video ids of a list file, in file order: a CSV with a ``video`` column (BSN's
    ``video_info_new.csv``; its ``subset`` column is not needed: the list is intersected with
    the tested subset), a JSON list of ids, or a text file with one id per line (blank lines
    and ``#`` comments skipped). Ids may carry the ActivityNet ``v_`` prefix or not."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InferenceError(f"--videos-list {p}: cannot read it ({exc}); give a CSV with a "
                             "'video' column, a JSON list or a text file of video ids") from None
    first = text.lstrip()[:1]
    if first == "[":
        try:
            ids = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InferenceError(f"--videos-list {p}: not valid JSON ({exc})") from None
        if not isinstance(ids, list) or not all(isinstance(v, str) for v in ids):
            raise InferenceError(f"--videos-list {p}: a JSON list file must hold video id strings")
    else:
        lines = [ln.strip() for ln in text.splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("#")]
        header = next(csv.reader(lines[:1]), []) if lines else []
        if "video" in [h.strip() for h in header]:
            rows = csv.DictReader(lines)
            ids = [(row.get("video") or "").strip() for row in rows]
            ids = [v for v in ids if v]
        else:
            ids = lines
    if not ids:
        raise InferenceError(f"--videos-list {p}: lists no video")
    return ids


def _match_list(listed: Sequence[str], subset_ids: Sequence[str]) -> list[str]:
    """The ids of `subset_ids` that `listed` names (with or without ``v_``), subset order."""
    wanted = {_strip_v(v) for v in listed}
    return [v for v in subset_ids if _strip_v(v) in wanted]


# --------------------------------------------------------------------------- one video


def decode_rate(path: Path, num_frames: int, fps: float | None, default_fps: float) -> float:
    """The frame rate a video is decoded at for the ActivityNet detector.

    `fps` (the annotation's, set by a preparation step) when given; for a video file its
    own rate times ``min(num_frames / frames, 1)`` (the original's re-encoding rule, original:
    tools/data/anet/transform_videos.py:31-45: the file's own rate for a video already
    prepared with ``--num-frames``); for a frame folder `default_fps` (``data.fps``).
    """
    if fps:
        return float(fps)
    if path.is_dir():
        return float(default_fps)
    from tallformer.data.video import probe_video

    info = probe_video(path)
    return info.fps * min(num_frames / info.num_frames, 1.0)


def afsd_clip(frames: np.ndarray, cfg: Config) -> Tensor:
    """The first ``data.num_frames`` (T) of `frames` uint8 ``[n, H, W, 3]`` RGB, padded with
    black frames to T (before normalisation, original: AFSD/anet_video_cls/test.py:97-132),
    centre-cropped and normalised: float32 ``[3, T, crop, crop]``. The transform runs one
    ``model.backbone.chunk_size`` block at a time (bounded temporary memory)."""
    import numpy as np

    from tallformer.data.transforms import test_transform

    d = cfg.data
    t = d.num_frames
    n = min(int(frames.shape[0]), t)
    padded = np.zeros((t, *frames.shape[1:]), dtype=np.uint8)
    padded[:n] = frames[:n]
    block = max(1, cfg.model.backbone.chunk_size)
    clip: Tensor | None = None
    for i in range(0, t, block):
        x = test_transform(padded[i:i + block], d.crop_size, d.mean, d.std)  # [3, b, h, w]
        if clip is None:
            clip = x.new_empty(3, t, x.shape[2], x.shape[3])
        clip[:, i:i + x.shape[1]] = x
    assert clip is not None  # t >= 1
    return clip


def afsd_proposals(model: AFSD, cfg: Config, source: FrameSource, *,
                   device: torch.device | None = None) -> tuple[Detections, Tensor, int]:
    """One video through the detector: (class-agnostic proposals in video frames, soft-NMS'd
    and clipped to the frames used, on the CPU; the action head's softmax ``[K + 1]``
    (index 0 background); the number of frames used, ``min(len(source), T)``).

    The model must be in eval mode (not changed here); the caller closes `source`."""
    import torch

    from tallformer.engine.device import amp_dtype_for, autocast
    from tallformer.models.outputs import Detections

    device = device if device is not None else next(model.parameters()).device
    n = min(len(source), cfg.data.num_frames)
    if n < 1:
        raise InferenceError(f"{source.path}: the video has no frames")
    clip = afsd_clip(source.read(0, n), cfg)
    with torch.no_grad(), autocast(amp_dtype_for(cfg.train.amp, device), device):
        outputs = model.forward_infer(clip[None].to(device, non_blocking=True))
        (proposals,) = model.predict(outputs, lengths=[n], offsets=[0])
        probs = model.action_probs(outputs)[0]
    return (Detections(proposals.segments.float().cpu(), proposals.scores.float().cpu(),
                       proposals.labels.cpu()), probs.float().cpu(), n)


def _gt_label(video: VideoAnnotation | None, index: Mapping[str, int]) -> int | None:
    """The oracle's video label: the first instance's class (original:
    AFSD/anet_video_cls/test.py:210-241), None when it has none of ours."""
    if video is None or not video.annotations:
        return None
    return index.get(video.annotations[0].label)


class AfsdInference:
    """The one-pass test path of one `AFSD` on one device (`tallformer.engine.family.VideoInference`)."""

    def __init__(self, model: AFSD, cfg: Config, device: torch.device) -> None:
        self.model = model
        self.cfg = cfg
        self.device = device

    def decode_rate(self, path: Path, annotated_fps: float | None) -> float:
        """`decode_rate` (a missing path: ``data.fps``, so opening it names the file)."""
        if not annotated_fps and not path.exists():
            return float(self.cfg.data.fps)
        return decode_rate(path, self.cfg.data.num_frames, annotated_fps, self.cfg.data.fps)

    def plan(self, num_frames: int) -> list[tuple[int, int]]:
        """One piece: the first ``data.num_frames`` frames."""
        return [(0, min(num_frames, self.cfg.data.num_frames))]

    def run(self, source: FrameSource, plan: Sequence[tuple[int, int]],
            stats: InferenceStats) -> tuple[Detections, Tensor]:
        """(class-agnostic proposals in video frames, the action head's softmax)."""
        proposals, probs, _ = afsd_proposals(self.model, self.cfg, source, device=self.device)
        stats.windows += 1
        return proposals, probs

    def merge(self, outputs: tuple[Detections, Tensor], video: VideoContext,
              result_set: ResultSet) -> Detections:
        """The proposals in seconds, clipped to the video's duration, labelled by the result
        set's classifier, best first (none for the oracle when the video has no label)."""
        import torch

        from tallformer.models.afsd_fusion import VideoClassifier, label_proposals
        from tallformer.models.outputs import Detections

        proposals, probs = outputs
        labels: Literal["builtin", "gt"] | VideoClassifier = "builtin"
        gt: int | None = None
        if isinstance(result_set.labels, _Oracle):
            gt = _gt_label(video.annotation, result_set.labels.index)
            if gt is None:
                return Detections(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long))
            labels = "gt"
        elif isinstance(result_set.labels, VideoClassifier):
            labels = result_set.labels
        a = self.cfg.model.afsd
        return label_proposals(proposals, video.fps, video.duration, labels, action_probs=probs,
                               video_id=video.video_id, gt_label=gt, top_k=a.classifier_top_k,
                               include_background=a.builtin_includes_background)


# --------------------------------------------------------------------------- evaluation


def _restricted(gt: Any, aset: AnnotationSet, video_ids: Sequence[str]) -> dict[str, Any]:
    """Ground truth of `video_ids` only (protocol "list"), as ActivityNet JSON: the entries
    of the file when `gt` is one, else of `aset`."""
    keep = set(video_ids)
    if isinstance(gt, Path):
        from tallformer.evaluation import EvaluationError

        try:
            db = json.loads(gt.read_text(encoding="utf-8")).get("database", {})
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            raise EvaluationError(f"{gt}: cannot read the ground truth ({exc})") from None
        return {"database": {vid: entry for vid, entry in db.items() if vid in keep}}
    return {"database": {
        vid: {"subset": v.subset, "annotations": [{"segment": list(x.segment), "label": x.label}
                                                  for x in v.annotations]}
        for vid, v in aset.videos.items() if vid in keep}}


def evaluate_afsd(cfg: Config, model: AFSD, annotations: AnnotationSet | str | os.PathLike[str],
                  subset: str | None = None, out_dir: str | os.PathLike[str] | None = None, *,
                  classifiers: Sequence[ClassifierSpec] = (BUILTIN,),
                  video_list: str | os.PathLike[str] | None = None, classes: Sequence[str] | None = None,
                  device: torch.device | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the ActivityNet test path over `subset` and score it under each classifier and
    protocol.

    Args:
        cfg: the run's config (``data.videos``, ``data.num_frames``, ``test.*``,
            ``model.afsd.classifier_top_k`` / ``builtin_includes_background``).
        model: the detector; put in eval mode for the run and given back in the mode it had.
        annotations: an `AnnotationSet` or the annotation file (then the scores are computed
            against that file, as `tallformer eval --gt FILE --ignore-unknown-labels`).
        subset: default ``cfg.data.test_subset``.
        out_dir: when given, per classifier ``OUT/<name>/results.json`` (naming its
            classifier), ``metrics.json`` (protocol "all") and, with a list,
            ``metrics_list.json`` (protocol "list"), written atomically.
        classifiers: the video-level classifiers (default: builtin).
        video_list: a list file (`load_video_list`): only its videos are tested, and both
            protocols are scored; None tests every video of the subset (protocol "all").
        classes: label-id order of the model (default: the annotations' classes).
    Returns:
        ``{"subset", "protocols": {name: {"videos": N, "tested": M, "description"}},
        "classifiers": {name: {"classifier": record, "metrics": {protocol: evaluator dict},
        "results": {...}}}}`` (``results``: the results JSON).
    """
    from tallformer.atomic import write_json
    from tallformer.engine.subset import infer_videos

    if not classifiers:
        raise InferenceError("no video-level classifier given (builtin, gt or a FILE)")
    aset, gt = load_ground_truth(annotations)
    subset = subset if subset is not None else cfg.data.test_subset
    subset_ids = [v.video_id for v in aset.subset(subset)]
    listed: list[str] | None = None
    if video_list is not None:
        listed = _match_list(load_video_list(video_list), subset_ids)
        if not listed:
            raise InferenceError(f"--videos-list {video_list}: none of its videos is in subset "
                                 f"{subset!r} of {aset.source}; check the ids and --subset")
    tested = listed if listed is not None else subset_ids
    protocols: dict[str, dict[str, Any]] = {"all": {
        "videos": len(subset_ids), "tested": len(tested),
        "description": f"all {len(subset_ids)} videos of subset {subset!r} in {aset.source}"
                       + (f" ({len(subset_ids) - len(tested)} not tested, counted as misses)"
                          if listed is not None else ""),
    }}
    if listed is not None:
        protocols["list"] = {"videos": len(listed), "tested": len(listed), "source": str(video_list),
                             "description": f"the videos of subset {subset!r} listed in "
                                            f"{video_list} ({len(listed)})"}
    names = list(classes) if classes is not None else list(aset.classes)
    videos = aset.subset(subset)
    if listed is not None:
        wanted = set(listed)
        videos = [v for v in videos if v.video_id in wanted]
    if cfg.data.videos is None:
        raise InferenceError("data.videos is not set: give the folder of the test videos, "
                             "e.g. data.videos=data/anet/videos")
    sets = result_sets(classifiers, names)
    device = device if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        found = infer_videos(AfsdInference(model, cfg, device), cfg, videos, sets, classes=names,
                             progress=progress,
                             missing_hint="the list names videos that are not there" if listed is not None
                             else LIST_HINT)
    finally:
        model.train(was_training)
    if any(spec.kind == "gt" for spec in classifiers):
        index = {c: i for i, c in enumerate(names)}
        no_label = [v.video_id for v in videos if _gt_label(v, index) is None]
        if no_label:
            warnings.warn(f"{len(no_label)} test videos have no instance of a known class, so the "
                          f"gt classifier gives them no detections ({name_list(no_label, 3)})",
                          TallformerWarning, stacklevel=2)
    thresholds = list(cfg.test.tiou_thresholds)
    list_gt = _restricted(gt, aset, listed) if listed is not None else None
    out: dict[str, Any] = {"subset": subset, "protocols": protocols, "classifiers": {}}
    for spec, result_set, results in zip(classifiers, sets, found, strict=True):
        data = results_json(results, result_set)
        pred: Any = data
        where = Path(out_dir) / spec.name if out_dir is not None else None
        if where is not None:
            # scored from the written file: the numbers (and the evaluator's messages) are
            # those of `tallformer eval --pred OUT/<name>/results.json`
            where.mkdir(parents=True, exist_ok=True)
            write_json(where / "results.json", data)
            pred = where / "results.json"
        metrics = {"all": score(gt, pred, thresholds, subset)}
        if list_gt is not None:
            metrics["list"] = score(list_gt, pred, thresholds, subset)
        out["classifiers"][spec.name] = {"classifier": spec.record(), "metrics": metrics, "results": data}
        if where is not None:
            write_json(where / "metrics.json", metrics["all"])
            if "list" in metrics:
                write_json(where / "metrics_list.json", metrics["list"])
    return out


# --------------------------------------------------------------------------- tallformer test


def afsd_table(rows: Sequence[Mapping[str, Any]], thresholds: Sequence[float]) -> str:
    """mAP (%) per tIoU and the average, one row per (checkpoint, classifier, protocol); the
    best average of each (classifier, protocol) marked when several checkpoints are tested;
    the protocols and the oracle explained under the table."""
    def protocol(r: Mapping[str, Any]) -> str:
        return f"{r['protocol']} ({r['num_videos']})"

    width = max([10, *(len(r["name"]) for r in rows)])
    cw = max([10, *(len(r["classifier_title"]) for r in rows)])
    pw = max([8, *(len(protocol(r)) for r in rows)])
    head = (f"{'checkpoint':<{width}}  {'classifier':<{cw}}  {'protocol':<{pw}}  {'epoch':>5}  "
            + "  ".join(f"{t:>6.2f}" for t in thresholds) + f"  {'avg':>6}")
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["classifier"], r["protocol"]), []).append(i)
    best = {max(ids, key=lambda i: rows[i]["average_mAP"]) for ids in groups.values()
            if len({rows[i]["name"] for i in ids}) > 1}
    lines = [head]
    for i, r in enumerate(rows):
        epoch = "" if r.get("epoch") is None else str(r["epoch"])
        cells = "  ".join(f"{100 * m:>6.2f}" for m in r["mAP"])
        mark = "  <- best" if i in best else ""
        lines.append(f"{r['name']:<{width}}  {r['classifier_title']:<{cw}}  {protocol(r):<{pw}}  "
                     f"{epoch:>5}  {cells}  {100 * r['average_mAP']:>6.2f}{mark}")
    described: dict[str, str] = {}
    for r in rows:
        described.setdefault(r["protocol"], r["protocol_description"])
    for name, text in described.items():
        lines.append(f"protocol {name}: {text}")
    if any(r["oracle"] for r in rows):
        lines.append("gt (oracle): the ground-truth video labels; an upper bound, not comparable "
                     "with published numbers")
    return "\n".join(lines)


class AfsdTester:
    """``tallformer test`` of ActivityNet checkpoints: classifiers x protocols per checkpoint,
    ``OUT/<name>/<classifier>/`` each."""

    def __init__(self, family: AfsdFamily, cfg: Config, options: Mapping[str, Any]) -> None:
        self.family = family
        self.specs = unique_names([parse_classifier(v) for v in (options.get("classifier") or ["builtin"])])
        self.video_list: str | None = options.get("videos_list")
        self.protocols: dict[str, Any] = {}

    def describe(self) -> str:
        return f", classifiers {', '.join(s.title for s in self.specs)}"

    def test(self, cfg: Config, loaded: LoadedModel, out_dir: Path, *, name: str, subset: str,
             progress: bool) -> list[dict[str, Any]]:
        from tallformer.models.afsd import AFSD

        model = loaded.model
        if not isinstance(model, AFSD):
            raise InferenceError(f"{loaded.path}: not an ActivityNet (model.kind=afsd) checkpoint")
        assert cfg.data.annotations is not None  # checked by the caller
        found = evaluate_afsd(cfg, model, cfg.data.annotations, subset, out_dir,
                              classifiers=self.specs, video_list=self.video_list, classes=loaded.classes,
                              device=loaded.device, progress=progress)
        self.protocols = found["protocols"]
        rows = []
        for spec in self.specs:
            for protocol, m in found["classifiers"][spec.name]["metrics"].items():
                where = out_dir / spec.name
                rows.append({"name": name, "checkpoint": str(loaded.path), "epoch": loaded.epoch,
                             "step": loaded.step, "classifier": spec.name,
                             "classifier_title": spec.title, "oracle": spec.oracle,
                             "protocol": protocol, "num_videos": m["num_videos"],
                             "protocol_description": self.protocols[protocol]["description"],
                             "mAP": m["mAP"], "average_mAP": m["average_mAP"],
                             "results": str(where / "results.json"),
                             "metrics": str(where / ("metrics.json" if protocol == "all"
                                                     else f"metrics_{protocol}.json"))})
        return rows

    def table(self, rows: Sequence[Mapping[str, Any]], thresholds: Sequence[float]) -> str:
        return afsd_table(rows, thresholds)

    def summary(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        first = [r for r in rows if r["classifier"] == self.specs[0].name and r["protocol"] == "all"]
        return {"classifiers": [s.record() for s in self.specs], "video_list": self.video_list,
                "protocols": self.protocols, "best": max(first, key=lambda r: r["average_mAP"])["name"],
                "best_by": f"average mAP, classifier {self.specs[0].name}, protocol all"}


class AfsdFamily:
    """The ActivityNet family (`tallformer.engine.family.Family`)."""

    kind = "afsd"
    title = "ActivityNet"
    example_config = "anet_swin_b"
    summary = (
        "model.kind=afsd (ActivityNet, e.g. --config anet_swin_b): each video decoded at its own "
        "rate times min(data.num_frames / frames, 1) (the original's 768-frame rule, applied on "
        "the fly: a video prepared with `tallformer prepare videos --num-frames 768` keeps its "
        "rate), its first data.num_frames frames (black-padded) in one pass, class-agnostic "
        "soft-NMS proposals labelled by a video-level classifier (tallformer detect: the "
        "detector's own, top-2). tallformer test labels them with the classifier(s) of "
        "--classifier: builtin (the detector's action head, top-2), gt (the ground-truth label: "
        "an oracle upper bound, marked so in the results and the table) or FILE (a classifier "
        "file {\"results\": {video: [scores]}, \"class\": [names]}, e.g. the CUHK ActivityNet-2016 "
        "validation file; top-2); several share one pass. Per checkpoint and classifier "
        "OUT/<name>/<classifier>/results.json (naming its classifier), metrics.json (protocol all) "
        "and, with --videos-list, metrics_list.json. Protocols: 'all' scores against every video of "
        "the subset (ActivityNet-1.3 validation: 4926; videos not tested count as misses); 'list' "
        "against the videos of --videos-list only (e.g. BSN's video_info_new.csv: the 4728 still "
        "downloadable). The table states the protocol of every number."
    )
    test_options: tuple[TestOption, ...] = (
        TestOption("--classifier", nargs="+", metavar="builtin|gt|FILE",
                   help="ActivityNet (model.kind=afsd) only: video-level classifier(s) labelling the "
                        "proposals: builtin (default; the action head's top-2), gt (oracle: the "
                        "ground-truth label, an upper bound) or a classifier FILE "
                        '({"results": {video: [scores]}, "class": [names]}); one results set each'),
        TestOption("--videos-list", metavar="FILE",
                   help="ActivityNet (model.kind=afsd) only: test only these videos (a CSV with a "
                        "'video' column such as BSN's video_info_new.csv, a JSON list or one id per "
                        "line) and score both protocols: all videos of the subset (the untested "
                        "ones count as misses) and the listed ones"),
    )

    def build(self, cfg: Config) -> AFSD:
        from tallformer.models.afsd import build_afsd

        return build_afsd(cfg)

    def inference(self, model: DetectorModel, cfg: Config, device: torch.device, *,
                  reuse_chunks: bool = True) -> AfsdInference:
        from tallformer.models.afsd import AFSD

        if not isinstance(model, AFSD):
            raise InferenceError(f"model.kind={cfg.model.kind}: the one-pass ActivityNet test path runs "
                                 f"the AFSD detector, not a {type(model).__name__}")
        return AfsdInference(model, cfg, device)

    def default_results(self) -> ResultSet:
        """The detector's own classifier (builtin)."""
        return BUILTIN.result_set("builtin")

    def tester(self, cfg: Config, options: Mapping[str, Any]) -> AfsdTester:
        return AfsdTester(self, cfg, options)
