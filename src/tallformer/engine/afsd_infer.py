"""The ActivityNet test path (``model.kind: afsd``): one pass per video, class-agnostic
proposals, video-level label fusion and the two evaluation protocols (original:
AFSD/anet_video_cls/test.py, AFSD/anet_video_cls/eval.py).

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
   the video-level classifier (`label_proposals`, `tallformer.models.afsd_fusion.fuse_video`):
   ``builtin`` (the action head's top-2), a classifier FILE (its top-2) or ``gt`` (the
   ground-truth label: an oracle, an upper bound); best first.

The proposals of a video are computed once and labelled by every requested classifier
(`infer_afsd_subset`), as the original writes its builtin / cuhk / gt results from one pass.

Protocols (`evaluate_afsd`): ``all`` scores against every video of the subset in the
ground truth (ActivityNet-1.3 validation: 4,926 videos; a video without detections, e.g.
one no longer downloadable and so not tested, counts as misses); ``list`` against the
videos of a list file only (`load_video_list`; e.g. BSN's ``video_info_new.csv``: the
4,728 validation videos still downloadable). A number is comparable only under the same
protocol.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from tallformer.config import Config
from tallformer.engine.device import amp_dtype_for
from tallformer.engine.infer import RESULTS_VERSION, Detection, InferenceError, _as_list
from tallformer.errors import TallformerWarning, name_list
from tallformer.models.afsd_fusion import (
    VideoClassifier,
    fuse_video,
    load_video_classifier,
)
from tallformer.models.outputs import Detections

if TYPE_CHECKING:
    from tallformer.data.annotations import AnnotationSet, VideoAnnotation
    from tallformer.data.video import FrameSource
    from tallformer.models.afsd import AFSD

__all__ = [
    "ClassifierSpec",
    "afsd_clip",
    "afsd_proposals",
    "afsd_results_json",
    "decode_rate",
    "evaluate_afsd",
    "infer_afsd_subset",
    "label_proposals",
    "load_video_list",
    "parse_classifier",
    "unique_names",
]

ClassifierKind = Literal["builtin", "gt", "file"]


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
    seen: set[str] = set()
    out = []
    for spec in specs:
        name, k = spec.name, 1
        while name in seen:
            k += 1
            name = f"{spec.name}_{k}"
        seen.add(name)
        out.append(ClassifierSpec(spec.kind, name, spec.source))
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


def _autocast(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    amp = amp_dtype_for(cfg.train.amp, device)
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp)


def afsd_proposals(model: AFSD, cfg: Config, source: FrameSource, *,
                   device: torch.device | None = None) -> tuple[Detections, Tensor, int]:
    """One video through the detector: (class-agnostic proposals in video frames, soft-NMS'd
    and clipped to the frames used, on the CPU; the action head's softmax ``[K + 1]``
    (index 0 background); the number of frames used, ``min(len(source), T)``).

    The model must be in eval mode (not changed here); the caller closes `source`."""
    device = device if device is not None else next(model.parameters()).device
    n = min(len(source), cfg.data.num_frames)
    if n < 1:
        raise InferenceError(f"{source.path}: the video has no frames")
    clip = afsd_clip(source.read(0, n), cfg)
    with torch.no_grad(), _autocast(cfg, device):
        outputs = model.forward_infer(clip[None].to(device, non_blocking=True))
        (proposals,) = model.predict(outputs, lengths=[n], offsets=[0])
        probs = model.action_probs(outputs)[0]
    return (Detections(proposals.segments.float().cpu(), proposals.scores.float().cpu(),
                       proposals.labels.cpu()), probs.float().cpu(), n)


def label_proposals(proposals: Detections, fps: float, duration: float | None,
                    classifier: Literal["builtin", "gt"] | VideoClassifier, *,
                    action_probs: Tensor | None = None, video_id: str | None = None,
                    gt_label: int | None = None, top_k: int = 2,
                    include_background: bool = False) -> Detections:
    """Proposals in video frames -> labelled detections in seconds, best first.

    Seconds = frames / `fps`, clipped to [0, `duration`] (None: not clipped), empty segments
    dropped (original: AFSD/anet_video_cls/test.py:197-209); then every proposal times the
    video labels of `classifier` (`tallformer.models.afsd_fusion.fuse_video`), sorted by
    descending score (ties keep proposal order)."""
    if fps <= 0:
        raise ValueError(f"label_proposals: fps must be > 0, got {fps}")
    segs = proposals.segments / fps
    if duration is not None:
        segs = segs.clamp(min=0.0, max=float(duration))
    keep = segs[:, 1] > segs[:, 0]
    seconds = Detections(segs[keep], proposals.scores[keep], proposals.labels[keep])
    fused = fuse_video(seconds, classifier, action_probs=action_probs, video_id=video_id,
                       gt_label=gt_label, top_k=top_k, include_background=include_background)
    order = torch.sort(fused.scores, descending=True, stable=True).indices
    return Detections(fused.segments[order], fused.scores[order], fused.labels[order])


# --------------------------------------------------------------------------- a subset


def _gt_label(video: VideoAnnotation, index: Mapping[str, int]) -> int | None:
    """The oracle's video label: the first instance's class (original:
    AFSD/anet_video_cls/test.py:210-241), None when it has none of ours."""
    if not video.annotations:
        return None
    return index.get(video.annotations[0].label)


def _duration(video: VideoAnnotation, path: Path, n_decoded: int, fps: float) -> float:
    if video.duration:
        return float(video.duration)
    if path.is_file():
        from tallformer.data.video import probe_video
        from tallformer.errors import TallformerError

        with contextlib.suppress(TallformerError):
            return float(probe_video(path).duration)
    return n_decoded / fps


def _resolve_paths(videos_dir: str, video_ids: Sequence[str], listed: bool) -> dict[str, Path]:
    """Every tested video's file or frame folder; one error naming the missing ones."""
    from tallformer.data.video import VideoError, resolve_video

    paths: dict[str, Path] = {}
    missing: list[str] = []
    for vid in video_ids:
        try:
            paths[vid] = resolve_video(videos_dir, vid)
        except VideoError:
            if not Path(videos_dir).is_dir():
                raise
            missing.append(vid)
    if missing:
        hint = ("the list names videos that are not there" if listed else
                "to test only the videos you have, pass --videos-list FILE (e.g. BSN's "
                "video_info_new.csv); the others then count as misses under protocol 'all'")
        raise InferenceError(f"{len(missing)} of {len(video_ids)} test videos are not in "
                             f"data.videos={videos_dir} ({name_list(missing, 5)}); {hint}")
    return paths


def infer_afsd_subset(cfg: Config, model: AFSD, annotations: AnnotationSet, subset: str, *,
                      classes: Sequence[str], classifiers: Sequence[ClassifierSpec],
                      video_ids: Sequence[str] | None = None, device: torch.device | None = None,
                      progress: bool = True, desc: str = "test") -> dict[str, dict[str, list[Detection]]]:
    """Detections of the videos of `subset` (file order; only `video_ids` when given) under
    every classifier: ``{classifier name: {video_id: [Detection]}}``. Each video goes
    through the model once. The model must be in eval mode."""
    from tqdm import tqdm

    from tallformer.data.video import open_source

    if cfg.data.videos is None:
        raise InferenceError("data.videos is not set: give the folder of the test videos, "
                             "e.g. data.videos=data/anet/videos")
    if not classifiers:
        raise InferenceError("no video-level classifier given (builtin, gt or a FILE)")
    names = list(classes)
    index = {c: i for i, c in enumerate(names)}
    videos = annotations.subset(subset)
    if video_ids is not None:
        wanted = set(video_ids)
        videos = [v for v in videos if v.video_id in wanted]
    paths = _resolve_paths(str(cfg.data.videos), [v.video_id for v in videos], video_ids is not None)
    files: dict[str, VideoClassifier] = {
        spec.name: load_video_classifier(spec.source, names) for spec in classifiers
        if spec.kind == "file" and spec.source is not None}
    a = cfg.model.afsd
    device = device if device is not None else next(model.parameters()).device
    size = (int(cfg.data.frame_size[0]), int(cfg.data.frame_size[1]))
    results: dict[str, dict[str, list[Detection]]] = {spec.name: {} for spec in classifiers}
    no_label: list[str] = []
    bar = tqdm(videos, desc=desc, unit="video", disable=not progress or None, leave=False)
    try:
        for video in bar:
            path = paths[video.video_id]
            fps = decode_rate(path, cfg.data.num_frames, video.fps, cfg.data.fps)
            source = open_source(path, fps, size)
            try:
                proposals, probs, _ = afsd_proposals(model, cfg, source, device=device)
                decoded = len(source)
            finally:
                source.close()
                del source
            duration = _duration(video, path, decoded, fps)
            gt = _gt_label(video, index)
            for spec in classifiers:
                if spec.kind == "gt" and gt is None:
                    no_label.append(video.video_id)
                    results[spec.name][video.video_id] = []
                    continue
                mode: Literal["builtin", "gt"] | VideoClassifier = (
                    files[spec.name] if spec.kind == "file" else spec.kind)
                dets = label_proposals(proposals, fps, duration, mode, action_probs=probs,
                                       video_id=video.video_id, gt_label=gt, top_k=a.classifier_top_k,
                                       include_background=a.builtin_includes_background)
                results[spec.name][video.video_id] = _as_list(dets, names)
    finally:
        bar.close()
        gc.collect()  # no PyAV decoder may be left for a later fork to free
    if no_label:
        warnings.warn(f"{len(no_label)} test videos have no instance of a known class, so the "
                      f"gt classifier gives them no detections ({name_list(no_label, 3)})",
                      TallformerWarning, stacklevel=2)
    return results


def afsd_results_json(results: Mapping[str, Sequence[Detection]], spec: ClassifierSpec) -> dict[str, Any]:
    """ActivityNet results JSON (what `tallformer eval` reads) that names its classifier:
    ``"classifier"`` (`ClassifierSpec.record`, a key the evaluator ignores) and the official
    ``"external_data"`` (``used``: a classifier file or the oracle's labels)."""
    return {
        "version": RESULTS_VERSION,
        "results": {vid: [d.as_dict() for d in dets] for vid, dets in results.items()},
        "external_data": {"used": spec.kind != "builtin", "details": f"video labels: {spec.describe()}"},
        "classifier": spec.record(),
    }


# --------------------------------------------------------------------------- evaluation


def _ground_truth(annotations: AnnotationSet | str | os.PathLike[str]) -> tuple[AnnotationSet, Any]:
    """(the AnnotationSet, the ground truth to score against: the file when given a path,
    so the numbers equal `tallformer eval --gt FILE`)."""
    from tallformer.data.annotations import load_annotations

    if isinstance(annotations, (str, os.PathLike)):
        return load_annotations(annotations), Path(annotations)
    return annotations, annotations


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


def _score(gt: Any, data: Mapping[str, Any] | Path, thresholds: Sequence[float], subset: str) -> dict[str, Any]:
    from tallformer.evaluation import EvaluationWarning, evaluate

    with warnings.catch_warnings():
        # detections of classes the subset has no instance of cannot score (as the THUMOS14 test)
        warnings.filterwarnings("ignore", message=r".*dropped \d+ predictions whose label",
                                category=EvaluationWarning)
        return evaluate(gt, data, thresholds, subset, ignore_unknown_labels=True)


def evaluate_afsd(cfg: Config, model: AFSD, annotations: AnnotationSet | str | os.PathLike[str],
                  subset: str | None = None, out_dir: str | os.PathLike[str] | None = None, *,
                  classifiers: Sequence[ClassifierSpec] = (ClassifierSpec("builtin", "builtin"),),
                  video_list: str | os.PathLike[str] | None = None, classes: Sequence[str] | None = None,
                  device: torch.device | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the ActivityNet test path over `subset` and score it under each classifier and
    protocol.

    Args:
        cfg: the run's config (``data.videos``, ``data.num_frames``, ``test.*``,
            ``model.afsd.classifier_top_k`` / ``builtin_includes_background``).
        model: the detector (a DDP wrapper is unwrapped); put in eval mode for the run and
            given back in the mode it had.
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

    inner: AFSD = getattr(model, "module", model)
    aset, gt = _ground_truth(annotations)
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
    was_training = inner.training
    inner.eval()
    try:
        found = infer_afsd_subset(cfg, inner, aset, subset,
                                  classes=list(classes) if classes is not None else list(aset.classes),
                                  classifiers=classifiers, video_ids=listed, device=device,
                                  progress=progress)
    finally:
        inner.train(was_training)
    thresholds = list(cfg.test.tiou_thresholds)
    list_gt = _restricted(gt, aset, listed) if listed is not None else None
    out: dict[str, Any] = {"subset": subset, "protocols": protocols, "classifiers": {}}
    for spec in classifiers:
        data = afsd_results_json(found[spec.name], spec)
        pred: Any = data
        where = Path(out_dir) / spec.name if out_dir is not None else None
        if where is not None:
            # scored from the written file: the numbers (and the evaluator's messages) are
            # those of `tallformer eval --pred OUT/<name>/results.json`
            where.mkdir(parents=True, exist_ok=True)
            write_json(where / "results.json", data)
            pred = where / "results.json"
        metrics = {"all": _score(gt, pred, thresholds, subset)}
        if list_gt is not None:
            metrics["list"] = _score(list_gt, pred, thresholds, subset)
        out["classifiers"][spec.name] = {"classifier": spec.record(), "metrics": metrics, "results": data}
        if where is not None:
            write_json(where / "metrics.json", metrics["all"])
            if "list" in metrics:
                write_json(where / "metrics_list.json", metrics["list"])
    return out
