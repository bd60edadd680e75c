"""Training data loader throughput: keep_ratio 0.15 against 1.0, side by side in one run.

The data workers decode and augment only the kept chunks' frames and read the dropped
chunks' features from the memory bank (the original decodes all 480 frames and reads the
bank in the training process: vedatad/engines/train_engine.py:66-108), so at the paper's keep_ratio 0.15
(2 of 15 chunks) a sample should cost a fraction of a full 480-frame clip (1.0: every frame
decoded, no bank read). Setting:

- Data: the synthetic dataset (``generate_synthetic_dataset``: real H.264 mp4 files at
  64x64 and 15 fps, 30-60 s, keyframe every 32 frames) written to a temp dir.
- Loader: ``tallformer.engine.loader.make_train_loader`` on the shipped ``demo`` config with 480-frame
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
from typing import Any

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

    from tallformer.config import load_config, shipped_config_path
    from tallformer.data.annotations import load_annotations
    from tallformer.data.synthetic import generate_synthetic_dataset
    from tallformer.engine.loader import make_train_loader
    from tallformer.engine.run_bank import training_frame_counts
    from tallformer.memory.bank import MemoryBank

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ann_path = generate_synthetic_dataset(root / "data", args.videos + 1, seed=0,
                                              val_fraction=1 / (args.videos + 1), progress=False)
        ann = load_annotations(ann_path)
        videos = root / "data" / "videos"

        def config(ratio: float) -> Any:
            return load_config(shipped_config_path("demo"), [
                f"data.annotations={ann_path}", f"data.videos={videos}",
                f"data.num_frames={args.frames}", "data.batch_size=1",
                f"data.num_workers={args.workers}", f"memory.keep_ratio={ratio}",
            ])

        frames = training_frame_counts(config(1.0), ann)  # 15 fps, 64x64
        bank = MemoryBank.create(root / "bank", frames, FEATURE_DIM)
        rng = np.random.default_rng(0)
        for video, n in frames.items():
            bank.write(video, 0, rng.standard_normal((-(-n // 2), FEATURE_DIM)).astype(np.float32))
            bank.mark_complete(video)
        bank.flush()
        loaders = {}
        for ratio in RATIOS:
            loaders[ratio] = make_train_loader(config(ratio), ann, bank)
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
