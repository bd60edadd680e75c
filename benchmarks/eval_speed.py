"""Time `tallformer eval` on an ActivityNet-validation-sized input.

Generates, deterministically (fixed seed) in a temp dir, a ground truth of ~5,000 videos
(1-3 instances each, 200 classes) and 15,000 predictions (jittered instances, wrong labels,
random segments, some on videos absent from the ground truth), then times:

- the whole `python -m tallformer eval` process (subprocess, best of --repeat runs);
- a straightforward loop-based re-statement of the official evaluator
  (ActivityNet `Evaluation/eval_detection.py`, without pandas/joblib) on the same input in
  this process. The official code itself is slower still (pandas row access): 5-8 s here.

It checks that both give the same numbers and ends with the line
`eval_seconds=X official_like_seconds=Y speedup=Z`.

    python benchmarks/eval_speed.py [--videos 4926] [--predictions 15000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

THRESHOLDS = [float(t) for t in np.linspace(0.5, 0.95, 10)]


def generate(num_videos: int, num_predictions: int, num_classes: int = 200,
             seed: int = 0) -> tuple[dict, dict]:
    """(ground truth, predictions) dicts in ActivityNet JSON format."""
    rng = np.random.default_rng(seed)
    classes = [f"class_{i:03d}" for i in range(num_classes)]
    db: dict[str, Any] = {}
    instances: list[tuple[str, float, float, str]] = []
    for v in range(num_videos):
        vid = f"vid{v:05d}"
        duration = float(rng.uniform(30, 240))
        label = classes[int(rng.integers(num_classes))]
        anns = []
        for _ in range(int(rng.integers(1, 4))):
            s = float(rng.uniform(0, duration * 0.8))
            e = min(duration, s + float(rng.uniform(1, duration * 0.5)))
            anns.append({"segment": [s, e], "label": label})
            instances.append((vid, s, e, label))
        db[vid] = {"subset": "validation", "duration": duration, "annotations": anns}
    results: dict[str, list] = {}
    for _ in range(num_predictions):
        kind = rng.random()
        vid, s, e, label = instances[int(rng.integers(len(instances)))]
        if kind < 0.6:  # jittered true instance
            d = e - s
            s, e = s + float(rng.normal(0, 0.15 * d)), e + float(rng.normal(0, 0.15 * d))
        elif kind < 0.8:  # wrong label
            label = classes[int(rng.integers(num_classes))]
        elif kind < 0.97:  # random segment
            s = float(rng.uniform(0, 200))
            e = s + float(rng.uniform(0, 60))
        else:  # a video absent from the ground truth
            vid = f"absent{int(rng.integers(100)):03d}"
        s, e = max(0.0, min(s, e)), max(s, e)
        results.setdefault(vid, []).append(
            {"segment": [s, e], "label": label, "score": round(float(rng.random()), 4)})
    return {"database": db}, {"version": "VERSION 1.3", "results": results, "external_data": {}}


def official_like(gt_path: Path, pred_path: Path, thresholds: list[float],
                  subset: str) -> np.ndarray:
    """mAP per threshold from the loop-based re-statement of the official evaluator."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from eval_oracle import oracle_evaluate

    gt = json.loads(gt_path.read_text())
    pred = json.loads(pred_path.read_text())
    return oracle_evaluate(gt, pred, thresholds, subset)["mAP"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=4926)
    parser.add_argument("--predictions", type=int, default=15000)
    parser.add_argument("--repeat", type=int, default=3, help="process runs; the best is reported")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        gt, pred = generate(args.videos, args.predictions)
        gt_path, pred_path = Path(tmp) / "gt.json", Path(tmp) / "pred.json"
        gt_path.write_text(json.dumps(gt))
        pred_path.write_text(json.dumps(pred))
        out = Path(tmp) / "metrics.json"
        n_gt = sum(len(v["annotations"]) for v in gt["database"].values())
        print(f"input: {len(gt['database'])} videos, {n_gt} instances, 200 classes, "
              f"{args.predictions} predictions, {len(THRESHOLDS)} thresholds")
        cmd = [sys.executable, "-m", "tallformer", "eval", "--gt", str(gt_path), "--pred",
               str(pred_path), "--dataset", "anet", "--out", str(out)]
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                return 1
        ours = min(times)
        print(f"tallformer eval process: {', '.join(f'{t:.3f}' for t in times)} s "
              f"(best {ours:.3f} s)")
        import warnings

        from tallformer.evaluation import evaluate

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the absent-video warning is expected here
            t0 = time.perf_counter()
            evaluate(gt_path, pred_path, THRESHOLDS, "validation")
            inproc = time.perf_counter() - t0
        print(f"tallformer.evaluation.evaluate in process (files included): {inproc:.3f} s")
        t0 = time.perf_counter()
        ref = official_like(gt_path, pred_path, THRESHOLDS, "validation")
        theirs = time.perf_counter() - t0
        print(f"official-like re-statement (in process, files included): {theirs:.3f} s")
        got = np.asarray(json.loads(out.read_text())["mAP"])
        diff = float(np.max(np.abs(got - ref)))
        print(f"mAP per threshold: {np.round(100 * got, 3).tolist()}; max |diff| = {diff:.3g}")
        if diff > 1e-9:
            print("MISMATCH between tallformer eval and the official-like re-statement",
                  file=sys.stderr)
            return 1
    print(f"eval_seconds={ours:.3f} official_like_seconds={theirs:.3f} "
          f"speedup={theirs / ours:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
