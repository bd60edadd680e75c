"""Annotations: one in-memory schema, the ActivityNet JSON format on disk, two importers.

On disk (design.md §4)::

    {"database": {video_id: {"subset": "training" | "validation" | "testing" | "test",
                             "duration": seconds, "fps": optional,
                             "annotations": [{"segment": [start_s, end_s], "label": name}],
                             "ambiguous": optional [[start_s, end_s], ...]}}}

- `load_annotations` / `save_annotations` read and write that format, validated: a bad
  entry is an `AnnotationError` naming the file, the video and the entry; usable oddities
  (zero-length instances, instances past the video end) give ONE summary
  `AnnotationWarning` per file.
- `import_thumos14` converts the original THUMOS14 per-class txt files (spec
  memory-data-training §1.2, with our decisions: "Ambiguous" lines become per-video ignore
  regions, videos in sorted order, instances past the video end clipped).
- `import_activitynet` converts ActivityNet-1.3 annotations: the official
  `activity_net.v1-3.min.json` or BSN's `anet_anno_action.json` (+ `video_info_new.csv`).

Standard library only: importing this module pulls in neither torch nor numpy.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ACTIVITYNET_NUM_CLASSES",
    "ACTIVITYNET_SUBSETS",
    "AMBIGUOUS_LABEL",
    "SUBSETS",
    "THUMOS14_CLASSES",
    "THUMOS14_MISLABELLED",
    "AnnotationError",
    "AnnotationSet",
    "AnnotationWarning",
    "Instance",
    "VideoAnnotation",
    "import_activitynet",
    "import_thumos14",
    "load_annotations",
    "save_annotations",
]

SUBSETS = ("training", "validation", "testing", "test")
ACTIVITYNET_SUBSETS = ("training", "validation", "testing")
ACTIVITYNET_NUM_CLASSES = 200
# THUMOS14 marks hard-to-label stretches "Ambiguous": ignore regions, not a class
# (spec memory-data-training §3, §Oddities 9).
AMBIGUOUS_LABEL = "Ambiguous"
# The 20 classes, alphabetical (spec memory-data-training §3).
THUMOS14_CLASSES = (
    "BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk", "CliffDiving",
    "CricketBowling", "CricketShot", "Diving", "FrisbeeCatch", "GolfSwing", "HammerThrow",
    "HighJump", "JavelinThrow", "LongJump", "PoleVault", "Shotput", "SoccerPenalty",
    "TennisSwing", "ThrowDiscus", "VolleyballSpiking",
)
# Test videos whose annotations do not match the video; G-TAD and AFSD drop them (210 videos).
THUMOS14_MISLABELLED = ("video_test_0000270", "video_test_0001496")
_THUMOS_SPLITS = {  # txt suffix -> (subset name, folder names accepted)
    "val": ("validation", ("annotations_val", "val", "validation")),
    "test": ("test", ("annotations_test", "test")),
}
_THUMOS_FILE = re.compile(r"^(?P<label>[^_\s]+)_(?P<split>val|test)\.txt$")
_VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".wmv", ".3gp"}
)
_EXAMPLES = 5  # how many offending items a summary message names


class AnnotationError(ValueError):
    """An annotation file (or its import) is unusable; the message names file, video, entry."""


class AnnotationWarning(UserWarning):
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
    data config's fps" (design.md §8: nominal fps, exact decoded frame counts).
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
        """Instance segments as (start, end) frame positions: seconds x fps (spec §0)."""
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
    items = list(items)
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


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
            # (spec memory-data-training §1.2, §3): ours keeps them apart.
            ambiguous.append((start, end))
            continue
        if start == end and start != duration:  # == duration: clipped at import, reported then
            findings.zero_length.append(f"{video_id}[{i}]")
        if duration is not None and end > duration:
            findings.past_end.append(f"{video_id}[{i}] ({end} > {duration})")
        instances.append(Instance((start, end), label))

    raw_ambiguous = entry.get("ambiguous", [])
    if not isinstance(raw_ambiguous, list):
        raise AnnotationError(f"{where}: 'ambiguous' must be a list of [start, end] pairs")
    for i, raw in enumerate(raw_ambiguous):
        ambiguous.append(_segment(raw, f"{where}, ambiguous[{i}]", key="ambiguous"))
    return VideoAnnotation(video_id, subset, duration, instances, ambiguous, fps)


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
        keys = _preview(list(root)[:_EXAMPLES]) if isinstance(root, dict) else type(root).__name__
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
    """Read and validate an ActivityNet-format annotation JSON (design.md §4).

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
    """Write `aset` as ActivityNet JSON, atomically (temp file, then rename).

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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- clipping


def _clip_to_durations(videos: Iterable[VideoAnnotation]) -> tuple[dict[str, Counter], int, int]:
    """Clip instances and ignore regions to [0, duration] in place.

    Returns (per subset: Counter video -> clipped instances, instances that became
    zero-length, ignore regions dropped because they lie past the end).
    """
    clipped: dict[str, Counter] = {}
    emptied = dropped_ambiguous = 0
    for v in videos:
        if v.duration is None:
            continue
        d = v.duration
        for inst in v.annotations:
            s, e = inst.segment
            if e > d:
                clipped.setdefault(v.subset, Counter())[v.video_id] += 1
                inst.segment = (min(s, d), d)
                emptied += s >= d
        kept = [(s, min(e, d)) for s, e in v.ambiguous if s < d]
        dropped_ambiguous += len(v.ambiguous) - len(kept)
        v.ambiguous = kept
    return clipped, emptied, dropped_ambiguous


def _warn_clipped(source: str, clipped: dict[str, Counter], emptied: int,
                  dropped_ambiguous: int) -> None:
    total = sum(sum(c.values()) for c in clipped.values())
    if not total and not dropped_ambiguous:
        return
    parts = [
        f"{subset}: {sum(c.values())} in {len(c)} video(s) ({_preview(sorted(c))})"
        for subset, c in clipped.items()
    ]
    msg = (f"{source}: {total} instance(s) end after their video's end and were clipped to it"
           + (f" [{'; '.join(parts)}]" if parts else ""))
    if emptied:
        msg += (f"; {emptied} of them start at or after the end and are now zero-length at the "
                "end: kept so that the counts match the official ground truth (training skips "
                "them; evaluation counts them as missed, as the official evaluation does)")
    if dropped_ambiguous:
        msg += f"; {dropped_ambiguous} ambiguous region(s) past the end dropped"
    warnings.warn(msg, AnnotationWarning, stacklevel=3)


# ----------------------------------------------------------------------------- THUMOS14


def _thumos_split_files(root: Path) -> dict[str, list[tuple[str, Path]]]:
    """subset -> [(label, txt file)], from `annotations_val/`, `annotations_test/` or files in root."""
    if not root.is_dir():
        raise AnnotationError(
            f"THUMOS14 annotation folder not found: {root} (expected a folder holding "
            "annotations_val/ and annotations_test/ with files like BaseballPitch_val.txt)"
        )

    def class_files(folder: Path, split: str | None) -> dict[str, list[tuple[str, Path]]]:
        found: dict[str, list[tuple[str, Path]]] = {}
        for path in sorted(folder.iterdir()):
            m = _THUMOS_FILE.match(path.name)
            if not m or not path.is_file():
                continue  # readme.txt and friends
            if split is not None and m["split"] != split:
                raise AnnotationError(
                    f"{path}: a '_{m['split']}.txt' file in the {split} folder {folder}; "
                    f"move it to the matching folder"
                )
            subset = _THUMOS_SPLITS[m["split"]][0]
            found.setdefault(subset, []).append((m["label"], path))
        return found

    splits: dict[str, list[tuple[str, Path]]] = {}
    for split, (subset, names) in _THUMOS_SPLITS.items():
        for name in names:
            folder = root / name
            if folder.is_dir():
                files = class_files(folder, split).get(subset)
                if files:
                    splits[subset] = files
                    break
    if not splits:
        splits = class_files(root, None)
    if not splits:
        raise AnnotationError(
            f"no THUMOS14 annotation files in {root}: expected annotations_val/ and "
            "annotations_test/ holding <Class>_val.txt / <Class>_test.txt (lines "
            "'video start end'), or such files directly in the folder"
        )
    return splits


def _read_thumos_txt(path: Path, findings: _Findings) -> list[tuple[str, float, float, int]]:
    """Lines `video start end` (seconds, whitespace-separated) -> [(video, start, end, line)]."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: cannot read: {exc}") from exc
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}, line {lineno}"
        if len(fields) != 3:
            raise AnnotationError(
                f"{where}: expected 'video start end' (3 fields, seconds), got {line.strip()!r}"
            )
        video = fields[0]
        start, end = _segment(fields[1:], f"{where} (video {video!r})", key="start end")
        if start == end:
            findings.zero_length.append(f"{video} ({path.name} line {lineno})")
        rows.append((video, start, end, lineno))
    return rows


def _durations_from_info(path: Path, needed: list[str]) -> dict[str, float]:
    info = _read_json(path, "video-info file")
    if not isinstance(info, dict):
        raise AnnotationError(f"{path}: expected an object {{video: {{'duration': s, ...}}}}")
    _check_no_duplicates(info, str(path), "video id")
    missing = [v for v in needed if v not in info]
    if missing:
        raise AnnotationError(
            f"{path}: no entry for {len(missing)} annotated video(s): {_preview(missing)}; "
            "add them ({video: {'duration': seconds}}) or use --videos DIR to read durations "
            "from the videos"
        )
    out = {}
    for vid in needed:
        entry = info[vid]
        where = f"{path}: video {vid!r}"
        if not isinstance(entry, dict) or "duration" not in entry:
            raise AnnotationError(f"{where}: missing field 'duration' (seconds)")
        value = _positive(entry["duration"], where, "duration")
        assert value is not None
        out[vid] = value
    return out


def _durations_from_videos(videos_dir: Path, needed: list[str]) -> dict[str, float]:
    from tqdm import tqdm

    from tallformer.data.video import VideoError, probe_video, resolve_video

    if not videos_dir.is_dir():
        raise AnnotationError(f"videos folder not found: {videos_dir}")
    out: dict[str, float] = {}
    failed: list[str] = []
    for vid in tqdm(needed, desc="probing videos", unit="video", leave=False):
        try:
            out[vid] = float(probe_video(resolve_video(videos_dir, vid)).duration)
        except (VideoError, OSError) as exc:  # every failure is reported together below
            failed.append(f"{vid} ({exc})")
    if failed:
        raise AnnotationError(
            f"{videos_dir}: cannot read the duration of {len(failed)} annotated video(s): "
            f"{_preview(failed, 3)}; put the videos there or pass --video-info FILE instead"
        )
    return out


def import_thumos14(
    annotations_dir: str | os.PathLike[str], *,
    video_info: str | os.PathLike[str] | None = None,
    videos_dir: str | os.PathLike[str] | None = None,
    drop_mislabelled: bool = False,
) -> AnnotationSet:
    """Convert the original THUMOS14 per-class txt files into one AnnotationSet.

    `annotations_dir` holds `annotations_val/` and `annotations_test/` (or directly the
    `<Class>_val.txt` / `<Class>_test.txt` files of one split). Subsets `validation` and
    `test`; a video is kept when it has at least one non-ambiguous instance (real data:
    200 validation videos / 3,007 instances, 212 test videos / 3,358 instances, 20
    classes). "Ambiguous" lines become per-video ignore regions. Durations come from
    `video_info` (JSON `{video: {"duration": s}}`) or from the videos in `videos_dir`;
    with them, instances past a video's end are clipped (one warning counts them).
    `drop_mislabelled` removes THUMOS14_MISLABELLED (the G-TAD / AFSD protocol).
    Videos sorted by id; instances sorted by (start, end, label).
    """
    if video_info is not None and videos_dir is not None:
        raise AnnotationError("give durations either from a video-info file or from the "
                              "videos folder, not both")
    root = Path(annotations_dir)
    findings = _Findings()
    videos: dict[str, VideoAnnotation] = {}
    ambiguous: dict[tuple[str, str], list[tuple[float, float]]] = {}
    first_seen: dict[str, str] = {}  # video -> subset, to catch a video in two splits
    for subset, files in _thumos_split_files(root).items():
        for label, path in files:
            for video, start, end, lineno in _read_thumos_txt(path, findings):
                other = first_seen.setdefault(video, subset)
                if other != subset:
                    raise AnnotationError(
                        f"{path}, line {lineno}: video {video!r} is also in subset {other!r}; "
                        "a video id may belong to one split only"
                    )
                if label == AMBIGUOUS_LABEL:
                    ambiguous.setdefault((subset, video), []).append((start, end))
                    continue
                if video not in videos:
                    videos[video] = VideoAnnotation(video, subset, None, [], [])
                videos[video].annotations.append(Instance((start, end), label))
    for (_, video), regions in ambiguous.items():
        if video in videos:  # videos with only ambiguous regions are left out (§1.1)
            videos[video].ambiguous = sorted(regions)

    if drop_mislabelled:
        for video in THUMOS14_MISLABELLED:
            videos.pop(video, None)
    ids = sorted(videos)
    source = str(root)
    if video_info is not None:
        durations = _durations_from_info(Path(video_info), ids)
    elif videos_dir is not None:
        durations = _durations_from_videos(Path(videos_dir), ids)
    else:
        durations = {}
        warnings.warn(
            f"{source}: no durations (pass a video-info file or the videos folder): the JSON "
            "has no 'duration' and instances past a video's end are not clipped",
            AnnotationWarning, stacklevel=2,
        )
    out: dict[str, VideoAnnotation] = {}
    for vid in ids:
        v = videos[vid]
        v.duration = durations.get(vid)
        v.annotations.sort(key=lambda inst: (inst.segment, inst.label))
        out[vid] = v
    findings.warn(source)
    _warn_clipped(source, *_clip_to_durations(out.values()))
    return AnnotationSet(out, _classes(out.values()), source)


# ----------------------------------------------------------------------------- ActivityNet


def _strip_v(video_id: str, always: bool) -> str:
    """`v_<11-char YouTube id>` -> the id; `always`: BSN files prefix every id."""
    if video_id.startswith("v_") and (always or len(video_id) == 13):
        return video_id[2:]
    return video_id


def _read_video_info_csv(path: Path) -> dict[str, tuple[str, float | None]]:
    """BSN's video_info_new.csv -> {id without v_: (subset, seconds or None)}."""
    if not path.is_file():
        raise AnnotationError(f"video-info CSV not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            for needed in ("video", "subset"):
                if needed not in columns:
                    raise AnnotationError(
                        f"{path}: missing column {needed!r} (columns: {', '.join(columns)}); "
                        "expected BSN's video_info_new.csv (video,numFrame,seconds,fps,rfps,"
                        "subset,featureFrame)"
                    )
            out: dict[str, tuple[str, float | None]] = {}
            for row in reader:
                where = f"{path}, line {reader.line_num}"
                vid = _strip_v((row["video"] or "").strip(), always=False)
                if not vid:
                    raise AnnotationError(f"{where}: empty 'video'")
                if vid in out:
                    raise AnnotationError(f"{where}: duplicate video {row['video']!r}")
                subset = (row["subset"] or "").strip()
                if subset not in ACTIVITYNET_SUBSETS:
                    raise AnnotationError(f"{where}: unknown subset {subset!r}; expected one "
                                          f"of {', '.join(ACTIVITYNET_SUBSETS)}")
                seconds = _number(row.get("seconds")) if row.get("seconds") else None
                out[vid] = (subset, seconds)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AnnotationError(f"{path}: cannot read CSV: {exc}") from exc
    return out


def _files_on_disk(videos_dir: Path) -> dict[str, str]:
    """id (without v_) -> file or folder name, for every video file / frame folder."""
    if not videos_dir.is_dir():
        raise AnnotationError(f"videos folder not found: {videos_dir}")
    found: dict[str, str] = {}
    for entry in os.scandir(videos_dir):
        name = entry.name
        if name.startswith("."):
            continue
        stem, ext = os.path.splitext(name)
        if entry.is_dir():
            stem = name
        elif ext.lower() not in _VIDEO_EXTENSIONS:
            continue
        found.setdefault(_strip_v(stem, always=False), name)
    return found


def _report_videos_on_disk(source: str, videos_dir: Path,
                           videos: dict[str, VideoAnnotation]) -> None:
    on_disk = _files_on_disk(videos_dir)
    missing = [v for v in videos if v not in on_disk]
    extra = sorted(name for vid, name in on_disk.items() if vid not in videos)
    if not missing and not extra:
        return
    parts = []
    if missing:
        per_subset = Counter(videos[v].subset for v in missing)
        sizes = Counter(v.subset for v in videos.values())
        detail = ", ".join(f"{s}: {n} of {sizes[s]}" for s, n in per_subset.items())
        parts.append(f"{len(missing)} annotated video(s) are missing ({detail}; e.g. "
                     f"{_preview(missing)})")
    if extra:
        parts.append(f"{len(extra)} video(s) on disk are not in the annotations "
                     f"(e.g. {_preview(extra)})")
    warnings.warn(
        f"{source} vs {videos_dir}: {'; '.join(parts)}. The JSON keeps every annotated video "
        "(evaluation needs the full ground truth); download the missing ones or expect "
        "the data pipeline to report them", AnnotationWarning, stacklevel=3,
    )


def import_activitynet(
    path: str | os.PathLike[str], *,
    video_info_csv: str | os.PathLike[str] | None = None,
    videos_dir: str | os.PathLike[str] | None = None,
) -> AnnotationSet:
    """Read and validate ActivityNet-1.3 annotations into an AnnotationSet.

    `path`: the official `activity_net.v1-3.min.json` (`{"database": {id: {"subset",
    "duration", "annotations"}}}`) or BSN's `anet_anno_action.json` (`{"v_<id>":
    {"duration_second", "annotations", ...}}`, subsets from `video_info_csv`, BSN's
    `video_info_new.csv`). Video ids are stored without the `v_` prefix (the official ids,
    which results files use). Subsets training / validation / testing; a class count other
    than 200 is a warning. Instances past the video end are clipped (one warning). With
    `videos_dir`, videos missing on disk (and files not annotated) give one summary warning.
    """
    path = Path(path)
    source = str(path)
    if videos_dir is not None and not Path(videos_dir).is_dir():
        raise AnnotationError(f"videos folder not found: {videos_dir}")
    root = _read_json(path, "ActivityNet annotation file")
    info = _read_video_info_csv(Path(video_info_csv)) if video_info_csv is not None else None
    if not isinstance(root, dict):
        raise AnnotationError(f"{source}: expected a JSON object, got {type(root).__name__}")
    if isinstance(root.get("database"), dict):
        entries, bsn = root["database"], False
        _check_no_duplicates(entries, f"{source}: 'database'", "video id")
    else:
        entries, bsn = root, True
        _check_no_duplicates(entries, source, "video id")
        sample = next(iter(entries.values()), None)
        if entries and not (isinstance(sample, dict) and "duration_second" in sample):
            raise AnnotationError(
                f"{source}: neither the official ActivityNet format (a 'database' object) nor "
                f"BSN's anet_anno_action.json ({{'v_<id>': {{'duration_second', "
                f"'annotations'}}}}); top-level keys: {_preview(list(entries)[:_EXAMPLES])}"
            )
        if info is None:
            raise AnnotationError(
                f"{source}: BSN-format annotations carry no subsets; pass the matching "
                "video_info_new.csv with --video-info CSV"
            )

    findings = _Findings()
    videos: dict[str, VideoAnnotation] = {}
    for key, entry in entries.items():
        vid = _strip_v(str(key), always=bsn)
        if vid in videos:
            raise AnnotationError(f"{source}: video {key!r} is listed twice (with and without "
                                  "the 'v_' prefix); keep one entry")
        subset = None  # the entry's own subset; BSN entries have none: the CSV's
        if info is not None and (bsn or not (isinstance(entry, dict) and "subset" in entry)):
            if vid in info:
                subset = info[vid][0]
            elif bsn:
                raise AnnotationError(f"{source}: video {key!r} has no row in {video_info_csv}; "
                                      "use the CSV that belongs to this annotation file")
        v = _parse_video(
            vid, entry, source, findings, subset=subset,
            duration_key="duration_second" if bsn else "duration",
            subsets=ACTIVITYNET_SUBSETS, name=str(key),
        )
        if v.duration is None and info is not None and vid in info:
            v.duration = info[vid][1]
        videos[vid] = v
    findings.past_end.clear()  # clipped below, with its own warning
    findings.warn(source)
    videos = {vid: videos[vid] for vid in sorted(videos)}
    _warn_clipped(source, *_clip_to_durations(videos.values()))
    classes = _classes(videos.values())
    if len(classes) != ACTIVITYNET_NUM_CLASSES:
        warnings.warn(
            f"{source}: {len(classes)} classes, ActivityNet-1.3 has {ACTIVITYNET_NUM_CLASSES}; "
            "fine for a subset of it, otherwise check the file", AnnotationWarning, stacklevel=2,
        )
    if videos_dir is not None:
        _report_videos_on_disk(source, Path(videos_dir), videos)
    return AnnotationSet(videos, classes, source)
