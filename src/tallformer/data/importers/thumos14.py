"""THUMOS14: the original per-class txt files -> one `AnnotationSet`.

`import_thumos14` reads ``annotations_val/<Class>_val.txt`` and
``annotations_test/<Class>_test.txt`` (lines ``video start end`` in seconds), as the
original's converter does (original: tools/data/thumos14/txt2json.py:24-58), with our
decisions: "Ambiguous" lines become per-video ignore regions, videos come in sorted order
(the original's order depends on the file system, original: txt2json.py:29-40), and with
durations, instances past a video's end are clipped.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from tallformer.data.annotations import (
    AMBIGUOUS_LABEL,
    AnnotationError,
    AnnotationSet,
    AnnotationWarning,
    Instance,
    VideoAnnotation,
    _check_no_duplicates,
    _classes,
    _Findings,
    _positive,
    _preview,
    _read_json,
    _segment,
)
from tallformer.data.importers.common import clip_to_durations, warn_clipped

__all__ = ["THUMOS14_CLASSES", "THUMOS14_MISLABELLED", "import_thumos14"]

# The 20 classes, alphabetical; a label is its index here (original:
# vedatad/datasets/thumos14.py:16-37).
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
        raise AnnotationError(f"videos folder not found: {videos_dir} (--videos)")
    out: dict[str, float] = {}
    failed: list[str] = []
    for vid in tqdm(needed, desc="probing videos", unit="video", leave=False):
        try:
            path = resolve_video(videos_dir, vid, setting="the videos folder (--videos)")
            out[vid] = float(probe_video(path).duration)
        except (VideoError, OSError) as exc:  # every failure is reported together below
            failed.append(f"{vid} ({exc})")
    if failed:
        raise AnnotationError(
            f"{videos_dir}: cannot read the duration of {len(failed)} annotated video(s): "
            f"{_preview(failed, 3)}; put the videos there or pass --video-info FILE instead"
        )
    return out


def _read_videos(root: Path, findings: _Findings) -> dict[str, VideoAnnotation]:
    """Every txt file of every split -> {video: VideoAnnotation} (no durations yet).

    A video is kept when it has at least one non-ambiguous instance; its "Ambiguous" lines
    become its sorted ignore regions.
    """
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
        if video in videos:  # videos with only ambiguous regions are left out
            videos[video].ambiguous = sorted(regions)
    return videos


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
    videos = _read_videos(root, findings)
    if drop_mislabelled:
        for video in THUMOS14_MISLABELLED:
            videos.pop(video, None)
    ids = sorted(videos)
    source = str(root)
    if not ids:
        raise AnnotationError(
            f"{source}: the THUMOS14 annotation files hold no instance of any class (only "
            "empty or 'Ambiguous' lines); nothing to write"
        )
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
    warn_clipped(source, *clip_to_durations(out.values()))
    return AnnotationSet(out, _classes(out.values()), source)
