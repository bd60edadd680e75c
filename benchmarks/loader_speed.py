"""Training data loader throughput: keep_ratio 0.15 against 1.0, side by side in one run.

The data workers decode and augment only the kept chunks' frames and read the dropped
chunks' features from the memory bank (design.md §2, §7), so at the paper's keep_ratio 0.15
(2 of 15 chunks) a sample should cost a fraction of a full 480-frame clip (1.0: every frame
decoded, no bank read). Setting:

- Data: the synthetic dataset (``generate_synthetic_dataset``: real H.264 mp4 files at
  64x64 and 15 fps, 30-60 s, keyframe every 32 frames) written to a temp dir.
- Loader: ``tallformer.engine.step.make_train_loader`` on ``configs/demo.yaml`` with 480-frame
  windows (15 chunks of 32), crop 56, augmentation on, batch 1, ``--workers`` workers
  (default 0: the per-sample cost without process noise); keep_ratio 0.15 reads a real
  fp16 bank with C = 1024 (Swin-B's width) built with random rows.
- Timing: ``--reps`` rounds; in each round one epoch of each setting (interleaved, so
  machine noise hits both alike); samples/s = samples / wall time over all rounds.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/loader_speed.py

Last line: ``loader_ratio=X samples_per_s_015=Y samples_per_s_100=Z`` with
``loader_ratio = samples_per_s_015 / samples_per_s_100`` (higher is better).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATIOS = (0.15, 1.0)
FEATURE_DIM = 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8, help="synthetic training videos (default 8)")
    parser.add_argument("--reps", type=int, default=3, help="epochs per setting (default 3)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    parser.add_argument("--frames", type=int, default=480, help="window length (default 480)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from tallformer.config import load_config
    from tallformer.data.annotations import load_annotations
    from tallformer.data.synthetic import generate_synthetic_dataset
    from tallformer.data.video import open_source, resolve_video
    from tallformer.engine.step import make_train_loader
    from tallformer.memory.bank import MemoryBank

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ann_path = generate_synthetic_dataset(root / "data", args.videos + 1, seed=0,
                                              val_fraction=1 / (args.videos + 1), progress=False)
        ann = load_annotations(ann_path)
        videos = root / "data" / "videos"
        frames = {}
        for v in ann.subset("training"):
            with open_source(resolve_video(videos, v.video_id), 15.0, (64, 64)) as src:
                frames[v.video_id] = len(src)
        bank = MemoryBank.create(root / "bank", frames, FEATURE_DIM)
        rng = np.random.default_rng(0)
        for video, n in frames.items():
            bank.write(video, 0, rng.standard_normal((-(-n // 2), FEATURE_DIM)).astype(np.float32))
            bank.mark_complete(video)
        bank.flush()
        loaders = {}
        for ratio in RATIOS:
            cfg = load_config(ROOT / "configs" / "demo.yaml", [
                f"data.annotations={ann_path}", f"data.videos={videos}",
                f"data.num_frames={args.frames}", "data.batch_size=1",
                f"data.num_workers={args.workers}", f"memory.keep_ratio={ratio}",
            ])
            loaders[ratio] = make_train_loader(cfg, ann, bank)
        print(f"{len(frames)} synthetic videos ({min(frames.values())}-{max(frames.values())} "
              f"frames, 64x64, 15 fps), {args.frames}-frame windows, crop 56, batch 1, "
              f"{args.workers} workers, bank C={FEATURE_DIM} fp16; {args.reps} epochs each",
              flush=True)
        elapsed = dict.fromkeys(RATIOS, 0.0)
        samples = dict.fromkeys(RATIOS, 0)
        for rep in range(args.reps):
            for ratio in RATIOS:
                loader = loaders[ratio]
                loader.set_epoch(rep)
                t0 = time.perf_counter()
                for batch in loader:
                    samples[ratio] += len(batch["video_id"])
                elapsed[ratio] += time.perf_counter() - t0
        for ratio in RATIOS:
            loaders[ratio].dataset.close()
        speed = {r: samples[r] / elapsed[r] for r in RATIOS}
        for r in RATIOS:
            print(f"keep_ratio={r:<5} {samples[r]} samples in {elapsed[r]:.2f} s: "
                  f"{speed[r]:.2f} samples/s")
        ratio = speed[0.15] / speed[1.0]
        print(f"keep_ratio 0.15 loads {ratio:.2f}x as many samples per second as 1.0")
        print(f"loader_ratio={ratio:.3f} samples_per_s_015={speed[0.15]:.3f} "
              f"samples_per_s_100={speed[1.0]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
