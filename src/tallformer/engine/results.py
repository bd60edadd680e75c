"""Results of a test or detection run, the same for every detector family.

- `Detection` (one action instance: segment in seconds, label name, score) and
  `detection_list` (a family's `Detections` tensors -> `Detection` records);
- `results_json`: ActivityNet results JSON, with the classifier that labelled them
  recorded where there is one;
- `load_ground_truth` (an annotation file or set, and what to score against) and `score`
  (the evaluator as ``tallformer eval --ignore-unknown-labels`` runs it);
- `results_table` (mAP per tIoU, one row per checkpoint) and `unique_name` (output names
  made unique: ``name``, ``name_2``, ...).

Imports neither torch nor numpy.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tallformer.version import __version__

if TYPE_CHECKING:
    from tallformer.data.annotations import AnnotationSet
    from tallformer.engine.family import ResultSet
    from tallformer.models.outputs import Detections

__all__ = [
    "RESULTS_VERSION",
    "Detection",
    "detection_list",
    "load_ground_truth",
    "results_json",
    "results_table",
    "score",
    "unique_name",
]

RESULTS_VERSION = f"tallformer {__version__}"


@dataclass(frozen=True)
class Detection:
    """One detected action instance: `segment` (start, end) in seconds, `label`, `score`."""

    segment: tuple[float, float]
    label: str
    score: float

    @property
    def start(self) -> float:
        return self.segment[0]

    @property
    def end(self) -> float:
        return self.segment[1]

    def as_dict(self) -> dict[str, Any]:
        """The ActivityNet results entry ``{"segment": [s, e], "label": ..., "score": p}``."""
        return {"segment": [self.segment[0], self.segment[1]], "label": self.label, "score": self.score}


def detection_list(dets: Detections, classes: Sequence[str]) -> list[Detection]:
    """`dets` (seconds; labels index `classes`) as `Detection` records, in their order."""
    segs = dets.segments.tolist()
    return [Detection((float(s), float(e)), classes[int(c)], float(p))
            for (s, e), p, c in zip(segs, dets.scores.tolist(), dets.labels.tolist(), strict=True)]


def results_json(results: Mapping[str, Iterable[Detection]],
                 result_set: ResultSet | None = None) -> dict[str, Any]:
    """``{video_id: detections}`` as ActivityNet results JSON (what `tallformer eval` reads).

    With a `result_set` that names a classifier (a family's video-level labels), its record goes under ``"classifier"`` (a key the evaluator ignores) and its
    ``external_data`` (the official key: was a classifier file or the ground truth used?).
    """
    data: dict[str, Any] = {
        "version": RESULTS_VERSION,
        "results": {vid: [d.as_dict() for d in dets] for vid, dets in results.items()},
        "external_data": dict(result_set.external_data) if result_set is not None else {},
    }
    if result_set is not None and result_set.classifier is not None:
        data["classifier"] = dict(result_set.classifier)
    return data


def load_ground_truth(annotations: AnnotationSet | str | os.PathLike[str]) -> tuple[AnnotationSet, Any]:
    """(the `AnnotationSet`, the ground truth to score against: the file when given a path,
    so the numbers equal ``tallformer eval --gt FILE`` on the written results)."""
    from tallformer.data.annotations import load_annotations

    if isinstance(annotations, (str, os.PathLike)):
        return load_annotations(annotations), Path(annotations)
    return annotations, annotations


def score(gt: Any, pred: Mapping[str, Any] | Path, thresholds: Sequence[float], subset: str) -> dict[str, Any]:
    """`tallformer.evaluation.evaluate` with ``ignore_unknown_labels=True``: detections of
    classes the subset has no instance of cannot score, so the mean runs over the classes
    with ground truth (original: vedatad/misc/evaluation/mean_ap.py:350-355), and the
    evaluator's note about dropping them is not shown."""
    from tallformer.evaluation import EvaluationWarning, evaluate

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*dropped \d+ predictions whose label",
                                category=EvaluationWarning)
        return evaluate(gt, pred, thresholds, subset, ignore_unknown_labels=True)


def results_table(rows: Sequence[Mapping[str, Any]], thresholds: Sequence[float]) -> str:
    """mAP (%) per tIoU and the average, one row per checkpoint (``name``, ``epoch``,
    ``mAP``, ``average_mAP``); the best average marked when there are several."""
    width = max([10, *(len(r["name"]) for r in rows)])
    head = f"{'checkpoint':<{width}}  {'epoch':>5}  " + "  ".join(f"{t:>6.2f}" for t in thresholds) + f"  {'avg':>6}"
    best = max(range(len(rows)), key=lambda i: rows[i]["average_mAP"]) if rows else -1
    lines = [head]
    for i, r in enumerate(rows):
        epoch = "" if r.get("epoch") is None else str(r["epoch"])
        cells = "  ".join(f"{100 * m:>6.2f}" for m in r["mAP"])
        mark = "  <- best" if i == best and len(rows) > 1 else ""
        lines.append(f"{r['name']:<{width}}  {epoch:>5}  {cells}  {100 * r['average_mAP']:>6.2f}{mark}")
    return "\n".join(lines)


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or ``name_2``, ``name_3``, ... when `taken` has it; the result is added to
    `taken` (output files and folders of several inputs with one name)."""
    out, k = name, 1
    while out in taken:
        k += 1
        out = f"{name}_{k}"
    taken.add(out)
    return out
