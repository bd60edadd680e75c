"""How a process uses the CPU: intra-op threads, and arithmetic that is the same on any machine.

Two steps, because torch reads some settings only when it loads: `prepare_process` sets the
environment before torch is imported (the `tallformer` command calls it first, so this
module imports no torch at load time), then `apply` sets torch's own switches once it is.

**Threads.** torch runs each operator on an OpenMP pool of one thread per CPU of the
process (`os.sched_getaffinity`; torch ignores a cgroup CPU quota, so a container limited
to 2 CPUs on a 64-core host gets 64). A step of the demo runs thousands of small operators,
each ending in a barrier. GNU OpenMP's threads spin at a barrier before they sleep, so on a
machine whose cores other processes keep busy the spinning threads take the cores the
working ones need, and every operator waits for a thread the scheduler took off its core:
the step takes 10-100x longer instead of the 2-4x a fair share costs
(`benchmarks/shared_machine.py`). So idle threads sleep at once (``OMP_WAIT_POLICY=PASSIVE``),
and the pool has `intra_op_threads`: the CPU budget (affinity, capped by the cgroup quota),
or ``TALLFORMER_THREADS`` where it is set.

**Reproducible arithmetic** (`REPRODUCIBLE`, the demo's). A float result on a CPU depends on
the thread count (how a reduction is split), on the SIMD kernels ATen dispatches to
(AVX-512 where the CPU has it, else AVX2), on MKL's code path for matrix products, and on
oneDNN's convolutions (their own ISA dispatch and blocking by cache size). In the demo's
2,250 steps each of these alone moves the final mAP by points. `REPRODUCIBLE` fixes them:
1 intra-op thread, ATen's AVX2 kernels (``ATEN_CPU_CAPABILITY=avx2``), MKL's conditional
numerical reproducibility on its AVX2 branch (``MKL_CBWR=AVX2``), and torch's native
convolutions instead of oneDNN's. Then runs on one torch build give the same bits on any
Intel CPU with AVX2 (2013 on), whatever its cores, AVX-512 or caches. Where MKL does not
honour its AVX2 branch (non-Intel CPUs) ``MKL_CBWR=COMPATIBLE`` is the setting that
matches across vendors, at about twice the backbone's time: the variable set by the user
wins over ours. A GPU run is another arithmetic altogether.

Example:
    >>> from tallformer.engine.cpu import prepare_process
    >>> settings = prepare_process(reproducible=True, environ={})
    >>> settings["OMP_NUM_THREADS"], settings["OMP_WAIT_POLICY"], settings["MKL_CBWR"]
    ('1', 'PASSIVE', 'AVX2')
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["REPRODUCIBLE", "apply", "cpu_budget", "describe", "intra_op_threads", "prepare_process", "prepared"]

# environment set before torch loads for reproducible CPU arithmetic (see the module)
REPRODUCIBLE = {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
THREADS_VARIABLE = "TALLFORMER_THREADS"
_PREPARED: dict[str, bool] = {}  # "reproducible" -> True once prepare_process set this process up


def _cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup (v2 ``cpu.max``, v1 ``cpu.cfs_*``), in CPUs."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


def cpu_budget() -> int:
    """The CPUs this process may use: its affinity set, capped by a cgroup CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_cpus()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def intra_op_threads(environ: MutableMapping[str, str] | None = None) -> int:
    """``TALLFORMER_THREADS`` when set (a positive integer), else `cpu_budget`."""
    env = os.environ if environ is None else environ
    value = env.get(THREADS_VARIABLE, "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return cpu_budget()


def _has_avx2() -> bool:
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def prepare_process(*, reproducible: bool = False,
                    environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the CPU variables in ``environ`` (default `os.environ`) before torch is imported;
    a variable already set is left as it is. Returns what is in effect.

    ``OMP_WAIT_POLICY=PASSIVE``; ``OMP_NUM_THREADS``: `intra_op_threads` (1 when
    `reproducible`); `reproducible` also sets ``ATEN_CPU_CAPABILITY=avx2`` (where the CPU
    has AVX2) and ``MKL_CBWR=AVX2``. With the process's own environment and torch not yet
    imported, `prepared` then says so (`apply` follows it).
    """
    env = os.environ if environ is None else environ
    wanted = {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(intra_op_threads(env))}
    if reproducible:
        wanted.update(REPRODUCIBLE)
        if environ is None and not _has_avx2():
            wanted.pop("ATEN_CPU_CAPABILITY")
    for key, value in wanted.items():
        env.setdefault(key, value)
    if environ is None and "torch" not in sys.modules:
        _PREPARED["reproducible"] = reproducible
    return {key: env[key] for key in wanted}


def prepared(*, reproducible: bool = False) -> bool:
    """Whether `prepare_process` set this process up (with `reproducible`) before torch loaded."""
    return _PREPARED.get("reproducible") == reproducible if _PREPARED else False


def apply(*, reproducible: bool = False) -> None:
    """torch's side, once it is imported: the intra-op threads of ``OMP_NUM_THREADS`` (as
    `prepare_process` set it), and with `reproducible` torch's native convolutions (oneDNN off).
    """
    import torch

    threads = os.environ.get("OMP_NUM_THREADS", "").strip()
    if threads.isdigit() and int(threads) > 0 and torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))
    if reproducible:
        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # a module-level switch


def describe() -> str:
    """One line: the threads and kernels this process computes with."""
    import torch

    parts = [f"{torch.get_num_threads()} intra-op thread(s)",
             f"{torch.backends.cpu.get_cpu_capability()} kernels",
             f"MKL_CBWR={os.environ.get('MKL_CBWR', 'unset')}",
             "oneDNN " + ("on" if torch.backends.mkldnn.enabled else "off"),
             f"torch {torch.__version__}"]
    return ", ".join(parts)
