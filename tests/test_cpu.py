"""How a process uses the CPU (`tallformer.engine.cpu`): thread budget, passive waiting, and
the demo's reproducible arithmetic, which gives the same bits on machines that differ in
cores and SIMD units (simulated here: one CPU instead of two, MKL and oneDNN capped at AVX2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tallformer.engine import cpu

ROOT = Path(__file__).resolve().parents[1]

# a backbone step of the demo model in a fresh process: forward, backward, the gradients' hash
STEP = """
import hashlib, os, sys
os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(",")})
from tallformer.commands.common import prepare_cpu
if sys.argv[2] == "demo":
    prepare_cpu("demo")
import torch
from tallformer.engine import cpu
if sys.argv[2] == "demo":
    cpu.apply(reproducible=True)
from tallformer.config import load_config
from tallformer.engine.factory import build_detector
torch.manual_seed(0)
backbone = build_detector(load_config("demo")).backbone.train()
x = torch.randn(4, 3, 32, 32, 32)
backbone(x).float().pow(2).mean().backward()
h = hashlib.sha256()
for name, p in sorted(backbone.named_parameters()):
    if p.grad is not None:
        h.update(p.grad.numpy().tobytes())
print(h.hexdigest(), torch.get_num_threads(), cpu.describe())
"""


def _step(cpus: str, mode: str, **env: str) -> tuple[str, str]:
    full = {k: v for k, v in os.environ.items()
            if k not in ("OMP_NUM_THREADS", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "OMP_WAIT_POLICY")}
    full.update(env, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-c", STEP, cpus, mode], env=full, capture_output=True, text=True,
                         timeout=300, check=True).stdout.split(maxsplit=2)
    return out[0], out[2].strip()


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to vary the core count")
def test_the_demos_arithmetic_is_the_same_on_another_machine() -> None:
    both = ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:2])
    one = both.split(",")[0]
    here, settings = _step(both, "demo")
    assert settings.startswith("1 intra-op thread(s)")
    assert "oneDNN off" in settings
    # a machine with one core whose MKL and oneDNN stop at AVX2 (no AVX-512)
    other, _ = _step(one, "demo", MKL_ENABLE_INSTRUCTIONS="AVX2", ONEDNN_MAX_CPU_ISA="AVX2")
    assert other == here


def test_prepare_process_sets_what_is_unset_and_keeps_the_users() -> None:
    env: dict[str, str] = {}
    got = cpu.prepare_process(environ=env)
    assert got == env == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(cpu.cpu_budget())}
    env = {"OMP_NUM_THREADS": "3", "MKL_CBWR": "COMPATIBLE"}
    got = cpu.prepare_process(reproducible=True, environ=env)
    assert got == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "3", "ATEN_CPU_CAPABILITY": "avx2",
                   "MKL_CBWR": "COMPATIBLE"}
    env = {"TALLFORMER_THREADS": "1"}
    assert cpu.prepare_process(environ=env)["OMP_NUM_THREADS"] == "1"
    assert not cpu.prepared(reproducible=True)  # a given environment is not this process's


def test_the_cpu_budget_is_capped_by_the_cgroup_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu._cgroup_cpus(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu._cgroup_cpus(tmp_path) is None
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu._cgroup_cpus(tmp_path) == 2.0
    assert 1 <= cpu.cpu_budget() <= len(os.sched_getaffinity(0))


def test_the_command_sets_the_process_up_before_torch_loads() -> None:
    code = ("import os, sys\n"
            "from tallformer.cli import main\n"
            "main(['model-info', '--config', 'demo'])\n"
            "import torch\n"
            "print(os.environ['OMP_WAIT_POLICY'], os.environ['OMP_NUM_THREADS'], torch.get_num_threads())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = str(ROOT / "src")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         check=True).stdout.splitlines()[-1]
    budget = cpu.cpu_budget()
    assert out == f"PASSIVE {budget} {budget}"
