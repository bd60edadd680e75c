"""The "measured on one GPU" table of docs/gpu.md, from the JSON files of `benchmarks/gpu_check.sh`.

    python benchmarks/gpu_check/table.py OUT            # OUT: the folder the script wrote

Prints the Markdown table (figure, target, measured), every figure read from
``OUT/part*.json``; a figure a part did not reach reads "not measured" and a part that did not
complete is named under the table. Copy it into docs/gpu.md with the device and the command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _get(data: dict[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _num(x: Any, fmt: str = "{:.3f}", unit: str = "") -> str:
    if x is None:
        return "not measured"
    if isinstance(x, bool):
        return "yes" if x else "no"
    return fmt.format(x) + unit


def _pass(x: Any, ok: bool | None) -> str:
    return x if ok is None or x == "not measured" else f"{x} ({'meets' if ok else 'misses'} it)"


def rows(out: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    parts: dict[str, dict[str, Any] | None] = {}
    for name in ("part1_paper_scale", "part2_train_loop", "part3_detect"):
        path = out / f"{name}.json"
        parts[name] = json.loads(path.read_text()) if path.is_file() else None
    p1, p2, p3 = parts["part1_paper_scale"], parts["part2_train_loop"], parts["part3_detect"]
    incomplete = [n for n, p in parts.items() if p is None or p.get("complete") is False]

    m015, m100 = _get(p1, "mem_gb_015"), _get(p1, "mem_gb_100")
    lvb, dvb = _get(p2, "loop_vs_bare"), _get(p3, "detect_vs_backbone")
    dvb_grid = _get(p3, "detect_vs_backbone_chunk_grid")
    res_diff = _get(p2, "resume", "comparison")
    diff = max((_get(res_diff, k, "max_abs_diff") or 0.0) for k in ("model", "optimizer", "bank")) if res_diff else None
    det = _get(p2, "deterministic")
    util = _get(p3, "detect", "gpu_utilization")
    frames, fps = _get(p3, "cli", "frames"), _get(p3, "fps")
    minutes = f"{frames / fps / 60:g}" if frames and fps else "?"
    device = next((p["device"] for p in (p1, p2, p3) if p and p.get("device")), None)
    table = [
        ("device", "", str(device or "not measured")),
        ("paper step, keep 0.15, checkpointing: peak memory", "< 6 GB",
         _pass(_num(m015, unit=" GB"), None if m015 is None else m015 < 6.0)),
        ("paper step, keep 1.0 (full end to end), checkpointing: peak memory", "paper: > 32 GB",
         _num(m100, unit=" GB")),
        ("paper step, keep 0.15, no checkpointing: peak memory", "", _num(_get(p1, "mem_gb_015_nockpt"), unit=" GB")),
        ("paper step time, keep 0.15 / 1.0 / 0.15 without checkpointing", "",
         " / ".join(_num(_get(p1, f"step_s_{k}"), unit=" s") for k in ("015", "100", "015_nockpt"))),
        ("training loop under torchrun: process group, SyncBatchNorm modules", "nccl, > 0",
         f"{_get(p2, 'process_group', 'backend') or 'none'}, {_get(p2, 'process_group', 'sync_batchnorm_modules')}"
         f" ({_get(p2, 'nccl_version') or 'no NCCL version line'})"),
        ("loop_vs_bare (whole loop / bare steps, samples/s)", ">= 0.9", _pass(_num(lvb), None if lvb is None else lvb >= 0.9)),
        ("loop samples/s, bare samples/s", "",
         f"{_num(_get(p2, 'loop', 'samples_per_s'), '{:.2f}')}, {_num(_get(p2, 'bare', 'samples_per_s'), '{:.2f}')}"),
        ("data-wait fraction of the loop", "", _num(_get(p2, "data_wait_fraction"))),
        ("training peak memory (max_memory_allocated)", "", _num(_get(p2, "max_memory_gib"), unit=" GiB")),
        (f"SIGKILL after step {_get(p2, 'kill_after_step')} + resume, against straight", "bit-identical",
         "not measured" if res_diff is None else
         ("bit-identical" if res_diff.get("identical") else f"differs: max abs diff {diff:.3g}")),
        ("the same with TALLFORMER_DETERMINISTIC=1", "bit-identical",
         "not run (the first comparison was identical)" if det is None else
         ("bit-identical" if _get(det, "comparison", "identical") else "differs")
         + (f"; ops without a deterministic kernel: {', '.join(det['nondeterministic_ops'])}"
            if det and det.get("nondeterministic_ops") else "")),
        ("detect_vs_backbone (paper protocol: windows at stride 360, whole backbone each)", ">= 0.9",
         _pass(_num(dvb), None if dvb is None else dvb >= 0.9)),
        ("detect_vs_backbone (test.protocol=chunk_grid)", ">= 0.9",
         _pass(_num(dvb_grid), None if dvb_grid is None else dvb_grid >= 0.9)),
        ("detect, bare backbone, decoder alone: frames/s", "",
         ", ".join(_num(_get(p3, *k), "{:.0f}") for k in (("detect", "frames_per_s"), ("backbone", "frames_per_s"),
                                                          ("decode", "frames_per_s")))),
        ("GPU utilisation during detect (mean / max)", "",
         "not measured" if util is None else f"{util['mean_percent']:.0f} % / {util['max_percent']:.0f} %"),
        ("detect peak memory (max_memory_allocated)", "", _num(_get(p3, "detect", "peak_memory_gb"), unit=" GB")),
        (f"tallformer detect, {minutes}-minute video, wall time (whole command)", "",
         _num(_get(p3, "cli", "wall_s"), "{:.1f}", " s")),
    ]
    return table, incomplete


def main() -> int:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/gpu_check/table.py OUT")
    table, incomplete = rows(Path(sys.argv[1]))
    print("| figure | target | measured |")
    print("|---|---|---|")
    for figure, target, value in table:
        print(f"| {figure} | {target} | {value} |")
    if incomplete:
        print(f"\nParts that did not complete: {', '.join(incomplete)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
