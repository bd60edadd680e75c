"""Tests of `tallformer.evaluation` against a loop-based re-statement of the official evaluator.

`oracle_evaluate` below restates ActivityNet's `Evaluation/eval_detection.py`
(ANETdetection + compute_average_precision_detection + segment_iou +
interpolated_prec_rec) as plain loops, without pandas: one prediction at a time, one
threshold at a time, one candidate at a time. The fast evaluator must agree with it to
1e-9 on any input, ties, duplicates, zero-length segments and absent videos included.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval_oracle import oracle_evaluate
from helpers import REFERENCE_DATA
from tallformer.evaluation import (
    ANET_THRESHOLDS,
    THUMOS14_THRESHOLDS,
    EvaluationError,
    EvaluationWarning,
    evaluate,
    interpolated_average_precision,
    paired_segment_iou,
)

DATA = REFERENCE_DATA
ANET = DATA / "activitynet"
THUMOS = DATA / "thumos14"


def assert_same(result: dict, expected: dict, tol: float = 1e-9) -> None:
    np.testing.assert_allclose(result["mAP"], expected["mAP"], rtol=0, atol=tol)
    assert abs(result["average_mAP"] - expected["average_mAP"]) <= tol
    assert list(result["per_class_AP"]) == list(expected["per_class_AP"])
    for k, v in expected["per_class_AP"].items():
        np.testing.assert_allclose(result["per_class_AP"][k], v, rtol=0, atol=tol, err_msg=k)


# ----------------------------------------------------------------------------- helpers


def make_gt(videos: dict[str, list], subset: str = "validation") -> dict:
    """videos: {id: [(start, end, label), ...]} -> ActivityNet JSON ground truth."""
    return {"database": {v: {"subset": subset, "annotations": [
        {"segment": [s, e], "label": lab} for s, e, lab in anns]} for v, anns in videos.items()}}


def make_pred(videos: dict[str, list]) -> dict:
    """videos: {id: [(start, end, label, score), ...]} -> ActivityNet results JSON."""
    return {"results": {v: [{"segment": [s, e], "label": lab, "score": sc}
                            for s, e, lab, sc in dets] for v, dets in videos.items()}}


@contextlib.contextmanager
def _no_fail_warnings() -> Iterator[None]:
    """Silence EvaluationWarning (absent videos are part of the random input)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EvaluationWarning)
        yield


# ----------------------------------------------------------------------------- hand-computed


def test_single_class_hand_computed_ap() -> None:
    # 2 gts; ranked: TP (iou 1), FP, TP (iou 0.5 at thr 0.5) -> P = 1, 1/2, 2/3; R = .5,.5,1
    gt = make_gt({"a": [(0, 10, "x"), (20, 30, "x")]})
    pred = make_pred({"a": [(0, 10, "x", 0.9), (40, 50, "x", 0.8), (20, 40, "x", 0.7)]})
    r = evaluate(gt, pred, [0.5, 0.6])
    # thr 0.5: AP = 0.5 * 1 + 0.5 * 2/3; thr 0.6: third is FP -> AP = 0.5
    assert r["mAP"] == pytest.approx([0.5 + 1 / 3, 0.5], abs=1e-12)
    assert r["average_mAP"] == pytest.approx((0.5 + 1 / 3 + 0.5) / 2, abs=1e-12)
    assert r["num_videos"] == 1
    assert r["num_ground_truth"] == 2
    assert r["num_predictions"] == 3
    assert set(r) == {"tiou_thresholds", "mAP", "average_mAP", "per_class_AP", "num_videos",
                      "num_ground_truth", "num_predictions"}


def test_class_without_predictions_scores_zero_and_counts_in_the_mean() -> None:
    gt = make_gt({"a": [(0, 10, "x"), (0, 10, "y")]})
    pred = make_pred({"a": [(0, 10, "x", 0.5)]})
    r = evaluate(gt, pred, [0.5])
    assert r["per_class_AP"] == {"x": [1.0], "y": [0.0]}
    assert r["mAP"] == [0.5]


def test_prediction_on_absent_video_is_false_positive_and_warns() -> None:
    gt = make_gt({"a": [(0, 10, "x")]})
    pred = make_pred({"zz": [(0, 10, "x", 0.9)], "a": [(0, 10, "x", 0.8)]})
    with pytest.warns(EvaluationWarning, match=r"1 of 2 predicted videos.*'zz'"):
        r = evaluate(gt, pred, [0.5])
    assert r["mAP"] == pytest.approx([0.5])  # P@R=1 is 1/2


def test_prediction_on_other_subset_video_is_false_positive() -> None:
    gt = make_gt({"a": [(0, 10, "x")]})
    gt["database"]["t"] = {"subset": "training", "annotations": [{"segment": [0, 10], "label": "x"}]}
    pred = make_pred({"t": [(0, 10, "x", 0.9)], "a": [(0, 10, "x", 0.8)]})
    with pytest.warns(EvaluationWarning, match="other subsets.*'training' \\(1\\)"):
        r = evaluate(gt, pred, [0.5], subset="validation")
    assert r["mAP"] == pytest.approx([0.5])
    assert r["num_videos"] == 1


def test_duplicate_ground_truth_are_separate_instances() -> None:
    gt = make_gt({"a": [(0, 10, "x"), (0, 10, "x")]})
    one = evaluate(gt, make_pred({"a": [(0, 10, "x", 0.9)]}), [0.5])
    two = evaluate(gt, make_pred({"a": [(0, 10, "x", 0.9), (0, 10, "x", 0.8)]}), [0.5])
    assert one["mAP"] == [0.5]  # recall 1/2 at precision 1
    assert two["mAP"] == [1.0]


def test_zero_length_gt_matched_by_zero_length_prediction() -> None:
    # 0/0 = NaN and NaN < thr is False: a match, even at a different time point.
    gt = make_gt({"a": [(5, 5, "x")]})
    assert evaluate(gt, make_pred({"a": [(5, 5, "x", 0.9)]}), [0.5, 0.95])["mAP"] == [1.0, 1.0]
    assert evaluate(gt, make_pred({"a": [(7, 7, "x", 0.9)]}), [0.5])["mAP"] == [1.0]
    # a zero-length prediction against a positive-length gt has tIoU 0
    gt2 = make_gt({"a": [(0, 10, "x")]})
    assert evaluate(gt2, make_pred({"a": [(5, 5, "x", 0.9)]}), [0.5])["mAP"] == [0.0]


def test_threshold_is_inclusive_and_locked_gt_is_skipped() -> None:
    gt = make_gt({"a": [(0, 10, "x"), (8, 18, "x")]})
    # p1 iou with gt0 = 1 -> TP; p2 [0, 10] again: gt0 locked, gt1 iou = 2/18 < 0.5 -> FP
    # p3 [8, 13]: iou with gt1 = 5/10 = 0.5 exactly -> TP at 0.5
    pred = make_pred({"a": [(0, 10, "x", 0.9), (0, 10, "x", 0.8), (8, 13, "x", 0.7)]})
    r = evaluate(gt, pred, [0.5])
    assert r["mAP"] == pytest.approx([0.5 * 1 + 0.5 * 2 / 3])


def test_first_candidate_below_threshold_stops_the_search() -> None:
    # gt0 is locked by p1; for p2 the best free... official: candidates by tIoU desc:
    # gt0 (locked, skipped), then gt1 below threshold -> FP even though nothing else fits.
    gt = make_gt({"a": [(0, 10, "x"), (9, 30, "x")]})
    pred = make_pred({"a": [(0, 10, "x", 0.9), (0, 11, "x", 0.8)]})
    r = evaluate(gt, pred, [0.5])
    assert r["mAP"] == [0.5]


def test_tied_scores_follow_numpy_argsort() -> None:
    # 20 tied predictions (argsort of >16 equal floats is not stable): the result must
    # equal the oracle, which ranks with the same call the official code makes.
    gt = make_gt({"a": [(i, i + 1, "x") for i in range(0, 40, 4)]})
    dets = [(i, i + 1 + (i % 3), "x", 0.5) for i in range(0, 40, 2)]
    pred = make_pred({"a": dets})
    r = evaluate(gt, pred, ANET_THRESHOLDS)
    assert_same(r, oracle_evaluate(gt, pred, list(ANET_THRESHOLDS), "validation"), tol=0)


def test_integer_scores_rank_like_official_int_column() -> None:
    gt = make_gt({"a": [(0, 10, "x"), (20, 30, "x")]})
    pred = make_pred({"a": [(20, 30, "x", 1), (0, 10, "x", 1), (50, 60, "x", 2)]})
    r = evaluate(gt, pred, [0.5])
    assert_same(r, oracle_evaluate(gt, pred, [0.5], "validation"), tol=0)


def test_numeric_string_segments_are_accepted() -> None:
    gt = make_gt({"a": [("0.0", "10", "x")]})
    r = evaluate(gt, make_pred({"a": [("0", "10.0", "x", 0.3)]}), [0.5])
    assert r["mAP"] == [1.0]


def test_interpolated_ap_and_segment_iou_units() -> None:
    prec = np.array([[1.0, 0.5, 2 / 3]])
    rec = np.array([[0.5, 0.5, 1.0]])
    assert interpolated_average_precision(prec, rec)[0] == pytest.approx(0.5 + 0.5 * 2 / 3)
    iou = paired_segment_iou(np.array([[0.0, 10.0], [0.0, 0.0], [0.0, 2.0]]),
                      np.array([[5.0, 15.0], [3.0, 3.0], [4.0, 6.0]]))
    assert iou[0] == pytest.approx(5 / 15)
    assert math.isnan(iou[1])
    assert iou[2] == 0.0


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("pred_entry", "message"),
    [
        ({"segment": [5, 1], "label": "x", "score": 1}, "start 5.0 > end 1.0"),
        ({"segment": ["a", 1], "label": "x", "score": 1}, "segment start: 'a' is not a number"),
        ({"segment": [0, 1], "label": "x", "score": "high"}, "score 'high' is not a number"),
        ({"segment": [0, 1], "label": "x"}, "missing key 'score'"),
        ({"segment": [0, 1, 2], "label": "x", "score": 1}, "must be \\[start_s, end_s\\]"),
        ({"label": "x", "score": 1}, "missing key 'segment'"),
        ({"segment": [0, 1], "label": "nope", "score": 1}, "label 'nope' is not a class"),
        ({"segment": [0, float("nan")], "label": "x", "score": 1}, "not a finite number"),
    ],
)
def test_bad_prediction_entries_name_file_video_and_entry(pred_entry: dict, message: str,
                                                           tmp_path: Path) -> None:
    gt = make_gt({"a": [(0, 10, "x")]})
    path = tmp_path / "pred.json"
    path.write_text(json.dumps({"results": {"a": [{"segment": [0, 1], "label": "x", "score": 1},
                                                  pred_entry]}}))
    with pytest.raises(EvaluationError, match=message) as info:
        evaluate(gt, path, [0.5])
    assert str(path) in str(info.value)
    assert "video 'a', prediction 1" in str(info.value)


def test_bad_ground_truth_and_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(EvaluationError, match=r"not a valid JSON file"):
        evaluate(bad, make_pred({}), [0.5])
    with pytest.raises(EvaluationError, match=r"does not exist"):
        evaluate(tmp_path / "missing.json", make_pred({}), [0.5])
    with pytest.raises(EvaluationError, match=r"missing key 'database'"):
        evaluate({"results": {}}, make_pred({}), [0.5])
    with pytest.raises(EvaluationError, match=r"missing key 'results'"):
        evaluate(make_gt({"a": [(0, 1, "x")]}), {"database": {}}, [0.5])
    with pytest.raises(EvaluationError, match=r"video 'a': missing key 'subset'"):
        evaluate({"database": {"a": {"annotations": []}}}, make_pred({}), [0.5])
    with pytest.raises(EvaluationError, match=r"video 'a', annotation 0: segment start 3.0 > end 1.0"):
        evaluate(make_gt({"a": [(3, 1, "x")]}), make_pred({}), [0.5])
    with pytest.raises(EvaluationError, match=r"no annotated instance"):
        evaluate(make_gt({"a": []}), make_pred({}), [0.5])
    with pytest.raises(EvaluationError, match="outside \\[0, 1\\]"):
        evaluate(make_gt({"a": [(0, 1, "x")]}), make_pred({}), [1.5])


def test_subset_choice() -> None:
    gt = make_gt({"a": [(0, 10, "x")]})
    gt["database"]["b"] = {"subset": "training", "annotations": [{"segment": [0, 5], "label": "y"}]}
    with pytest.raises(EvaluationError, match=r"several subsets.*'validation' \(1 videos\), "
                                              r"'training' \(1 videos\).*--subset"):
        evaluate(gt, make_pred({}), [0.5])
    with pytest.raises(EvaluationError, match=r"no video has subset 'test'"):
        evaluate(gt, make_pred({}), [0.5], subset="test")
    # a label of another subset only: error with a hint, or dropped with a warning
    pred = make_pred({"a": [(0, 10, "x", 0.9), (0, 5, "y", 0.8)]})
    with pytest.raises(EvaluationError, match=r"class of another subset"):
        evaluate(gt, pred, [0.5], subset="validation")
    with pytest.warns(EvaluationWarning, match="dropped 1 predictions.*'y' \\(1\\)"):
        r = evaluate(gt, pred, [0.5], subset="validation", ignore_unknown_labels=True)
    assert r["mAP"] == [1.0]
    assert r["num_predictions"] == 1


# ----------------------------------------------------------------------------- hypothesis

LABELS = ["a", "b", "c"]
VIDEOS = ["v0", "v1", "v2", "v3"]
coord = st.integers(0, 8).map(lambda x: x / 2)  # a coarse grid: ties, duplicates, zero length
score = st.sampled_from([0.1, 0.5, 0.5, 0.9, 1.0])


@st.composite
def seg(draw: st.DrawFn) -> tuple[float, float]:
    a, b = draw(coord), draw(coord)
    return (min(a, b), max(a, b))


@st.composite
def problem(draw: st.DrawFn) -> tuple[dict, dict]:
    db: dict[str, Any] = {}
    for v in VIDEOS:
        subset = draw(st.sampled_from(["validation", "validation", "validation", "training"]))
        anns = draw(st.lists(st.tuples(seg(), st.sampled_from(LABELS)), max_size=6))
        db[v] = {"subset": subset,
                 "annotations": [{"segment": list(s), "label": lab} for s, lab in anns]}
    db["v0"]["subset"] = "validation"
    db["v0"]["annotations"].append({"segment": [0.0, 1.0], "label": "a"})
    classes = []
    for v in db.values():
        if v["subset"] == "validation":
            for a in v["annotations"]:
                if a["label"] not in classes:
                    classes.append(a["label"])
    results: dict[str, list] = {}
    for v in draw(st.lists(st.sampled_from([*VIDEOS, "absent"]), unique=True, max_size=5)):
        dets = draw(st.lists(st.tuples(seg(), st.sampled_from(classes), score), max_size=12))
        results[v] = [{"segment": list(s), "label": lab, "score": sc} for s, lab, sc in dets]
    return {"database": db}, {"results": results}


THRESHOLD_SETS = [list(ANET_THRESHOLDS), list(THUMOS14_THRESHOLDS), [0.0, 0.5, 1.0]]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem(), st.sampled_from(THRESHOLD_SETS))
def test_matches_oracle_on_random_input(prob: tuple[dict, dict], thresholds: list[float]) -> None:
    gt, pred = prob
    with _no_fail_warnings():
        r = evaluate(gt, pred, thresholds, subset="validation")
    assert_same(r, oracle_evaluate(gt, pred, thresholds, "validation"))


@st.composite
def large_problem(draw: st.DrawFn) -> tuple[dict, dict]:
    """Many predictions per (class, video) and > 16 candidates: multi-step matching, big sorts."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    db = {}
    for v in range(3):
        n = int(rng.integers(1, 40))
        s = rng.integers(0, 40, n) / 2
        e = s + rng.integers(0, 8, n) / 2
        db[f"v{v}"] = {"subset": "validation", "annotations": [
            {"segment": [float(a), float(b)], "label": str(rng.integers(0, 2))}
            for a, b in zip(s, e, strict=True)]}
    classes = sorted({a["label"] for v in db.values() for a in v["annotations"]})
    results = {}
    for v in ["v0", "v1", "v2", "x"]:
        n = int(rng.integers(0, 60))
        s = rng.integers(0, 40, n) / 2
        e = s + rng.integers(0, 8, n) / 2
        sc = rng.integers(0, 4, n) / 4
        results[v] = [{"segment": [float(a), float(b)], "label": str(rng.choice(classes)),
                       "score": float(c)} for a, b, c in zip(s, e, sc, strict=True)]
    return {"database": db}, {"results": results}


@settings(max_examples=40, deadline=None)
@given(large_problem())
def test_matches_oracle_on_larger_random_input(prob: tuple[dict, dict]) -> None:
    gt, pred = prob
    with _no_fail_warnings():
        r = evaluate(gt, pred, list(ANET_THRESHOLDS))
    assert_same(r, oracle_evaluate(gt, pred, list(ANET_THRESHOLDS), "validation"))


@settings(max_examples=100, deadline=None)
@given(problem())
def test_perfect_predictions_give_ap_one(prob: tuple[dict, dict]) -> None:
    gt, _ = prob
    results = {v: [{"segment": a["segment"], "label": a["label"], "score": 1.0}
                   for a in e["annotations"]]
               for v, e in gt["database"].items() if e["subset"] == "validation"}
    r = evaluate(gt, {"results": results}, list(ANET_THRESHOLDS), subset="validation")
    assert r["mAP"] == [1.0] * len(ANET_THRESHOLDS)
    assert r["average_mAP"] == 1.0


@settings(max_examples=150, deadline=None)
@given(problem(), seg(), st.sampled_from([*VIDEOS, "absent"]),
       st.sampled_from([*THRESHOLD_SETS[:2], [0.05, 0.5, 1.0]]))
def test_appending_lower_scored_false_positive_never_raises_ap(
        prob: tuple[dict, dict], extra: tuple[float, float], video: str,
        thresholds: list[float]) -> None:
    gt, pred = prob
    # Distinct scores: with ties the official ranking is numpy's unstable argsort, whose
    # order of equal scores depends on the array length, so appending anything can reorder
    # them and raise AP (hypothesis found such a case). Break ties by file position.
    i = 0
    for dets in pred["results"].values():
        for d in dets:
            d["score"] += 1e-6 * i
            i += 1
    with _no_fail_warnings():
        before = evaluate(gt, pred, thresholds, subset="validation")
        label = next(iter(before["per_class_AP"]))
        # a false positive at every threshold > 0 (tIoU 0 passes a threshold of 0):
        # far from every instance, strictly lowest score
        lowest = min([d["score"] for ds in pred["results"].values() for d in ds], default=1.0)
        s = 1000.0 + extra[0]
        bigger = json.loads(json.dumps(pred))
        bigger["results"].setdefault(video, []).append(
            {"segment": [s, s + 1.0], "label": label, "score": lowest / 2})
        after = evaluate(gt, bigger, thresholds, subset="validation")
    for k in before["per_class_AP"]:
        assert np.all(np.asarray(after["per_class_AP"][k]) <= np.asarray(before["per_class_AP"][k]))
    assert all(a <= b for a, b in zip(after["mAP"], before["mAP"], strict=True))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**31 - 1), st.randoms(use_true_random=False))
def test_video_order_does_not_change_any_number(seed: int, rnd: Any) -> None:
    # continuous segments and distinct scores: no ties, so the order of videos cannot matter
    rng = np.random.default_rng(seed)
    db, results = {}, {}
    for v in range(6):
        n = int(rng.integers(0, 5))
        s = rng.uniform(0, 50, n)
        db[f"v{v}"] = {"subset": "validation", "annotations": [
            {"segment": [float(a), float(a + rng.uniform(0, 20))], "label": "xyz"[int(rng.integers(3))]}
            for a in s]}
    db["v0"]["annotations"].append({"segment": [1.0, 2.0], "label": "x"})
    classes = sorted({a["label"] for v in db.values() for a in v["annotations"]})
    scores = iter(rng.permutation(1000) / 1000)
    for v in [*db, "absent"]:
        n = int(rng.integers(0, 6))
        s = rng.uniform(0, 50, n)
        results[v] = [{"segment": [float(a), float(a + rng.uniform(0, 20))],
                       "label": classes[int(rng.integers(len(classes)))],
                       "score": float(next(scores))} for a in s]
    keys_gt, keys_pred = list(db), list(results)
    rnd.shuffle(keys_gt)
    rnd.shuffle(keys_pred)
    with _no_fail_warnings():
        a = evaluate({"database": db}, {"results": results}, list(ANET_THRESHOLDS))
        b = evaluate({"database": {k: db[k] for k in keys_gt}},
                     {"results": {k: results[k] for k in keys_pred}}, list(ANET_THRESHOLDS))
    np.testing.assert_allclose(a["mAP"], b["mAP"], rtol=0, atol=1e-12)
    assert a["average_mAP"] == pytest.approx(b["average_mAP"], abs=1e-12)
    assert set(a["per_class_AP"]) == set(b["per_class_AP"])
    for k in a["per_class_AP"]:
        assert a["per_class_AP"][k] == b["per_class_AP"][k]
    for key in ("num_videos", "num_ground_truth", "num_predictions"):
        assert a[key] == b[key]


# ----------------------------------------------------------------------------- real data


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data {path} is absent (read-only copy of the original files)")
    return path


def test_sample_submission_scores_exactly_one() -> None:
    pred = json.loads(_require(ANET / "sample_detection_prediction.json").read_text())
    gt = {"database": {v: {"subset": "validation", "annotations": [
        {"segment": d["segment"], "label": d["label"]} for d in dets]}
        for v, dets in pred["results"].items()}}
    segs = [tuple(a["segment"]) for v in gt["database"].values() for a in v["annotations"]]
    assert sum(1 for s, e in segs if s == e) == 3  # the file's edge cases are really there
    assert len(segs) - len({(v, tuple(a["segment"]), a["label"]) for v, e in gt["database"].items()
                            for a in e["annotations"]}) == 19
    r = evaluate(gt, pred, ANET_THRESHOLDS)
    assert r["mAP"] == [1.0] * 10
    assert r["average_mAP"] == 1.0
    assert r["num_videos"] == 4926
    assert r["num_predictions"] == len(segs)


def _anet_ground_truth(prefix_strip: bool) -> dict:
    anno = json.loads(_require(ANET / "anet_anno_action.json").read_text())
    with _require(ANET / "video_info_new.csv").open() as f:
        subsets = {row["video"]: row["subset"] for row in csv.DictReader(f)}
    db = {}
    for vid, entry in anno.items():
        key = vid[2:] if prefix_strip else vid
        db[key] = {"subset": subsets[vid], "annotations": entry["annotations"]}
    return {"database": db}


def test_real_activitynet_ground_truth_with_v_prefix_warns() -> None:
    gt = _anet_ground_truth(prefix_strip=False)
    pred_path = _require(ANET / "sample_detection_prediction.json")
    with pytest.warns(EvaluationWarning, match=r"'v_' prefix"):
        r = evaluate(gt, pred_path, ANET_THRESHOLDS, subset="validation")
    assert r["num_videos"] == 4728
    assert r["mAP"] == [0.0] * 10  # every prediction is on an absent video


def test_real_activitynet_matches_oracle() -> None:
    gt = _anet_ground_truth(prefix_strip=True)
    pred = json.loads(_require(ANET / "sample_detection_prediction.json").read_text())
    # distinct scores, so the ranking is not all ties
    rng = np.random.default_rng(0)
    for dets in pred["results"].values():
        for d in dets:
            d["score"] = float(rng.integers(0, 50)) / 50
            d["segment"] = [d["segment"][0] + float(rng.normal(0, 2)), d["segment"][1]]
            d["segment"][0] = min(d["segment"])
    with pytest.warns(EvaluationWarning, match=r"not in subset 'validation'"):
        r = evaluate(gt, pred, ANET_THRESHOLDS, subset="validation")
    assert_same(r, oracle_evaluate(gt, pred, list(ANET_THRESHOLDS), "validation"))
    assert 0.3 < r["average_mAP"] < 1.0


def test_real_thumos14_ground_truth_loads_and_evaluates() -> None:
    path = _require(THUMOS / "gtad" / "thumos_gt.json")
    gt = json.loads(path.read_text())
    test_videos = {v: e for v, e in gt["database"].items() if e["subset"] == "test"}
    # predictions: every test instance shifted by 0.5 s plus a low-scored copy
    results = {v: [{"segment": [float(a["segment"][0]) + 0.5, float(a["segment"][1]) + 0.5],
                    "label": a["label"], "score": 0.9 - 0.001 * i}
                   for i, a in enumerate(e["annotations"])] for v, e in test_videos.items()}
    pred = {"results": results}
    r = evaluate(path, pred, THUMOS14_THRESHOLDS, subset="test")
    assert r["num_videos"] == 210
    assert len(r["per_class_AP"]) == 20
    assert_same(r, oracle_evaluate(gt, pred, list(THUMOS14_THRESHOLDS), "test"))
    assert r["mAP"][0] > r["mAP"][-1] > 0  # shifted segments pass loose thresholds more often


def test_annotation_set_is_accepted_as_ground_truth() -> None:
    ann = pytest.importorskip("tallformer.data.annotations")
    gt = make_gt({"a": [(0, 10, "x"), (20, 30, "y")], "b": [(5, 6, "x")]})
    aset = ann.AnnotationSet(
        videos={vid: ann.VideoAnnotation(
            video_id=vid, subset=e["subset"], duration=None,
            annotations=[ann.Instance(segment=tuple(a["segment"]), label=a["label"])
                         for a in e["annotations"]])
            for vid, e in gt["database"].items()},
        classes=["x", "y"], source="mem.json")
    pred = make_pred({"a": [(0, 9, "x", 0.9), (21, 30, "y", 0.4)], "b": [(5, 7, "x", 0.6)]})
    assert evaluate(aset, pred, ANET_THRESHOLDS) == evaluate(gt, pred, ANET_THRESHOLDS)


@settings(max_examples=30, deadline=None)
@given(large_problem(), st.integers(1, 50))
def test_chunked_candidate_table_gives_the_same_numbers(prob: tuple[dict, dict],
                                                        chunk: int) -> None:
    import tallformer.evaluation as ev

    gt, pred = prob
    saved = ev._PAIRS_PER_CHUNK
    ev._PAIRS_PER_CHUNK = chunk  # many small chunks, rows straddling chunk boundaries
    try:
        with _no_fail_warnings():
            r = evaluate(gt, pred, [0.0, *THUMOS14_THRESHOLDS])
    finally:
        ev._PAIRS_PER_CHUNK = saved
    assert_same(r, oracle_evaluate(gt, pred, [0.0, *THUMOS14_THRESHOLDS], "validation"))
