"""Detection speed and memory: the whole detect path against the bare backbone, chunk reuse
against recomputing every window, and peak memory against the video's length.

The detect path (`tallformer.engine.infer.Detector.detect`) decodes a video once in a
background thread, runs each 32-frame chunk through the backbone once (windows on the
chunk grid, ``test.protocol=chunk_grid``), builds the windows from the cached chunk
features, then neck, head and the per-video NMS. The original runs every 480-frame window
through the whole backbone and holds all windows of a video in memory at once (original:
vedatad/engines/infer_engine.py:27-117, vedatad/datasets/pipelines/test_time_aug.py:22-53).
Setting:

- Model: the shipped ``demo`` config (tiny Video Swin, 56x56 crops, random weights) with
  the paper's window geometry: ``data.num_frames=480`` (15 chunks), overlap 0.25, so
  chunk-grid windows start every 352 frames and share 4 chunks (``--frames`` changes it).
- Data: synthetic H.264 mp4 files (``generate_synthetic_dataset``, 64x64, 15 fps).
- detect_vs_backbone: frames/s of ``Detector.detect`` on a 3-minute video (open, decode,
  transform, backbone, neck, head, NMS) divided by frames/s of the bare backbone forward
  over the same frames (decoded and transformed beforehand, chunks in batches of one
  window's 15); aim >= 0.9.
- reuse_vs_recompute: time of the same windows with every window through the whole
  backbone (``reuse_chunks=False``) divided by the chunk-reuse time; aim >= 1.3.
- rss_10min_vs_1min: peak RSS (``ru_maxrss``) of a fresh process detecting on a 10-minute
  video divided by that on a 1-minute video; aim <= 1.2.
- Timing: ``--reps`` rounds, interleaved, best time of each; torch on ``--threads``
  threads (default 1: the decoder thread has its own core).

Run::

    .venv/bin/python benchmarks/detect_speed.py

Last line: ``detect_vs_backbone=X reuse_vs_recompute=Y rss_10min_vs_1min=Z``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _overrides(frames: int) -> list[str]:
    return [f"data.num_frames={frames}", "test.protocol=chunk_grid", "train.device=cpu"]


def _detector(frames: int, seed: int = 0) -> Any:
    import torch

    from tallformer.config import load_config
    from tallformer.engine.factory import build_detector
    from tallformer.engine.family import LoadedModel
    from tallformer.engine.infer import Detector

    cfg = load_config("demo", _overrides(frames))
    torch.manual_seed(seed)
    model = build_detector(cfg).eval()
    classes = [f"class_{i}" for i in range(cfg.model.num_classes)]
    return Detector(LoadedModel(model=model, cfg=cfg, saved_cfg=cfg, classes=classes, path=Path("random.pt")))


def _video(folder: Path, seconds: float, seed: int) -> Path:
    from tallformer.data.synthetic import generate_synthetic_dataset

    ann = generate_synthetic_dataset(folder, 1, seed=seed, min_length=seconds, max_length=seconds,
                                     val_fraction=0.0, progress=False)
    vid = next(iter(json.loads(ann.read_text())["database"]))
    return folder / "videos" / f"{vid}.mp4"


def decoded_chunks(cfg: Any, video: Path) -> tuple[Any, int, float]:
    """Every frame of ``video`` decoded at ``data.fps`` / ``data.frame_size`` and test-transformed
    (centre crop, normalised), zero-padded to whole chunks: ``[num_chunks, 3, chunk, h, w]``
    float32 on the CPU, the number of real frames and the seconds the decoding took."""
    import torch

    from tallformer.data.transforms import test_transform
    from tallformer.data.video import open_source

    d = cfg.data
    chunk = cfg.model.backbone.chunk_size
    t0 = time.perf_counter()
    with open_source(video, d.fps, (int(d.frame_size[0]), int(d.frame_size[1]))) as source:
        n = len(source)
        clip = test_transform(source.read(0, n), d.crop_size, d.mean, d.std)  # [3, n, h, w]
    seconds = time.perf_counter() - t0
    pad = (-n) % chunk
    clip = torch.cat([clip, clip.new_zeros(3, pad, *clip.shape[2:])], dim=1)
    return clip.reshape(3, -1, chunk, *clip.shape[2:]).transpose(0, 1).contiguous(), n, seconds


def run_backbone(model: Any, cfg: Any, chunks: Any, device: Any = None) -> None:
    """The bare backbone over ``chunks`` in batches of one window's chunks (``data.num_frames /
    chunk``), no gradients, ``train.amp`` autocast on CUDA as the detect path runs it; on CUDA
    the chunks should already be there and the call ends synchronised."""
    import contextlib

    import torch

    from tallformer.engine.device import amp_dtype_for

    device = torch.device(device or "cpu")
    amp = amp_dtype_for(cfg.train.amp, device)
    per_batch = cfg.data.num_frames // cfg.model.backbone.chunk_size
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for i in range(0, chunks.shape[0], per_batch):
            model.backbone.forward_chunks(chunks[i:i + per_batch].to(device, non_blocking=True))
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_child(video: str, frames: int, threads: int) -> int:
    """Detect on `video` in this (fresh) process; print the peak RSS in KiB."""
    import torch

    torch.set_num_threads(threads)
    detector = _detector(frames)
    result = detector.detect(video)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_kib": peak, "frames": result.num_frames}))
    return 0


def _rss(video: Path, frames: int, threads: int) -> dict[str, int]:
    proc = subprocess.run([sys.executable, __file__, "--rss-child", str(video), "--frames", str(frames),
                           "--threads", str(threads)], capture_output=True, text=True, check=False,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin",
                               "OMP_NUM_THREADS": str(threads)})
    if proc.returncode != 0:
        raise SystemExit(f"the RSS child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="speed video length (default 180)")
    parser.add_argument("--frames", type=int, default=480, help="window length (default 480)")
    parser.add_argument("--reps", type=int, default=2, help="timed rounds (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        return rss_child(args.rss_child, args.frames, args.threads)

    import torch

    from tallformer.data.video import open_source
    from tallformer.engine.family import InferenceStats
    from tallformer.engine.infer import infer_video

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        speed_video = _video(root / "speed", args.seconds, seed=1)
        short, long = _video(root / "short", 60.0, seed=2), _video(root / "long", 600.0, seed=3)
        print(f"videos written in {time.perf_counter() - t0:.1f} s")

        detector = _detector(args.frames)
        cfg, model = detector.cfg, detector.loaded.model
        d = cfg.data
        size = (int(d.frame_size[0]), int(d.frame_size[1]))
        chunk = cfg.model.backbone.chunk_size
        chunks, n, _ = decoded_chunks(cfg, speed_video)

        def backbone() -> None:
            run_backbone(model, cfg, chunks)

        def run_detect() -> None:
            detector.detect(speed_video)

        def run_path(reuse: bool) -> InferenceStats:
            stats = InferenceStats()
            with open_source(speed_video, d.fps, size) as source:
                infer_video(model, cfg, source, reuse_chunks=reuse, stats=stats)
            return stats

        reuse_stats, recompute_stats = run_path(True), run_path(False)  # also a warm-up
        times: dict[str, list[float]] = {"backbone": [], "detect": [], "reuse": [], "recompute": []}
        jobs = {"backbone": backbone, "detect": run_detect, "reuse": lambda: run_path(True),
                "recompute": lambda: run_path(False)}
        for _ in range(args.reps):
            for name, job in jobs.items():
                t = time.perf_counter()
                job()
                times[name].append(time.perf_counter() - t)
        best = {k: min(v) for k, v in times.items()}
        rss_short, rss_long = _rss(short, args.frames, args.threads), _rss(long, args.frames, args.threads)

    x = (n / best["detect"]) / (n / best["backbone"])
    y = best["recompute"] / best["reuse"]
    z = rss_long["peak_rss_kib"] / rss_short["peak_rss_kib"]
    print(f"speed video: {n} frames ({args.seconds:g} s at {d.fps:g} fps), {d.num_frames}-frame windows, "
          f"{reuse_stats.windows} windows; torch threads {args.threads}")
    print(f"bare backbone: {best['backbone']:.2f} s ({n / best['backbone']:.1f} frames/s, "
          f"{-(-n // chunk)} chunks)")
    print(f"detect:        {best['detect']:.2f} s ({n / best['detect']:.1f} frames/s)")
    print(f"chunk reuse:   {best['reuse']:.2f} s ({reuse_stats.backbone_chunks} backbone chunks)")
    print(f"recompute:     {best['recompute']:.2f} s ({recompute_stats.backbone_chunks} backbone chunks)")
    print(f"peak RSS: 1 min ({rss_short['frames']} frames) {rss_short['peak_rss_kib'] / 1024:.0f} MiB, "
          f"10 min ({rss_long['frames']} frames) {rss_long['peak_rss_kib'] / 1024:.0f} MiB")
    print(f"detect_vs_backbone={x:.3f} reuse_vs_recompute={y:.3f} rss_10min_vs_1min={z:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
