"""`tallformer test` on real training checkpoints, and `evaluate_model` (the training engine's test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import run_cli
from tallformer.cli import main
from tallformer.config import load_config
from tallformer.engine.checkpoint import CheckpointError, load_model
from tallformer.engine.infer import evaluate_model


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """Two checkpoints of a real 2-step training run on a small synthetic dataset."""
    from tallformer.data.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("test_cmd")
    ann = generate_synthetic_dataset(root / "syn", 5, seed=4, min_length=10, max_length=14,
                                     val_fraction=0.4, progress=False)
    run_dir = root / "run"
    proc = run_cli(["train", "--config", "demo", f"data.annotations={ann}", f"data.videos={root / 'syn' / 'videos'}",
                    f"run_dir={run_dir}", "train.max_steps=2", "train.checkpoint_steps=1", "data.num_workers=0",
                    "--no-progress"])  # in this process: no start-up
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"annotations": ann, "videos": root / "syn" / "videos", "run": run_dir,
            "a": run_dir / "checkpoints" / "step_000001.pt", "b": run_dir / "checkpoints" / "step_000002.pt"}


def _config_args(run: dict[str, Path]) -> list[str]:
    return ["--config", "demo", f"data.annotations={run['annotations']}", f"data.videos={run['videos']}",
            f"run_dir={run['run']}"]


@pytest.fixture(scope="module")
def tested(run) -> tuple[Path, str]:
    """`tallformer test` on both checkpoints, into the default RUN_DIR/test/."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["test", *_config_args(run), "--checkpoint", str(run["a"]), str(run["b"]), "--no-progress"])
    assert code == 0
    return run["run"] / "test", out.getvalue()


def test_two_checkpoints_give_two_results_and_one_table(run, tested) -> None:
    out, printed = tested
    summary = json.loads((out / "summary.json").read_text())
    assert [c["name"] for c in summary["checkpoints"]] == ["step_000001", "step_000002"]
    assert [c["step"] for c in summary["checkpoints"]] == [1, 2]
    assert summary["tiou_thresholds"] == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert summary["subset"] == "validation"
    assert summary["best"] in ("step_000001", "step_000002")
    for c in summary["checkpoints"]:
        results = json.loads((out / c["name"] / "results.json").read_text())
        metrics = json.loads((out / c["name"] / "metrics.json").read_text())
        assert set(results) == {"version", "results", "external_data"}
        assert len(results["results"]) == 2 == metrics["num_videos"]  # the validation videos
        entry = next(iter(results["results"].values()))[0]
        assert set(entry) == {"segment", "label", "score"}
        assert metrics["mAP"] == c["mAP"]
        assert metrics["average_mAP"] == c["average_mAP"]
    # the printed table: a header with the thresholds and one row per checkpoint
    lines = printed.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("checkpoint"))
    assert lines[header].split()[2:] == ["0.30", "0.40", "0.50", "0.60", "0.70", "avg"]
    assert lines[header + 1].startswith("step_000001")
    assert lines[header + 2].startswith("step_000002")
    assert summary["table"] == lines[header:header + 3]


def test_metrics_equal_tallformer_eval_on_the_written_results(run, tested, tmp_path) -> None:
    out, _ = tested
    for name in ("step_000001", "step_000002"):
        again = tmp_path / f"{name}.json"
        code = main(["eval", "--gt", str(run["annotations"]), "--pred", str(out / name / "results.json"),
                     "--dataset", "thumos14", "--subset", "validation", "--out", str(again),
                     "--ignore-unknown-labels"])
        assert code == 0
        assert json.loads(again.read_text()) == json.loads((out / name / "metrics.json").read_text())


def test_evaluate_model_scores_and_restores_the_mode(run, tmp_path) -> None:
    loaded = load_model(run["b"], device="cpu")
    cfg = load_config("demo", [f"data.annotations={run['annotations']}", f"data.videos={run['videos']}"])
    loaded.model.train()
    metrics = evaluate_model(cfg, loaded.model, run["annotations"], "validation", tmp_path / "ev",
                             progress=False, classes=loaded.classes)
    assert loaded.model.training  # given back in training mode
    assert loaded.model.backbone.patch_embed.training is False  # frozen stages stay in eval
    assert set(metrics) >= {"mAP", "average_mAP", "per_class_AP", "num_predictions"}
    assert metrics["num_predictions"] > 0
    written = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    # the same numbers as `tallformer test` wrote for this checkpoint (deterministic path)
    tested_metrics = json.loads((run["run"] / "test" / "step_000002" / "metrics.json").read_text())
    assert written["mAP"] == tested_metrics["mAP"]


def test_wrong_model_or_file_is_a_clear_error(run, tmp_path, capsys) -> None:
    with pytest.raises(CheckpointError, match=r"another model than the given config: model\.neck\.tcm_layers: 2 "):
        load_model(run["a"], load_config("demo", ["model.neck.tcm_layers=3"]))
    with pytest.raises(CheckpointError, match=r"do not fit the model of the config saved in .*: .*missing keys"):
        load_model(run["a"], overrides=["model.neck.tcm_layers=3"])
    bogus = tmp_path / "bogus.pt"
    torch.save({"model": {}}, bogus)
    code = main(["test", *_config_args(run), "--checkpoint", str(bogus), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "not a tallformer training checkpoint" in capsys.readouterr().err


def test_checkpoint_names_are_unique() -> None:
    from tallformer.commands.test import checkpoint_names

    paths = [Path("runs/a/checkpoints/last.pt"), Path("runs/b/checkpoints/last.pt"), Path("x/epoch_0600.pt")]
    assert checkpoint_names(paths) == ["a_last", "b_last", "epoch_0600"]
    same = checkpoint_names([Path("e.pt"), Path("e.pt")])
    assert len(set(same)) == 2


def test_overrides_after_the_checkpoint_list_are_overrides(tmp_path) -> None:
    import argparse

    from tallformer.commands.test import split_overrides

    odd = tmp_path / "a=b.pt"  # an existing file whose name looks like an override stays a file
    odd.write_bytes(b"")
    args = argparse.Namespace(checkpoint=["x.pt", "test.protocol=original", str(odd)], overrides=["seed=1"])
    split_overrides(args, "checkpoint")
    assert args.checkpoint == ["x.pt", str(odd)]
    assert args.overrides == ["seed=1", "test.protocol=original"]


def test_a_checkpoint_is_tested_with_its_own_config(run, tested, tmp_path) -> None:
    """No --config: each checkpoint's saved config (its data paths too) is the test's; a data
    override still applies; the numbers are those of the test with the config given."""
    out = tmp_path / "own"
    proc = run_cli(["test", "--checkpoint", str(run["b"]), "--out", str(out), "--no-progress",
                    f"data.videos={run['videos']}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    mine = json.loads((out / "step_000002" / "metrics.json").read_text())
    assert mine == json.loads((tested[0] / "step_000002" / "metrics.json").read_text())


def test_a_config_with_another_model_names_the_keys_and_the_runs_config(run, capsys) -> None:
    code = main(["test", *_config_args(run), "model.neck.tcm_layers=3", "model.head.feat_channels=32",
                 "--checkpoint", str(run["a"]), "--out", str(run["run"] / "unused")])
    assert code == 2
    err = capsys.readouterr().err
    assert err == (f"error: {run['a']} was trained with another model than the given config: "
                   "model.head.feat_channels: 64 (checkpoint) -> 32 (given), model.neck.tcm_layers: 2 (checkpoint) "
                   f"-> 3 (given); test it with the config it was trained with, {run['run'] / 'config.yaml'} "
                   "(or leave out --config: a checkpoint holds its config)\n")
    assert not list((run["run"] / "unused").rglob("*.json"))


def test_the_subset_testers_example_runs() -> None:
    """The anchor and ActionFormer families share one tester (`SubsetTester`); its example
    (the anchor family's summary keys) runs as written."""
    import doctest

    from tallformer.engine import subset

    result = doctest.testmod(subset)
    assert result.attempted > 0
    assert result.failed == 0
