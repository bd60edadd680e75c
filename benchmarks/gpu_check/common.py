"""What the parts of `benchmarks/gpu_check.sh` share: the machine's description, JSON files,
GPU utilisation sampling and peak memory.

Imported by the part scripts beside it (``sys.path`` gets this folder, ``benchmarks/`` and
``tests/``: the process-tree helpers of ``tests/helpers.py`` and the RSS sampler of
``benchmarks/memory_ratio.py`` are reused, not copied).
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _p in (ROOT / "tests", ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.append(str(_p))

from memory_ratio import PeakRSS  # noqa: E402  (after the path set-up)

__all__ = ["ROOT", "GpuUtilization", "PeakMemory", "machine", "write_part"]


def machine() -> dict[str, Any]:
    """The device, torch and Python this part ran with."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.machine()})",
        "cuda": cuda,
        "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
    }


def write_part(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write a part's figures (atomically: a reader never sees half a file)."""
    from tallformer.atomic import write_json

    write_json(path, data)


class GpuUtilization:
    """GPU utilisation (%) sampled in the background between `start` and `stop`.

    ``nvidia-smi --query-gpu=utilization.gpu -lms INTERVAL`` in a child process; without
    ``nvidia-smi``, ``torch.cuda.utilization()`` (needs pynvml) in a thread; on the CPU, or
    when neither works, `stop` returns None with the reason in `why`.
    """

    def __init__(self, interval_ms: int = 200) -> None:
        self.interval_ms = interval_ms
        self.samples: list[float] = []
        self.source: str | None = None
        self.why: str | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> GpuUtilization:
        import torch

        self.samples = []
        self._stop.clear()
        if not torch.cuda.is_available():
            self.why = "no CUDA device"
            return self
        try:
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-i", "0", "-lms", str(self.interval_ms)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.source = "nvidia-smi"
            self._thread = threading.Thread(target=self._read_smi, daemon=True)
        except OSError as exc:
            try:
                torch.cuda.utilization()
            except Exception as exc2:  # pynvml missing, no NVML
                self.why = f"nvidia-smi: {exc}; torch.cuda.utilization: {exc2}"
                return self
            self.source = "torch.cuda.utilization"
            self._thread = threading.Thread(target=self._poll_torch, daemon=True)
        self._thread.start()
        return self

    def _read_smi(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append(float(line.strip()))

    def _poll_torch(self) -> None:
        import torch

        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.samples.append(float(torch.cuda.utilization()))
            time.sleep(self.interval_ms / 1000)

    def stop(self) -> dict[str, Any] | None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.source is None:
            return None
        if not self.samples:
            self.why = f"{self.source} gave no samples"
            return None
        return {"mean_percent": sum(self.samples) / len(self.samples), "max_percent": max(self.samples),
                "samples": len(self.samples), "interval_ms": self.interval_ms, "source": self.source}


class PeakMemory:
    """Peak memory of work in this process: ``torch.cuda.max_memory_allocated`` on CUDA (after
    ``reset_peak_memory_stats``), else the peak RSS (sampled every 5 ms) minus the RSS at `start`."""

    def __init__(self, device: Any) -> None:
        self.cuda = getattr(device, "type", str(device)).startswith("cuda")
        self.kind = "torch.cuda.max_memory_allocated" if self.cuda else "RSS increase (sampled)"
        self._rss = PeakRSS(0.005)
        self._before = 0

    def start(self) -> PeakMemory:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._before = PeakRSS.current()
            self._rss.start()
        return self

    def stop(self) -> float:
        """The peak in GB (10^9 bytes)."""
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 1e9
        return (self._rss.stop() - self._before) / 1e9
