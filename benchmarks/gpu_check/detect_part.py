"""Part 3 of `benchmarks/gpu_check.sh`: detection on a long video, against the bare backbone.

The checkpoint is part 2's straight run (the paper config on a GPU, the demo config with
``--cpu``); when part 2 left none, a checkpoint of the same config with random weights is
written first (``"checkpoint_source": "random"`` in the JSON). On the video (10 minutes of
synthetic 256x256 frames at 15 fps; ``--cpu``: 20 seconds at 36x36):

1. In this process, after a warm-up: ``Detector.detect`` with the checkpoint's config (the
   paper's test protocol, ``original``: every 480-frame window at stride 360 through the whole
   backbone), with GPU utilisation (``nvidia-smi``, 200 ms) and peak memory
   (``torch.cuda.max_memory_allocated``; on the CPU the RSS increase).
2. The bare backbone (``benchmarks/detect_speed.py``: ``decoded_chunks``, ``run_backbone``) over
   the same frames, decoded and transformed beforehand and already on the device, one
   window's chunks per call, the same autocast: ``detect_vs_backbone`` = detect frames/s /
   backbone frames/s (aim >= 0.9); also the decoder's own rate (decode + resize + crop +
   normalise, one thread), which bounds detect from above.
3. ``Detector.detect`` again with ``test.protocol=chunk_grid`` (each 32-frame chunk through
   the backbone once): ``detect_vs_backbone_chunk_grid``.
4. ``tallformer detect VIDEO --checkpoint CKPT`` as a user runs it (its own process: start,
   model load, decode, backbone, neck, head, NMS, JSON/CSV/PNG/HTML outputs): wall time,
   detections, the process's peak RSS, GPU utilisation sampled meanwhile.

The JSON is rewritten after each step, so a part stopped by its time limit keeps the
figures it had.

Last line: ``part3 detect: detect_vs_backbone=X detect_vs_backbone_chunk_grid=Y ...``.

    python benchmarks/gpu_check/detect_part.py --video V.mp4 --checkpoint CKPT --json OUT/part3_detect.json [--cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, GpuUtilization, PeakMemory, machine, write_part

from detect_speed import decoded_chunks, run_backbone


def random_checkpoint(path: Path, config: str, num_classes: int) -> Path:
    """A detector of ``config`` with random weights, saved as a loadable model checkpoint."""
    import torch

    from tallformer.config import config_to_dict, load_config
    from tallformer.engine.checkpoint import save_checkpoint
    from tallformer.engine.factory import build_detector
    from tallformer.models.original_checkpoints import MODEL_FORMAT

    cfg = load_config(config, [f"model.head.num_classes={num_classes}"])
    torch.manual_seed(0)
    model = build_detector(cfg)
    save_checkpoint(path, {"format": MODEL_FORMAT, "model": model.state_dict(), "config": config_to_dict(cfg),
                           "classes": [f"class_{i}" for i in range(num_classes)]})
    return path


def cli_detect(args: argparse.Namespace, checkpoint: Path, device: str) -> dict[str, Any]:
    out_dir = Path(args.work) / "detections"
    log = Path(args.logs) / "detect_cli.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    cmd = [args.python, "-m", "tallformer", "detect", str(args.video), "--checkpoint", str(checkpoint),
           "--out", str(out_dir), "--device", device, "--no-progress"]
    util = GpuUtilization().start()
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT, check=False,
                              timeout=args.timeout)
    wall = time.perf_counter() - t0
    gpu = util.stop()
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"tallformer detect exited {proc.returncode}:\n{tail}")
    result = json.loads((out_dir / f"{Path(args.video).stem}.json").read_text())
    dets = next(iter(result["results"].values()))
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"command": " ".join(cmd), "wall_s": wall, "detections": len(dets),
            "frames": result["video"]["num_frames"], "frames_per_s_wall": result["video"]["num_frames"] / wall,
            "peak_rss_gb": peak_kib * 1024 / 1e9, "gpu_utilization": gpu,
            "outputs": sorted(p.name for p in out_dir.iterdir())}


def timed_detect(detector: Any, video: Path, device: Any) -> dict[str, Any]:
    from tallformer.engine.family import InferenceStats

    stats = InferenceStats()
    mem = PeakMemory(device).start()
    util = GpuUtilization().start()
    t0 = time.perf_counter()
    result = detector.detect(video, stats=stats)
    seconds = time.perf_counter() - t0
    gpu = util.stop()
    peak = mem.stop()
    return {"seconds": seconds, "frames": result.num_frames, "frames_per_s": result.num_frames / seconds,
            "windows": stats.windows, "backbone_chunks": stats.backbone_chunks,
            "peak_buffered_frames": stats.peak_frames, "detections": len(result.detections),
            "peak_memory_gb": peak, "peak_memory_kind": mem.kind, "gpu_utilization": gpu,
            "gpu_utilization_why_null": util.why if gpu is None else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", required=True, type=Path, help="the long video")
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="part 2's checkpoint (a random one is written here when it is missing)")
    parser.add_argument("--work", required=True, help="scratch folder (detections, a random checkpoint)")
    parser.add_argument("--json", required=True, help="where the figures go")
    parser.add_argument("--logs", default=None, help="log folder (default WORK/logs)")
    parser.add_argument("--cpu", action="store_true", help="the toy setting on the CPU")
    parser.add_argument("--num-classes", type=int, default=8, help="classes of a random checkpoint")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds the CLI run may take")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs tallformer")
    args = parser.parse_args()
    args.logs = args.logs or str(Path(args.work) / "logs")
    Path(args.work).mkdir(parents=True, exist_ok=True)

    import torch

    from tallformer.engine.infer import Detector

    device = torch.device("cpu" if args.cpu else "cuda")
    r: dict[str, Any] = {"part": "detect", "complete": False, **machine(), "mode": "cpu" if args.cpu else "gpu",
                         "video": str(args.video)}
    try:
        checkpoint = args.checkpoint
        r["checkpoint_source"] = "part 2 (straight run, last.pt)"
        if not checkpoint.is_file():
            checkpoint = random_checkpoint(Path(args.work) / "random.pt", "demo" if args.cpu else "thumos14_swin_b",
                                           args.num_classes)
            r["checkpoint_source"] = "random (part 2 left no checkpoint)"
        r["checkpoint"] = str(checkpoint)

        # in the order of need: detect_vs_backbone first, the command line last
        detector = Detector.from_checkpoint(checkpoint, device=device)
        cfg, model = detector.cfg, detector.loaded.model
        chunk, crop = cfg.model.backbone.chunk_size, cfg.data.crop_size
        per_window = cfg.data.num_frames // chunk
        r.update({"config_protocol": cfg.test.protocol, "num_frames": cfg.data.num_frames,
                  "frame_size": list(cfg.data.frame_size), "crop_size": crop, "fps": cfg.data.fps,
                  "amp": cfg.train.amp if device.type == "cuda" else "none"})
        run_backbone(model, cfg, torch.zeros(per_window, 3, chunk, crop, crop), device)  # warm-up
        r["detect"] = timed_detect(detector, args.video, device)
        write_part(args.json, r)

        chunks, n, decode_s = decoded_chunks(cfg, args.video)
        chunks = chunks.to(device)
        t0 = time.perf_counter()
        run_backbone(model, cfg, chunks, device)
        backbone_s = time.perf_counter() - t0
        del chunks
        if device.type == "cuda":
            torch.cuda.empty_cache()
        r["backbone"] = {"seconds": backbone_s, "frames": n, "frames_per_s": n / backbone_s,
                         "chunks_per_call": per_window}
        r["decode"] = {"seconds": decode_s, "frames_per_s": n / decode_s,
                       "what": "decode + resize + centre crop + normalise, one thread, whole video"}
        r["detect_vs_backbone"] = r["detect"]["frames_per_s"] / r["backbone"]["frames_per_s"]
        write_part(args.json, r)

        grid_cfg = dataclasses.replace(cfg, test=dataclasses.replace(cfg.test, protocol="chunk_grid"))
        grid = Detector(dataclasses.replace(detector.loaded, cfg=grid_cfg))
        r["detect_chunk_grid"] = timed_detect(grid, args.video, device)
        r["detect_vs_backbone_chunk_grid"] = r["detect_chunk_grid"]["frames_per_s"] / r["backbone"]["frames_per_s"]
        write_part(args.json, r)
        del detector, grid, model
        if device.type == "cuda":
            torch.cuda.empty_cache()

        r["cli"] = cli_detect(args, checkpoint, device.type)
        r["complete"] = True
    finally:
        write_part(args.json, r)
        print(summary(r), flush=True)
    return 0


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def summary(r: dict[str, Any]) -> str:
    d = r.get("detect") or {}
    util = d.get("gpu_utilization") or {}
    fields = {
        "detect_vs_backbone": r.get("detect_vs_backbone"),
        "detect_vs_backbone_chunk_grid": r.get("detect_vs_backbone_chunk_grid"),
        "detect_fps": d.get("frames_per_s"), "backbone_fps": (r.get("backbone") or {}).get("frames_per_s"),
        "decode_fps": (r.get("decode") or {}).get("frames_per_s"),
        "gpu_util_mean": util.get("mean_percent"), "peak_memory_gb": d.get("peak_memory_gb"),
        "cli_wall_s": (r.get("cli") or {}).get("wall_s"), "detections": (r.get("cli") or {}).get("detections"),
    }
    return "part3 detect: " + " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())


if __name__ == "__main__":
    sys.exit(main())
