"""Figures: the detection timeline of one video and per-class precision-recall curves.

matplotlib with the Agg backend (no display needed); every file is written atomically.

- `plot_timeline(path, detections, classes, duration)`: one lane per class, each
  detection a bar in the class's colour shaded by its score (pale = low, solid = high),
  time in seconds; with `ground_truth` a hatched lane above each class's lane.
- `plot_pr_curves(out_dir, gt, pred, tiou_thresholds)`: for each ground-truth class a PNG
  with one precision-recall curve per tIoU threshold (the curves the evaluator's AP
  integrates, `tallformer.evaluation.precision_recall_curves`), and an overview grid.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tallformer.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["PALETTE", "Segment", "class_color", "plot_pr_curves", "plot_timeline", "safe_name"]

# tab20's strong colours first, then its light ones: distinct for up to 20 classes (the
# viewer uses the same list, so a class has one colour in the PNG and in the HTML)
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)

Segment = tuple[float, float, str, float]
"""(start_s, end_s, label, score); ground truth uses score 1."""


def class_color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def safe_name(label: str) -> str:
    """A class name as a file name part: ``Cricket Bowling`` -> ``Cricket_Bowling``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "class"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=dpi, format=target.suffix.lstrip(".") or "png")
    return target


def _shade(color: str, score: float) -> tuple[float, float, float]:
    """`color` mixed with white by `score` (0: nearly white, 1: the colour itself); opaque,
    so overlapping bars show the best score, not a sum."""
    from matplotlib.colors import to_rgb

    k = 0.1 + 0.9 * min(max(score, 0.0), 1.0)
    r, g, b = to_rgb(color)
    return (1 - k + k * r, 1 - k + k * g, 1 - k + k * b)


def _tick_step(duration: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if duration / step <= 12:
            return float(step)
    return 7200.0


def _clock(t: float, _pos: object = None) -> str:
    t = max(t, 0.0)
    m, s = divmod(round(t), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def plot_timeline(path: str | os.PathLike[str], detections: Iterable[Segment], classes: Sequence[str],
                  duration: float, *, ground_truth: Iterable[Segment] | None = None,
                  title: str | None = None, lanes: str = "all") -> Path:
    """Write the timeline PNG of one video.

    Args:
        detections: (start_s, end_s, label, score), any order.
        classes: every class name (lane order; a class's colour is its index's).
        duration: the video's length in seconds (the x axis).
        ground_truth: (start_s, end_s, label, _) instances: drawn hatched in a "GT" lane
            above each class's lane.
        lanes: "all" (a lane for every class) or "used" (only classes with a detection or
            a ground-truth instance; "all" when there are none).
    """
    plt = _pyplot()
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    dets = list(detections)
    gts = list(ground_truth) if ground_truth is not None else None
    index = {name: i for i, name in enumerate(classes)}
    shown = list(classes)
    if lanes == "used":
        used = {d[2] for d in dets} | {g[2] for g in gts or []}
        shown = [c for c in classes if c in used] or list(classes)
    rows: list[tuple[str, str | None]] = []  # (class, "gt" | None), top to bottom
    for name in shown:
        if gts is not None:
            rows.append((name, "gt"))
        rows.append((name, None))
    height = 1.2 + 0.34 * len(rows)
    fig, ax = plt.subplots(figsize=(12, height), constrained_layout=True)
    ax.set_facecolor("#fbfbfd")
    n = len(rows)
    y_of = {row: n - 1 - i for i, row in enumerate(rows)}
    for i, (name, _) in enumerate(rows):  # a class's lanes share one background band
        y = n - 1 - i
        band = "#eef0f5" if shown.index(name) % 2 == 0 else "#ffffff"
        ax.axhspan(y - 0.5, y + 0.5, color=band, zorder=0, lw=0)
    for start, end, label, score in sorted(dets, key=lambda d: d[3]):  # strong bars on top
        if (label, None) not in y_of:
            continue
        y = y_of[(label, None)]
        shade = _shade(class_color(index.get(label, 0)), float(score))
        ax.broken_barh([(start, max(end - start, duration * 1e-4))], (y - 0.36, 0.72),
                       facecolors=shade, edgecolor="none", zorder=2)
    for start, end, label, _ in gts or []:
        if (label, "gt") not in y_of:
            continue
        y = y_of[(label, "gt")]
        color = class_color(index.get(label, 0))
        ax.broken_barh([(start, max(end - start, duration * 1e-4))], (y - 0.3, 0.6),
                       facecolors="white", edgecolor=color, hatch="////", lw=0.8, zorder=2)
    ax.set_yticks([n - 1 - i for i in range(n)])
    ax.set_yticklabels([f"{name}  (GT)" if kind == "gt" else name for name, kind in rows], fontsize=8)
    for tick, (name, kind) in zip(ax.get_yticklabels(), rows, strict=True):
        tick.set_color("#666666" if kind == "gt" else class_color(index.get(name, 0)))
    ax.set_ylim(-0.5, n - 0.5)
    ax.set_xlim(0, max(duration, 1e-3))
    step = _tick_step(duration)
    ax.xaxis.set_major_locator(MultipleLocator(step))
    ax.xaxis.set_major_formatter(FuncFormatter(_clock))
    ax.set_xlabel("time (m:ss)" if duration < 3600 else "time (h:mm:ss)")
    ax.grid(axis="x", color="#d0d4dc", lw=0.6, zorder=1)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)
    handles = [Patch(facecolor=_shade("#444444", a), label=f"score {a:g}") for a in (0.1, 0.5, 1.0)]
    if gts is not None:
        handles.append(Patch(facecolor="white", edgecolor="#555555", hatch="////", label="ground truth"))
    ax.legend(handles=handles, loc="upper right", bbox_to_anchor=(1.0, 1.0 + 0.9 / height),
              ncol=len(handles), fontsize=7, frameon=False)
    ax.set_title(title or "detections", loc="left", fontsize=10, fontweight="bold")
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_pr_curves(out_dir: str | os.PathLike[str], gt: Any, pred: Any,
                   tiou_thresholds: Sequence[float], subset: str | None = None, *,
                   ignore_unknown_labels: bool = False,
                   curves: Mapping[str, Mapping[str, Any]] | None = None) -> list[Path]:
    """Write ``pr_<class>.png`` per ground-truth class and ``pr_curves.png`` (all classes).

    `gt`, `pred`, `subset`: as `tallformer.evaluation.evaluate`; or pass `curves`
    (`precision_recall_curves`' result) directly. Returns the written files.
    """
    from tallformer.evaluation import precision_recall_curves

    plt = _pyplot()
    if curves is None:
        curves = precision_recall_curves(gt, pred, tiou_thresholds, subset,
                                         ignore_unknown_labels=ignore_unknown_labels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cmap = plt.get_cmap("viridis")
    thresholds = [float(t) for t in tiou_thresholds]
    colors = [cmap(i / max(len(thresholds) - 1, 1)) for i in range(len(thresholds))]
    written = []

    def draw(ax: Any, name: str, data: Mapping[str, Any], small: bool) -> None:
        for ti, t in enumerate(thresholds):
            rec = data["recall"][ti] if len(data["score"]) else []
            prec = data["precision"][ti] if len(data["score"]) else []
            ax.step([0.0, *rec], [1.0 if len(rec) else 0.0, *prec], where="post", color=colors[ti],
                    lw=1.0 if small else 1.5, label=f"tIoU {t:.2f}: AP {100 * data['ap'][ti]:.1f}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(color="#e0e3ea", lw=0.6)
        mean_ap = 100 * float(sum(data["ap"])) / max(len(data["ap"]), 1)
        ax.set_title(f"{name}  (mean AP {mean_ap:.1f})", fontsize=8 if small else 10)
        if not small:
            ax.set_xlabel("recall")
            ax.set_ylabel("precision")
            ax.legend(fontsize=8, loc="lower left", frameon=False)

    names = list(curves)
    for name in names:
        fig, ax = plt.subplots(figsize=(5.5, 4.5), constrained_layout=True)
        draw(ax, name, curves[name], small=False)
        try:
            written.append(_save(fig, out / f"pr_{safe_name(name)}.png"))
        finally:
            plt.close(fig)
    if names:
        cols = min(5, len(names))
        rows = -(-len(names) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.6 * rows), squeeze=False,
                                 constrained_layout=True, sharex=True, sharey=True)
        for k, ax in enumerate(axes.flat):
            if k < len(names):
                draw(ax, names[k], curves[names[k]], small=True)
            else:
                ax.axis("off")
        fig.supxlabel("recall", fontsize=9)
        fig.supylabel("precision", fontsize=9)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, [lab.split(":")[0] for lab in labels], loc="outside lower center",
                   ncol=len(thresholds), fontsize=8, frameon=False)
        try:
            written.append(_save(fig, out / "pr_curves.png"))
        finally:
            plt.close(fig)
    return written
