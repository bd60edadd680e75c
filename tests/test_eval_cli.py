"""Tests of the `tallformer eval` command: output, JSON file, exit status, warnings, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REFERENCE_DATA
from tallformer.cli import main
from tallformer.evaluation import ANET_THRESHOLDS, THUMOS14_THRESHOLDS, evaluate

ANET = REFERENCE_DATA / "activitynet"
KEYS = {"tiou_thresholds", "mAP", "average_mAP", "per_class_AP", "num_videos",
        "num_ground_truth", "num_predictions"}


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    gt = {"database": {
        "vid1": {"subset": "test", "annotations": [
            {"segment": ["0.0", "10.0"], "label": "Jump"}, {"segment": [20, 30], "label": "Run"}]},
        "vid2": {"subset": "test", "annotations": [{"segment": [5.0, 9.0], "label": "Jump"}]},
    }}
    pred = {"version": "x", "external_data": {}, "results": {
        "vid1": [{"segment": [0.0, 9.0], "label": "Jump", "score": 0.9},
                 {"segment": [21.0, 30.0], "label": "Run", "score": 0.8}],
        "vid2": [{"segment": [5.0, 7.5], "label": "Jump", "score": 0.7},
                 {"segment": [0.0, 1.0], "label": "Jump", "score": 0.95}],
    }}
    return _write(tmp_path / "gt.json", gt), _write(tmp_path / "pred.json", pred)


def test_table_and_json_output_match_the_api(files: tuple[Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    gt, pred = files
    out = tmp_path / "sub" / "metrics.json"
    code = main(["eval", "--gt", str(gt), "--pred", str(pred), "--dataset", "thumos14",
                 "--out", str(out)])
    assert code == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) == KEYS
    assert metrics == evaluate(gt, pred, THUMOS14_THRESHOLDS)
    assert metrics["tiou_thresholds"] == list(THUMOS14_THRESHOLDS)
    assert metrics["num_videos"] == 2
    assert metrics["num_ground_truth"] == 3
    assert metrics["num_predictions"] == 4
    text = capsys.readouterr().out
    assert "0.30" in text
    assert "0.70" in text
    assert "avg" in text
    assert f"{100 * metrics['average_mAP']:.2f}" in text
    for t, m in zip(metrics["tiou_thresholds"], metrics["mAP"], strict=True):
        assert f"{t:>6.2f}  {100 * m:>8.2f}" in text


def test_threshold_choices(files: tuple[Path, Path], tmp_path: Path) -> None:
    gt, pred = files
    out = tmp_path / "m.json"
    assert main(["eval", "--gt", str(gt), "--pred", str(pred), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["tiou_thresholds"] == list(ANET_THRESHOLDS)
    assert main(["eval", "--gt", str(gt), "--pred", str(pred), "--tiou", "0.1", "0.9",
                 "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["tiou_thresholds"] == [0.1, 0.9]
    assert len(metrics["mAP"]) == 2
    with pytest.raises(SystemExit):  # argparse: --dataset and --tiou are exclusive
        main(["eval", "--gt", str(gt), "--pred", str(pred), "--tiou", "0.5", "--dataset", "anet"])


@pytest.mark.parametrize(
    ("pred", "message"),
    [
        ("{oops", "not a valid JSON file"),
        ({"res": {}}, "missing key 'results'"),
        ({"results": {"vid1": [{"segment": [3, 1], "label": "Jump", "score": 1}]}},
         "video 'vid1', prediction 0: segment start 3.0 > end 1.0"),
        ({"results": {"vid1": [{"segment": [0, "x"], "label": "Jump", "score": 1}]}},
         "video 'vid1', prediction 0: segment end: 'x' is not a number"),
        ({"results": {"vid1": [{"segment": [0, 1], "label": "Jump", "score": None}]}},
         "score None is not a number"),
        ({"results": {"vid2": [{"segment": [0, 1], "label": "Swim", "score": 1}]}},
         "video 'vid2', prediction 0: label 'Swim' is not a class"),
    ],
)
def test_bad_input_exits_2_naming_file_and_entry(files: tuple[Path, Path], tmp_path: Path,
                                                 pred: object, message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    gt, _ = files
    path = tmp_path / "bad.json"
    path.write_text(pred if isinstance(pred, str) else json.dumps(pred))
    assert main(["eval", "--gt", str(gt), "--pred", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert message in err


def test_ignore_unknown_labels_drops_with_warning(files: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    gt, _ = files
    pred = _write(tmp_path / "p.json", {"results": {"vid2": [
        {"segment": [5, 9], "label": "Jump", "score": 1}, {"segment": [0, 1], "label": "Swim", "score": 1}]}})
    out = tmp_path / "m.json"
    assert main(["eval", "--gt", str(gt), "--pred", str(pred), "--ignore-unknown-labels",
                 "--tiou", "0.5", "--out", str(out)]) == 0
    assert "warning" in capsys.readouterr().err
    m = json.loads(out.read_text())
    assert m["num_predictions"] == 1
    assert m["per_class_AP"] == {"Jump": [0.5], "Run": [0.0]}


def test_subset_errors_and_choice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt = _write(tmp_path / "gt.json", {"database": {
        "a": {"subset": "training", "annotations": [{"segment": [0, 1], "label": "x"}]},
        "b": {"subset": "validation", "annotations": [{"segment": [0, 1], "label": "x"}]}}})
    pred = _write(tmp_path / "p.json", {"results": {"b": [{"segment": [0, 1], "label": "x",
                                                            "score": 0.5}]}})
    assert main(["eval", "--gt", str(gt), "--pred", str(pred)]) == 2
    err = capsys.readouterr().err
    assert "'training'" in err
    assert "'validation'" in err
    assert "--subset" in err
    out = tmp_path / "m.json"
    assert main(["eval", "--gt", str(gt), "--pred", str(pred), "--subset", "validation",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["mAP"] == [1.0] * 10


def test_v_prefix_warning_on_synthetic_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt = _write(tmp_path / "gt.json", {"database": {
        f"v_{i}": {"subset": "validation", "annotations": [{"segment": [0, 1], "label": "x"}]}
        for i in range(5)}})
    pred = _write(tmp_path / "p.json", {"results": {
        str(i): [{"segment": [0, 1], "label": "x", "score": 0.5}] for i in range(5)}})
    assert main(["eval", "--gt", str(gt), "--pred", str(pred)]) == 0
    err = capsys.readouterr().err
    assert "5 of 5 predicted videos" in err
    assert "'v_' prefix" in err


def test_real_activitynet_cli_warns_about_prefix(tmp_path: Path) -> None:
    """The whole process, on the real annotations: BSN's keys have 'v_', the sample has none."""
    import csv

    anno_path, csv_path = ANET / "anet_anno_action.json", ANET / "video_info_new.csv"
    sample = ANET / "sample_detection_prediction.json"
    for p in (anno_path, csv_path, sample):
        if not p.exists():
            pytest.skip(f"reference data {p} is absent")
    with csv_path.open() as f:
        subsets = {row["video"]: row["subset"] for row in csv.DictReader(f)}
    anno = json.loads(anno_path.read_text())
    gt = _write(tmp_path / "gt.json", {"database": {
        v: {"subset": subsets[v], "annotations": e["annotations"]} for v, e in anno.items()}})
    out = tmp_path / "m.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tallformer", "eval", "--gt", str(gt), "--pred", str(sample),
         "--subset", "validation", "--dataset", "anet", "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "'v_' prefix" in proc.stderr
    assert "4926 of 4926 predicted videos" in proc.stderr
    metrics = json.loads(out.read_text())
    assert metrics["num_videos"] == 4728
    assert metrics["average_mAP"] == 0.0


def test_eval_does_not_import_torch() -> None:
    code = (
        "import sys, runpy\n"
        "import tallformer.cli, tallformer.commands.evaluate, tallformer.evaluation\n"
        "tallformer.cli.build_parser()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'pandas' not in sys.modules, 'pandas imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def test_eval_process_runs_without_torch(files: tuple[Path, Path], tmp_path: Path) -> None:
    gt, pred = files
    code = (
        "import sys\n"
        "from tallformer.cli import main\n"
        f"rc = main(['eval', '--gt', {str(gt)!r}, '--pred', {str(pred)!r}])\n"
        "assert rc == 0, rc\n"
        "assert 'torch' not in sys.modules, 'torch imported by eval'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "avg" in proc.stdout
