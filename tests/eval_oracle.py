"""A plain, loop-based re-statement of the official ActivityNet detection evaluator.

`Evaluation/eval_detection.py` of the ActivityNet challenge repository, restated step by
step (per class: predictions in file order ranked by `argsort()[::-1]`; per prediction the
video's ground truth in file order, candidates by `tiou.argsort()[::-1]`; interpolated AP).
Slow on purpose: it is the oracle the tests compare `tallformer.evaluation` against, and
the baseline `benchmarks/eval_speed.py` times.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _oracle_iou(target: tuple[float, float], cands: np.ndarray) -> np.ndarray:
    tt1 = np.maximum(target[0], cands[:, 0])
    tt2 = np.minimum(target[1], cands[:, 1])
    inter = (tt2 - tt1).clip(0)
    union = (cands[:, 1] - cands[:, 0]) + (target[1] - target[0]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter.astype(float) / union


def _oracle_interp(prec: np.ndarray, rec: np.ndarray) -> float:
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 1)[::-1]:
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _oracle_class_ap(gts: list[tuple], preds: list[tuple], thresholds: list[float],
                     score_dtype: Any) -> np.ndarray:
    """gts: (video, start, end) in file order; preds: (video, start, end, score) in file order."""
    num_t = len(thresholds)
    ap = np.zeros(num_t)
    if not preds:
        return ap
    npos = float(len(gts))
    lock = -np.ones((num_t, len(gts)))
    scores = np.array([p[3] for p in preds], dtype=score_dtype)
    order = scores.argsort()[::-1]
    tp = np.zeros((num_t, len(preds)))
    fp = np.zeros((num_t, len(preds)))
    gt_by_video: dict[str, list[int]] = {}
    for j, g in enumerate(gts):
        gt_by_video.setdefault(g[0], []).append(j)
    for i, pi in enumerate(order):
        p = preds[pi]
        if p[0] not in gt_by_video:
            fp[:, i] = 1
            continue
        ids = gt_by_video[p[0]]
        cands = np.array([[gts[j][1], gts[j][2]] for j in ids])
        tiou = _oracle_iou((p[1], p[2]), cands)
        cand_order = tiou.argsort()[::-1]
        for t, thr in enumerate(thresholds):
            for jdx in cand_order:
                if tiou[jdx] < thr:
                    fp[t, i] = 1
                    break
                if lock[t, ids[jdx]] >= 0:
                    continue
                tp[t, i] = 1
                lock[t, ids[jdx]] = i
                break
            if fp[t, i] == 0 and tp[t, i] == 0:
                fp[t, i] = 1
    tp_cum = np.cumsum(tp, axis=1).astype(float)
    fp_cum = np.cumsum(fp, axis=1).astype(float)
    rec = tp_cum / npos
    prec = tp_cum / (tp_cum + fp_cum)
    for t in range(num_t):
        ap[t] = _oracle_interp(prec[t], rec[t])
    return ap


def oracle_evaluate(gt: dict, pred: dict, thresholds: list[float], subset: str) -> dict:
    classes: dict[str, int] = {}
    gts: list[tuple] = []
    for vid, v in gt["database"].items():
        if v["subset"] != subset:
            continue
        for ann in v["annotations"]:
            if ann["label"] not in classes:
                classes[ann["label"]] = len(classes)
            gts.append((vid, float(ann["segment"][0]), float(ann["segment"][1]),
                        classes[ann["label"]]))
    preds: list[tuple] = []
    for vid, lst in pred["results"].items():
        for r in lst:
            preds.append((vid, float(r["segment"][0]), float(r["segment"][1]),
                          classes[r["label"]], r["score"]))
    # pandas column dtype: int64 if every score is an int, else float64
    all_int = bool(preds) and all(isinstance(p[4], int) for p in preds)
    dtype = np.int64 if all_int else np.float64
    ap = np.zeros((len(thresholds), len(classes)))
    for c in classes.values():
        cg = [g[:3] for g in gts if g[3] == c]
        cp = [(p[0], p[1], p[2], p[4]) for p in preds if p[3] == c]
        ap[:, c] = _oracle_class_ap(cg, cp, thresholds, dtype)
    m_ap = ap.mean(axis=1)
    return {"mAP": m_ap, "average_mAP": m_ap.mean(),
            "per_class_AP": {k: ap[:, i] for k, i in classes.items()}}
