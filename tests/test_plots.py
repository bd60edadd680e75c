"""Timeline PNG, precision-recall curves (and that they are the curves the evaluator's AP integrates)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tallformer.cli import main
from tallformer.evaluation import (
    THUMOS14_THRESHOLDS,
    EvaluationWarning,
    evaluate,
    precision_recall_curves,
)
from tallformer.plots import plot_pr_curves, plot_timeline, safe_name

PNG = b"\x89PNG\r\n\x1a\n"


def _data(seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    classes = ["Cricket Bowling", "Diving", "Golf/Swing"]
    database, results = {}, {}
    for v in range(6):
        vid = f"video_{v}"
        anns, preds = [], []
        for _ in range(4):
            s = float(rng.uniform(0, 90))
            e = s + float(rng.uniform(1, 8))
            label = classes[int(rng.integers(0, 2))]  # "Golf/Swing" has no ground truth
            anns.append({"segment": [s, e], "label": label})
            for _ in range(3):
                j = float(rng.normal(0, 1.5))
                preds.append({"segment": [s + j, e + j * 0.5], "label": label, "score": float(rng.uniform())})
        for _ in range(5):
            s = float(rng.uniform(0, 95))
            preds.append({"segment": [s, s + 3], "label": classes[int(rng.integers(0, 3))],
                          "score": float(rng.uniform(0, 0.5))})
        database[vid] = {"subset": "test", "annotations": anns}
        results[vid] = preds
    return {"database": database}, {"results": results}


def test_pr_curves_integrate_to_the_evaluators_ap() -> None:
    gt, pred = _data()
    with pytest.warns(EvaluationWarning, match="dropped 8 predictions"):
        metrics = evaluate(gt, pred, THUMOS14_THRESHOLDS, "test", ignore_unknown_labels=True)
    curves = precision_recall_curves(gt, pred, THUMOS14_THRESHOLDS, "test", ignore_unknown_labels=True)
    assert list(curves) == list(metrics["per_class_AP"])
    for name, c in curves.items():
        assert c["ap"].tolist() == metrics["per_class_AP"][name]
        assert c["precision"].shape == c["recall"].shape == (5, len(c["score"]))
        assert np.all(np.diff(c["score"]) <= 0)  # best first
        assert np.all(np.diff(c["recall"], axis=1) >= 0)  # recall only grows down the ranking
        assert c["recall"].max() <= 1


def test_eval_plot_writes_a_curve_per_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt, pred = _data(1)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    code = main(["eval", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"),
                 "--dataset", "thumos14", "--ignore-unknown-labels", "--plot", str(tmp_path / "pr")])
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "pr").iterdir())
    assert names == ["pr_Cricket_Bowling.png", "pr_Diving.png", "pr_curves.png"]
    assert all((tmp_path / "pr" / n).read_bytes()[:8] == PNG for n in names)
    captured = capsys.readouterr()
    assert "precision-recall curves written" in captured.out
    assert captured.err.count("dropped") == 1  # the evaluator's warning once, not again for the plot


def test_pr_curves_from_precomputed_curves_and_no_predictions(tmp_path: Path) -> None:
    gt, _ = _data(2)
    curves = precision_recall_curves(gt, {"results": {}}, (0.5,), "test")
    assert all(len(c["score"]) == 0 and c["ap"].tolist() == [0.0] for c in curves.values())
    files = plot_pr_curves(tmp_path, None, None, (0.5,), curves=curves)
    assert len(files) == len(curves) + 1


def test_timeline_png(tmp_path: Path) -> None:
    from matplotlib.image import imread

    classes = ["a", "b", "c", "d"]
    dets = [(1.0, 4.0, "a", 0.9), (3.0, 9.5, "b", 0.2), (20.0, 21.0, "a", 0.05)]
    gt = [(1.2, 4.1, "a", 1.0)]
    full = plot_timeline(tmp_path / "t.png", dets, classes, 30.0, ground_truth=gt, title="clip")
    used = plot_timeline(tmp_path / "u.png", dets, classes, 30.0, lanes="used")
    assert full.read_bytes()[:8] == PNG
    assert imread(full).shape[0] > imread(used).shape[0]  # 8 lanes against 2
    assert not list(tmp_path.glob(".*"))  # written atomically: no temporary file left
    assert safe_name("Golf/Swing ") == "Golf_Swing"


def test_every_pr_figure_names_its_axes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tallformer.plots

    gt, pred = _data(3)
    labels: dict[str, tuple[str, str]] = {}
    save = tallformer.plots._save

    def recording_save(fig, path, dpi=120):  # type: ignore[no-untyped-def]
        axes = [ax for ax in fig.axes if ax.axison]
        x = fig.get_supxlabel() or axes[0].get_xlabel()
        y = fig.get_supylabel() or axes[0].get_ylabel()
        labels[Path(path).name] = (x, y)
        return save(fig, path, dpi)

    monkeypatch.setattr(tallformer.plots, "_save", recording_save)
    plot_pr_curves(tmp_path, gt, pred, (0.5, 0.7), "test", ignore_unknown_labels=True)
    assert set(labels) == {"pr_Cricket_Bowling.png", "pr_Diving.png", "pr_curves.png"}
    assert all(xy == ("recall", "precision") for xy in labels.values()), labels
