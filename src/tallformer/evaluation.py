"""ActivityNet-protocol detection mAP, giving the official evaluator's numbers, only faster.

The reference is `Evaluation/eval_detection.py` of the ActivityNet challenge repository
(`ANETdetection`, `compute_average_precision_detection`, `segment_iou`,
`interpolated_prec_rec`), which the original release's AFSD code calls for ActivityNet and
whose relative (original: vedatad/misc/evaluation/mean_ap.py) scores THUMOS14. Every number here equals the official one to 1e-9 on any valid input,
edge cases included:

- ground truth = the videos whose `subset` equals the evaluated subset; the classes are
  the labels of that ground truth in order of first appearance (file order), and mAP is
  the mean over them; a class without predictions has AP 0;
- per class, the predictions keep file order (results dict order, then list order) and
  are ranked by `numpy.argsort(scores)[::-1]` on exactly that array, so equal scores fall
  as they do in the official code (numpy's default sort is not stable);
- at each tIoU threshold a prediction walks the ground truth of its video and class in
  `argsort(tiou)[::-1]` order: the first candidate below the threshold makes it a false
  positive, matched ones are skipped, the first free one makes it a true positive;
- tIoU = max(0, intersection) / union; a zero-length prediction against a zero-length
  ground truth gives 0/0 = NaN, which matches because `NaN < threshold` is false;
- predictions on videos absent from the evaluated ground truth are false positives;
  duplicate ground-truth instances are separate instances;
- AP is the all-point interpolated AP (precision envelope, sentinels (0, 0), (1, 0)).

Where the official code would crash or silently accept garbage we raise an
`EvaluationError` instead: unknown predicted labels (official: KeyError), segments with
start > end, non-finite or non-numeric values. No blocked-video list is fetched (the
official `check_status` server is gone).

Speed: the tIoU table of every (prediction, candidate) pair is computed at once (in
chunks); candidates below the smallest threshold are dropped from the tail of each
official order (they can never be reached), so only rows with two or more reachable
candidates are sorted; then the per-prediction loop of the official code becomes a loop
over the *position within a (class, video) group*: all groups advance together,
vectorised over predictions, candidates and thresholds. Only numpy is imported (no
torch, no pandas).
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tallformer.errors import TallformerError, TallformerWarning

__all__ = [
    "ANET_THRESHOLDS",
    "THRESHOLD_PRESETS",
    "THUMOS14_THRESHOLDS",
    "EvaluationError",
    "EvaluationWarning",
    "GroundTruth",
    "Predictions",
    "compute_average_precision",
    "evaluate",
    "format_table",
    "interpolated_average_precision",
    "load_ground_truth",
    "load_predictions",
    "paired_segment_iou",
    "precision_recall_curves",
]

# THUMOS14 reports tIoU 0.3:0.1:0.7 (original: tools/test.py:87-93).
THUMOS14_THRESHOLDS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)
# ActivityNet uses numpy.linspace(0.5, 0.95, 10), bit for bit (original: AFSD/anet_video_cls/eval.py:25-31).
ANET_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
THRESHOLD_PRESETS: dict[str, tuple[float, ...]] = {
    "thumos14": THUMOS14_THRESHOLDS,
    "anet": ANET_THRESHOLDS,
}


_NUMBERS = (float, int)  # exact types: bool is not a number here
_MAX = sys.float_info.max  # -_MAX <= x <= _MAX is False for NaN and +-inf
_INT64 = 2**63


class EvaluationError(TallformerError, ValueError):
    """Bad evaluator input; the message names the file, the video and the entry."""


class EvaluationWarning(TallformerWarning):
    """Input the official evaluator accepts but that is probably a mistake."""


@dataclass
class GroundTruth:
    """The instances of one subset, in file order.

    `video_ids` are the subset's videos (with or without instances); instance arrays are
    `[G]`: `video` (index into `video_ids`), `start`, `end` (seconds, float64), `label`
    (index into `classes`, first-appearance order). `subsets` maps every subset of the
    file to its video ids (for error messages and warnings).
    """

    source: str
    subset: str
    video_ids: list[str]
    classes: list[str]
    video: np.ndarray
    start: np.ndarray
    end: np.ndarray
    label: np.ndarray
    subsets: dict[str, list[str]]
    database: Mapping[str, Any] = field(repr=False)  # the file's whole 'database'

    def labels_of_other_subsets(self) -> set[str]:
        """Labels that occur only in subsets other than the evaluated one (for hints)."""
        found: set[str] = set()
        for name, ids in self.subsets.items():
            if name == self.subset:
                continue
            for vid in ids:
                anns = self.database[vid].get("annotations")
                if isinstance(anns, list):
                    found.update(a["label"] for a in anns if isinstance(a, Mapping)
                                 and isinstance(a.get("label"), str))
        return found - set(self.classes)


@dataclass
class Predictions:
    """Predictions in file order, `[P]` arrays.

    `video` indexes `video_ids` (the predicted videos in file order); `in_gt` is the
    index of that video in the ground truth's `video_ids`, or -1; `score` is float64, or
    int64 when every score in the file is an integer (as the official pandas column).
    """

    source: str
    video_ids: list[str]
    video: np.ndarray
    in_gt: np.ndarray
    start: np.ndarray
    end: np.ndarray
    label: np.ndarray
    score: np.ndarray
    dropped: dict[str, int]  # unknown label -> number of predictions dropped


# ----------------------------------------------------------------------------- input


def _read_json(obj: str | Path | Mapping[str, Any], what: str) -> tuple[Any, str]:
    """(parsed JSON, name for messages) from a path or an already-loaded mapping."""
    if isinstance(obj, Mapping):
        return obj, f"<{what} dict>"
    path = Path(obj)
    # Parsing creates many containers and no cycles: pausing the cyclic GC saves its
    # repeated full scans (a large share of the load time for big files).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with path.open("rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise EvaluationError(f"{what} file {path} does not exist") from None
    except IsADirectoryError:
        raise EvaluationError(f"{what} file {path} is a directory, not a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{path}: not a valid JSON file ({exc}); expected the {what} "
                              "in ActivityNet JSON format") from None
    finally:
        if gc_was_enabled:
            gc.enable()
    return data, str(path)


def _number(value: Any, where: str) -> float:
    """A finite float from a JSON number or numeric string (some public files use strings)."""
    if type(value) is float:
        v = value
    elif isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise EvaluationError(f"{where}: {value!r} is not a number")
    else:
        try:
            v = float(value)
        except (ValueError, OverflowError):
            raise EvaluationError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(v):
        raise EvaluationError(f"{where}: {value!r} is not a finite number")
    return v


def _segment(entry: Any, where: str) -> tuple[float, float]:
    if not isinstance(entry, Mapping):
        raise EvaluationError(f"{where}: expected an object with 'segment' and 'label', "
                              f"got {type(entry).__name__}")
    seg = entry.get("segment")
    if seg is None:
        raise EvaluationError(f"{where}: missing key 'segment' (expected [start_s, end_s])")
    if not isinstance(seg, (list, tuple)) or len(seg) != 2:
        raise EvaluationError(f"{where}: 'segment' must be [start_s, end_s], got {seg!r}")
    s = _number(seg[0], f"{where}: segment start")
    e = _number(seg[1], f"{where}: segment end")
    if s > e:
        raise EvaluationError(f"{where}: segment start {s} > end {e}; swap or drop the entry")
    return s, e


def _prediction(entry: Any, where: str) -> tuple[float, float, str, int | float]:
    """(start, end, label, score) of one results entry, or an error naming it."""
    s, e = _segment(entry, where)
    label = _label(entry, where)
    if "score" not in entry:
        raise EvaluationError(f"{where}: missing key 'score'")
    score = entry["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise EvaluationError(f"{where}: score {score!r} is not a number")
    if not -_MAX <= score <= _MAX:
        raise EvaluationError(f"{where}: score {score!r} is not a finite number")
    return s, e, label, score


def _label(entry: Mapping[str, Any], where: str) -> str:
    if "label" not in entry:
        raise EvaluationError(f"{where}: missing key 'label'")
    label = entry["label"]
    if not isinstance(label, str):
        raise EvaluationError(f"{where}: 'label' must be a string, got {label!r}")
    return label


def _as_database(data: Any, source: str) -> Mapping[str, Any]:
    """The `database` mapping of ActivityNet JSON, or of a duck-typed AnnotationSet."""
    videos = getattr(data, "videos", None)
    if videos is not None and not isinstance(data, Mapping):
        # tallformer.data.annotations.AnnotationSet (duck-typed: evaluation imports nothing of ours)
        return {
            vid: {"subset": v.subset,
                  "annotations": [{"segment": list(a.segment), "label": a.label}
                                  for a in v.annotations]}
            for vid, v in videos.items()
        }
    if not isinstance(data, Mapping) or "database" not in data:
        raise EvaluationError(
            f"{source}: missing key 'database'; ground truth must be ActivityNet JSON "
            '{"database": {video_id: {"subset": ..., "annotations": [{"segment": [s, e], '
            '"label": ...}]}}}')
    db = data["database"]
    if not isinstance(db, Mapping):
        raise EvaluationError(f"{source}: 'database' must be an object mapping video ids to entries")
    return db


def _pick_subset(db: Mapping[str, Any], subset: str | None, source: str
                 ) -> tuple[dict[str, list[str]], str]:
    """The videos of every subset of `db`, and the subset to evaluate (None: the only one)."""
    subsets: dict[str, list[str]] = {}
    for vid, entry in db.items():
        if not isinstance(entry, Mapping) or "subset" not in entry:
            raise EvaluationError(f"{source}: video {vid!r}: missing key 'subset' "
                                  "(training|validation|testing|test)")
        subsets.setdefault(str(entry["subset"]), []).append(vid)
    if subset is None:
        if len(subsets) != 1:
            listing = ", ".join(f"{k!r} ({len(v)} videos)" for k, v in subsets.items()) or "none"
            raise EvaluationError(f"{source}: several subsets present ({listing}); "
                                  "choose one with --subset NAME" if subsets else
                                  f"{source}: 'database' is empty; nothing to evaluate")
        subset = next(iter(subsets))
    if subset not in subsets:
        listing = ", ".join(f"{k!r} ({len(v)} videos)" for k, v in subsets.items()) or "none"
        raise EvaluationError(f"{source}: no video has subset {subset!r}; subsets present: {listing}")
    return subsets, subset


def load_ground_truth(gt: str | Path | Mapping[str, Any] | Any,
                      subset: str | None = None) -> GroundTruth:
    """Read and validate ground truth (path, loaded dict or AnnotationSet) for one subset.

    `subset=None` picks the only subset present; with several it is an error that lists them.
    """
    if isinstance(gt, GroundTruth):
        if subset is not None and subset != gt.subset:
            raise EvaluationError(f"{gt.source}: loaded for subset {gt.subset!r}, not {subset!r}")
        return gt
    if hasattr(gt, "videos") and not isinstance(gt, Mapping):
        data, source = gt, str(getattr(gt, "source", "<ground truth AnnotationSet>"))
    else:
        data, source = _read_json(gt, "ground truth")
    db = _as_database(data, source)
    subsets, subset = _pick_subset(db, subset, source)

    video_ids = subsets[subset]
    class_index: dict[str, int] = {}
    vids: list[int] = []
    starts: list[float] = []
    ends: list[float] = []
    labels: list[int] = []
    for vi, vid in enumerate(video_ids):
        anns = db[vid].get("annotations")
        if not isinstance(anns, list):
            raise EvaluationError(f"{source}: video {vid!r}: missing or invalid key 'annotations' "
                                  "(a list of {\"segment\": [s, e], \"label\": name})")
        for ai, ann in enumerate(anns):
            try:  # fast path for well-formed entries; anything else gets the full check
                s, e = seg = ann["segment"]
                label = ann["label"]
            except (TypeError, KeyError, ValueError):
                seg = label = s = e = None
            if (type(seg) is list and type(s) in _NUMBERS and type(e) in _NUMBERS
                    and type(label) is str and -_MAX <= s <= e <= _MAX):
                s, e = float(s), float(e)
            else:
                where = f"{source}: video {vid!r}, annotation {ai}"
                s, e = _segment(ann, where)
                label = _label(ann, where)
            c = class_index.get(label)
            if c is None:
                c = class_index[label] = len(class_index)
            vids.append(vi)
            starts.append(s)
            ends.append(e)
            labels.append(c)
    if not class_index:
        raise EvaluationError(f"{source}: subset {subset!r} ({len(video_ids)} videos) has no "
                              "annotated instance; nothing to evaluate")
    return GroundTruth(
        source=source, subset=subset, video_ids=list(video_ids), classes=list(class_index),
        video=np.asarray(vids, dtype=np.int64), start=np.asarray(starts, dtype=np.float64),
        end=np.asarray(ends, dtype=np.float64), label=np.asarray(labels, dtype=np.int64),
        subsets=subsets, database=db,
    )


def load_predictions(pred: str | Path | Mapping[str, Any], gt: GroundTruth, *,
                     ignore_unknown_labels: bool = False) -> Predictions:
    """Read and validate ActivityNet results JSON (path or loaded dict) against `gt`.

    A label that is not a class of the evaluated ground truth is an error, or with
    `ignore_unknown_labels` the prediction is dropped (counted in `dropped`).
    """
    data, source = _read_json(pred, "predictions")
    if not isinstance(data, Mapping) or "results" not in data:
        raise EvaluationError(
            f"{source}: missing key 'results'; predictions must be ActivityNet results JSON "
            '{"results": {video_id: [{"segment": [s, e], "label": ..., "score": p}]}}')
    results = data["results"]
    if not isinstance(results, Mapping):
        raise EvaluationError(f"{source}: 'results' must be an object mapping video ids to lists")
    class_index = {c: i for i, c in enumerate(gt.classes)}
    gt_index = {v: i for i, v in enumerate(gt.video_ids)}
    video_ids: list[str] = []
    in_gt: list[int] = []
    vids: list[int] = []
    starts: list[float] = []
    ends: list[float] = []
    labels: list[int] = []
    scores: list[Any] = []
    dropped: dict[str, int] = {}
    all_int = True
    for vid, entries in results.items():
        if not isinstance(entries, list):
            raise EvaluationError(f"{source}: video {vid!r}: expected a list of predictions, "
                                  f"got {type(entries).__name__}")
        vi = len(video_ids)
        video_ids.append(vid)
        in_gt.append(gt_index.get(vid, -1))
        for pi, entry in enumerate(entries):
            try:  # fast path for well-formed entries; anything else gets the full check
                s, e = seg = entry["segment"]
                label = entry["label"]
                score = entry["score"]
            except (TypeError, KeyError, ValueError):
                seg = label = score = s = e = None
            if (type(seg) is list and type(s) in _NUMBERS and type(e) in _NUMBERS
                    and type(label) is str and -_MAX <= s <= e <= _MAX
                    and type(score) in _NUMBERS and -_MAX <= score <= _MAX):
                s, e = float(s), float(e)
            else:
                s, e, label, score = _prediction(entry, f"{source}: video {vid!r}, prediction {pi}")
            c = class_index.get(label)
            if c is None:
                if ignore_unknown_labels:
                    dropped[label] = dropped.get(label, 0) + 1
                    continue
                where = f"{source}: video {vid!r}, prediction {pi}"
                hint = (f"it is a class of another subset, not of {gt.subset!r}"
                        if label in gt.labels_of_other_subsets() else "check its spelling")
                raise EvaluationError(
                    f"{where}: label {label!r} is not a class of the ground truth subset "
                    f"{gt.subset!r} ({gt.source}); {hint}, or pass --ignore-unknown-labels "
                    "to drop such predictions")
            if type(score) is not int or not -_INT64 <= score < _INT64:
                all_int = False
            vids.append(vi)
            starts.append(s)
            ends.append(e)
            labels.append(c)
            scores.append(score)
    # The official code builds a pandas column from the raw scores: int64 when every score is
    # an integer, else float64. The dtype picks the argsort kernel, hence the order of ties.
    if scores and all_int:
        score_arr = np.asarray(scores, dtype=np.int64)
    else:
        score_arr = np.asarray(scores, dtype=np.float64)
    return Predictions(
        source=source, video_ids=video_ids,
        video=np.asarray(vids, dtype=np.int64), in_gt=np.asarray(in_gt, dtype=np.int64),
        start=np.asarray(starts, dtype=np.float64), end=np.asarray(ends, dtype=np.float64),
        label=np.asarray(labels, dtype=np.int64), score=score_arr, dropped=dropped,
    )


# ----------------------------------------------------------------------------- maths


def paired_segment_iou(target: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """tIoU of segments `target` [N, 2] with `candidates` [N, 2], pairwise by row -> [N].

    The official arithmetic, term for term: intersection clipped at 0, union =
    len(candidate) + len(target) - intersection; 0/0 (two zero-length segments) is NaN.
    """
    return _tiou(target[:, 0], target[:, 1], candidates[:, 0], candidates[:, 1])


def _tiou(ts: np.ndarray, te: np.ndarray, cs: np.ndarray, ce: np.ndarray) -> np.ndarray:
    """`paired_segment_iou` on separate start/end arrays `[N]` (target t, candidate c)."""
    tt1 = np.maximum(ts, cs)
    tt2 = np.minimum(te, ce)
    inter = (tt2 - tt1).clip(0)
    union = (ce - cs) + (te - ts) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter.astype(float) / union


def interpolated_average_precision(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """All-point interpolated AP of curves `precision`, `recall` [T, N] -> [T].

    Sentinels (recall 0, precision 0) and (recall 1, precision 0); precision made
    monotone from the right; sum of recall steps times the envelope where recall changes.
    """
    t = precision.shape[0]
    zeros = np.zeros((t, 1))
    mprec = np.concatenate([zeros, precision, zeros], axis=1)
    mrec = np.concatenate([zeros, recall, np.ones((t, 1))], axis=1)
    envelope = np.maximum.accumulate(mprec[:, ::-1], axis=1)[:, ::-1]
    changed = mrec[:, 1:] != mrec[:, :-1]
    terms = (mrec[:, 1:] - mrec[:, :-1]) * envelope[:, 1:]
    # One 1-D sum per row over exactly the official terms: the same pairwise summation,
    # hence the same bits (a masked 2-D sum can differ in the last place).
    return np.array([np.sum(terms[i][changed[i]]) for i in range(t)], dtype=np.float64)


_PAIRS_PER_CHUNK = 1 << 21  # bounds the memory of the (prediction, candidate) tIoU table


def _usable_candidates(pred_start: np.ndarray, pred_end: np.ndarray, first: np.ndarray,
                       count: np.ndarray, gorder: np.ndarray, gt: GroundTruth,
                       t_min: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per prediction, the candidates a threshold >= `t_min` can reach, in official order.

    Inputs are `[R]` (R predictions with `count >= 1` candidates at `gorder[first:first+count]`).
    Official order is `argsort(tiou)[::-1]` of the *full* candidate row (NaN first, then
    descending): candidates below `t_min` form its tail and are never reached, so only the
    prefix is kept, and rows with fewer than two kept candidates need no sort at all.
    Returns (kept per row `[R]`, ground-truth ids `[K]`, tIoU `[K]`), rows concatenated.
    """
    rows_total = len(count)
    kept = np.zeros(rows_total, dtype=np.int64)
    out_ids: list[np.ndarray] = []
    out_tiou: list[np.ndarray] = []
    ends = np.cumsum(count)
    r0 = 0
    while r0 < rows_total:
        base = int(ends[r0 - 1]) if r0 else 0
        r1 = max(r0 + 1, int(np.searchsorted(ends, base + _PAIRS_PER_CHUNK, side="right")))
        n = count[r0:r1]
        offs = np.zeros(len(n) + 1, dtype=np.int64)
        np.cumsum(n, out=offs[1:])
        row = np.repeat(np.arange(len(n)), n)
        cand = gorder[np.repeat(first[r0:r1], n) + (np.arange(int(offs[-1])) - offs[row])]
        # the prediction is the target, its ground truth the candidates (official roles)
        tiou = _tiou(pred_start[r0:r1][row], pred_end[r0:r1][row], gt.start[cand], gt.end[cand])
        keep = ~(tiou < t_min)
        k = np.bincount(row[keep], minlength=len(n))
        kept[r0:r1] = k
        koffs = np.zeros(len(n) + 1, dtype=np.int64)
        np.cumsum(k, out=koffs[1:])
        ids = np.empty(int(koffs[-1]), dtype=np.int64)
        vals = np.empty(int(koffs[-1]), dtype=np.float64)
        single = np.flatnonzero(k == 1)
        if len(single):
            pos = np.flatnonzero(keep & (k[row] == 1))  # one pair per such row, row order
            ids[koffs[single]] = cand[pos]
            vals[koffs[single]] = tiou[pos]
        multi = np.flatnonzero(k >= 2)
        for length in np.unique(n[multi]):
            rows = multi[n[multi] == length]
            idx = offs[rows][:, None] + np.arange(length)
            block = tiou[idx]
            # Equal-length rows sort with the kernel of a 1-D argsort of each row, so ties
            # fall exactly as in the official per-prediction call.
            order = block.argsort(axis=1)[:, ::-1]
            width = int(k[rows].max())
            cols = np.arange(width)
            inside = cols[None, :] < k[rows][:, None]
            dest = (koffs[rows][:, None] + cols[None, :])[inside]
            ids[dest] = cand[np.take_along_axis(idx, order[:, :width], axis=1)][inside]
            vals[dest] = np.take_along_axis(block, order[:, :width], axis=1)[inside]
        out_ids.append(ids)
        out_tiou.append(vals)
        r0 = r1
    return kept, np.concatenate(out_ids), np.concatenate(out_tiou)


def _match(gt: GroundTruth, pred: Predictions, thresholds: np.ndarray,
           ranked: np.ndarray) -> np.ndarray:
    """True-positive flags `[T, P]` for the predictions in `ranked` order.

    `ranked` lists prediction indices class by class, each class in official rank order.
    Greedy matching is sequential only within a (class, video) group, so step k handles
    the k-th ranked prediction of every group at once.
    """
    num_t, num_p = len(thresholds), len(ranked)
    tp = np.zeros((num_t, num_p), dtype=bool)
    if num_p == 0:
        return tp
    num_v = max(len(gt.video_ids), 1)
    # Ground truth sorted by (class, video), file order within a group: the candidate lists.
    gkey = gt.label * num_v + gt.video
    gorder = np.argsort(gkey, kind="stable")
    gkey_sorted = gkey[gorder]
    p_in = pred.in_gt[pred.video[ranked]]
    pkey = pred.label[ranked] * num_v + p_in
    first = np.searchsorted(gkey_sorted, pkey, side="left")
    count = np.searchsorted(gkey_sorted, pkey, side="right") - first
    count[p_in < 0] = 0  # absent video: no candidate, a false positive everywhere
    live = np.flatnonzero(count > 0)  # positions in `ranked`
    if len(live) == 0:
        return tp
    kept, cand_ids, cand_tiou = _usable_candidates(
        pred.start[ranked[live]], pred.end[ranked[live]], first[live], count[live], gorder, gt,
        float(thresholds.min()))
    reach = kept > 0  # a prediction with no reachable candidate is a false positive
    live, kept = live[reach], kept[reach]
    if len(live) == 0:
        return tp
    offsets = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum(kept, out=offsets[1:])
    offsets = offsets[:-1]
    # Position of each live prediction within its (class, video) group, in rank order.
    lkey = pkey[live]
    gsort = np.argsort(lkey, kind="stable")
    ksorted = lkey[gsort]
    new_run = np.r_[True, ksorted[1:] != ksorted[:-1]]
    run_start = np.flatnonzero(new_run)
    step = np.empty(len(live), dtype=np.int64)
    step[gsort] = np.arange(len(live)) - run_start[np.cumsum(new_run) - 1]
    by_step = np.argsort(step, kind="stable")
    bounds = np.r_[0, np.flatnonzero(np.diff(step[by_step])) + 1, len(live)]
    locked = np.zeros((num_t, len(gt.start)), dtype=bool)
    thr = thresholds[:, None, None]
    for b0, b1 in itertools.pairwise(bounds.tolist()):
        act = by_step[b0:b1]  # at most one prediction per group: independent
        na = kept[act]
        cols = np.arange(int(na.max()))
        inside = cols[None, :] < na[:, None]  # [A, L]
        pos = np.where(inside, offsets[act][:, None] + cols[None, :], 0)
        g = cand_ids[pos]  # [A, L]
        # usable at threshold t: not (tiou < t) -- a prefix of the official order -- and free
        ok = ~(cand_tiou[pos][None] < thr) & inside[None] & ~locked[:, g]  # [T, A, L]
        hit = ok.any(axis=2)  # [T, A]
        j = ok.argmax(axis=2)  # first usable free candidate
        tt, aa = np.nonzero(hit)
        locked[tt, g[aa, j[tt, aa]]] = True
        tp[:, live[act]] = hit
    return tp


def _rank(pred: Predictions, num_c: int) -> tuple[np.ndarray, np.ndarray]:
    """Prediction indices class by class, each class best first as the official code ranks
    them (file order, then its unstable descending argsort); and the per-class counts."""
    by_label = np.argsort(pred.label, kind="stable")
    counts = np.bincount(pred.label, minlength=num_c)
    bounds = np.r_[0, np.cumsum(counts)]
    pieces = []
    for c in range(num_c):
        idx = by_label[bounds[c]:bounds[c + 1]]
        pieces.append(idx[pred.score[idx].argsort()[::-1]])
    ranked = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    return ranked, counts


def compute_average_precision(gt: GroundTruth, pred: Predictions,
                              tiou_thresholds: Sequence[float]) -> np.ndarray:
    """AP per threshold and class, `[T, C]` (columns in `gt.classes` order)."""
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)
    num_c = len(gt.classes)
    ap = np.zeros((len(thresholds), num_c))
    # Per class, predictions in file order (stable), then the official ranking.
    ranked, counts = _rank(pred, num_c)
    bounds = np.r_[0, np.cumsum(counts)]
    tp = _match(gt, pred, thresholds, ranked)
    npos = np.bincount(gt.label, minlength=num_c)
    for c in range(num_c):
        if counts[c] == 0:
            continue  # official: a class without predictions has AP 0
        block = tp[:, bounds[c]:bounds[c + 1]]
        tp_cum = np.cumsum(block, axis=1).astype(np.float64)
        fp_cum = np.cumsum(~block, axis=1).astype(np.float64)
        recall = tp_cum / float(npos[c])
        precision = tp_cum / (tp_cum + fp_cum)
        ap[:, c] = interpolated_average_precision(precision, recall)
    return ap


# ----------------------------------------------------------------------------- API


def _absent_video_warning(gt: GroundTruth, pred: Predictions) -> str | None:
    # videos with at least one scored prediction that are not in the evaluated subset
    missing = pred.in_gt[pred.video] < 0
    n_pred = int(np.count_nonzero(missing))
    if n_pred == 0:
        return None
    absent = [pred.video_ids[i] for i in np.unique(pred.video[missing]).tolist()]
    num_predicted = len(np.unique(pred.video))
    examples = ", ".join(repr(v) for v in absent[:3])
    msg = (f"{len(absent)} of {num_predicted} predicted videos are not in subset "
           f"{gt.subset!r} of {gt.source} (e.g. {examples}); their {n_pred} predictions "
           "count as false positives, as in the official evaluator.")
    gt_ids = set(gt.video_ids)
    add = sum(1 for v in absent if "v_" + v in gt_ids)
    strip = sum(1 for v in absent if v.startswith("v_") and v[2:] in gt_ids)
    if add * 2 >= len(absent) and add:
        msg += (f" Likely cause: the ground truth names videos with a 'v_' prefix and the "
                f"predictions without it ({add} would match with 'v_' added); rename the keys "
                "on one side.")
    elif strip * 2 >= len(absent) and strip:
        msg += (f" Likely cause: the predictions name videos with a 'v_' prefix and the ground "
                f"truth without it ({strip} would match without it); rename the keys on one side.")
    else:
        elsewhere: dict[str, int] = {}
        absent_set = set(absent)
        for name, ids in gt.subsets.items():
            if name != gt.subset:
                hits = len(absent_set.intersection(ids))
                if hits:
                    elsewhere[name] = hits
        if elsewhere:
            where = ", ".join(f"{k!r} ({v})" for k, v in elsewhere.items())
            msg += f" Some are in other subsets of the ground truth: {where}; see --subset."
    return msg


def evaluate(gt: str | Path | Mapping[str, Any] | Any, pred: str | Path | Mapping[str, Any],
             tiou_thresholds: Sequence[float] = ANET_THRESHOLDS, subset: str | None = None,
             *, ignore_unknown_labels: bool = False) -> dict[str, Any]:
    """Score `pred` against `gt` with the official ActivityNet detection protocol.

    gt: ActivityNet JSON ground truth (path or loaded dict; an AnnotationSet also works).
    pred: ActivityNet results JSON (path or loaded dict).
    tiou_thresholds: e.g. `THRESHOLD_PRESETS["thumos14"]`; each in [0, 1].
    subset: ground-truth subset to evaluate; None = the only one present.

    Returns {"tiou_thresholds", "mAP" (fractions, one per threshold), "average_mAP",
    "per_class_AP" ({label: [AP per threshold]}), "num_videos" (of the subset),
    "num_ground_truth" (instances), "num_predictions" (scored)}. Problems that keep the
    official numbers but are likely mistakes (videos absent from the ground truth, dropped
    labels) are reported as `EvaluationWarning`. `tallformer.evaluate` is this function.

    Example::

        >>> import tallformer
        >>> gt = {"database": {"v1": {"subset": "test", "annotations": [
        ...     {"segment": [1.0, 5.0], "label": "Jump"}, {"segment": [8.0, 9.0], "label": "Run"}]}}}
        >>> pred = {"results": {"v1": [{"segment": [1.2, 5.1], "label": "Jump", "score": 0.9},
        ...                            {"segment": [2.0, 3.0], "label": "Run", "score": 0.4}]}}
        >>> metrics = tallformer.evaluate(gt, pred, [0.5, 0.7], subset="test")
        >>> metrics["mAP"], metrics["average_mAP"], metrics["per_class_AP"]["Jump"]
        ([0.5, 0.5], 0.5, [1.0, 1.0])
    """
    thresholds = [float(t) for t in tiou_thresholds]
    if not thresholds:
        raise EvaluationError("no tIoU threshold given")
    for t in thresholds:
        if not 0.0 <= t <= 1.0:
            raise EvaluationError(f"tIoU threshold {t} is outside [0, 1]")
    g = load_ground_truth(gt, subset)
    p = load_predictions(pred, g, ignore_unknown_labels=ignore_unknown_labels)
    if p.dropped:
        top = sorted(p.dropped.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        listing = ", ".join(f"{k!r} ({v})" for k, v in top)
        warnings.warn(f"{p.source}: dropped {sum(p.dropped.values())} predictions whose label is "
                      f"not a class of subset {g.subset!r}: {listing}"
                      f"{' ...' if len(p.dropped) > 5 else ''}", EvaluationWarning, stacklevel=2)
    if len(p.label) == 0:
        warnings.warn(f"{p.source}: no predictions to score (every mAP is 0); check that the "
                      "results file holds detections for the evaluated subset's videos",
                      EvaluationWarning, stacklevel=2)
    absent = _absent_video_warning(g, p)
    if absent:
        warnings.warn(absent, EvaluationWarning, stacklevel=2)
    ap = compute_average_precision(g, p, thresholds)
    m_ap = ap.mean(axis=1)
    return {
        "tiou_thresholds": thresholds,
        "mAP": [float(x) for x in m_ap],
        "average_mAP": float(m_ap.mean()),
        "per_class_AP": {c: [float(x) for x in ap[:, i]] for i, c in enumerate(g.classes)},
        "num_videos": len(g.video_ids),
        "num_ground_truth": len(g.label),
        "num_predictions": len(p.label),
    }


def format_table(result: Mapping[str, Any]) -> str:
    """mAP in % per threshold and their average, as a small text table."""
    lines = [f"{'tIoU':>6}  {'mAP (%)':>8}"]
    for t, m in zip(result["tiou_thresholds"], result["mAP"], strict=True):
        lines.append(f"{t:>6.2f}  {100 * m:>8.2f}")
    lines.append(f"{'avg':>6}  {100 * result['average_mAP']:>8.2f}")
    return "\n".join(lines)


def precision_recall_curves(gt: str | Path | Mapping[str, Any] | Any, pred: str | Path | Mapping[str, Any],
                            tiou_thresholds: Sequence[float] = ANET_THRESHOLDS, subset: str | None = None,
                            *, ignore_unknown_labels: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Per class, the precision-recall curves the AP of `evaluate` integrates.

    Same inputs and ranking as `evaluate` (`compute_average_precision`): per class the
    predictions in official rank order, cumulated true and false positives at each tIoU
    threshold. Returns ``{label: {"precision": [T, N], "recall": [T, N], "score": [N],
    "ap": [T]}}`` for every ground-truth class (N = that class's predictions, best first;
    N = 0 gives empty curves and AP 0); ``ap`` equals ``evaluate(...)["per_class_AP"]``.
    """
    thresholds = np.asarray([float(t) for t in tiou_thresholds], dtype=np.float64)
    g = load_ground_truth(gt, subset)
    p = load_predictions(pred, g, ignore_unknown_labels=ignore_unknown_labels)
    num_c = len(g.classes)
    ranked, counts = _rank(p, num_c)
    bounds = np.r_[0, np.cumsum(counts)]
    tp = _match(g, p, thresholds, ranked)
    npos = np.bincount(g.label, minlength=num_c)
    curves: dict[str, dict[str, np.ndarray]] = {}
    for c, name in enumerate(g.classes):
        block = tp[:, bounds[c]:bounds[c + 1]]
        tp_cum = np.cumsum(block, axis=1).astype(np.float64)
        fp_cum = np.cumsum(~block, axis=1).astype(np.float64)
        recall = tp_cum / float(npos[c])
        with np.errstate(invalid="ignore"):
            precision = tp_cum / (tp_cum + fp_cum)
        ap = (interpolated_average_precision(precision, recall) if counts[c]
              else np.zeros(len(thresholds)))
        curves[name] = {"precision": precision, "recall": recall,
                        "score": p.score[ranked[bounds[c]:bounds[c + 1]]].astype(np.float64), "ap": ap}
    return curves
