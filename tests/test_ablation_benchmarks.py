"""The keep-ratio ablation and the linear probe (benchmarks/), end to end at their --quick
size: real videos, real runs in their own processes. Their figures mean nothing at this size;
the tests check what the scripts print and write, not how well the model does."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ABLATION = ROOT / "benchmarks" / "ablation_keep_ratio.py"
PROBE = ROOT / "benchmarks" / "linear_probe.py"
ABLATION_KEYS = ["map_k0", "map_k025", "map_k05", "map_k1", "mem_k025_vs_k1", "time_k025_vs_k1", "sd_max"]


def _run(script: Path, *args: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def _last_line(out: str) -> dict[str, float]:
    pairs = [item.split("=") for item in out.strip().splitlines()[-1].split()]
    assert all(len(p) == 2 for p in pairs), out.strip().splitlines()[-1]
    return {k: float(v) for k, v in pairs} | {"_order": list(dict(pairs))}  # type: ignore[dict-item]


@pytest.fixture(scope="module")
def quick_ablation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("ablation")
    return work, _run(ABLATION, "--quick", "--work", str(work), cwd=work)


@pytest.mark.slow
def test_ablation_quick_runs_every_ratio_and_reports_mean_and_spread(quick_ablation: tuple[Path, str]) -> None:
    work, out = quick_ablation
    last = _last_line(out)
    assert last.pop("_order") == ABLATION_KEYS  # type: ignore[arg-type]
    runs = {p.parent.name: json.loads(p.read_text()) for p in work.glob("*/ablation.json")}
    assert sorted(runs) == sorted(f"{k}_seed{s}" for k in ("k0", "k025", "k05", "k1") for s in (10, 11))
    for name, r in runs.items():
        assert r["steps"] == 2, name
        assert r["val_videos"] == 1, name
        assert 0.0 <= r["average_mAP"] <= 1.0
        assert r["activation_bytes"] > 0
        assert r["step_seconds"] > 0
    # the last line is the mean over the seeds; sd_max the largest sample SD over the ratios
    for key in ("k0", "k025", "k05", "k1"):
        maps = [runs[f"{key}_seed{s}"]["average_mAP"] for s in (10, 11)]
        assert last[f"map_{key}"] == pytest.approx(statistics.fmean(maps), abs=1e-4)
    sds = [statistics.stdev([runs[f"{k}_seed{s}"]["average_mAP"] for s in (10, 11)])
           for k in ("k0", "k025", "k05", "k1")]
    assert last["sd_max"] == pytest.approx(max(sds), abs=1e-4)
    # one of 4 chunks through the backbone saves activations; the same seed, the same data:
    # every keep ratio of a seed trains on the same windows (the loss of its first step differs
    # only by the features, so nothing is asserted about it)
    assert 0.0 < last["mem_k025_vs_k1"] < 1.0
    assert last["time_k025_vs_k1"] > 0.0
    assert "validation videos" in out
    assert "SD" in out
    # a second call reuses the finished runs: the same table, no training
    again = _run(ABLATION, "--quick", "--work", str(work), cwd=work)
    assert "s/step," not in again  # no "keep K seed S: ..., s/step, N s" line: nothing ran
    assert again.strip().splitlines()[-1] == out.strip().splitlines()[-1]


@pytest.mark.slow
def test_linear_probe_quick_reuses_the_ablation_run(quick_ablation: tuple[Path, str]) -> None:
    work, _ = quick_ablation
    out = _run(PROBE, "--quick", "--work", str(work), cwd=work)
    assert "training the keep ratio 1.0 run" not in out  # the ablation's run, reused
    last = _last_line(out)
    assert last.pop("_order") == ["probe_random", "probe_trained"]  # type: ignore[arg-type]
    assert 0.0 <= last["probe_random"] <= 1.0
    assert 0.0 <= last["probe_trained"] <= 1.0
    assert (work / "probe_seed10" / "random_training" / "meta.json").is_file()


def test_probe_accuracy_separates_what_is_separable_and_not_noise() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from linear_probe import probe_accuracy

    rng = np.random.default_rng(0)
    y = np.arange(200) % 4
    centres = rng.normal(0, 1, (4, 16))
    x = centres[y] + rng.normal(0, 0.3, (200, 16))
    acc, _ = probe_accuracy(x[:120], y[:120], x[120:], y[120:])
    assert acc == 1.0
    noise = rng.normal(0, 1, (200, 16))
    acc, _ = probe_accuracy(noise[:120], y[:120], noise[120:], y[120:])
    assert acc < 0.5


@pytest.mark.slow
def test_clip_classifier_trains_on_the_ablation_data(quick_ablation: tuple[Path, str]) -> None:
    work, _ = quick_ablation
    out = _run(ROOT / "benchmarks" / "clip_classifier.py", "--data", str(work / "data"), "--steps", "2",
               "--eval-every", "1", cwd=work)
    assert "training and 1 held-out clips of 32 frames, 4 classes" in out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("step ")] == [
        "step 0", "step 1", "step 2"]
    last = _last_line(out)
    assert last.pop("_order") == ["clip_val_accuracy", "steps"]  # type: ignore[arg-type]
    assert last["steps"] == 2
    assert last["clip_val_accuracy"] in (0.0, 1.0)  # one held-out clip
