"""Part 2 of `benchmarks/gpu_check.sh`: the training loop on the device, under torchrun.

On a GPU (default): the paper config (``thumos14_swin_b``: Swin-B, 480 frames at 224x224
crops of 256x256 frames, batch 4, bf16 autocast, activation checkpointing, SyncBN, 4 data
workers) with random backbone weights (none can be downloaded: ``model.backbone.weights``
stays null) on synthetic 256x256 videos. With ``--cpu``: the ``demo`` config (tiny Swin,
128 frames at 32x32, batch 2) with 2 data workers on small synthetic videos, gloo instead
of NCCL, no autocast: the same code paths at toy size. In both:

1. ``tallformer bank build`` of the training videos (timed: frames/s).
2. A straight run of ``--steps`` steps: ``python -m torch.distributed.run --standalone
   --nproc_per_node 1`` of ``train_entry.py train`` (that is ``tallformer train``, plus a
   probe of the process group) with ``TALLFORMER_PROCESS_GROUP=1``, so the one process forms
   its process group (NCCL on the GPU, gloo on the CPU), converts BatchNorm to SyncBatchNorm
   (``model.sync_bn``) and runs under DDP, the path of several GPUs; ``NCCL_DEBUG=VERSION``
   prints NCCL's version line. The loop's samples/s and data-wait fraction come from its
   ``log.jsonl`` (``benchmarks/train_loop.py``: ``loop_figures``).
3. Bare steps: ``train_step`` alone on the same number of batches collected in memory first
   (pinned on CUDA), a fresh model, no DDP: ``loop_vs_bare`` = loop samples/s / bare samples/s.
4. Kill and resume: the same run with a checkpoint every ``--kill-after`` steps, SIGKILLed
   (the whole tree: torchrun, its worker, the data workers) once the log shows step
   ``kill-after + 2``, then ``--resume`` to the end; its final weights, optimizer state,
   random states and memory bank are compared with the straight run's, bit for bit (max abs
   difference reported).
5. When they differ (cuDNN and atomic-add kernels are not deterministic on a GPU), or always
   with ``--cpu`` (so this path is exercised): a straight run and a kill + resume again, both
   with ``TALLFORMER_DETERMINISTIC=1`` (deterministic algorithms, cuBLAS workspace config),
   side by side, compared the same way; ops without a deterministic kernel are listed.

Writes ``--json`` after every stage (``complete`` false until the end). Last line:
``part2 train_loop: loop_vs_bare=X data_wait=Y resume_identical=Z ...``.

    python benchmarks/gpu_check/train_part.py --data DATA --work WORK --json OUT/part2_train_loop.json [--cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, write_part

from helpers import descendants, kill_tree
from train_loop import bare_steps, collect_batches, loop_figures

ENTRY = Path(__file__).resolve().parent / "train_entry.py"
_LIVE: list[subprocess.Popen] = []  # child processes to kill if this part is stopped


# --------------------------------------------------------------------------- processes


def _stop_children(*_: Any) -> None:
    for proc in _LIVE:
        if proc.poll() is None:
            kill_tree(proc.pid)
    raise SystemExit(f"stopped; killed {len(_LIVE)} child run(s)")


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "w")  # noqa: SIM115  (closed with the process)
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                            start_new_session=True)
    out.close()
    _LIVE.append(proc)
    return proc


def _wait(proc: subprocess.Popen, log: Path, timeout: float) -> float:
    command = " ".join(str(a) for a in proc.args) if isinstance(proc.args, list) else str(proc.args)
    t0 = time.perf_counter()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        proc.wait()
        raise SystemExit(f"{command} ran past {timeout:.0f} s; log: {log}") from None
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"exit {code}: {command}\n{tail}")
    return time.perf_counter() - t0


def _torchrun(py: str, cli_args: list[str]) -> list[str]:
    return [py, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "1",
            str(ENTRY), "train", *cli_args, "--no-progress"]


def _logged_steps(run: Path) -> int:
    log = run / "log.jsonl"
    best = 0
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                best = max(best, int(json.loads(line)["step"]))
            except (ValueError, KeyError):  # a line being written
                continue
    return best


# --------------------------------------------------------------------------- comparison


def _leaves(x: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(x, dict):
        return [leaf for k in sorted(x, key=str) for leaf in _leaves(x[k], f"{prefix}{k}.")]
    if isinstance(x, (list, tuple)):
        return [leaf for i, v in enumerate(x) for leaf in _leaves(v, f"{prefix}{i}.")]
    return [(prefix[:-1], x)]


def _tree_diff(a: Any, b: Any) -> dict[str, Any]:
    """Max abs difference over the tensors of two nested states, and the other leaves that differ."""
    import torch

    la, lb = dict(_leaves(a)), dict(_leaves(b))
    other = sorted(set(la) ^ set(lb))
    worst, differing, tensors = 0.0, 0, 0
    for key in sorted(set(la) & set(lb)):
        x, y = la[key], lb[key]
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            tensors += 1
            if x.shape != y.shape or x.dtype != y.dtype:
                other.append(key)
            elif not torch.equal(x, y):
                differing += 1
                if x.is_floating_point():
                    worst = max(worst, float((x.double() - y.double()).abs().max()))
                else:
                    other.append(key)
        elif x != y:
            other.append(key)
    return {"max_abs_diff": worst, "tensors": tensors, "differing_tensors": differing,
            "other_differences": other[:20]}


def compare_runs(a: Path, b: Path) -> dict[str, Any]:
    """Two runs' final checkpoints (weights, optimizer state, position, random states) and banks."""
    import numpy as np

    from tallformer.engine.checkpoint import load_checkpoint

    sa = load_checkpoint(a / "checkpoints" / "last.pt")
    sb = load_checkpoint(b / "checkpoints" / "last.pt")
    out: dict[str, Any] = {key: _tree_diff(sa[key], sb[key]) for key in ("model", "optimizer")}
    out["position_equal"] = all(sa[k] == sb[k] for k in ("step", "epoch", "batch_in_epoch", "samples"))
    out["rng_equal"] = not (r := _tree_diff(sa["rng"], sb["rng"]))["differing_tensors"] and not r["other_differences"]
    files_a = {p.relative_to(a / "bank"): p for p in sorted((a / "bank").rglob("*.npy"))}
    files_b = {p.relative_to(b / "bank"): p for p in sorted((b / "bank").rglob("*.npy"))}
    worst, differing = 0.0, 0
    for rel in sorted(set(files_a) & set(files_b)):
        x = np.load(files_a[rel]).astype(np.float64)
        y = np.load(files_b[rel]).astype(np.float64)
        if x.shape != y.shape:
            differing += 1
            worst = float("inf")
        elif not np.array_equal(x, y):
            differing += 1
            worst = max(worst, float(np.abs(x - y).max()))
    out["bank"] = {"max_abs_diff": worst, "videos": len(files_a), "differing_videos": differing,
                   "same_videos": set(files_a) == set(files_b)}
    out["identical"] = (out["position_equal"] and out["rng_equal"] and out["bank"]["same_videos"]
                        and not differing
                        and all(not out[k]["differing_tensors"] and not out[k]["other_differences"]
                                for k in ("model", "optimizer")))
    return out


# --------------------------------------------------------------------------- the stages


class Part:
    def __init__(self, args: argparse.Namespace) -> None:
        from tallformer.data.annotations import load_annotations

        self.args = args
        self.work = Path(args.work).resolve()
        self.logs = Path(args.logs).resolve() if args.logs else self.work / "logs"
        data = Path(args.data).resolve()
        self.ann = data / "annotations.json"
        classes = load_annotations(self.ann).classes
        self.cpu = args.cpu
        self.config = "demo" if self.cpu else "thumos14_swin_b"
        self.device = "cpu" if self.cpu else "cuda"
        self.overrides = [f"data.annotations={self.ann}", f"data.videos={data / 'videos'}",
                          "data.train_subset=training", "data.test_subset=validation",
                          f"model.head.num_classes={len(classes)}", f"train.device={self.device}"]
        if self.cpu:  # the demo ships without workers, augmentation, checkpointing; SyncBN needs CUDA
            self.overrides += ["data.num_workers=2", "data.augment=true", "model.backbone.use_checkpoint=true"]
        else:
            self.overrides += ["model.sync_bn=true", "model.backbone.weights=null"]
        self.bank = self.work / "bank"
        self.result: dict[str, Any] = {
            "part": "train_loop", "complete": False, **machine(), "mode": "cpu" if self.cpu else "gpu",
            "config": self.config, "overrides": self.overrides, "steps": args.steps,
            "kill_after_step": args.kill_after,
            "launcher": "python -m torch.distributed.run --standalone --nproc_per_node 1",
            "env": {"TALLFORMER_PROCESS_GROUP": "1", "NCCL_DEBUG": "VERSION"},
        }

    def save(self) -> None:
        write_part(self.args.json, self.result)

    def cfg(self, *extra: str) -> Any:
        from tallformer.config import load_config

        return load_config(self.config, [*self.overrides, *extra])

    def run_args(self, run: Path, *extra: str) -> list[str]:
        return ["--config", self.config, *self.overrides, f"memory.bank_dir={self.bank}",
                f"train.max_steps={self.args.steps}", "train.log_interval=1", f"run_dir={run}", *extra]

    def env(self, name: str, deterministic: bool = False) -> dict[str, str]:
        extra = {"TALLFORMER_PROCESS_GROUP": "1", "NCCL_DEBUG": "VERSION",
                 "GPU_CHECK_PROBE": str(self.logs / f"{name}.probe.json")}
        if deterministic:
            extra["TALLFORMER_DETERMINISTIC"] = "1"
        return _env(extra)

    # -- 1. bank build
    def bank_build(self) -> None:
        cmd = [self.args.python, "-m", "tallformer", "bank", "build", "--config", self.config,
               "--out", str(self.bank), "--device", self.device, "--batch-chunks", "16", "--quiet",
               *self.overrides]
        log = self.logs / "bank_build.log"
        seconds = _wait(_start(cmd, log, _env({})), log, self.args.timeout)
        meta = json.loads((self.bank / "meta.json").read_text())
        frames = sum(int(v["num_frames"]) for v in meta["videos"].values())
        self.result["bank_build"] = {"seconds": seconds, "videos": len(meta["videos"]), "frames": frames,
                                     "frames_per_s": frames / seconds, "includes": "process start, model build"}
        self.save()

    # -- 2. straight run
    def straight(self) -> None:
        run = self.work / "runs" / "straight"
        log = self.logs / "straight.log"
        wall = _wait(_start(_torchrun(self.args.python, self.run_args(run)), log, self.env("straight")),
                     log, self.args.timeout)
        cfg = self.cfg()
        loop = loop_figures(run, cfg.data.batch_size)
        probe = self.logs / "straight.probe.json"
        text = log.read_text(errors="replace")
        nccl = re.search(r"NCCL version [^\s]+", text)
        self.result.update({
            "batch_size": cfg.data.batch_size, "num_workers": cfg.data.num_workers,
            "amp": cfg.train.amp if not self.cpu else "none",
            "process_group": json.loads(probe.read_text()) if probe.is_file() else {"ddp": False},
            "nccl_version": nccl.group(0) if nccl else None,
            "loop": {k: [round(x, 4) for x in v] if isinstance(v, list) else v for k, v in loop.items()},
            "loop_wall_s": wall,
            "data_wait_fraction": loop["data_wait_fraction"],
            "max_memory_gib": loop["max_memory_gib"],
            "checkpoint": str(run / "checkpoints" / "last.pt"),
        })
        self.loop = loop
        self.save()

    # -- 3. bare steps
    def bare(self) -> None:
        import torch

        from tallformer.memory.bank import MemoryBank

        cfg = self.cfg()
        steps = self.args.steps
        bank = MemoryBank.open(self.work / "runs" / "straight" / "bank", "r").copy_to(
            self.work / "bare_bank", progress=False)
        t0 = time.perf_counter()
        batches = collect_batches(cfg, self.ann, bank, steps, num_workers=cfg.data.num_workers)
        collect_s = time.perf_counter() - t0
        times = bare_steps(cfg, batches, bank, self.device)
        del batches
        bank.close()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        b = cfg.data.batch_size
        bare = {"samples_per_s": b * steps / sum(times),
                "samples_per_s_after_first": b * (steps - 1) / sum(times[1:]) if steps > 1 else None,
                "seconds": sum(times), "first_step_s": times[0], "collect_s": collect_s,
                "step_s": [round(x, 4) for x in times]}
        loop = self.loop
        self.result["bare"] = bare
        self.result["loop_vs_bare"] = loop["samples_per_s"] / bare["samples_per_s"]
        self.result["loop_vs_bare_after_first"] = (loop["samples_per_s_after_first"] / bare["samples_per_s_after_first"]
                                                   if bare["samples_per_s_after_first"] else None)
        self.save()

    # -- 4. kill and resume
    def kill_and_resume(self, name: str, deterministic: bool = False) -> dict[str, Any]:
        from tallformer.engine.checkpoint import load_checkpoint

        run = self.work / "runs" / name
        k = self.args.kill_after
        cli = self.run_args(run, f"train.checkpoint_steps={k}")
        env = self.env(name, deterministic)
        log = self.logs / f"{name}.log"
        proc = _start(_torchrun(self.args.python, cli), log, env)
        deadline = time.monotonic() + self.args.timeout
        while _logged_steps(run) < k + 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        at = _logged_steps(run)
        killed = proc.poll() is None
        tree = [proc.pid, *descendants(proc.pid)]
        kill_tree(proc.pid)
        proc.wait()
        ckpt = run / "checkpoints" / "last.pt"
        ckpt_step = load_checkpoint(ckpt)["step"] if ckpt.is_file() else None
        log2 = self.logs / f"{name}_resume.log"
        seconds = _wait(_start(_torchrun(self.args.python, [*cli, "--resume"]), log2, env), log2, self.args.timeout)
        text = log2.read_text(errors="replace")
        rolled = re.search(r"rolled back (\d+) rows", text)
        return {"killed": killed, "killed_processes": len(tree), "killed_at_logged_step": at,
                "checkpoint_step": ckpt_step, "rolled_back_rows": int(rolled.group(1)) if rolled else 0,
                "resume_s": seconds}

    def resume_check(self) -> None:
        info = self.kill_and_resume("killed")
        info["comparison"] = compare_runs(self.work / "runs" / "straight", self.work / "runs" / "killed")
        self.result["resume"] = info
        self.result["resume_identical"] = info["comparison"]["identical"]
        self.save()

    # -- 5. deterministic algorithms
    def deterministic_check(self) -> None:
        run = self.work / "runs" / "straight_det"
        log = self.logs / "straight_det.log"
        t0 = time.perf_counter()
        straight = _start(_torchrun(self.args.python, self.run_args(run)), log, self.env("straight_det", True))
        info = self.kill_and_resume("killed_det", deterministic=True)  # side by side with the straight one
        _wait(straight, log, self.args.timeout)
        info["both_s"] = time.perf_counter() - t0
        info["comparison"] = compare_runs(run, self.work / "runs" / "killed_det")
        ops: set[str] = set()
        for name in ("straight_det", "killed_det", "killed_det_resume"):
            text = (self.logs / f"{name}.log").read_text(errors="replace")
            ops.update(m.strip() for m in re.findall(r"\b([\w.]+) does not have a deterministic implementation", text))
        info["nondeterministic_ops"] = sorted(ops)
        probe = self.logs / "straight_det.probe.json"
        info["process_group"] = json.loads(probe.read_text()) if probe.is_file() else {"ddp": False}
        self.result["deterministic"] = info
        self.result["deterministic_identical"] = info["comparison"]["identical"]
        self.save()


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3g}" if x and abs(x) < 1e-3 else f"{x:.3f}"
    return str(x).lower() if isinstance(x, bool) else str(x)


def summary(r: dict[str, Any]) -> str:
    pg = r.get("process_group") or {}
    res = (r.get("resume") or {}).get("comparison") or {}
    diff = max((res.get(k) or {}).get("max_abs_diff", 0.0) for k in ("model", "optimizer", "bank")) if res else None
    det = r.get("deterministic")
    fields = {
        "loop_vs_bare": r.get("loop_vs_bare"), "loop_vs_bare_after_first": r.get("loop_vs_bare_after_first"),
        "data_wait": r.get("data_wait_fraction"),
        "loop_samples_s": (r.get("loop") or {}).get("samples_per_s"),
        "bare_samples_s": (r.get("bare") or {}).get("samples_per_s"),
        "backend": pg.get("backend"), "sync_bn": pg.get("sync_batchnorm_modules"),
        "resume_identical": r.get("resume_identical"), "resume_max_abs_diff": diff,
        "deterministic_identical": r.get("deterministic_identical") if det else "not_run",
        "max_memory_gib": r.get("max_memory_gib"),
    }
    return "part2 train_loop: " + " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="synthetic dataset folder (annotations.json, videos/)")
    parser.add_argument("--work", required=True, help="scratch folder: bank, runs")
    parser.add_argument("--json", required=True, help="where the figures go")
    parser.add_argument("--logs", default=None, help="folder of the runs' logs (default WORK/logs)")
    parser.add_argument("--cpu", action="store_true", help="the toy setting on the CPU")
    parser.add_argument("--steps", type=int, default=None, help="steps of each run (30; --cpu 8)")
    parser.add_argument("--kill-after", type=int, default=None, help="checkpoint every N steps and kill "
                        "after step N + 2 (10; --cpu 4)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one run may take (default 300)")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs tallformer")
    args = parser.parse_args()
    args.steps = args.steps or (8 if args.cpu else 30)
    args.kill_after = args.kill_after or (4 if args.cpu else 10)
    signal.signal(signal.SIGTERM, _stop_children)
    part = Part(args)
    part.save()
    try:
        part.bank_build()
        part.straight()
        part.bare()
        part.resume_check()
        if args.cpu or not part.result["resume_identical"]:
            part.deterministic_check()
        part.result["complete"] = True
    finally:
        part.save()
        print(summary(part.result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
