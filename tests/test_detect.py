"""`tallformer detect` and `tallformer.detect`: JSON, CSV, PNG and HTML per video; bad videos skipped."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tallformer.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """Two synthetic videos and a checkpoint of an (untrained) demo detector in the training format."""
    from tallformer.config import config_to_dict, load_config
    from tallformer.data.annotations import load_annotations
    from tallformer.data.synthetic import generate_synthetic_dataset
    from tallformer.engine.checkpoint import save_checkpoint
    from tallformer.engine.factory import build_detector

    root = tmp_path_factory.mktemp("detect")
    ann = generate_synthetic_dataset(root / "syn", 2, seed=5, min_length=9, max_length=12,
                                     val_fraction=0.5, progress=False)
    torch.manual_seed(0)
    cfg = load_config("demo")
    ckpt = root / "model.pt"
    save_checkpoint(ckpt, {"format": "tallformer-train", "model": build_detector(cfg).state_dict(),
                           "config": config_to_dict(cfg), "classes": load_annotations(ann).classes,
                           "epoch": 3, "step": 7})
    videos = sorted((root / "syn" / "videos").glob("*.mp4"))
    bad = root / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return {"root": root, "ann": ann, "ckpt": ckpt, "a": videos[0], "b": videos[1], "bad": bad}


@pytest.fixture(scope="module")
def detected(setup) -> tuple[Path, int, str]:
    import contextlib
    import io

    out = setup["root"] / "out"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["detect", str(setup["a"]), str(setup["bad"]), str(setup["b"]), "--checkpoint",
                     str(setup["ckpt"]), "--out", str(out), "--gt", str(setup["ann"]), "--no-progress"])
    return out, code, err.getvalue()


def test_a_corrupt_video_is_reported_and_the_others_are_done(setup, detected) -> None:
    out, code, err = detected
    assert code == 1
    assert f"error: {setup['bad']}" in err
    assert "1 of 3 videos could not be decoded" in err
    for v in ("a", "b"):
        stem = setup[v].stem
        assert {p.suffix for p in out.glob(f"{stem}.*")} == {".json", ".csv", ".png", ".html"}
    assert not list(out.glob("broken.*"))


def test_json_is_one_video_of_results_that_eval_scores(setup, detected, tmp_path) -> None:
    out, _, _ = detected
    stem = setup["a"].stem
    data = json.loads((out / f"{stem}.json").read_text())
    assert list(data["results"]) == [stem]
    assert data["video"]["path"] == str(setup["a"])
    assert data["video"]["fps"] == 15.0
    assert 9.0 <= data["video"]["duration"] <= 12.5
    dets = data["results"][stem]
    assert dets
    assert all(0 <= d["segment"][0] <= d["segment"][1] <= data["video"]["duration"] + 1e-6 for d in dets)
    assert [d["score"] for d in dets] == sorted((d["score"] for d in dets), reverse=True)
    ann = json.loads(setup["ann"].read_text())
    subset = ann["database"][stem]["subset"]
    code = main(["eval", "--gt", str(setup["ann"]), "--pred", str(out / f"{stem}.json"), "--subset", subset,
                 "--dataset", "thumos14", "--ignore-unknown-labels", "--out", str(tmp_path / "m.json")])
    assert code == 0
    assert json.loads((tmp_path / "m.json").read_text())["num_predictions"] > 0


def test_csv_rows_are_the_json_detections(setup, detected) -> None:
    out, _, _ = detected
    stem = setup["b"].stem
    dets = json.loads((out / f"{stem}.json").read_text())["results"][stem]
    with open(out / f"{stem}.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["start", "end", "label", "score"]
    assert len(rows) == len(dets) + 1
    for row, d in zip(rows[1:], dets, strict=True):
        assert [float(row[0]), float(row[1])] == d["segment"]
        assert row[2] == d["label"]
        assert float(row[3]) == d["score"]


def test_png_is_an_image(setup, detected) -> None:
    from matplotlib.image import imread

    out, _, _ = detected
    path = out / f"{setup['a'].stem}.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[1] > 1000  # 12 inches at 120 dpi
    assert image.shape[0] > 300  # 4 classes, each with a ground-truth lane


def test_html_is_self_contained_and_embeds_the_detections(setup, detected) -> None:
    out, _, _ = detected
    stem = setup["a"].stem
    page = (out / f"{stem}.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+stylesheet", page)
    assert "@import" not in page
    src = re.search(r'<video id="video" src="([^"]+)"', page).group(1)
    assert not src.startswith("/")
    assert (out / src).resolve() == setup["a"].resolve()
    embedded = json.loads(re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>',
                                    page, re.S).group(1))
    dets = json.loads((out / f"{stem}.json").read_text())["results"][stem]
    assert [(d["start"], d["end"], d["label"], d["score"]) for d in embedded["detections"]] == [
        (d["segment"][0], d["segment"][1], d["label"], d["score"]) for d in dets]
    truth = json.loads(setup["ann"].read_text())["database"][stem]["annotations"]
    assert len(embedded["ground_truth"]) == len(truth)


def test_python_api_detects_with_filters_and_frame_folders(setup, detected, tmp_path) -> None:
    import tallformer
    from tallformer.commands.detect import write_outputs
    from tallformer.data.video import open_source, save_image
    from tallformer.engine.infer import Detector
    from tallformer.engine.results import Detection

    out, _, _ = detected
    stem = setup["a"].stem
    written = json.loads((out / f"{stem}.json").read_text())["results"][stem]
    detector = Detector.from_checkpoint(setup["ckpt"], device="cpu")
    top = tallformer.detect(setup["a"], detector, score_threshold=written[4]["score"], top_k=3)
    assert all(isinstance(d, Detection) for d in top)
    assert [d.as_dict() for d in top] == written[:3]  # the command's detections, best first
    # the same frames as a frame folder in the original layout (00001.png ...)
    folder = tmp_path / stem
    folder.mkdir()
    with open_source(setup["a"], 15.0, (64, 64)) as source:
        for i, frame in enumerate(source.read(0, len(source))):
            save_image(folder / f"{i + 1:05d}.png", frame)
    result = detector.detect(folder, top_k=5)
    assert result.video_id == stem
    assert result.num_frames == len(list(folder.iterdir()))
    assert len(result.detections) == 5
    paths = write_outputs(result, tmp_path / "o", detector.classes)
    page = paths["html"].read_text()
    assert '<video id="video" controls' in page  # no source: the timeline works without it


def test_importing_the_package_does_not_import_torch() -> None:
    code = ("import sys, tallformer\n"
            "assert 'torch' not in sys.modules, 'torch imported by import tallformer'\n"
            "assert 'detect' in dir(tallformer)\n"
            "assert callable(tallformer.detect) and 'torch' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr


def test_png_and_viewer_show_the_demos_display_threshold_json_keeps_all(setup, detected, tmp_path,
                                                                         monkeypatch) -> None:
    import tallformer.plots
    from tallformer.viewer import (
        DISPLAY_MAX_THRESHOLD,
        DISPLAY_SHOWN,
        default_threshold,
    )

    out, _, _ = detected
    stem = setup["a"].stem
    dets = json.loads((out / f"{stem}.json").read_text())["results"][stem]
    scores = [d["score"] for d in dets]
    assert len(dets) > DISPLAY_SHOWN  # an untrained detector keeps many weak detections

    drawn: list[tuple[list, str]] = []
    plot = tallformer.plots.plot_timeline

    def recording_plot(path, detections, classes, duration, **kw):  # type: ignore[no-untyped-def]
        drawn.append((list(detections), kw["title"]))
        return plot(path, detections, classes, duration, **kw)

    monkeypatch.setattr(tallformer.plots, "plot_timeline", recording_plot)
    for extra, cut in (((), default_threshold(scores)), (("--display-threshold", "0.05"), 0.05)):
        drawn.clear()
        o = tmp_path / f"o{len(extra)}"
        assert main(["detect", str(setup["a"]), "--checkpoint", str(setup["ckpt"]), "--out", str(o),
                     "--no-progress", *extra]) == 0
        (shown, title), = drawn
        assert cut <= DISPLAY_MAX_THRESHOLD
        assert [d[3] for d in shown] == [s for s in scores if s >= cut]
        assert len(shown) >= min(DISPLAY_SHOWN, len(scores)) if not extra else len(shown) < len(dets)
        assert title == f"{stem}: {len(shown)} of {len(dets)} detections with score >= {cut:g} (model)"
        # the JSON keeps every detection; the viewer embeds them all and starts its slider at the cut
        assert json.loads((o / f"{stem}.json").read_text())["results"][stem] == dets
        page = (o / f"{stem}.html").read_text()
        embedded = json.loads(re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>',
                                        page, re.S).group(1))
        assert len(embedded["detections"]) == len(dets)
        assert embedded["threshold"] == cut
        assert embedded["video"]["fps"] == embedded["video"]["source_fps"] == 15.0  # decode rate, the file's own


@pytest.mark.parametrize(("option", "value"), [("--score-threshold", "1.5"), ("--score-threshold", "-0.1"),
                                               ("--display-threshold", "2")])
def test_a_threshold_outside_0_1_is_one_line(setup, option, value, capsys) -> None:
    assert main(["detect", str(setup["a"]), "--checkpoint", str(setup["ckpt"]), option, value]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {option} must be a score from 0 to 1, got {float(value):g}\n"
