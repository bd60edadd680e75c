"""`tallformer demo --quick --config demo_actionformer`: the five stages with the ActionFormer
family, through the same command as the anchor demo (at the smallest size: 6 of the quick
videos, 4 for training and 2 for validation, 2 epochs of 2 steps); every output written and
valid. Its mAP means nothing and is not asserted."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
import torch

from tallformer.cli import main
from tallformer.engine.checkpoint import load_checkpoint

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEPS = 4


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("af_demo")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    buf = io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the demo command computes (on a busy machine a pool spins)
    try:
        with contextlib.redirect_stdout(buf):
            code = main(["demo", "--quick", "--config", "demo_actionformer", "--out", "runs/demo", "--no-progress",
                         "data.synthetic_videos=6", "train.max_epochs=2", "train.checkpoint_interval=2",
                         "train.warmup_iters=2"])
        assert code == 0, buf.getvalue()[-3000:]
    finally:
        torch.set_num_threads(threads)
        mp.undo()
    return root / "runs" / "demo", buf.getvalue()


def test_the_five_stages_run_with_the_family(quick_run: tuple[Path, str]) -> None:
    run, out = quick_run
    for n in range(1, 6):
        assert re.search(rf"^\[{n}/5\] ", out, re.M), out
    assert re.search(r"average mAP \(tIoU 0.3 to 0.7\) [0-9.]+%", out)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["config"]["model"]["kind"] == "actionformer"
    assert state["step"] == STEPS
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert set(records[-1]["lr"]) == {"neck_head", "neck_head_no_decay", "backbone", "backbone_no_decay"}


def test_results_metrics_and_figures(quick_run: tuple[Path, str]) -> None:
    run, _ = quick_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_videos"] == 2
    assert 0.0 <= metrics["average_mAP"] <= 1.0
    results = json.loads((run / "results.json").read_text())["results"]
    assert len(results) == 2
    for dets in results.values():
        assert 0 < len(dets) <= 200  # test.max_per_video = the release's max_seg_num
        scores = [d["score"] for d in dets]
        assert scores == sorted(scores, reverse=True)
        assert min(scores) >= 0.001
    assert (run / "timeline.png").read_bytes()[:8] == PNG_MAGIC
    (page,) = run.glob("viewer_*.html")
    assert page.read_text().startswith("<!DOCTYPE html>")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["loss"]["steps"] == STEPS
