"""`benchmarks/gpu_check.sh --cpu`: the device check's every part at toy size on the CPU.

The script is prepared for a GPU machine that only some sessions get; this runs it whole
(paper-scale step, torchrun with gloo and data workers, kill + resume, deterministic rerun,
`tallformer detect`, the bare backbone) so that it cannot rot in between. It checks what
each part wrote and the summary lines, never the timings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_cpu_mode_runs_every_part(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), WORK=str(tmp_path / "work"), PYTHON=sys.executable)
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"

    # the summary: one line per part, after the marker
    summary = proc.stdout.split("== summary", 1)[1].splitlines()[1:]
    assert [line.split(":")[0] for line in summary] == [
        "part1 paper_scale", "part2 train_loop", "part3 detect", "part4 evaluator_bank_io"]
    for line in summary[:3]:
        assert re.search(r" \[ok, \d+ s\]$", line), line
    assert "loop_vs_bare=" in summary[1]
    assert "resume_identical=true" in summary[1]
    assert "detect_vs_backbone=" in summary[2]
    assert "skipped" in summary[3]

    p1 = json.loads((out / "part1_paper_scale.json").read_text())
    assert p1["smoke"] is True
    assert set(p1["settings"]) == {"015", "100", "015_nockpt"}
    for name, s in p1["settings"].items():
        assert s["oom"] is False
        assert s["peak_memory_gb"] is not None, name
        assert s["step_s"] > 0, name
        assert s["checkpointing"] is (name != "015_nockpt")
        assert p1[f"mem_gb_{name}"] == s["peak_memory_gb"]
        assert p1[f"step_s_{name}"] == s["step_s"]
    assert p1["settings"]["015"]["kept_chunks"] < p1["settings"]["100"]["kept_chunks"]
    assert p1["target_mem_gb_015"] == 6.0

    p2 = json.loads((out / "part2_train_loop.json").read_text())
    assert p2["complete"] is True
    assert p2["bank_build"]["frames"] > 0
    assert p2["process_group"]["ddp"] is True
    assert p2["process_group"]["backend"] == "gloo"
    assert p2["process_group"]["world_size"] == 1
    assert p2["loop"]["steps"] == p2["steps"] == 8
    assert p2["loop_vs_bare"] > 0
    assert p2["bare"]["samples_per_s"] > 0
    assert 0 <= p2["data_wait_fraction"] <= 1
    resume = p2["resume"]
    assert resume["killed"] is True
    assert resume["checkpoint_step"] == p2["kill_after_step"] == 4
    assert resume["killed_at_logged_step"] > 4
    assert resume["rolled_back_rows"] > 0
    assert p2["resume_identical"] is True
    assert resume["comparison"]["identical"] is True
    assert resume["comparison"]["model"]["tensors"] > 0
    assert resume["comparison"]["bank"]["videos"] == 6
    det = p2["deterministic"]  # always run with --cpu
    assert det["process_group"]["deterministic_algorithms"] is True
    assert p2["deterministic_identical"] is True
    assert Path(p2["checkpoint"]).name == "last.pt"

    p3 = json.loads((out / "part3_detect.json").read_text())
    assert p3["complete"] is True
    assert p3["checkpoint_source"].startswith("part 2")
    assert {"synth_0000.json", "synth_0000.csv", "synth_0000.png", "synth_0000.html"} <= set(p3["cli"]["outputs"])
    assert p3["cli"]["frames"] == p3["detect"]["frames"] == p3["backbone"]["frames"] == 300  # 20 s at 15 fps
    assert p3["detect"]["detections"] == p3["cli"]["detections"]
    assert p3["detect_vs_backbone"] > 0
    assert p3["detect_vs_backbone_chunk_grid"] > 0
    assert p3["detect"]["gpu_utilization"] is None
    assert p3["detect"]["peak_memory_gb"] is not None

    assert json.loads((out / "part4_skipped.json").read_text())["skipped"] is True
    parts = json.loads((out / "summary.json").read_text())["parts"]
    assert [parts[k]["status"] for k in sorted(parts)] == ["ok", "ok", "ok", "skipped"]

    # docs/gpu.md's table, from these files
    table = subprocess.run([sys.executable, "benchmarks/gpu_check/table.py", str(out)], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[-1].rstrip(" |") for line in table[2:]}
    assert rows["device"].startswith("CPU")
    assert rows["SIGKILL after step 4 + resume, against straight"] == "bit-identical"
    assert rows["loop_vs_bare (whole loop / bare steps, samples/s)"].startswith(f"{p2['loop_vs_bare']:.3f}")
    assert rows["training peak memory (max_memory_allocated)"] == "not measured"  # no CUDA
    assert not [line for line in table if "did not complete" in line]


# --------------------------------------------------------------------------- the two switches


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_process_forms_a_process_group_only_when_asked(monkeypatch):
    import torch

    from tallformer.engine.distributed import ONE_PROCESS_GROUP_ENV, start_processes

    # what torchrun --nproc_per_node 1 sets
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0",
                       "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(ONE_PROCESS_GROUP_ENV, raising=False)
    plain = start_processes("cpu")
    assert not plain.distributed
    assert not torch.distributed.is_initialized()

    monkeypatch.setenv(ONE_PROCESS_GROUP_ENV, "1")
    procs = start_processes("cpu")
    try:
        assert procs.distributed
        assert procs.owns_group
        assert procs.world_size == 1
        assert torch.distributed.get_backend() == "gloo"
        assert procs.gather("x") == ["x"]
    finally:
        procs.close()
    assert not torch.distributed.is_initialized()

    monkeypatch.delenv("MASTER_ADDR")  # not under torchrun: no group, whatever the switch says
    assert not start_processes("cpu").distributed


def test_deterministic_switch(monkeypatch):
    import torch

    from tallformer.engine.device import DETERMINISTIC_ENV, deterministic_from_env

    monkeypatch.delenv(DETERMINISTIC_ENV, raising=False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert deterministic_from_env() is False
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ

    monkeypatch.setenv(DETERMINISTIC_ENV, "1")
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        assert deterministic_from_env() is True
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.backends.cudnn.benchmark is False
        assert torch.backends.cudnn.deterministic is True
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved
