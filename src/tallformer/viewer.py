"""The self-contained HTML viewer of one video's detections.

One file, no network: the page's style and script are inline, the detections are embedded
as JSON, and an HTML5 ``<video>`` plays the video from a path relative to the HTML file
(so the file keeps working when the folder holding both is moved). Under the video a
timeline has one lane per class; each detection is a block, an element of class
``detection`` with ``data-start``, ``data-end`` (seconds), ``data-label`` and
``data-score``; clicking one seeks the video to its start; a playhead follows playback; a
score slider hides the blocks below its value; a side list shows the detections active at
the current time; ground truth, when given, is a hatched lane above each class.

The page is the package's ``viewer.html`` with four placeholders filled in; nothing here
imports torch or matplotlib.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tallformer.atomic import write_text
from tallformer.version import __version__

__all__ = ["DISPLAY_MAX_THRESHOLD", "DISPLAY_SHOWN", "PALETTE", "default_threshold", "displayed",
           "displayed_summary", "render_viewer", "video_src", "write_viewer"]

# The display threshold of the timelines and the viewer's score slider (`tallformer demo`,
# `tallformer detect`): the best DISPLAY_SHOWN detections at most, and every detection
# scoring DISPLAY_MAX_THRESHOLD or more. The results JSON keeps every detection.
DISPLAY_SHOWN = 25
DISPLAY_MAX_THRESHOLD = 0.3

# the same colours as tallformer.plots.PALETTE (tab20: strong colours, then light ones)
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)
# the strong tab20 colours read poorly on the dark page for grey/olive: brighten those two
_ON_DARK = {"#7f7f7f": "#a3a3a3", "#8c564b": "#b0786c"}

Segment = tuple[float, float, str, float]  # (start_s, end_s, label, score)


def _template() -> str:
    return resources.files("tallformer").joinpath("viewer.html").read_text(encoding="utf-8")


def _script_json(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">`` (no ``</script>``)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def video_src(video: str | os.PathLike[str], html_path: str | os.PathLike[str]) -> str:
    """The video's path relative to the HTML file's folder, as a URL path (``../v/a%20b.mp4``)."""
    rel = os.path.relpath(Path(video).resolve(), Path(html_path).resolve().parent)
    return quote(Path(rel).as_posix())


def default_threshold(scores: Sequence[float], shown: int = DISPLAY_SHOWN) -> float:
    """The display threshold: at most `shown` detections visible, at most
    `DISPLAY_MAX_THRESHOLD`, two decimals (rounded down, so the `shown`-th best is visible)."""
    if not scores:
        return 0.0
    ranked = sorted(scores, reverse=True)
    cut = ranked[min(shown, len(ranked)) - 1]
    return max(0.0, min(DISPLAY_MAX_THRESHOLD, int(cut * 100) / 100))


def displayed(detections: Sequence[Segment], threshold: float | None = None) -> tuple[list[Segment], float]:
    """(the detections a timeline draws, the threshold): score >= `threshold`, by default
    `default_threshold` of their scores (what the viewer's slider starts with).

    Example:
        >>> displayed([(0.0, 1.0, "a", 0.9), (2.0, 3.0, "a", 0.1)], 0.5)
        ([(0.0, 1.0, 'a', 0.9)], 0.5)
    """
    cut = default_threshold([float(d[3]) for d in detections]) if threshold is None else float(threshold)
    return [d for d in detections if d[3] >= cut], cut


def displayed_summary(shown: int, total: int, threshold: float) -> str:
    """``"12 of 380 detections with score >= 0.3"`` (a timeline's title)."""
    return f"{shown} of {total} detection{'' if total == 1 else 's'} with score >= {threshold:g}"


def render_viewer(*, title: str, classes: Sequence[str], detections: Iterable[Segment],
                  duration: float, fps: float, src: str | None, path: str | None = None,
                  ground_truth: Iterable[Segment] | None = None, threshold: float | None = None,
                  source: str | None = None, source_fps: float | None = None,
                  extra: Mapping[str, Any] | None = None) -> str:
    """The viewer page as a string.

    Args:
        title: shown as the heading (the video's name).
        classes: every class name; one lane each, in this order.
        detections: (start_s, end_s, label, score).
        duration: seconds (the timeline's length).
        fps: the rate the video was decoded at for the detector (a detection's resolution:
            prev / next skip detections within one such frame), shown in the header.
        source_fps: the video file's own rate, shown beside it (None: unknown).
        src: the ``<video>`` source as a URL relative to the page (`video_src`), or None when
            there is no playable video (a frame folder): the timeline still works.
        path: the video's path as the user gave it (shown when it cannot play).
        ground_truth: (start_s, end_s, label, _) instances, drawn above each class's lane.
        threshold: the score slider's starting value (default `default_threshold`).
        source: what made the detections (the checkpoint's name), shown in the header.
    """
    dets: list[dict[str, Any]] = [{"start": float(s), "end": float(e), "label": str(lab), "score": float(p)}
                                  for s, e, lab, p in detections]
    names = [str(c) for c in classes]
    unknown = sorted({str(d["label"]) for d in dets} - set(names))
    names += unknown  # a label outside the class list still gets a lane
    data: dict[str, Any] = {
        "title": title,
        "classes": names,
        "palette": [_ON_DARK.get(c, c) for c in PALETTE],
        "detections": dets,
        "ground_truth": None if ground_truth is None else [
            {"start": float(s), "end": float(e), "label": str(lab)} for s, e, lab, _ in ground_truth],
        "video": {"src": src, "path": path, "duration": float(duration), "fps": float(fps),
                  "source_fps": None if source_fps is None else float(source_fps)},
        "threshold": default_threshold([float(d["score"]) for d in dets]) if threshold is None else float(threshold),
        "source": source,
        "generator": f"tallformer {__version__}",
        **dict(extra or {}),
    }
    attr = "" if src is None else f' src="{html.escape(src, quote=True)}"'
    page = _template()
    for key, value in (("__VIDEO_ATTR__", attr), ("__GENERATOR__", html.escape(data["generator"])),
                       ("__TITLE__", html.escape(title)), ("__DATA__", _script_json(data))):
        page = page.replace(key, value)
    return page


def write_viewer(path: str | os.PathLike[str], *, video: str | os.PathLike[str] | None,
                 title: str, classes: Sequence[str], detections: Iterable[Segment],
                 duration: float, fps: float, ground_truth: Iterable[Segment] | None = None,
                 threshold: float | None = None, source: str | None = None,
                 source_fps: float | None = None) -> Path:
    """Write the viewer of one video to `path` (atomically); `video` is linked relatively.

    A `video` that is a folder (frame folder) or None gets no ``<video>`` source. `fps`: the
    rate it was decoded at; `source_fps`: the file's own (`tallformer.data.video.probe_video`).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    playable = video is not None and Path(video).is_file()
    src = video_src(video, target) if playable and video is not None else None
    page = render_viewer(title=title, classes=classes, detections=detections, duration=duration,
                         fps=fps, src=src, path=None if video is None else str(video),
                         ground_truth=ground_truth, threshold=threshold, source=source,
                         source_fps=source_fps)
    return write_text(target, page)
