"""`tallformer train`: the schedule, parameter groups, checkpoints, and exact resume after a kill.

The resume tests run the real command in real processes (one process, and two under
`torch.distributed.run` with gloo), on the demo config as shipped with its data workers on,
kill them with SIGKILL in the middle of the run, resume, and compare the final weights,
optimizer state and memory bank bit for bit with an uninterrupted run. A run that is not
killed and is not the first resume of its kind goes through the same entry point in the
test's process, on one intra-op thread as the processes (`_main`): a process of its own
would add only its start-up.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import (
    deep_equal,
    descendants,
    final_state,
    kill_tree,
    run_cli,
    train_lockstep,
)
from tallformer.config import load_config
from tallformer.engine.checkpoint import CheckpointError, load_checkpoint
from tallformer.engine.schedule import LrSchedule
from tallformer.engine.train import TrainingError, check_param_groups, train

ROOT = Path(__file__).resolve().parents[1]
STEPS = 7  # 5 training videos, batch 2: 3 steps per epoch (the last one padded)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    from tallformer.data.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("train_data")
    ann = generate_synthetic_dataset(root / "syn", 6, seed=3, min_length=10, max_length=14,
                                     val_fraction=0.2, progress=False)
    return {"annotations": ann, "videos": root / "syn" / "videos", "root": root}


def _args(data: dict[str, Path], run: Path, *extra: str) -> list[str]:
    return ["--config", "demo", f"data.annotations={data['annotations']}", f"data.videos={data['videos']}",
            f"run_dir={run}", "train.log_interval=1", "--no-progress", *extra]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(args: list[str], nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "tallformer", "train", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "tallformer", "train", *args]


def _run(args: list[str], nproc: int = 1, *, expect: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(_command(args, nproc), env=_env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc


def _main(args: list[str], *, expect: int = 0) -> subprocess.CompletedProcess:
    """`tallformer train ARGS` in this process (`helpers.run_cli`): for what fails before the
    first step or only prints its lines."""
    proc = run_cli(["train", *args])
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc


def _logged_steps(run: Path) -> list[int]:
    log = run / "log.jsonl"
    if not log.is_file():
        return []
    steps = []
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError, KeyError):  # a line being written
            steps.append(json.loads(line)["step"])
    return steps


def _run_and_kill(args: list[str], run: Path, after_step: int, nproc: int = 1) -> None:
    """Start the command and SIGKILL its whole process group once `after_step` is logged."""
    proc = subprocess.Popen(_command(args, nproc), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while max(_logged_steps(run), default=0) < after_step:
            assert proc.poll() is None, f"the run ended before step {after_step}: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "the run did not reach the kill step in time"
            time.sleep(0.02)
    finally:
        tree = [proc.pid, *descendants(proc.pid)]
        kill_tree(proc.pid)  # the launcher, torchrun's workers and their data workers
        proc.wait()
    for _ in range(100):  # every one of them gone (orphans are reaped by init)
        alive = [p for p in tree if _alive(p)]
        if not alive:
            break
        time.sleep(0.05)
    assert not alive, f"processes {alive} survived the kill"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"




def _assert_same_run(a: Path, b: Path, steps: int = STEPS) -> None:
    sa, bank_a = final_state(a)
    sb, bank_b = final_state(b)
    assert sa["step"] == sb["step"] == steps
    for key in ("model", "optimizer", "epoch", "batch_in_epoch", "samples", "rng"):
        assert deep_equal(sa[key], sb[key]), f"{key} differs between {a.name} and {b.name}"
    assert bank_a.keys() == bank_b.keys()
    assert len(bank_a) == 5
    for name in bank_a:
        assert np.array_equal(bank_a[name], bank_b[name]), f"bank {name} differs"


# --------------------------------------------------------------------------- the schedule


def test_schedule_values_against_the_formulas():
    cfg = load_config("thumos14_swin_b")
    s = LrSchedule.from_config(cfg.train)
    for b in (0.01, 0.004):
        for e in (0, 1, 37, 99, 100, 250, 999):
            want = 0.01 * b + 0.5 * (b - 0.01 * b) * (1 + math.cos(math.pi * (e % 100) / 100))
            assert s.epoch_lr(b, e) == pytest.approx(want, rel=1e-12)
        # warm-up: it = samples / 16 (the paper's global batch), whatever the run's batch
        for samples, it in ((0, 0), (16 * 250, 250), (16 * 499, 499), (16 * 500, 500), (16 * 9000, 9000)):
            for global_batch in (4, 16, 64):
                lr = s.lr(b, 3, samples, global_batch)
                factor = 0.1 + 0.9 * it / 500 if it < 500 else 1.0
                assert lr == pytest.approx(s.epoch_lr(b, 3) * factor, rel=1e-12)
    assert s.epoch_lr(0.01, 100) == pytest.approx(0.01)  # each cycle restarts at the base rate
    assert s.epoch_lr(0.01, 99) == pytest.approx(0.01 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.99))))
    # train.warmup_batch=null: the original's count of this run's own steps
    orig = LrSchedule.from_config(load_config("thumos14_swin_b", ["train.warmup_batch=null"]).train)
    assert orig.lr(0.01, 0, 4 * 250, 4) == pytest.approx(0.01 * (0.1 + 0.9 * 250 / 500))


def test_the_activitynet_recipe_adam_and_multistep():
    from tallformer.engine.factory import build_detector
    from tallformer.engine.optim import make_optimizer

    cfg = load_config("anet_swin_b")
    s = LrSchedule.from_config(cfg.train)
    # MultiStepLR([8, 10], 0.1) stepped per epoch: epochs 0-7 at the base rate, 8-9 at 0.1x
    assert [s.lr(1e-4, e, 10**6, 4) for e in range(10)] == [1e-4] * 8 + [pytest.approx(1e-5)] * 2
    with torch.device("meta"):
        model = build_detector(cfg)
    opt = make_optimizer(model, cfg.train)
    assert isinstance(opt, torch.optim.Adam)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(1e-4), pytest.approx(4e-6)]
    assert all(g["weight_decay"] == pytest.approx(1e-4) for g in opt.param_groups)
    check_param_groups(model, opt)


def test_schedule_misfits_name_the_setting_and_the_fix():
    from tallformer.config import shipped_configs
    from tallformer.engine.schedule import schedule_misfits

    # the case: the paper's 100-epoch cosine period on a 20-epoch run never anneals
    (line,) = schedule_misfits(load_config("thumos14_swin_b", ["train.max_epochs=20", "train.warmup_iters=5"]).train,
                               50, 16)
    assert line.startswith("train.max_epochs=20 ends 20% into the first cosine cycle of "
                           "train.cosine_period=100 epochs: the learning rate is still 91% of its base at the end")
    assert line.endswith("set train.cosine_period=20 (or a divisor of train.max_epochs) to anneal within the run")
    # a run that ends mid-way through a restarted cycle
    (line,) = schedule_misfits(load_config("thumos14_swin_b", ["train.max_epochs=150"]).train, 50, 16)
    assert "ends 50% into cosine cycle 2 of train.cosine_period=100" in line
    # a warm-up longer than the run: 20 steps of 2 clips against 2 epochs of 3 steps of 2 clips
    (line,) = schedule_misfits(load_config("demo", ["train.max_epochs=2", "train.cosine_period=2"]).train, 3, 2)
    assert line.startswith("the warm-up (train.warmup_iters=20 steps of 2 clips: 40 clips) is longer than the run "
                           "(2 epochs of 6 clips: 12)")
    # multistep milestones all past the end never lower the rate
    (line,) = schedule_misfits(load_config("anet_swin_b", ["train.max_epochs=6"]).train, 100, 16)
    assert line.startswith("train.milestones [8, 10] are all at or after train.max_epochs=6")
    # every shipped config fits itself (anet_swin_b's unreachable milestone 10 is the original's)
    for name in shipped_configs():
        assert schedule_misfits(load_config(name).train, 100, 16) == [], name


def test_every_trainable_parameter_is_in_exactly_one_group():
    from tallformer.engine.factory import build_detector
    from tallformer.engine.optim import make_optimizer

    for name in ("demo", "thumos14_swin_b"):
        cfg = load_config(name)
        with torch.device("meta"):
            model = build_detector(cfg)
        opt = make_optimizer(model, cfg.train)
        check_param_groups(model, opt)
        n = sum(p.numel() for g in opt.param_groups for p in g["params"])
        assert n == sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert [g["name"] for g in opt.param_groups] == ["neck_head", "backbone"]
        assert opt.param_groups[1]["lr"] == pytest.approx(cfg.train.lr * 0.4)
    frozen = next(p for p in model.parameters() if not p.requires_grad)
    opt.param_groups[0]["params"].append(frozen)
    with pytest.raises(TrainingError, match="1 frozen or foreign"):
        check_param_groups(model, opt)


# --------------------------------------------------------------------------- exact resume


@pytest.fixture(scope="module")
def straight(data) -> Path:
    run = data["root"] / "straight"
    _run(_args(data, run, f"train.max_steps={STEPS}"))
    return run


@pytest.mark.slow
def test_run_writes_its_files(straight):
    assert (straight / "config.yaml").is_file()
    assert load_config(straight / "config.yaml").train.max_steps == STEPS
    names = sorted(p.name for p in (straight / "checkpoints").iterdir())
    assert names == ["last.pt"]
    state = load_checkpoint(straight / "checkpoints" / "last.pt")
    from tallformer.data.synthetic import class_names

    assert state["classes"] == sorted(class_names(4))
    assert state["epoch"] == 2
    assert state["batch_in_epoch"] == 1
    assert state["bank"]["fingerprint"]
    records = [json.loads(ln) for ln in (straight / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    first = records[0]
    for key in ("loss", "loss_cls", "loss_reg", "lr", "step_time", "data_time", "data_wait_fraction"):
        assert key in first
    assert set(first["lr"]) == {"neck_head", "backbone"}
    assert all(np.isfinite(r["loss"]) for r in records)


@pytest.mark.slow
def test_max_steps_then_resume_is_the_same_run(data, straight):
    run = data["root"] / "in_two"
    _main(_args(data, run, "train.max_steps=3"))
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    _run(_args(data, run, f"train.max_steps={STEPS}"))  # the resume: a process of its own
    _assert_same_run(straight, run)


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(data, straight):
    run = data["root"] / "killed"
    args = _args(data, run, f"train.max_steps={STEPS}", "train.checkpoint_steps=3")
    _run_and_kill(args, run, after_step=5)
    journal = list((run / "journal").glob("*.bin"))
    assert journal, "the killed run left no bank journal"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    proc = _run(args)
    assert "rolled back" in proc.stdout
    _assert_same_run(straight, run)
    steps = _logged_steps(run)
    assert steps == sorted(set(steps))  # the killed run's lines past step 3 were redone once


@pytest.mark.slow
def test_a_truncated_last_pt_names_the_intact_checkpoints_and_the_exact_resume(data, straight):
    """A copy of a killed run whose last.pt was cut short: --resume says so, lists the
    other checkpoints (the one of last.pt's step is exact, an older one is not) with the
    command, and that command gives the uninterrupted run bit for bit."""
    run = data["root"] / "cut_last"
    args = _args(data, run, f"train.max_steps={STEPS}", "train.checkpoint_steps=2")
    _run_and_kill(args, run, after_step=5)
    folder = run / "checkpoints"
    assert load_checkpoint(folder / "last.pt")["step"] == 4
    whole = (folder / "last.pt").read_bytes()
    (folder / "last.pt").unlink()  # a copy: its own file, not a hard link to step_000004.pt
    (folder / "last.pt").write_bytes(whole[:len(whole) * 2 // 3])
    proc = _main(args, expect=2)
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: {folder / 'last.pt'}: truncated: the zip archive ends at byte "
                           f"{len(whole) * 2 // 3:,}, inside record ")
    assert (f"Intact checkpoints in {folder}: step_000004.pt (step 4, epoch 1): resuming from it is exact: the bank's "
            "journal goes back to this step; step_000002.pt (step 2, epoch 0): resuming from it is not exact: the "
            "memory bank keeps the rows written after step 2 (its journal only goes back to step 4, last.pt's)") in line
    command = (f"cp {folder / 'step_000004.pt'} {folder / 'last.pt'} && tallformer train --config "
               f"{run / 'config.yaml'} run_dir={run} --resume")
    assert f"To resume from step_000004.pt: {command} " in line
    # the command as printed gives the uninterrupted run
    copy, resume = command.split(" && ")
    subprocess.run(copy.split(), check=True)
    program, command, *rest = resume.split()
    assert (program, command) == ("tallformer", "train")
    _main(rest)
    _assert_same_run(straight, run)


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(data, straight, tmp_path):
    """The process dies inside torch.save of the step-6 checkpoint: last.pt stays step 3."""
    run = data["root"] / "killed_in_save"
    args = _args(data, run, f"train.max_steps={STEPS}", "train.checkpoint_steps=3")
    driver = tmp_path / "die_in_save.py"
    driver.write_text(
        "import os, signal, sys, torch\n"
        "real = torch.save\n"
        "def save(obj, f, *a, **k):\n"
        "    if isinstance(obj, dict) and obj.get('step') == 6:\n"
        "        with open(f, 'wb') as out:\n"
        "            out.write(b'PK half a checkpoint')\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(obj, f, *a, **k)\n"
        "torch.save = save\n"
        "from tallformer.cli import main\n"
        "sys.exit(main(['train', *sys.argv[1:]]))\n")
    proc = subprocess.run([sys.executable, str(driver), *args], env=_env(), capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    visible = sorted(p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith("."))
    assert visible == ["last.pt", "step_000003.pt"]  # the half-written one only under a temp name
    _main(args)
    _assert_same_run(straight, run)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_two_processes_killed_and_resumed_match_straight_and_a_replay(data, tmp_path):
    over = ["data.batch_size=1", "model.backbone.drop_path_rate=0", "train.backbone_lr_mult=0"]
    steps = 4  # 5 videos on 2 ranks of 1: 3 steps per epoch, the last one padded
    straight2 = data["root"] / "straight2"
    _run(_args(data, straight2, f"train.max_steps={steps}", *over), nproc=2)
    run = data["root"] / "killed2"
    args = _args(data, run, f"train.max_steps={steps}", "train.checkpoint_steps=2", *over)
    _run_and_kill(args, run, after_step=3, nproc=2)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2
    _run(args, nproc=2)
    _assert_same_run(straight2, run, steps)
    # the bank against a single-process replay of the ranks' samples (the backbone's lr is 0
    # and drop-path off, so a written feature depends only on its input frames)
    _, got = final_state(run)
    want = _replay_two_ranks(data, tmp_path, over, steps)
    assert got.keys() == want.keys()
    for name in got:
        assert np.array_equal(got[name], want[name]), f"bank {name} differs from the replay"


def _replay_two_ranks(data: dict[str, Path], tmp_path: Path, over: list[str], steps: int
                      ) -> dict[str, np.ndarray]:
    from tallformer.data.annotations import load_annotations
    from tallformer.engine.bank_build import build_bank
    from tallformer.engine.factory import build_detector
    from tallformer.engine.loader import make_train_loader
    from tallformer.engine.optim import make_optimizer
    from tallformer.memory.bank import MemoryBank

    cfg = load_config("demo", [f"data.annotations={data['annotations']}", f"data.videos={data['videos']}",
                               "data.num_workers=0", *over])
    torch.manual_seed(cfg.seed)
    model = build_detector(cfg)
    build_bank(cfg, tmp_path / "replay_bank", backbone=model.backbone, progress=False)
    bank = MemoryBank.open(tmp_path / "replay_bank", "r+")
    ann = load_annotations(cfg.data.annotations)
    optimizer = make_optimizer(model, cfg.train)
    loaders = [make_train_loader(cfg, ann, bank, rank=r, world_size=2) for r in range(2)]
    train_lockstep(model, loaders, optimizer, bank, steps)
    bank.flush()
    return {p.name: np.load(p) for p in sorted((tmp_path / "replay_bank").rglob("*.npy"))}


# --------------------------------------------------------------------------- faults


def test_a_schedule_that_never_anneals_is_one_warning_line(data, tmp_path):
    proc = _main(_args(data, tmp_path / "short", "train.max_epochs=20", "train.max_steps=1"))
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: ")]
    assert warnings == [
        "warning: train.max_epochs=20 ends 13% into the first cosine cycle of train.cosine_period=150 epochs: the "
        "learning rate is still 96% of its base at the end, it never anneals; set train.cosine_period=20 "
        "(or a divisor of train.max_epochs) to anneal within the run"], proc.stderr


@pytest.mark.slow
def test_a_resume_with_a_changed_config_is_refused(data, straight):
    proc = _main(_args(data, straight, "train.lr=0.02", "memory.keep_ratio=0.25", "train.max_steps=9"),
                 expect=2)
    err = proc.stderr.strip()
    assert err.startswith("error: ")
    assert "train.lr: 0.01 -> 0.02" in err
    assert "memory.keep_ratio: 0.5 -> 0.25" in err
    assert "max_steps" not in err  # run length may change
    assert len(err.splitlines()) == 1


def _cfg(data: dict[str, Path], run: Path, *extra: str):
    return load_config("demo", [f"data.annotations={data['annotations']}", f"data.videos={data['videos']}",
                                f"run_dir={run}", "data.num_workers=0", *extra])


@pytest.mark.slow
def test_resume_flags(data, straight, tmp_path):
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(_cfg(data, tmp_path / "none"), resume=True)
    with pytest.raises(TrainingError, match="already holds a run"):
        train(_cfg(data, straight, "data.num_workers=2"), resume=False)
    with pytest.raises(TrainingError, match="already holds a run"):
        train(_cfg(data, straight, "train.resume=never"))


def test_a_crafted_checkpoint_is_refused(data, tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    run = tmp_path / "crafted"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"format": "tallformer-train", "model": Evil()}, run / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match=r"refused to load: the file holds a Python object posix\.system"):
        load_checkpoint(run / "checkpoints" / "last.pt")
    proc = _main(_args(data, run, "--resume"), expect=2)
    assert "refused to load" in proc.stderr
    assert not (tmp_path / "pwned").exists()
    (run / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(run / "checkpoints" / "last.pt")


def test_a_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(data, tmp_path, monkeypatch):
    import tallformer.engine.train as T

    real = T.train_step
    calls = []

    def poisoned(model, batch, *a, **k):
        calls.append(1)
        if len(calls) == 4:  # a corrupt clip: the forward gives NaN
            batch["chunks"] = batch["chunks"] * float("nan")
        return real(model, batch, *a, **k)

    monkeypatch.setattr(T, "train_step", poisoned)
    run = tmp_path / "nan"
    cfg = _cfg(data, run, "train.checkpoint_steps=2")
    with pytest.raises(TrainingError, match=r"step 4 \(epoch 1\): training loss is nan"):
        train(cfg, progress=False)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    for path in (run / "bank").rglob("*.npy"):
        assert np.isfinite(np.load(path)).all()


def test_bad_inputs_fail_before_the_first_step(data, tmp_path):
    from tallformer.errors import TallformerError

    ann = json.loads(Path(data["annotations"]).read_text())
    for entry in ann["database"].values():
        entry["subset"] = "validation"
    no_train = tmp_path / "no_train.json"
    no_train.write_text(json.dumps(ann))
    empty = tmp_path / "empty_videos"
    empty.mkdir()
    cases = [
        ([f"data.annotations={no_train}"], "'training'"),
        ([f"data.videos={tmp_path / 'nowhere'}"], "nowhere"),
        ([f"memory.bank_dir={tmp_path / 'no_bank'}"], "no_bank"),
        ([f"data.videos={empty}"], "empty_videos"),
    ]
    for i, (over, needle) in enumerate(cases):
        run = tmp_path / f"bad{i}"
        with pytest.raises(TallformerError, match=needle):
            train(_cfg(data, run, *over), progress=False)
        assert not (run / "checkpoints").exists()
        assert not (run / "log.jsonl").exists()
    # on the command line: one line, exit status 2
    proc = _main(_args(data, tmp_path / "cli", f"data.videos={empty}"), expect=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "empty_videos" in lines[0]


@pytest.mark.slow
def test_periodic_test_logs_the_table_and_keeps_best_and_changes_nothing_else(data, straight, tmp_path):
    """test.interval=1: a test after every epoch, logged, best.pt kept; the training itself
    (weights, optimizer, bank) is bit-identical to the run without tests."""
    run = data["root"] / "with_tests"
    _main(_args(data, run, f"train.max_steps={STEPS}", "test.interval=1", "data.test_subset=validation"))
    _assert_same_run(straight, run)
    tests = [json.loads(ln)["test"] for ln in (run / "log.jsonl").read_text().splitlines() if '"test"' in ln]
    assert len(tests) == 2  # after epochs 1 and 2 (the run stops inside epoch 3)
    assert all(0.0 <= t["average_mAP"] <= 1.0 for t in tests)
    assert {"mAP@0.3", "mAP@0.7"} <= set(tests[0])
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert best["average_mAP"] == max(t["average_mAP"] for t in tests)
    state = load_checkpoint(run / "checkpoints" / "best.pt")
    assert state["epoch"] == best["epoch"]
    assert state["test"]["average_mAP"] == best["average_mAP"]
    for epoch in (1, 2):
        assert (run / "test" / f"epoch_{epoch:04d}" / "metrics.json").is_file()


# --------------------------------------------------------------------------- one run per folder, stops, full disks


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _wait_for_step(proc: subprocess.Popen, run: Path, step: int) -> None:
    deadline = time.monotonic() + 300
    while max(_logged_steps(run), default=0) < step:
        assert proc.poll() is None, f"the run ended before step {step}: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"the run did not reach step {step} in time"
        time.sleep(0.02)


def test_a_run_dir_in_use_refuses_a_second_run_test_and_demo_and_the_first_run_is_a_solo_run(data, straight,
                                                                                              tmp_path):
    """Run A trains (with periodic tests, so it writes RUN/test/ too). While it holds the
    folder (paused after its first step), the same `train` command, a `test` writing into
    RUN/test/ and a `demo` writing into RUN stop before touching anything, in one line
    naming the folder and A's host and pid (exit status 2); a `test` writing elsewhere runs.
    A then ends exactly as a run alone does."""
    run = tmp_path / "shared"
    args = _args(data, run, f"train.max_steps={STEPS}", "test.interval=1", "data.test_subset=validation")
    first = subprocess.Popen(_command(args, 1), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    procs: dict[str, subprocess.Popen] = {}
    try:
        _wait_for_step(first, run, 1)
        os.killpg(first.pid, signal.SIGSTOP)
        before = _files(run)
        data_args = [f"data.annotations={data['annotations']}", f"data.videos={data['videos']}"]
        tm = [sys.executable, "-m", "tallformer"]
        others = {
            "train": (_command(args, 1), run, "run_dir"),
            "test": ([*tm, "test", "--config", "demo", *data_args, "--checkpoint",
                      str(straight / "checkpoints" / "last.pt"), "--out", str(run / "test"), "--no-progress"],
                     run / "test", "--out"),
            "demo": ([*tm, "demo", "--quick", "--out", str(run), "--no-progress"], run, "--out"),
            "test elsewhere": ([*tm, "test", "--config", "demo", *data_args, "--checkpoint",
                                str(straight / "checkpoints" / "last.pt"), "--out", str(tmp_path / "elsewhere"),
                                "--no-progress"], None, None),
        }
        procs |= {name: subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        cwd=tmp_path, start_new_session=True) for name, (cmd, _, _) in others.items()}
        host = socket.gethostname()
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            folder, option = others[name][1:]
            if folder is None:
                assert proc.returncode == 0, err[-3000:]
                continue
            assert proc.returncode == 2, f"{name}: exit {proc.returncode}\n{out[-2000:]}\n{err[-3000:]}"
            assert out == ""
            (line,) = err.splitlines()
            assert line.startswith(f"error: {folder} is in use by tallformer train (pid {first.pid} on host {host}, "
                                   "since "), line
            assert line.endswith(f"; wait for it to end or stop it (kill {first.pid} on {host}), or choose "
                                 f"another {option}"), line
        assert _files(run) == before  # nothing touched: no rollback, no log line, no config write
    except BaseException:
        for proc in [first, *procs.values()]:
            kill_tree(proc.pid)
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    _assert_same_run(straight, run)


def test_ctrl_c_finishes_the_step_saves_and_the_printed_resume_is_exact(data, straight):
    """SIGINT to the whole process group (Ctrl-C in a terminal, the data worker included)
    after step 3: the step ends, a checkpoint is written (its bank journal starts at its
    step), the resume command is printed, exit status 130; that command ends the run
    exactly as the uninterrupted one."""
    run = data["root"] / "ctrl_c"
    args = _args(data, run, f"train.max_steps={STEPS}", "data.num_workers=1")
    proc = subprocess.Popen(_command(args, 1), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _wait_for_step(proc, run, 3)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        kill_tree(proc.pid)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    stopped = state["step"]
    assert 3 <= stopped < STEPS
    assert _logged_steps(run) == list(range(1, stopped + 1))
    from tallformer.engine.journal import segment_steps

    assert segment_steps(run / "journal") == [stopped]  # the bank's journal and last.pt agree
    last = err.splitlines()[-1]
    command = f"tallformer train --config {run / 'config.yaml'} run_dir={run} --resume"
    assert last == (f"interrupted: SIGINT at step {stopped} (epoch {state['epoch']}): saved "
                    f"{run / 'checkpoints' / 'last.pt'}; resume with: {command}")
    _run([*command.split()[2:], "--no-progress"])
    _assert_same_run(straight, run)


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_the_resume_is_exact(data, straight, tmp_path):
    """run_dir on a 24 MiB file system: the step-3 checkpoint (15 MB) fits, the step-6 one
    does not. One line says so (not torch's `unexpected pos`), last.pt and step_000003.pt
    stay as they were, no partial file is left; with space again the resume is exact."""
    from helpers import SmallDisk

    disk = SmallDisk(tmp_path / "disk", "24m")
    try:
        run = disk.path / "run"
        args = _args(data, run, f"train.max_steps={STEPS}", "train.checkpoint_steps=3")
        proc = _run(args, expect=2)
        assert "Traceback" not in proc.stderr
        (line,) = proc.stderr.splitlines()
        folder = run / "checkpoints"
        assert line.startswith(f"error: cannot write {folder / 'step_000006.pt'}: no space left on the device ("), line
        assert f"the last checkpoint {folder / 'last.pt'} (step 3) is intact" in line
        assert load_checkpoint(folder / "last.pt")["step"] == 3
        assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "step_000003.pt"]
        disk.resize("64m")
        _run(args)
        _assert_same_run(straight, run)
    finally:
        disk.unmount()
