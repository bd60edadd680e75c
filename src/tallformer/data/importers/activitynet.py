"""ActivityNet-1.3: the official JSON or BSN's files -> one `AnnotationSet`.

`import_activitynet` reads the official ``activity_net.v1-3.min.json`` or BSN's
``anet_anno_action.json`` (with ``video_info_new.csv`` for the subsets), validates it and
stores the video ids without the ``v_`` prefix (the official ids, which results files use).
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections import Counter
from pathlib import Path

from tallformer.data.annotations import (
    AnnotationError,
    AnnotationSet,
    AnnotationWarning,
    VideoAnnotation,
    _check_no_duplicates,
    _classes,
    _Findings,
    _number,
    _parse_video,
    _preview,
    _read_json,
)
from tallformer.data.importers.common import clip_to_durations, warn_clipped

__all__ = ["ACTIVITYNET_NUM_CLASSES", "ACTIVITYNET_SUBSETS", "import_activitynet"]

ACTIVITYNET_SUBSETS = ("training", "validation", "testing")
ACTIVITYNET_NUM_CLASSES = 200
_EXAMPLES = 5  # how many top-level keys a "not an annotation file" message names
_FORMATS = ("the official activity_net.v1-3.min.json ({'database': {id: {'subset', "
            "'duration', 'annotations'}}}) or BSN's anet_anno_action.json ({'v_<id>': "
            "{'duration_second', 'annotations'}})")


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
    from tallformer.data.video import VIDEO_EXTENSIONS

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
        elif ext.lower() not in VIDEO_EXTENSIONS:
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


def _entries(root: object, source: str, info: dict[str, tuple[str, float | None]] | None
             ) -> tuple[dict[str, object], bool]:
    """The video entries of an ActivityNet file and whether it is BSN's format."""
    if not isinstance(root, dict):
        raise AnnotationError(f"{source}: expected a JSON object, got {type(root).__name__}")
    if isinstance(root.get("database"), dict):
        entries, bsn = root["database"], False
        _check_no_duplicates(entries, f"{source}: 'database'", "video id")
        if not entries:
            raise AnnotationError(f"{source}: the 'database' object holds no videos; nothing "
                                  "to write (is this the right file?)")
    else:
        entries, bsn = root, True
        if not entries:
            raise AnnotationError(f"{source}: not an annotation file: an empty JSON object; "
                                  f"expected {_FORMATS}")
        _check_no_duplicates(entries, source, "video id")
        sample = next(iter(entries.values()), None)
        if not (isinstance(sample, dict) and "duration_second" in sample):
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
    return entries, bsn


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
    entries, bsn = _entries(root, source, info)

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
    warn_clipped(source, *clip_to_durations(videos.values()))
    classes = _classes(videos.values())
    if len(classes) != ACTIVITYNET_NUM_CLASSES:
        warnings.warn(
            f"{source}: {len(classes)} classes, ActivityNet-1.3 has {ACTIVITYNET_NUM_CLASSES}; "
            "fine for a subset of it, otherwise check the file", AnnotationWarning, stacklevel=2,
        )
    if videos_dir is not None:
        _report_videos_on_disk(source, Path(videos_dir), videos)
        _frame_rates_from_prepare(Path(videos_dir), videos)
    return AnnotationSet(videos, classes, source)


def _frame_rates_from_prepare(videos_dir: Path, videos: dict[str, VideoAnnotation]) -> None:
    """Each video's own frame rate from `tallformer prepare videos`' ``meta.json``.

    Videos re-encoded to 768 frames (``--num-frames 768``, the original's transform:
    tools/data/anet/transform_videos.py:31-45) each have their own rate; with it in the
    annotations, training and testing turn seconds into frames of the file as it is.
    """
    meta_path = videos_dir / "meta.json"
    if not meta_path.is_file():
        return
    try:
        entries = json.loads(meta_path.read_text()).get("videos", {})
    except (OSError, ValueError, AttributeError):
        return
    for name, entry in entries.items():
        vid = name[:-4] if name.endswith(".mp4") else name
        for key in (vid, vid[2:] if vid.startswith("v_") else f"v_{vid}"):
            if key in videos and isinstance(entry, dict) and entry.get("fps"):
                videos[key].fps = float(entry["fps"])
                break
