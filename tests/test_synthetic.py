"""Synthetic action videos: determinism, annotation validity, visible instances, CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from tallformer.cli import main
from tallformer.data.annotations import load_annotations
from tallformer.data.prepare import PrepareError
from tallformer.data.synthetic import (
    CLASS_COLOURS,
    CLASS_NAMES,
    DRIFT_CLASS_NAMES,
    DRIFT_SPEED,
    DRIFT_VELOCITY,
    MAX_INSTANCE_S,
    MIN_INSTANCE_S,
    TASKS,
    annotation_dict,
    generate_synthetic_dataset,
    plan_dataset,
    render_frames,
)
from tallformer.data.video import iter_frames, probe_video
from tallformer.engine.run_layout import synthetic_dir

SMALL = {"min_length": 8.0, "max_length": 12.0}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic_dataset(out, 4, seed=3, progress=False, **SMALL)


def _coloured_pixels(frames: np.ndarray) -> np.ndarray:
    """Per frame, how many pixels are strongly coloured (max - min channel > 100): [T].

    Class colours are saturated (> 150), the background is muted grey (< 60)."""
    f = frames.astype(np.int16)
    sat = f.max(axis=-1) - f.min(axis=-1)
    return (sat > 100).reshape(len(frames), -1).sum(axis=1)


def test_same_seed_same_files_whatever_the_workers(tmp_path: Path, small_dataset: Path) -> None:
    again = generate_synthetic_dataset(tmp_path, 4, seed=3, workers=2, progress=False, **SMALL)
    assert again.read_bytes() == small_dataset.read_bytes()
    first = sorted((small_dataset.parent / "videos").glob("*.mp4"))
    second = sorted((again.parent / "videos").glob("*.mp4"))
    assert [p.name for p in first] == [p.name for p in second]
    assert len(first) == 4
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    # annotations.json: the plan's JSON, indent 1; no temporary file left anywhere
    plan = plan_dataset(4, 3, **SMALL)
    assert again.read_text() == json.dumps(annotation_dict(plan, 4), indent=1) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotations.json", "videos"]
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [p.name for p in second]
    other = generate_synthetic_dataset(tmp_path / "other", 4, seed=4, progress=False, **SMALL)
    assert other.read_bytes() != small_dataset.read_bytes()


def test_annotations_are_valid_and_match_the_videos(small_dataset: Path) -> None:
    aset = load_annotations(small_dataset)
    raw = json.loads(small_dataset.read_text())["database"]
    assert list(aset.videos) == [f"synth_{i:04d}" for i in range(4)]
    assert [v.subset for v in aset.videos.values()] == ["training"] * 3 + ["validation"]
    assert set(aset.classes) <= set(CLASS_NAMES[:4])
    for vid, video in aset.videos.items():
        info = probe_video(small_dataset.parent / "videos" / f"{vid}.mp4")
        assert (info.height, info.width) == (64, 64)
        assert info.fps == pytest.approx(15.0)
        assert info.num_frames == round(video.duration * 15)
        assert 8.0 - 1e-6 <= video.duration <= 12.0 + 1e-6
        assert raw[vid]["fps"] == 15.0
        assert video.annotations, f"{vid} has no instance"
        previous_end = 0.0
        for inst in sorted(video.annotations, key=lambda i: i.segment):
            s, e = inst.segment
            assert 0 <= s < e <= video.duration
            assert s >= previous_end  # no overlap
            assert MIN_INSTANCE_S - 1e-6 <= e - s <= MAX_INSTANCE_S + 1e-6
            # segments are whole frames at 15 fps
            assert s * 15 == pytest.approx(round(s * 15), abs=1e-4)
            previous_end = e


def test_plan_properties_over_seeds() -> None:
    for seed in range(6):
        videos = plan_dataset(10, seed, num_classes=5)
        assert sum(v.subset == "validation" for v in videos) == 2  # round(10 * 0.25)
        counts = np.zeros(5, int)
        for v in videos:
            assert 30 * 15 <= v.num_frames <= 60 * 15
            assert v.instances, "every video has an instance"
            events = sorted(v.events, key=lambda e: e.start)
            for a, b in itertools.pairwise(events):
                assert a.stop < b.start, "events are separated by background"
            for e in events:
                assert 0 <= e.start < e.stop <= v.num_frames
                assert 0 <= e.label < 5
                if e.complete:
                    assert e.progress_end == 1.0
                    assert 15 <= e.stop - e.start <= 150
                    counts[e.label] += 1
                else:
                    assert 0.15 <= e.progress_end <= 0.35
        assert counts.max() - counts.min() <= 1, "instance labels come in balanced rounds"
        assert sum(len(v.distractors) for v in videos) > 0
    assert plan_dataset(3, 7) == plan_dataset(3, 7)
    assert plan_dataset(3, 7) != plan_dataset(3, 8)


def test_render_is_independent_of_the_block_size() -> None:
    video = plan_dataset(1, 5, **SMALL)[0]
    a = np.stack(list(render_frames(video, block=32)))
    b = np.stack(list(render_frames(video, block=7)))
    assert a.shape == (video.num_frames, 64, 64, 3)
    assert a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


def test_instances_are_visible_in_decoded_frames(small_dataset: Path) -> None:
    """Decoded frames: the class colour shows inside instances and distractors, and
    nothing colourful shows anywhere else."""
    plans = plan_dataset(4, 3, **SMALL)
    for plan in plans:
        path = small_dataset.parent / "videos" / f"{plan.video_id}.mp4"
        frames = np.stack(list(iter_frames(path, 15.0, (64, 64))))
        assert len(frames) == plan.num_frames
        coloured = _coloured_pixels(frames)
        drawn = np.zeros(plan.num_frames, bool)
        for e in plan.events:
            drawn[e.start:e.stop] = True
            inside = coloured[e.start:e.stop]
            # BlinkingBar is off a third of the time; the others are always on
            share = 0.5 if e.label == 2 else 0.95
            assert (inside >= 3).mean() >= share, (plan.video_id, e)
            # the colour shown is nearest to the event's class colour
            clip = frames[e.start:e.stop].reshape(-1, 3).astype(np.float32)
            shown = clip[clip.max(-1) - clip.min(-1) > 100]
            assert len(shown) >= 10
            distance = np.linalg.norm(CLASS_COLOURS - shown.mean(axis=0), axis=1)
            assert int(np.argmin(distance)) == e.label, (plan.video_id, e)
        # one frame of slack at each boundary for lossy coding
        background = ~np.convolve(drawn, np.ones(3), mode="same").astype(bool)
        assert background.sum() > 10
        assert (coloured[background] == 0).all(), plan.video_id


def test_bad_settings_raise_clear_errors(tmp_path: Path) -> None:
    # PrepareError: a TallformerError (the CLI prints it) and a ValueError
    with pytest.raises(PrepareError, match="num_classes"):
        plan_dataset(2, 0, num_classes=9)
    with pytest.raises(PrepareError, match="even"):
        plan_dataset(2, 0, size=(63, 64))
    with pytest.raises(PrepareError, match="min_length"):
        plan_dataset(2, 0, min_length=1.0, max_length=2.0)
    with pytest.raises(ValueError, match="num_videos"):
        plan_dataset(0, 0)


def test_cli_writes_the_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = main(["prepare", "synthetic", "--out", str(out), "--num-videos", "2", "--seed", "1",
               "--num-classes", "3", "--size", "48x32", "--min-length", "4",
               "--max-length", "5"])
    assert rc == 0
    aset = load_annotations(out / "annotations.json")
    assert [v.subset for v in aset.videos.values()] == ["training", "validation"]
    assert set(aset.classes) <= set(CLASS_NAMES[:3])
    info = probe_video(out / "videos" / "synth_0000.mp4")
    assert (info.width, info.height) == (48, 32)
    assert main(["prepare", "synthetic", "--out", str(out), "--num-classes", "9"]) == 2
    assert "\nerror: num_classes must be between 1 and 8" in capsys.readouterr().err


def test_prepare_synthetic_help_states_the_generators_instance_lengths() -> None:
    import argparse
    import re

    from tallformer.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    prepare = sub.choices["prepare"]
    inner = next(a for a in prepare._actions if isinstance(a, argparse._SubParsersAction))
    text = " ".join(inner.choices["synthetic"].description.split())
    assert re.findall(r"unfolding over ([\d.]+)-([\d.]+) s", text) == [(f"{MIN_INSTANCE_S:g}", f"{MAX_INSTANCE_S:g}")]
    # and the lengths the generator plans lie in that range
    lengths = [(e.stop - e.start) / 15.0 for v in plan_dataset(20, 0) for e in v.events if e.complete]
    assert lengths
    assert min(lengths) >= MIN_INSTANCE_S
    assert max(lengths) <= MAX_INSTANCE_S + 1 / 15


# ----------------------------------------------------------------------------- the drift task


def test_drift_plans_the_same_events_with_its_own_class_names() -> None:
    shapes = plan_dataset(5, 2, **SMALL)
    drift = plan_dataset(5, 2, task="drift", **SMALL)
    assert [v.events for v in drift] == [v.events for v in shapes]
    assert {v.task for v in drift} == {"drift"}
    assert {v.task for v in shapes} == {"shapes"}
    assert plan_dataset(5, 2, task="shapes", **SMALL) == shapes  # the default task
    labels = {a["label"] for v in annotation_dict(drift, 4)["database"].values() for a in v["annotations"]}
    assert labels == set(DRIFT_CLASS_NAMES)
    assert synthetic_dir("shapes") == Path("data/synthetic")
    assert synthetic_dir("drift") == Path("data/synthetic_drift")
    with pytest.raises(PrepareError, match="num_classes must be between 1 and 4"):
        plan_dataset(2, 0, num_classes=5, task="drift")
    with pytest.raises(PrepareError, match="unknown synthetic task 'spin'; choose one of shapes, drift"):
        plan_dataset(2, 0, task="spin")


def test_drift_texture_slides_the_class_way() -> None:
    """Inside the disk, frame t+1 is frame t shifted by the class's velocity (and not by the
    opposite one); the disk itself does not move, and every class is drawn in the same colours."""
    videos = plan_dataset(4, 1, task="drift", size=(36, 36), **SMALL)
    seen: dict[int, np.ndarray] = {}
    for video in videos:
        frames = np.stack(list(render_frames(video))).astype(np.int16)
        for e in video.events:
            h, w = video.size
            cx, cy = round(e.position[0] * w), round(e.position[1] * h)
            inner = (slice(cy - 4, cy + 4), slice(cx - 4, cx + 4))  # well inside the disk
            dx, dy = (DRIFT_SPEED * v for v in DRIFT_VELOCITY[e.label])
            a, b = frames[e.start], frames[e.start + 1]
            moved = np.roll(a, (dy, dx), axis=(0, 1))
            back = np.roll(a, (-dy, -dx), axis=(0, 1))
            np.testing.assert_array_equal(b[inner], moved[inner])
            assert np.abs(b[inner] - back[inner]).mean() > 5, "the texture has grain"
            seen.setdefault(e.label, frames[e.start:e.stop][(slice(None), *inner)].reshape(-1, 3).mean(0))
    assert len(seen) == 4
    means = np.stack(list(seen.values()))
    assert np.ptp(means, axis=0).max() < 40, "no class has its own colour"


def test_cli_drift_task(tmp_path: Path) -> None:
    from tallformer.commands.prepare_media import SYNTHETIC_TASKS

    assert SYNTHETIC_TASKS == TASKS
    out = tmp_path / "drift"
    assert main(["prepare", "synthetic", "--out", str(out), "--num-videos", "2", "--task", "drift",
                 "--size", "36x36", "--min-length", "4", "--max-length", "5"]) == 0
    aset = load_annotations(out / "annotations.json")
    assert set(aset.classes) <= set(DRIFT_CLASS_NAMES)
    assert len(aset.classes) >= 1
