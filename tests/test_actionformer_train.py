"""`tallformer train` with the ActionFormer family: the same loader, memory bank, journal and
resume as the anchor family, through the detector seam. Real processes at the smallest size
(3 training videos, batch 2, a narrow network): a run of 4 steps, and the same run killed
with SIGKILL after its third step and resumed, end bit-identical: weights, the loss
normaliser (a buffer), AdamW's state, the random states and the bank.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import deep_equal, final_state, kill_tree
from tallformer.engine.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4  # 3 training videos at batch 2: 2 steps an epoch
TINY = ["model.num_classes=4", "model.actionformer.n_head=2", "model.actionformer.embd_dim=16",
        "model.actionformer.fpn_dim=16", "model.actionformer.head_dim=16", "train.device=cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tallformer.data.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("af_train")
    ann = generate_synthetic_dataset(root / "syn", 4, seed=3, size=(36, 36), min_length=9, max_length=11,
                                     val_fraction=0.25, progress=False)
    return {"annotations": ann, "videos": root / "syn" / "videos", "root": root}


def _args(data: dict[str, Path], run: Path, *extra: str) -> list[str]:
    return ["train", "--config", "demo_actionformer", f"data.annotations={data['annotations']}",
            f"data.videos={data['videos']}", f"run_dir={run}", "train.log_interval=1", f"train.max_steps={STEPS}",
            "--no-progress", *TINY, *extra]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))


def _logged(run: Path) -> list[int]:
    steps = []
    with contextlib.suppress(OSError):
        for line in (run / "log.jsonl").read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError):
                steps.append(json.loads(line)["step"])
    return steps


def _run(args: list[str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "tallformer", *args], env=_env(), capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _run_and_kill(args: list[str], run: Path, after_step: int) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tallformer", *args], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while max(_logged(run), default=0) < after_step:
            assert proc.poll() is None, f"the run ended before step {after_step}: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "the run did not reach the kill step in time"
            time.sleep(0.02)
    finally:
        kill_tree(proc.pid)
        proc.wait()
        proc.stderr.close()




@pytest.fixture(scope="module")
def straight(data: dict[str, Path]) -> Path:
    run = data["root"] / "straight"
    _run(_args(data, run))
    return run


def test_a_run_trains_with_adamw_and_the_bank(straight: Path) -> None:
    records = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["loss_reg"]) for r in records)
    assert set(records[0]["lr"]) == {"neck_head", "neck_head_no_decay", "backbone", "backbone_no_decay"}
    assert records[0]["lr"]["neck_head"] == 0.0  # the release's warm-up starts at 0
    assert records[1]["lr"]["neck_head"] > 0.0
    state, bank = final_state(straight)
    assert state["config"]["model"]["kind"] == "actionformer"
    assert "criterion.loss_normalizer" in state["model"]
    assert float(state["model"]["criterion.loss_normalizer"]) != 100.0  # moved from init_loss_norm
    assert [g["name"] for g in state["optimizer"]["param_groups"]] == [
        "neck_head", "neck_head_no_decay", "backbone", "backbone_no_decay"]
    assert len(bank) == 3


def test_sigkill_and_resume_is_bit_identical(data: dict[str, Path], straight: Path) -> None:
    run = data["root"] / "killed"
    args = _args(data, run, "train.checkpoint_steps=2")
    _run_and_kill(args, run, after_step=3)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] in (2, 3)
    _run(args)
    a, bank_a = final_state(straight)
    b, bank_b = final_state(run)
    assert a["step"] == b["step"] == STEPS
    for key in ("model", "optimizer", "epoch", "batch_in_epoch", "samples", "rng"):
        assert deep_equal(a[key], b[key]), f"{key} differs after the kill and resume"
    assert a["model"]["criterion.loss_normalizer"].item() == b["model"]["criterion.loss_normalizer"].item()
    assert bank_a.keys() == bank_b.keys()
    for name in bank_a:
        assert np.array_equal(bank_a[name], bank_b[name]), f"bank {name} differs"
