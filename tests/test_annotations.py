"""Tests for tallformer.data.annotations, tallformer.data.importers and `tallformer prepare
thumos14|anet`."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from helpers import REFERENCE_DATA
from tallformer.cli import main
from tallformer.data.annotations import (
    AnnotationError,
    AnnotationSet,
    AnnotationWarning,
    Instance,
    VideoAnnotation,
    load_annotations,
    save_annotations,
)
from tallformer.data.importers import (
    THUMOS14_CLASSES,
    THUMOS14_MISLABELLED,
    import_activitynet,
    import_thumos14,
)
from tallformer.errors import TallformerError, TallformerWarning

# The real annotation files (THUMOS14, ActivityNet) beside the repository (helpers.REFERENCE_DATA).
REF = REFERENCE_DATA
THUMOS = REF / "thumos14"
TH14_INFO = THUMOS / "TH14_video_info.json"
ANET = REF / "activitynet"
needs_reference = pytest.mark.skipif(not THUMOS.is_dir(), reason="reference data not present")


def _import_thumos(**kwargs: Any) -> tuple[AnnotationSet, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aset = import_thumos14(THUMOS, **kwargs)
    return aset, [w for w in caught if issubclass(w.category, AnnotationWarning)]


def _count(aset: AnnotationSet, subset: str) -> tuple[int, int]:
    videos = aset.subset(subset)
    return len(videos), sum(len(v.annotations) for v in videos)


# ----------------------------------------------------------------------------- THUMOS14 real


@needs_reference
def test_thumos14_real_files_counts_and_clipping() -> None:
    aset, caught = _import_thumos(video_info=TH14_INFO)
    assert _count(aset, "validation") == (200, 3007)
    assert _count(aset, "test") == (212, 3358)
    assert aset.classes == list(THUMOS14_CLASSES)
    assert list(aset.videos) == sorted(aset.videos)
    assert "video_test_0001292" not in aset.videos  # ambiguous-only video is left out
    # Ambiguous lines are ignore regions, never a class.
    assert all(i.label != "Ambiguous" for v in aset.videos.values() for i in v.annotations)
    assert sum(len(v.ambiguous) for v in aset.subset("validation")) == 89
    assert len(aset.videos["video_test_0000278"].ambiguous) >= 2
    # ONE warning counts the clipped instances: 26 in 3 test videos (+4 in 2 val videos).
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "test: 26 in 3 video(s)" in msg
    assert "validation: 4 in 2 video(s)" in msg
    for vid in ("video_test_0000270", "video_test_0000814", "video_test_0001081"):
        assert vid in msg
    info = json.loads(TH14_INFO.read_text())
    for v in aset.videos.values():
        assert v.duration == info[v.video_id]["duration"]
        assert all(0 <= i.segment[0] <= i.segment[1] <= v.duration for i in v.annotations)
    v814 = aset.videos["video_test_0000814"]
    assert sum(i.segment[1] == v814.duration for i in v814.annotations) == 3
    # CliffDiving + Diving double labels stay under both classes (217 in test).
    doubles = 0
    for v in aset.subset("test"):
        diving = {i.segment for i in v.annotations if i.label == "Diving"}
        doubles += sum(i.label == "CliffDiving" and i.segment in diving for i in v.annotations)
    assert doubles == 217


@needs_reference
def test_thumos14_drop_mislabelled() -> None:
    aset, _ = _import_thumos(video_info=TH14_INFO, drop_mislabelled=True)
    assert len(aset.subset("test")) == 210
    assert not set(THUMOS14_MISLABELLED) & set(aset.videos)
    assert len(aset.subset("validation")) == 200


@needs_reference
def test_thumos14_one_split_folder_and_no_durations(tmp_path: Path) -> None:
    for f in (THUMOS / "annotations_test").iterdir():
        shutil.copy(f, tmp_path / f.name)
    with pytest.warns(AnnotationWarning, match="no durations"):
        aset = import_thumos14(tmp_path)
    assert aset.subset_sizes() == {"test": 212}
    assert _count(aset, "test") == (212, 3358)
    assert all(v.duration is None for v in aset.videos.values())
    # Without durations nothing is clipped: the far-out instances keep their times.
    assert max(i.segment[1] for i in aset.videos["video_test_0000270"].annotations) == 713.7


@needs_reference
def test_thumos14_round_trip(tmp_path: Path) -> None:
    aset, _ = _import_thumos(video_info=TH14_INFO)
    out = tmp_path / "sub" / "thumos14.json"
    save_annotations(aset, out)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnotationWarning)  # clipped zero-length: no re-warning
        loaded = load_annotations(out)
    assert loaded.videos == aset.videos
    assert loaded.classes == aset.classes
    raw = json.loads(out.read_text())
    entry = raw["database"]["video_test_0000278"]
    assert set(entry) == {"subset", "duration", "annotations", "ambiguous"}
    assert entry["subset"] == "test"


# ----------------------------------------------------------------------------- THUMOS14 synthetic


def _thumos_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "th14"
    for name, text in files.items():
        split = "val" if name.endswith("_val.txt") else "test"
        folder = root / f"annotations_{split}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return root


def test_thumos14_small_dir_with_info(tmp_path: Path) -> None:
    root = _thumos_dir(tmp_path, {
        "Diving_val.txt": "vid_b  1.0 2.0\nvid_a 3.0  4.5\n\n",
        "Ambiguous_val.txt": "vid_a 0.0 0.5\nvid_c 1.0 2.0\n",
        "Shotput_test.txt": "tvid 5 9.5\n",
    })
    info = tmp_path / "info.json"
    info.write_text(json.dumps({"vid_a": {"duration": 10}, "vid_b": {"duration": 1.5},
                                "tvid": {"duration": 8.0}}))
    with pytest.warns(AnnotationWarning, match=r"2 instance\(s\) end after"):
        aset = import_thumos14(root, video_info=info)
    assert list(aset.videos) == ["tvid", "vid_a", "vid_b"]
    assert aset.videos["vid_a"].ambiguous == [(0.0, 0.5)]
    assert aset.videos["vid_b"].annotations == [Instance((1.0, 1.5), "Diving")]
    assert aset.videos["tvid"].annotations == [Instance((5.0, 8.0), "Shotput")]
    assert aset.classes == ["Diving", "Shotput"]
    assert aset.videos["vid_a"].segments_in_frames(15.0) == [(45.0, 67.5)]
    assert aset.videos["vid_a"].ambiguous_in_frames(2.0) == [(0.0, 1.0)]
    assert aset.videos["tvid"].label_ids(aset.classes) == [1]
    with pytest.raises(AnnotationError, match="'Shotput' is not one of"):
        aset.videos["tvid"].label_ids(["Diving"])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("v1 1.0 2.0\nv2 3.0\n", r"Diving_val\.txt, line 2: expected 'video start end'"),
        ("v1 1.0 2.0 3.0\n", r"line 1: expected 'video start end'"),
        ("v1 1.0 abc\n", r"line 1 \(video 'v1'\): 'start end' .* is not numeric"),
        ("\nv1 5.0 2.0\n", r"line 2 \(video 'v1'\): 'start end' start 5.0 > end 2.0"),
        ("v1 -1.0 2.0\n", r"line 1 \(video 'v1'\): negative time"),
    ],
)
def test_thumos14_bad_lines(tmp_path: Path, text: str, match: str) -> None:
    root = _thumos_dir(tmp_path, {"Diving_val.txt": text})
    with pytest.raises(AnnotationError, match=match):
        import_thumos14(root)


def test_thumos14_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="folder not found"):
        import_thumos14(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnnotationError, match="no THUMOS14 annotation files"):
        import_thumos14(tmp_path / "empty")
    root = _thumos_dir(tmp_path, {"Diving_val.txt": "v1 1 2\n", "Diving_test.txt": "v1 3 4\n"})
    with pytest.raises(AnnotationError, match="'v1' is also in subset 'validation'"):
        import_thumos14(root)
    root = _thumos_dir(tmp_path / "b", {"Diving_val.txt": "v1 1 2\nv2 1 2\nv3 1 2\n"})
    info = tmp_path / "info.json"
    info.write_text(json.dumps({"v1": {"duration": 5}}))
    with pytest.raises(AnnotationError, match=r"info\.json: no entry for 2 annotated video\(s\): v2, v3"):
        import_thumos14(root, video_info=info)
    info.write_text('{"v1": {"duration": 5}, "v2": {"fps": 30}, "v3": {"duration": 1}}')
    with pytest.raises(AnnotationError, match="video 'v2': missing field 'duration'"):
        import_thumos14(root, video_info=info)
    info.write_text('{"v1": {"duration": 5}, "v2": {"duration": 5}, "v1": {"duration": 1}}')
    with pytest.raises(AnnotationError, match="duplicate video id 'v1'"):
        import_thumos14(root, video_info=info)
    with pytest.raises(AnnotationError, match="not both"):
        import_thumos14(root, video_info=info, videos_dir=tmp_path)
    wrong = tmp_path / "c" / "annotations_val"
    wrong.mkdir(parents=True)
    (wrong / "Diving_test.txt").write_text("v1 1 2\n")
    with pytest.raises(AnnotationError, match="move it to the matching folder"):
        import_thumos14(tmp_path / "c")


def test_thumos14_durations_from_videos(tmp_path: Path) -> None:
    video = pytest.importorskip("tallformer.data.video")
    av = pytest.importorskip("av")
    import numpy as np

    videos = tmp_path / "videos"
    videos.mkdir()
    for name, seconds in (("va", 2), ("vb", 3)):
        with av.open(str(videos / f"{name}.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
            for i in range(10 * seconds):
                frame = np.full((32, 32, 3), i * 5 % 255, np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    root = _thumos_dir(tmp_path, {"Diving_val.txt": "va 0.5 1.0\nvb 1.0 9.0\n"})
    with pytest.warns(AnnotationWarning, match=r"1 instance\(s\) end after"):
        aset = import_thumos14(root, videos_dir=videos)
    for vid, seconds in (("va", 2.0), ("vb", 3.0)):
        expected = video.probe_video(videos / f"{vid}.mp4").duration
        assert aset.videos[vid].duration == pytest.approx(expected)
        assert aset.videos[vid].duration == pytest.approx(seconds, abs=0.15)
    assert aset.videos["vb"].annotations[0].segment[1] == aset.videos["vb"].duration
    root = _thumos_dir(tmp_path / "m", {"Diving_val.txt": "va 0.5 1.0\nvc 1 2\n"})
    with pytest.raises(AnnotationError, match=r"cannot read the duration of 1 annotated video\(s\): vc") as err:
        import_thumos14(root, videos_dir=videos)
    # the hint names the option this importer's user has, not the config key data.videos
    assert "--videos" in str(err.value)
    assert "data.videos" not in str(err.value)
    with pytest.raises(AnnotationError, match=r"videos folder not found: .*nowhere \(--videos\)"):
        import_thumos14(root, videos_dir=tmp_path / "nowhere")


# ----------------------------------------------------------------------------- load / save


def _db(**videos: Any) -> dict[str, Any]:
    return {"version": "x", "database": videos}


def _good_video() -> dict[str, Any]:
    return {"subset": "validation", "duration": 20.0,
            "annotations": [{"segment": [1.0, 2.0], "label": "A"},
                            {"segment": [3.0, 6.5], "label": "B"}]}


def _write(tmp_path: Path, obj: Any, name: str = "gt.json") -> Path:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_load_save_round_trip_all_fields(tmp_path: Path) -> None:
    aset = AnnotationSet(
        videos={
            "x1": VideoAnnotation("x1", "training", 12.5, [Instance((0.0, 3.25), "run"),
                                                           Instance((4.0, 4.5), "jump")],
                                  [(5.0, 6.0)], fps=15.0),
            "x0": VideoAnnotation("x0", "testing", None, [], []),
        },
        classes=["jump", "run"], source="memory",
    )
    path = tmp_path / "out.json"
    save_annotations(aset, path)
    loaded = load_annotations(path)
    assert loaded.videos == aset.videos
    assert list(loaded.videos) == ["x1", "x0"]  # file order kept
    assert loaded.classes == ["jump", "run"]
    assert loaded.source == str(path)
    assert loaded.subset("training")[0].fps == 15.0
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_load_numeric_strings_zero_length_and_original_ambiguous(tmp_path: Path) -> None:
    video = _good_video()
    video["annotations"] += [{"segment": ["18.6", "19.0"], "label": "A"},
                             {"segment": [4, 4], "label": "B"},
                             {"segment": [7, 8], "label": "Ambiguous"}]
    path = _write(tmp_path, _db(v1=video))
    with pytest.warns(AnnotationWarning, match=r"gt\.json: 1 zero-length instance\(s\).*v1\[3\]"):
        aset = load_annotations(path)
    v = aset.videos["v1"]
    assert v.annotations[2] == Instance((18.6, 19.0), "A")
    assert v.ambiguous == [(7.0, 8.0)]  # original release's "Ambiguous" label -> ignore region
    assert aset.classes == ["A", "B"]


def test_load_warns_past_end(tmp_path: Path) -> None:
    video = _good_video()
    video["annotations"].append({"segment": [18, 21], "label": "A"})
    with pytest.warns(AnnotationWarning, match=r"1 instance\(s\) end after.*v1\[2\]"):
        aset = load_annotations(_write(tmp_path, _db(v1=video)))
    assert aset.videos["v1"].annotations[2].segment == (18.0, 21.0)  # load never edits


def _mutate(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    video = _good_video()
    target: Any = video
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return _db(v0=_good_video(), v1=video)


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (("annotations", 1, "segment"), [6.5, 3.0], r"annotations\[1\]: 'segment' start 6.5 > end 3.0"),
        (("annotations", 1, "segment"), [-1, 3.0], r"annotations\[1\]: negative time"),
        (("annotations", 0, "segment"), ["a", 3.0], r"annotations\[0\]: 'segment' .* is not numeric"),
        (("annotations", 0, "segment"), [True, 3.0], r"annotations\[0\]: 'segment' .* is not numeric"),
        (("annotations", 0, "segment"), [1.0], r"annotations\[0\]: 'segment' must be \[start, end\]"),
        (("annotations", 0, "segment"), "NaN", r"annotations\[0\]: 'segment' must be"),
        (("annotations", 1, "segment"), _DELETE, r"annotations\[1\]: missing field 'segment'"),
        (("annotations", 1, "label"), _DELETE, r"annotations\[1\]: missing field 'label'"),
        (("annotations", 1, "label"), "", r"annotations\[1\]: 'label' must be a non-empty"),
        (("annotations", 1), [1, 2], r"annotations\[1\]: must be an object"),
        (("subset",), "train", r"unknown subset 'train'; expected one of training, validation"),
        (("subset",), _DELETE, r"missing field 'subset'"),
        (("annotations",), _DELETE, r"missing field 'annotations'"),
        (("annotations",), {"a": 1}, r"'annotations' must be a list"),
        (("duration",), "long", r"'duration' must be a positive number"),
        (("duration",), -5, r"'duration' must be a positive number"),
        (("fps",), 0, r"'fps' must be a positive number"),
        (("ambiguous",), [[3, 1]], r"ambiguous\[0\]: 'ambiguous' start 3.0 > end 1.0"),
    ],
)
def test_load_bad_entries(tmp_path: Path, path: tuple[Any, ...], value: Any, match: str) -> None:
    file = _write(tmp_path, _mutate(path, value))
    with pytest.raises(AnnotationError, match=r"gt\.json: video 'v1'.*" + match):
        load_annotations(file)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"database": {"v1": ' + json.dumps(_good_video()) + ', "v1": {}}}',
         r"gt\.json: 'database': duplicate video id 'v1'"),
        ('{"database": {"v1": {"subset": "test", "subset": "validation", "annotations": []}}}',
         r"video 'v1': duplicate key 'subset'"),
        ('{"database": {"v1": {"subset": "test", "annotations": [{"segment": [1, 2], "label": "a",'
         ' "label": "b"}]}}}', r"video 'v1', annotations\[0\]: duplicate key 'label'"),
        ('{"database": {"v1": ', r"gt\.json: not valid JSON \(line 1"),
        ('{"results": {}}', r"gt\.json: not an ActivityNet-format annotation file.*results"),
        ('[1, 2]', r"not an ActivityNet-format annotation file"),
        ('{"database": {"v1": 3}}', r"video 'v1': entry must be an object"),
        ('{"v_abc": {"duration_second": 3, "annotations": []}}', r"prepare anet"),
    ],
)
def test_load_bad_files(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(AnnotationError, match=match):
        load_annotations(_write(tmp_path, text))


def test_load_missing_file_and_subset_errors(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match=r"annotation file not found: .*nope\.json"):
        load_annotations(tmp_path / "nope.json")
    aset = load_annotations(_write(tmp_path, _db(v1=_good_video())))
    assert [v.video_id for v in aset.subset("validation")] == ["v1"]
    with pytest.raises(AnnotationError, match=r"no videos in subset 'training'; available "
                                              r"subsets: validation \(1 videos\)"):
        aset.subset("training")


def test_save_rejects_invalid_set(tmp_path: Path) -> None:
    bad = AnnotationSet({"v": VideoAnnotation("v", "validation", 5.0, [Instance((3, 1), "a")], [])},
                        ["a"], "memory")
    with pytest.raises(AnnotationError, match=r"video 'v', annotations\[0\]: 'segment' start"):
        save_annotations(bad, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()
    bad = AnnotationSet({"v": VideoAnnotation("w", "bogus", None, [], [])}, [], "memory")
    with pytest.raises(AnnotationError, match="key 'v' has video_id 'w'"):
        save_annotations(bad, tmp_path / "out.json")


# ----------------------------------------------------------------------------- ActivityNet


@needs_reference
def test_activitynet_real_bsn_files() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aset = import_activitynet(ANET / "anet_anno_action.json",
                                  video_info_csv=ANET / "video_info_new.csv")
    assert len(aset.classes) == 200
    assert aset.subset_sizes() == {"training": 9649, "validation": 4728, "testing": 4851}
    # BSN prefixes every id with "v_"; stored ids are the official 11-character ones
    # (two real YouTube ids themselves start with "v_").
    assert all(len(vid) == 11 for vid in aset.videos)
    assert "v_UmAH95xls" in aset.videos
    assert "QOlSCBRmfWY" in aset.videos
    assert all(not v.annotations for v in aset.subset("testing"))
    assert all(v.annotations for v in aset.subset("validation"))
    for v in aset.videos.values():
        assert all(i.segment[1] <= v.duration for i in v.annotations)
    messages = [str(w.message) for w in caught if issubclass(w.category, AnnotationWarning)]
    assert len(messages) == 2  # one zero-length summary, one clipping summary
    assert any("12 zero-length" in m for m in messages)
    assert any("215 instance(s) end after" in m for m in messages)
    # The official sample submission's videos are validation videos, ids without "v_".
    sample = json.loads((ANET / "sample_detection_prediction.json").read_text())["results"]
    assert len(set(sample) & set(aset.videos)) >= 4000


def _official(videos: dict[str, Any]) -> dict[str, Any]:
    return {"version": "VERSION 1.3", "taxonomy": [], "database": videos}


def _anet_video(subset: str = "training", label: str = "Run") -> dict[str, Any]:
    return {"subset": subset, "duration": "30.5", "resolution": "640x360", "url": "u",
            "annotations": [{"segment": ["2.0", 29.0], "label": label}]}


def test_activitynet_official_format_and_videos_report(tmp_path: Path) -> None:
    ids = ["aaaaaaaaaaa", "v_bbbbbbbbbbb", "ccccccccccc", "ddddddddddd"]
    videos = {vid: _anet_video() for vid in ids}
    videos["ddddddddddd"] = {"subset": "testing", "duration": 10, "annotations": []}
    path = _write(tmp_path, _official(videos))
    on_disk = tmp_path / "videos"
    on_disk.mkdir()
    for name in ("v_aaaaaaaaaaa.mp4", "bbbbbbbbbbb.mkv", "eeeeeeeeeee.webm", "notes.txt"):
        (on_disk / name).write_bytes(b"")
    (on_disk / "ddddddddddd").mkdir()  # a frame folder counts as present
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aset = import_activitynet(path, videos_dir=on_disk)
    messages = [str(w.message) for w in caught if issubclass(w.category, AnnotationWarning)]
    assert list(aset.videos) == ["aaaaaaaaaaa", "bbbbbbbbbbb", "ccccccccccc", "ddddddddddd"]
    assert aset.videos["aaaaaaaaaaa"].annotations == [Instance((2.0, 29.0), "Run")]
    assert aset.videos["aaaaaaaaaaa"].duration == 30.5
    class_warning = [m for m in messages if "1 classes" in m]
    disk_warning = [m for m in messages if "missing" in m]
    assert len(class_warning) == 1
    assert len(disk_warning) == 1
    assert len(messages) == 2
    assert "1 annotated video(s) are missing (training: 1 of 3" in disk_warning[0]
    assert "ccccccccccc" in disk_warning[0]
    assert "1 video(s) on disk are not in the annotations (e.g. eeeeeeeeeee.webm)" in disk_warning[0]
    out = tmp_path / "out.json"
    save_annotations(aset, out)
    assert load_annotations(out).videos == aset.videos


def test_activitynet_bad_inputs(tmp_path: Path) -> None:
    dup = _official({"aaaaaaaaaaa": _anet_video(), "v_aaaaaaaaaaa": _anet_video()})
    with pytest.raises(AnnotationError, match="'v_aaaaaaaaaaa' is listed twice"):
        import_activitynet(_write(tmp_path, dup))
    with pytest.raises(AnnotationError, match=r"video 'aaaaaaaaaaa': unknown subset 'test'"):
        import_activitynet(_write(tmp_path, _official({"aaaaaaaaaaa": _anet_video("test")})))
    bad = _anet_video()
    bad["annotations"].append({"segment": [9, 3], "label": "Run"})
    with pytest.raises(AnnotationError, match=r"'aaaaaaaaaaa', annotations\[1\]: 'segment' start 9"):
        import_activitynet(_write(tmp_path, _official({"aaaaaaaaaaa": bad})))
    with pytest.raises(AnnotationError, match="ActivityNet annotation file not found"):
        import_activitynet(tmp_path / "missing.json")
    with pytest.raises(AnnotationError, match="neither the official ActivityNet format"):
        import_activitynet(_write(tmp_path, {"results": {"a": []}}))
    bsn = {"v_aaaaaaaaaaa": {"duration_second": 30.0, "annotations": []},
           "v_bbbbbbbbbbb": {"duration_second": 12.0,
                             "annotations": [{"segment": [1, 2], "label": "Run"}]}}
    bsn_path = _write(tmp_path, bsn, "bsn.json")
    with pytest.raises(AnnotationError, match=r"carry no subsets; pass .*--video-info"):
        import_activitynet(bsn_path)
    csv_path = tmp_path / "info.csv"

    def write_csv(rows: list[dict[str, str]], fields: tuple[str, ...] = ("video", "seconds", "subset")) -> None:
        with csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(fields))
            writer.writeheader()
            writer.writerows(rows)

    write_csv([{"video": "v_aaaaaaaaaaa", "seconds": "30", "subset": "training"}])
    with pytest.raises(AnnotationError, match="video 'v_bbbbbbbbbbb' has no row in"):
        import_activitynet(bsn_path, video_info_csv=csv_path)
    write_csv([{"video": "v_aaaaaaaaaaa", "seconds": "30", "subset": "train"}])
    with pytest.raises(AnnotationError, match=r"info\.csv, line 2: unknown subset 'train'"):
        import_activitynet(bsn_path, video_info_csv=csv_path)
    write_csv([{"video": "v_aaaaaaaaaaa", "seconds": "30"}], fields=("video", "seconds"))
    with pytest.raises(AnnotationError, match="missing column 'subset'"):
        import_activitynet(bsn_path, video_info_csv=csv_path)
    write_csv([{"video": "v_aaaaaaaaaaa", "seconds": "30", "subset": "training"},
               {"video": "v_bbbbbbbbbbb", "seconds": "12", "subset": "validation"}])
    with pytest.warns(AnnotationWarning, match="1 classes"):
        aset = import_activitynet(bsn_path, video_info_csv=csv_path)
    assert aset.subset_sizes() == {"training": 1, "validation": 1}
    assert aset.videos["bbbbbbbbbbb"].annotations == [Instance((1.0, 2.0), "Run")]
    with pytest.raises(AnnotationError, match="videos folder not found"):
        import_activitynet(bsn_path, video_info_csv=csv_path, videos_dir=tmp_path / "none")


def test_empty_files_are_errors(tmp_path: Path) -> None:
    # `{}` is no annotation file at all (not "BSN annotations without subsets")
    with pytest.raises(AnnotationError, match=r"gt\.json: not an annotation file: an empty JSON"):
        import_activitynet(_write(tmp_path, {}))
    with pytest.raises(AnnotationError, match=r"not an ActivityNet-format .*found: an empty object"):
        load_annotations(_write(tmp_path, {}))
    # an official-format file without videos: nothing to write
    with pytest.raises(AnnotationError, match="'database' object holds no videos"):
        import_activitynet(_write(tmp_path, _official({})))
    # THUMOS14 txt files without one class instance (only Ambiguous lines, or empty)
    root = _thumos_dir(tmp_path, {"Ambiguous_val.txt": "v1 1 2\n", "Diving_val.txt": "\n"})
    with pytest.raises(AnnotationError, match="hold no instance of any class"):
        import_thumos14(root)


def test_errors_and_warnings_are_tallformer_ones() -> None:
    assert issubclass(AnnotationError, TallformerError)
    assert issubclass(AnnotationError, ValueError)  # kept for callers that catch ValueError
    assert issubclass(AnnotationWarning, TallformerWarning)
    assert issubclass(AnnotationWarning, UserWarning)


def test_save_writes_indented_ascii_json(tmp_path: Path) -> None:
    aset = AnnotationSet(
        {"v1": VideoAnnotation("v1", "validation", 4.5, [Instance((1.0, 2.0), "Sauté")],
                               [(3, 4)], fps=15.0)},
        ["Sauté"], "memory",
    )
    path = tmp_path / "gt.json"
    save_annotations(aset, path)
    assert path.read_bytes() == (
        b'{\n "version": "tallformer annotations 1",\n "database": {\n  "v1": {\n'
        b'   "subset": "validation",\n   "duration": 4.5,\n   "fps": 15.0,\n'
        b'   "annotations": [\n    {\n     "segment": [\n      1.0,\n      2.0\n     ],\n'
        b'     "label": "Saut\\u00e9"\n    }\n   ],\n   "ambiguous": [\n    [\n     3.0,\n'
        b'     4.0\n    ]\n   ]\n  }\n }\n}\n'
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt.json"]  # no temp file left


# ----------------------------------------------------------------------------- CLI


def _run_cli_without_torch(args: list[str]) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\nfrom tallformer.cli import main\n"
        f"rc = main({args!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "sys.exit(rc)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@needs_reference
def test_cli_prepare_thumos14(tmp_path: Path) -> None:
    out = tmp_path / "th14.json"
    proc = _run_cli_without_torch(["prepare", "thumos14", "--annotations", str(THUMOS),
                                   "--video-info", str(TH14_INFO), "--drop-mislabelled",
                                   "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "validation: 200 videos, 3007 instances" in proc.stdout
    assert "test: 210 videos" in proc.stdout
    assert "20 classes" in proc.stdout
    assert proc.stderr.count("warning:") == 1
    assert "clipped" in proc.stderr
    database = json.loads(out.read_text())["database"]
    assert len(database) == 410
    assert sum(len(v["annotations"]) for v in database.values() if v["subset"] == "validation") == 3007


@needs_reference
def test_cli_prepare_anet(tmp_path: Path) -> None:
    out = tmp_path / "anet.json"
    proc = _run_cli_without_torch(["prepare", "anet", "--annotations",
                                   str(ANET / "anet_anno_action.json"), "--video-info",
                                   str(ANET / "video_info_new.csv"), "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "validation: 4728 videos" in proc.stdout
    assert "200 classes" in proc.stdout
    loaded = json.loads(out.read_text())["database"]
    assert sum(v["subset"] == "validation" for v in loaded.values()) == 4728


def test_cli_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _thumos_dir(tmp_path, {"Diving_val.txt": "v1 1 2\nbroken\n"})
    out = tmp_path / "out.json"
    assert main(["prepare", "thumos14", "--annotations", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "Diving_val.txt, line 2" in err
    assert not out.exists()
    assert main(["prepare", "anet", "--annotations", str(tmp_path / "x.json"),
                 "--out", str(out)]) == 2
    assert "ActivityNet annotation file not found" in capsys.readouterr().err
    empty = _write(tmp_path, _official({}), "empty.json")
    assert main(["prepare", "anet", "--annotations", str(empty), "--out", str(out)]) == 2
    assert "holds no videos" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):  # --videos and --video-info exclude each other
        main(["prepare", "thumos14", "--annotations", str(root), "--videos", "a",
              "--video-info", "b", "--out", str(out)])


def test_prepare_anet_takes_each_videos_own_fps_from_prepare_videos(tmp_path: Path) -> None:
    """Videos re-encoded to 768 frames each have their own rate: `prepare videos` records it
    in meta.json and `prepare anet --videos` writes it into the annotations."""
    from tallformer.data.importers import import_activitynet

    db = {"database": {
        "aaa": {"subset": "training", "duration": 100.0,
                  "annotations": [{"segment": [1.0, 5.0], "label": "Run"}]},
        "bbb": {"subset": "validation", "duration": 10.0,
                  "annotations": [{"segment": [1.0, 2.0], "label": "Run"}]},
    }}
    src = tmp_path / "anet.json"
    src.write_text(json.dumps(db))
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("v_aaa", "bbb"):  # files named with or without the v_ prefix
        (videos / f"{name}.mp4").write_bytes(b"")
    (videos / "meta.json").write_text(json.dumps({"kind": "videos", "videos": {
        "v_aaa": {"file": "v_aaa.mp4", "fps": 7.68, "num_frames": 768},
        "bbb": {"file": "bbb.mp4", "fps": 30.0, "num_frames": 300}}}))
    aset = import_activitynet(src, videos_dir=videos)
    assert aset.videos["aaa"].fps == pytest.approx(7.68)
    assert aset.videos["bbb"].fps == pytest.approx(30.0)
    assert import_activitynet(src).videos["aaa"].fps is None  # no videos folder: no rate
