"""Can the backbone learn the classes at all? A clip classifier on the detector's backbone.

The keep-ratio ablation asks whether training the backbone inside the detector pays. When no
keep ratio beats the frozen random backbone, two explanations remain: the backbone cannot
learn what tells the classes apart, or the detector's training does not make it learn it.
This benchmark separates them. It trains the config's backbone (the same Video Swin, from the
same random initial weights as the ablation's runs of that seed) plus one linear layer on
its pooled features, with cross-entropy on clip labels, on the same videos:

- a clip is ``chunk_size`` frames (32) inside one annotated instance: a random start in
  training, the centred one for the held-out score; every frame centre-cropped to
  ``data.crop_size`` and normalised as the detector's input (``data.mean``, ``data.std``);
- the feature is the backbone's output ``[C, T/2]`` (spatially pooled, as the memory bank
  holds it) averaged over time: ``[C]``, then ``Linear(C, classes)``;
- Adam (``--lr``), ``--batch`` clips a step drawn from the `training` videos' instances;
  accuracy on one clip per instance of the `validation` videos every ``--eval-every`` steps.

Last line: ``clip_val_accuracy=... steps=...`` (the held-out accuracy after the last step;
chance is 1 / classes).

    python benchmarks/clip_classifier.py                          # drift, the ablation's data
    python benchmarks/clip_classifier.py --data runs/ablation_keep_ratio/synthetic_drift/data --steps 400

Defaults: ``--config synthetic_drift``, the data of ``benchmarks/ablation_keep_ratio.py``
(generated there when missing), 400 steps of 8 clips, seed 10: about 6 minutes on one core.
The run computes with the demo's reproducible CPU arithmetic (`tallformer.engine.cpu`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def instance_clips(annotations: Path, subset: str, fps: float) -> list[tuple[str, int, int, str]]:
    """(video id, first frame, end frame, label) of every instance of `subset`."""
    from tallformer.data.annotations import load_annotations

    aset = load_annotations(str(annotations))
    return [(v.video_id, round(a.segment[0] * fps), round(a.segment[1] * fps), a.label)
            for v in aset.subset(subset) for a in v.annotations]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="synthetic_drift", help="a shipped config name or YAML file")
    parser.add_argument("--data", type=Path, default=None,
                        help="the synthetic dataset (annotations.json, videos/); default: the ablation's, "
                             "runs/ablation_keep_ratio/CONFIG/data")
    parser.add_argument("--steps", type=int, default=400, help="training steps (default 400)")
    parser.add_argument("--batch", type=int, default=8, help="clips a step (default 8)")
    parser.add_argument("--lr", type=float, default=3e-4, help="Adam's learning rate (default 3e-4)")
    parser.add_argument("--seed", type=int, default=10, help="initial weights and clip draws (default 10)")
    parser.add_argument("--eval-every", type=int, default=100, help="held-out accuracy every N steps")
    args = parser.parse_args()

    from tallformer.engine import cpu

    cpu.prepare_process(reproducible=True)
    cpu.apply(reproducible=True)
    import torch

    from tallformer.data.video import iter_frames
    from tallformer.models.backbone import build_backbone_from_config

    sys.path.insert(0, str(HERE))
    import ablation_keep_ratio as ablation

    start = time.perf_counter()
    work = ablation.default_work(args.config, False)
    if args.data is None:
        cfg = ablation.run_config(args.config, 1.0, args.seed, False, work, quiet=True)  # makes the data
        data = Path(str(cfg.data.annotations)).parent
    else:
        from tallformer.config import load_config

        data = args.data
        cfg = load_config(args.config, [f"data.annotations={data / 'annotations.json'}",
                                        f"data.videos={data / 'videos'}"])
    d = cfg.data
    size = (int(d.frame_size[0]), int(d.frame_size[1]))
    length = cfg.model.backbone.chunk_size
    train_clips = instance_clips(data / "annotations.json", "training", d.fps)
    val_clips = instance_clips(data / "annotations.json", "validation", d.fps)
    classes = sorted({c[3] for c in train_clips + val_clips})
    needed = sorted({c[0] for c in train_clips + val_clips})
    frames = {vid: np.stack(list(iter_frames(data / "videos" / f"{vid}.mp4", d.fps, size))) for vid in needed}
    print(f"{len(train_clips)} training and {len(val_clips)} held-out clips of {length} frames, "
          f"{len(classes)} classes, decoded in {time.perf_counter() - start:.0f} s", flush=True)

    top, left = (size[0] - d.crop_size) // 2, (size[1] - d.crop_size) // 2
    mean = torch.tensor(d.mean, dtype=torch.float32).view(3, 1, 1, 1)
    std = torch.tensor(d.std, dtype=torch.float32).view(3, 1, 1, 1)

    def clip(c: tuple[str, int, int, str], rng: np.random.Generator | None) -> torch.Tensor:
        """``[3, length, crop, crop]``: a random (rng) or the centred window of the instance."""
        vid, s, e, _ = c
        room = max(0, e - s - length)
        first = s + (int(rng.integers(0, room + 1)) if rng is not None else room // 2)
        f = frames[vid][first:first + length]
        if len(f) < length:  # a short instance: its last frame repeated
            f = np.concatenate([f, np.repeat(f[-1:], length - len(f), axis=0)])
        x = torch.from_numpy(np.ascontiguousarray(f[:, top:top + d.crop_size, left:left + d.crop_size]))
        return (x.permute(3, 0, 1, 2).float() - mean) / std

    torch.manual_seed(args.seed)
    backbone = build_backbone_from_config(cfg.model.backbone)
    head = torch.nn.Linear(backbone.num_features, len(classes))
    optimizer = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=args.lr)
    rng = np.random.default_rng(args.seed)

    def accuracy() -> float:
        backbone.eval()
        hits = 0
        with torch.no_grad():
            for i in range(0, len(val_clips), 16):
                part = val_clips[i:i + 16]
                logits = head(backbone(torch.stack([clip(c, None) for c in part])).mean(-1))
                hits += int((logits.argmax(1) == torch.tensor([classes.index(c[3]) for c in part])).sum())
        backbone.train()
        return hits / len(val_clips)

    print(f"step 0: held-out accuracy {accuracy():.3f} (the random backbone, untrained head)", flush=True)
    acc = 0.0
    for step in range(1, args.steps + 1):
        batch = [train_clips[int(i)] for i in rng.integers(0, len(train_clips), args.batch)]
        logits = head(backbone(torch.stack([clip(c, rng) for c in batch])).mean(-1))
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([classes.index(c[3]) for c in batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            acc = accuracy()
            print(f"step {step}: loss {loss.item():.3f}, held-out accuracy {acc:.3f}, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    print(f"total {time.perf_counter() - start:.0f} s")
    print(f"clip_val_accuracy={acc:.4f} steps={args.steps}")


if __name__ == "__main__":
    main()
