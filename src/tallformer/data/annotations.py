"""Annotations: one in-memory schema and the ActivityNet JSON format on disk.

On disk (the ActivityNet format, which the original release's THUMOS14 JSON also uses,
original: tools/data/thumos14/txt2json.py:39-58)::

    {"database": {video_id: {"subset": "training" | "validation" | "testing" | "test",
                             "duration": seconds, "fps": optional,
                             "annotations": [{"segment": [start_s, end_s], "label": name}],
                             "ambiguous": optional [[start_s, end_s], ...]}}}

- `load_annotations` / `save_annotations` read and write that format, validated: a bad
  entry is an `AnnotationError` naming the file, the video and the entry; usable oddities
  (zero-length instances, instances past the video end) give ONE summary
  `AnnotationWarning` per file.
- `video_fps`: the frame rate a video is decoded at; `subset_frames`: every video's frame
  count at that rate.
- The dataset importers (THUMOS14's txt files, ActivityNet / BSN) are in
  `tallformer.data.importers`; they validate with the helpers of this module.

Standard library only: importing this module pulls in neither torch nor numpy.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tallformer.atomic import write_text
from tallformer.errors import TallformerError, TallformerWarning, name_list

if TYPE_CHECKING:
    from tallformer.config import DataConfig

__all__ = [
    "AMBIGUOUS_LABEL",
    "SUBSETS",
    "AnnotationError",
    "AnnotationSet",
    "AnnotationWarning",
    "Instance",
    "VideoAnnotation",
    "check_num_classes",
    "load_annotations",
    "save_annotations",
    "subset_frames",
    "video_fps",
]

SUBSETS = ("training", "validation", "testing", "test")
# THUMOS14 marks hard-to-label stretches "Ambiguous": ignore regions, not a class (the
# original turns them into ignore segments, original: vedatad/datasets/thumos14.py:78-84).
AMBIGUOUS_LABEL = "Ambiguous"
_EXAMPLES = 5  # how many offending items a summary message names


class AnnotationError(TallformerError, ValueError):
    """An annotation file (or its import) is unusable; the message names file, video, entry."""


class AnnotationWarning(TallformerWarning):
    """Usable but suspicious annotations (one summary per file)."""


@dataclass
class Instance:
    """One action instance: `segment` = (start_s, end_s) in seconds, `label` = class name."""

    segment: tuple[float, float]
    label: str


@dataclass
class VideoAnnotation:
    """Everything known about one video. Times in seconds.

    `ambiguous` holds ignore regions (THUMOS14 "Ambiguous"). `fps` is the frame rate of the
    frames the annotation refers to when a preparation step fixed one; None means "use the
    data config's fps" (the nominal fps, with exact decoded frame counts; the original derives
    an fps from metadata, original: vedatad/datasets/thumos14.py:61).
    An instance may have start == end (real files have a few; importers also clip instances
    lying wholly past the video end to (duration, duration)): skip those when training.
    """

    video_id: str
    subset: str
    duration: float | None
    annotations: list[Instance]
    ambiguous: list[tuple[float, float]] = field(default_factory=list)
    fps: float | None = None

    def segments_in_frames(self, fps: float) -> list[tuple[float, float]]:
        """Instance segments as (start, end) frame positions: seconds x fps (as the original,
        original: vedatad/datasets/pipelines/loading.py:204-205)."""
        return [(s * fps, e * fps) for s, e in (inst.segment for inst in self.annotations)]

    def ambiguous_in_frames(self, fps: float) -> list[tuple[float, float]]:
        """Ignore regions as (start, end) frame positions: seconds x fps."""
        return [(s * fps, e * fps) for s, e in self.ambiguous]

    def label_ids(self, classes: list[str]) -> list[int]:
        """Index of each instance's label in `classes`; an unknown label is an error."""
        index = {name: i for i, name in enumerate(classes)}
        ids = []
        for i, inst in enumerate(self.annotations):
            if inst.label not in index:
                raise AnnotationError(
                    f"video {self.video_id!r}, annotations[{i}]: label {inst.label!r} is not "
                    f"one of the {len(classes)} classes ({_preview(classes)}); train and test "
                    "must use the same class list"
                )
            ids.append(index[inst.label])
        return ids


@dataclass
class AnnotationSet:
    """All videos of one annotation file. `classes`: sorted unique labels of all instances."""

    videos: dict[str, VideoAnnotation]
    classes: list[str]
    source: str

    def subset(self, name: str) -> list[VideoAnnotation]:
        """The videos of subset `name`, in file order; an unknown or empty subset is an error."""
        chosen = [v for v in self.videos.values() if v.subset == name]
        if not chosen:
            counts = self.subset_sizes()
            available = ", ".join(f"{k} ({n} videos)" for k, n in counts.items()) or "none"
            raise AnnotationError(
                f"{self.source}: no videos in subset {name!r}; available subsets: {available}. "
                "Set data.train_subset / data.test_subset to one of them"
            )
        return chosen

    def subset_sizes(self) -> dict[str, int]:
        """Number of videos per subset, in order of first appearance."""
        return dict(Counter(v.subset for v in self.videos.values()))


def check_num_classes(aset: AnnotationSet, num_classes: int) -> None:
    """Raise `AnnotationError` unless the annotations have `num_classes` classes (the
    config's ``model.num_classes``): ``FILE has 2 classes but model.num_classes is 5; set
    model.num_classes=2``. `tallformer train` and ``tallformer bank build`` check it first."""
    found = len(aset.classes)
    if found != num_classes:
        raise AnnotationError(f"{aset.source} has {found} classes but model.num_classes is {num_classes}; "
                              f"set model.num_classes={found}")


def video_fps(video: VideoAnnotation, cfg: DataConfig | float) -> float:
    """The frame rate a video is decoded at and its seconds are converted with.

    The annotation's own ``fps`` when a preparation step fixed one (e.g. ActivityNet's
    768-frame videos), else the configured nominal rate: ``cfg.fps`` (``data.fps``) or
    `cfg` itself when it is a number.
    """
    if video.fps:
        return float(video.fps)
    return float(cfg) if isinstance(cfg, (int, float)) else float(cfg.fps)


def subset_frames(aset: AnnotationSet, subset: str, videos_dir: str | os.PathLike[str],
                  fps: DataConfig | float, *, setting: str = "data.videos") -> dict[str, int]:
    """``{video_id: frames}`` of every video of `subset` (file order), counted from the videos.

    Each video (a file or frame folder in `videos_dir`, see `resolve_video`) is counted at
    its `video_fps` (its annotation's own fps, else `fps`: ``data.fps`` or a number), the
    exact number of frames the datasets and the bank builder decode; demux only, no
    decoding. Raises `AnnotationError` for an unknown subset and `VideoError` for a video
    that is missing or unreadable (its hint names `setting`, where the folder was given).
    """
    from tallformer.data.video import open_source, resolve_video

    counts: dict[str, int] = {}
    for video in aset.subset(subset):
        path = resolve_video(Path(videos_dir), video.video_id, setting=setting)
        # the frame size does not change the count (frames are resized only when read)
        source = open_source(path, video_fps(video, fps), (2, 2))
        try:
            counts[video.video_id] = len(source)
        finally:
            source.close()
    return counts


# ----------------------------------------------------------------------------- JSON reading


class _JsonObject(dict):
    """A JSON object that remembers keys it saw twice (json drops all but the last)."""

    duplicates: list[str]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> _JsonObject:
    obj = _JsonObject()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise AnnotationError(f"{what} not found: {path}" + (
            " (it is a folder; pass the JSON file)" if path.is_dir() else ""))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: cannot read {what}: {exc}") from exc
    try:
        return json.loads(text, object_pairs_hook=_pairs_hook)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc


def _check_no_duplicates(obj: Any, where: str, what: str) -> None:
    dups = getattr(obj, "duplicates", None)
    if dups:
        names = ", ".join(repr(d) for d in dict.fromkeys(dups))
        raise AnnotationError(f"{where}: duplicate {what} {names}: each may appear only once")


def _number(value: Any) -> float | None:
    """A finite float from a JSON number or numeric string ("18.6"); None if not numeric."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return out if math.isfinite(out) else None


def _preview(items: Iterable[Any], n: int = _EXAMPLES) -> str:
    """The first `n` items, then ``... and M more``."""
    return name_list(items, n)


@dataclass
class _Findings:
    """Usable oddities collected while reading one file, reported as one warning each."""

    zero_length: list[str] = field(default_factory=list)
    past_end: list[str] = field(default_factory=list)

    def warn(self, source: str) -> None:
        if self.zero_length:
            warnings.warn(
                f"{source}: {len(self.zero_length)} zero-length instance(s) (start == end): "
                f"{_preview(self.zero_length)}; kept (training skips them, evaluation counts "
                "them as ground truth)", AnnotationWarning, stacklevel=3,
            )
        if self.past_end:
            warnings.warn(
                f"{source}: {len(self.past_end)} instance(s) end after their video's duration: "
                f"{_preview(self.past_end)}; kept as they are (re-import to clip them)",
                AnnotationWarning, stacklevel=3,
            )


def _segment(raw: Any, where: str, key: str = "segment") -> tuple[float, float]:
    """Validate one [start, end] pair (seconds); `where` names file, video and entry."""
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        raise AnnotationError(f"{where}: {key!r} must be [start, end] in seconds, got {raw!r}")
    start, end = _number(raw[0]), _number(raw[1])
    if start is None or end is None:
        raise AnnotationError(
            f"{where}: {key!r} {raw!r} is not numeric; use numbers of seconds like [12.5, 18.6]"
        )
    if start < 0 or end < 0:
        raise AnnotationError(f"{where}: negative time in {key!r} {raw!r}; times are seconds >= 0")
    if start > end:
        raise AnnotationError(
            f"{where}: {key!r} start {start} > end {end}; swap them or remove the entry"
        )
    return start, end


def _positive(raw: Any, where: str, key: str) -> float | None:
    if raw is None:
        return None
    value = _number(raw)
    if value is None or value <= 0:
        raise AnnotationError(f"{where}: {key!r} must be a positive number, got {raw!r}")
    return value


def _parse_video(
    video_id: str, entry: Any, source: str, findings: _Findings, *,
    subset: str | None = None, duration_key: str = "duration",
    subsets: tuple[str, ...] = SUBSETS, name: str | None = None,
) -> VideoAnnotation:
    """One `database` entry -> VideoAnnotation. `subset` overrides the entry's (BSN format)."""
    where = f"{source}: video {name or video_id!r}"
    if not video_id:
        raise AnnotationError(f"{source}: empty video id")
    if not isinstance(entry, dict):
        raise AnnotationError(f"{where}: entry must be an object, got {type(entry).__name__}")
    _check_no_duplicates(entry, where, "key")
    if subset is None:
        if "subset" not in entry:
            raise AnnotationError(f"{where}: missing field 'subset' (one of {', '.join(subsets)})")
        subset = entry["subset"]
    if subset not in subsets:
        raise AnnotationError(
            f"{where}: unknown subset {subset!r}; expected one of {', '.join(subsets)}"
        )
    if "annotations" not in entry:
        raise AnnotationError(f"{where}: missing field 'annotations' (a list, may be empty)")
    raw_annotations = entry["annotations"]
    if not isinstance(raw_annotations, list):
        raise AnnotationError(f"{where}: 'annotations' must be a list, got {raw_annotations!r}")
    duration = _positive(entry.get(duration_key), where, duration_key)
    fps = _positive(entry.get("fps"), where, "fps")
    instances, ambiguous = _parse_instances(raw_annotations, video_id, where, duration, findings)
    raw_ambiguous = entry.get("ambiguous", [])
    if not isinstance(raw_ambiguous, list):
        raise AnnotationError(f"{where}: 'ambiguous' must be a list of [start, end] pairs")
    for i, raw in enumerate(raw_ambiguous):
        ambiguous.append(_segment(raw, f"{where}, ambiguous[{i}]", key="ambiguous"))
    return VideoAnnotation(video_id, subset, duration, instances, ambiguous, fps)


def _parse_instances(
    raw_annotations: list[Any], video_id: str, where: str, duration: float | None,
    findings: _Findings,
) -> tuple[list[Instance], list[tuple[float, float]]]:
    """A video's `annotations` list -> (instances, ignore regions labelled "Ambiguous")."""
    instances: list[Instance] = []
    ambiguous: list[tuple[float, float]] = []
    for i, raw in enumerate(raw_annotations):
        at = f"{where}, annotations[{i}]"
        if not isinstance(raw, dict):
            raise AnnotationError(f"{at}: must be an object with 'segment' and 'label'")
        _check_no_duplicates(raw, at, "key")
        for key in ("segment", "label"):
            if key not in raw:
                raise AnnotationError(f"{at}: missing field {key!r}")
        label = raw["label"]
        if not isinstance(label, str) or not label.strip():
            raise AnnotationError(f"{at}: 'label' must be a non-empty string, got {label!r}")
        start, end = _segment(raw["segment"], at)
        if label == AMBIGUOUS_LABEL:
            # The original's THUMOS14 JSON lists ignore regions as label "Ambiguous"
            # (original: tools/data/thumos14/txt2json.py:28-31): ours keeps them apart.
            ambiguous.append((start, end))
            continue
        if start == end and start != duration:  # == duration: clipped at import, reported then
            findings.zero_length.append(f"{video_id}[{i}]")
        if duration is not None and end > duration:
            findings.past_end.append(f"{video_id}[{i}] ({end} > {duration})")
        instances.append(Instance((start, end), label))
    return instances, ambiguous


def _classes(videos: Iterable[VideoAnnotation]) -> list[str]:
    return sorted({inst.label for v in videos for inst in v.annotations})


def _parse_database(root: Any, source: str) -> AnnotationSet:
    if not isinstance(root, dict) or not isinstance(root.get("database"), dict):
        hint = ""
        if isinstance(root, dict) and any(
            isinstance(v, dict) and "duration_second" in v for v in list(root.values())[:10]
        ):
            hint = (" It looks like BSN's anet_anno_action.json: convert it with "
                    "'tallformer prepare anet --annotations FILE --video-info CSV --out OUT.json'.")
        if isinstance(root, dict):
            keys = _preview(list(root)[:_EXAMPLES]) or "an empty object"
        else:
            keys = type(root).__name__
        raise AnnotationError(
            f"{source}: not an ActivityNet-format annotation file: expected a top-level object "
            f"with a 'database' object (found: {keys}).{hint}"
        )
    database = root["database"]
    _check_no_duplicates(database, f"{source}: 'database'", "video id")
    findings = _Findings()
    videos = {
        str(vid): _parse_video(str(vid), entry, source, findings)
        for vid, entry in database.items()
    }
    findings.warn(source)
    return AnnotationSet(videos, _classes(videos.values()), source)


def load_annotations(path: str | os.PathLike[str]) -> AnnotationSet:
    """Read and validate an ActivityNet-format annotation JSON (format: module docstring).

    Segments may be numbers or numeric strings. Annotations labelled "Ambiguous" (the
    original release's THUMOS14 JSON) become ignore regions. Errors name file, video, entry.
    """
    path = Path(path)
    return _parse_database(_read_json(path, "annotation file"), str(path))


def _to_json(aset: AnnotationSet) -> dict[str, Any]:
    database: dict[str, Any] = {}
    for vid, v in aset.videos.items():
        entry: dict[str, Any] = {"subset": v.subset}
        if v.duration is not None:
            entry["duration"] = v.duration
        if v.fps is not None:
            entry["fps"] = v.fps
        entry["annotations"] = [
            {"segment": [float(inst.segment[0]), float(inst.segment[1])], "label": inst.label}
            for inst in v.annotations
        ]
        if v.ambiguous:
            entry["ambiguous"] = [[float(s), float(e)] for s, e in v.ambiguous]
        database[vid] = entry
    return {"version": "tallformer annotations 1", "database": database}


def save_annotations(aset: AnnotationSet, path: str | os.PathLike[str]) -> None:
    """Write `aset` as ActivityNet JSON (indent 1), atomically (`tallformer.atomic`).

    The content is validated first (same rules as `load_annotations`), so a file this
    function writes always loads.
    """
    path = Path(path)
    obj = _to_json(aset)
    for vid, v in aset.videos.items():
        if vid != v.video_id:
            raise AnnotationError(f"{aset.source}: video stored under key {vid!r} has "
                                  f"video_id {v.video_id!r}; they must match")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationWarning)
        _parse_database(obj, f"{aset.source} (being saved to {path})")
    write_text(path, json.dumps(obj, indent=1) + "\n")
