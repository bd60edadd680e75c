"""Outputs that cannot be written: every writing command checks its output folder before the
work and says in one line what is wrong, where and what to do (no traceback, nothing
computed in vain); a command over several videos reports a failed write and goes on.

The commands run as real processes. An unwritable folder is a real ``chmod 555`` folder
(under root the command runs without its file-access override, `helpers.run_as_user`).
A full disk while saving a checkpoint is in tests/test_train.py, a full disk during a bank
build in tests/test_bank_build.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from helpers import run_as_user, unwritable_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """Two synthetic videos (one training, one validation), an untrained demo checkpoint in
    the training format, and a results file."""
    from tallformer.atomic import write_json
    from tallformer.config import config_to_dict, load_config
    from tallformer.data.annotations import load_annotations
    from tallformer.data.synthetic import generate_synthetic_dataset
    from tallformer.engine.checkpoint import save_checkpoint
    from tallformer.engine.factory import build_detector

    root = tmp_path_factory.mktemp("write_failures")
    ann = generate_synthetic_dataset(root / "syn", 2, seed=5, min_length=9, max_length=10,
                                     val_fraction=0.5, progress=False)
    cfg = load_config("demo", [f"data.annotations={ann}", f"data.videos={root / 'syn' / 'videos'}"])
    torch.manual_seed(0)
    ckpt = root / "model.pt"
    save_checkpoint(ckpt, {"format": "tallformer-train", "model": build_detector(cfg).state_dict(),
                           "config": config_to_dict(cfg), "classes": load_annotations(ann).classes,
                           "epoch": 1, "step": 1})
    aset = load_annotations(ann)
    video = aset.subset("validation")[0]
    pred = root / "results.json"
    write_json(pred, {"results": {video.video_id: [{"segment": [1.0, 3.0], "label": video.annotations[0].label,
                                                    "score": 0.9}]}})
    videos = sorted((root / "syn" / "videos").glob("*.mp4"))
    return {"root": root, "ann": ann, "videos": root / "syn" / "videos", "ckpt": ckpt, "pred": pred,
            "a": videos[0], "b": videos[1]}


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))


def _tallformer(*args: str, cwd: Path | None = None):
    return run_as_user([sys.executable, "-m", "tallformer", *map(str, args)], capture_output=True, text=True,
                       timeout=300, cwd=cwd, env=_env())


def _data(s: dict[str, Path]) -> list[str]:
    return [f"data.annotations={s['ann']}", f"data.videos={s['videos']}"]


# command -> (its arguments with OUT where its output goes, the option that names OUT)
COMMANDS = {
    "train": (lambda s, out: ["train", "--config", "demo", *_data(s), f"run_dir={out}", "train.max_steps=1",
                              "--no-progress"], "run_dir"),
    "test": (lambda s, out: ["test", "--config", "demo", *_data(s), "--checkpoint", s["ckpt"], "--out", out,
                             "--no-progress"], "--out"),
    "detect": (lambda s, out: ["detect", s["a"], s["b"], "--checkpoint", s["ckpt"], "--out", out,
                               "--no-progress"], "--out"),
    "bank build": (lambda s, out: ["bank", "build", "--config", "demo", *_data(s), "--out", out,
                                   "--no-progress"], "--out"),
    "prepare synthetic": (lambda s, out: ["prepare", "synthetic", "--out", out, "--num-videos", "2"], "--out"),
    "eval --plot": (lambda s, out: ["eval", "--gt", s["ann"], "--pred", s["pred"], "--subset", "validation",
                                    "--plot", out], "--plot"),
    "eval --out": (lambda s, out: ["eval", "--gt", s["ann"], "--pred", s["pred"], "--subset", "validation",
                                   "--out", f"{out}/metrics.json"], "--out"),
    "demo": (lambda s, out: ["demo", "--quick", "--out", out, "--no-progress"], "--out"),
}


def test_an_unwritable_output_folder_is_one_line_before_the_work(setup, tmp_path) -> None:
    """Every writing command, each into a folder it cannot create (all started at once):
    one line naming the folder, the cause and the fix, exit status 2, nothing written."""
    from concurrent.futures import ThreadPoolExecutor

    locked = unwritable_folder(tmp_path / "locked")
    out = locked / "out"
    with ThreadPoolExecutor(len(COMMANDS)) as pool:
        runs = {command: pool.submit(_tallformer, *make_args(setup, out), cwd=tmp_path)
                for command, (make_args, _) in COMMANDS.items()}
    for command, (_, option) in COMMANDS.items():
        proc = runs[command].result()
        assert "Traceback" not in proc.stderr, f"{command}: {proc.stderr[-3000:]}"
        assert proc.returncode == 2, f"{command}: exit {proc.returncode}: {proc.stderr[-3000:]}"
        assert proc.stderr.splitlines() == [
            f"error: cannot write {out}: permission denied; make {locked} writable (chmod u+w {locked}) or "
            f"choose another {option}"], command
        if command.startswith("eval"):
            assert "mAP" not in proc.stdout  # checked before the evaluation, not after
    assert list(locked.iterdir()) == []


def test_detect_reports_a_failed_write_and_goes_on_with_the_other_videos(setup, tmp_path) -> None:
    out = tmp_path / "det"
    in_the_way = out / f"{setup['a'].stem}.json"
    in_the_way.mkdir(parents=True)  # a folder where the first video's JSON goes
    proc = _tallformer("detect", setup["a"], setup["b"], "--checkpoint", setup["ckpt"], "--out", out,
                       "--no-progress")
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: cannot write {in_the_way}: it is a folder; remove it or choose another --out",
        f"1 of 2 videos could not be written: {setup['a']}",
    ]
    assert {p.suffix for p in out.glob(f"{setup['b'].stem}.*")} == {".json", ".csv", ".png", ".html"}
