"""Demo training on a shared machine: steps per second alone and next to CPU-bound processes.

Setting: the demo config's training (tiny Video Swin, batch 2, keep ratio 0.5) in its own
process, on a small synthetic dataset, with the CPU settings of `tallformer demo` (``--mode
demo``, the default: `tallformer.engine.cpu.REPRODUCIBLE`) or of `tallformer train --config
demo` (``--mode train``: every CPU, passive waiting). Once
the run is past its start-up (data, bank, first steps), the steps it logs are counted for
``--seconds`` alone, then for ``--seconds`` while ``--hogs`` other processes spin on the CPU
(pure-Python busy loops, one core each), then alone again; the rates alone are averaged.

On a machine of N cores with two hogs, a fair share for the training process is N / 3 cores
(0.67 of a core on 2 cores): ``shared_vs_alone`` near 0.67 x (cores / cores the run used
alone) is fair; far below it (0.01-0.1) is the collapse of threads that wait on each other.

Prints the rates and the load average before each phase; last line
``alone_steps_per_s=X shared_steps_per_s=Y shared_vs_alone=Z`` (aim: shared_vs_alone >= 0.3).

    python benchmarks/shared_machine.py [--mode demo|train] [--seconds 40] [--hogs 2]

With the ``src`` of an older tree first on PYTHONPATH it measures that tree (before
``engine/cpu.py`` existed, both modes are that tree's plain `tallformer train`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOG = "while True: pass"
# the training process: the demo's CPU settings (or the train command's), then `tallformer train`
DRIVER = """
import sys
try:
    from tallformer.commands.common import prepare_cpu
except ImportError:  # a tree from before tallformer.engine.cpu
    prepare_cpu = None
if sys.argv[1] == "demo" and prepare_cpu is not None:
    prepare_cpu("demo")
    from tallformer.engine import cpu
    cpu.apply(reproducible=True)
from tallformer.cli import main
sys.exit(main(["train", *sys.argv[2:]]))
"""


def _steps(log: Path) -> int:
    if not log.is_file():
        return 0
    count = 0
    for line in log.read_text().splitlines():
        try:
            json.loads(line)
        except ValueError:  # a line being written
            continue
        count += 1
    return count


def _rate(log: Path, seconds: float) -> tuple[float, int]:
    """Steps per second logged over the next `seconds`."""
    start_steps, t0 = _steps(log), time.perf_counter()
    time.sleep(seconds)
    done = _steps(log) - start_steps
    return done / (time.perf_counter() - t0), done


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("demo", "train"), default="demo",
                        help="CPU settings of `tallformer demo` (default) or of `tallformer train`")
    parser.add_argument("--seconds", type=float, default=40.0, help="length of each measured phase")
    parser.add_argument("--hogs", type=int, default=2, help="CPU-bound processes beside the training")
    parser.add_argument("--warmup-steps", type=int, default=5, help="steps before the first phase")
    parser.add_argument("--videos", type=int, default=8, help="synthetic videos (3/4 for training)")
    args = parser.parse_args()

    import tallformer
    from tallformer.data.synthetic import generate_synthetic_dataset

    print(f"mode {args.mode}, {tallformer.__file__}; cores available: {len(os.sched_getaffinity(0))}; {_load()}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ann = generate_synthetic_dataset(root / "syn", args.videos, seed=0, min_length=30, max_length=40,
                                         size=(36, 36), progress=False)
        run = root / "run"
        cmd = [sys.executable, "-c", DRIVER, args.mode, "--config", "demo", f"data.annotations={ann}",
               f"data.videos={root / 'syn' / 'videos'}", f"run_dir={run}", "train.log_interval=1",
               "train.max_steps=100000", "train.max_epochs=100000", "train.cosine_period=100000",
               "--no-progress"]
        train = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)
        hogs: list[subprocess.Popen] = []
        try:
            log = run / "log.jsonl"
            deadline = time.monotonic() + 600
            while _steps(log) < args.warmup_steps:
                if train.poll() is not None:
                    raise SystemExit(f"training ended: {train.stderr.read() if train.stderr else ''}")
                if time.monotonic() > deadline:
                    raise SystemExit("training did not start within 10 minutes")
                time.sleep(0.2)
            print(f"alone:  {_load()}", flush=True)
            alone1, n1 = _rate(log, args.seconds)
            print(f"        {alone1:.2f} steps/s ({n1} steps)", flush=True)
            hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
            time.sleep(2.0)  # let the scheduler settle
            print(f"shared with {args.hogs} busy processes: {_load()}", flush=True)
            shared, n2 = _rate(log, args.seconds)
            print(f"        {shared:.2f} steps/s ({n2} steps)", flush=True)
            for hog in hogs:
                hog.kill()
                hog.wait()
            hogs = []
            time.sleep(2.0)
            print(f"alone:  {_load()}", flush=True)
            alone2, n3 = _rate(log, args.seconds)
            print(f"        {alone2:.2f} steps/s ({n3} steps)", flush=True)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
            if train.poll() is None:
                os.killpg(train.pid, signal.SIGKILL)
            train.wait()
    alone = (alone1 + alone2) / 2
    print(f"alone_steps_per_s={alone:.3f} shared_steps_per_s={shared:.3f} "
          f"shared_vs_alone={shared / alone if alone else float('nan'):.3f}")


if __name__ == "__main__":
    main()
