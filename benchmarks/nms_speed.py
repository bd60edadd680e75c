"""NMS speed: 5,000 candidates of 20 classes (issue 3 target: well under 100 ms each).

Times every method of `tallformer.ops.segments.nms` on the same deterministic input and,
side by side, torchvision's C++ `batched_nms` (hard NMS on segments embedded as boxes
[start, 0, end, 1]) as a reference point. Checks that hard NMS keeps exactly what
torchvision keeps. Last line: `name=value` pairs (milliseconds, median of 7 runs).
"""

from __future__ import annotations

import statistics
import time

import torch
from torchvision.ops import batched_nms

from tallformer.ops.segments import nms


def median_ms(fn, reps: int = 7) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    n, classes = 5000, 20
    centre = torch.rand(n, generator=g, dtype=torch.float64) * 2000
    width = torch.rand(n, generator=g, dtype=torch.float64) * 80 + 2
    seg = torch.stack([centre - width / 2, centre + width / 2], 1)
    scores = torch.rand(n, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (n,), generator=g)
    boxes = torch.stack([seg[:, 0], torch.zeros(n, dtype=seg.dtype), seg[:, 1], torch.ones(n, dtype=seg.dtype)], 1)

    kept = nms(seg, scores, labels, "hard", 0.5)[0].shape[0]
    tv_kept = batched_nms(boxes, scores, labels, 0.5).shape[0]
    assert kept == tv_kept, (kept, tv_kept)

    res = {}
    for method in ("hard", "nmw", "soft_linear", "soft_gaussian"):
        res[method] = median_ms(lambda m=method: nms(seg, scores, labels, m, 0.5, min_score=0.001))
        print(f"{method:14s} {res[method]:7.2f} ms")
    tv = median_ms(lambda: batched_nms(boxes, scores, labels, 0.5))
    print(f"{'torchvision':14s} {tv:7.2f} ms (hard, C++)  kept {kept} of {n}")
    print(
        f"hard_ms={res['hard']:.2f} nmw_ms={res['nmw']:.2f} soft_linear_ms={res['soft_linear']:.2f} "
        f"soft_gaussian_ms={res['soft_gaussian']:.2f} hard_vs_torchvision={res['hard'] / tv:.2f}"
    )


if __name__ == "__main__":
    main()
