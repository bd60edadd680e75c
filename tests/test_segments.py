"""Segment IoU/IoF, delta coding, score filtering and the NMS variants."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tallformer.ops.segments import (
    decode,
    encode,
    filter_topk,
    nms,
    segment_iof,
    segment_iou,
)

# ----------------------------------------------------------------- strategies


@st.composite
def segment_sets(draw, min_size: int = 0, max_size: int = 30, min_len: float = 0.0):
    n = draw(st.integers(min_size, max_size))
    starts = draw(st.lists(st.floats(0, 100, allow_nan=False), min_size=n, max_size=n))
    lengths = draw(st.lists(st.floats(min_len, 40, allow_nan=False), min_size=n, max_size=n))
    return torch.tensor([[s, s + w] for s, w in zip(starts, lengths, strict=True)], dtype=torch.float64).reshape(-1, 2)


@st.composite
def detections(draw, max_size: int = 40, num_classes: int = 3):
    seg = draw(segment_sets(max_size=max_size))
    n = seg.shape[0]
    # few distinct values so that ties and identical segments are common
    scores = draw(st.lists(st.sampled_from([0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.95]), min_size=n, max_size=n))
    labels = draw(st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n))
    return seg, torch.tensor(scores, dtype=torch.float64), torch.tensor(labels, dtype=torch.int64)


# ----------------------------------------------------------------- reference NMS (plain loops)


def _iou1(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max((a[1] - a[0]) + (b[1] - b[0]) - inter, 1e-6)
    return inter / union


def reference_nms(seg, scores, labels, method, thr, sigma=0.5, min_score=0.0, max_num=None):
    """The sequential global loop of the original (vedatad/misc/segment/segment.py:268-359),
    one candidate at a time."""
    items = [(float(scores[i]), i, tuple(map(float, seg[i])), int(labels[i])) for i in range(len(scores))]
    items.sort(key=lambda t: (-t[0], t[1]))
    out = []
    if method in ("hard", "nmw"):
        while items and (max_num is None or len(out) < max_num):
            top = items[0]
            group, rest = [], []
            for j, it in enumerate(items):
                if it[3] != top[3]:
                    rest.append(it)
                    continue
                u = 1.0 if j == 0 else _iou1(top[2], it[2])
                hit = (u >= thr) if method == "nmw" else (u > thr)
                if j == 0 or hit:
                    group.append((it, u))
                else:
                    rest.append(it)
            if method == "nmw":
                w = [it[0] * u for it, u in group]
                tot = sum(w)
                s = sum(wi * it[2][0] for wi, (it, _) in zip(w, group, strict=True)) / tot
                e = sum(wi * it[2][1] for wi, (it, _) in zip(w, group, strict=True)) / tot
                out.append(((s, e), top[0], top[3]))
            else:
                out.append((top[2], top[0], top[3]))
            items = rest
        return out
    # soft: per class, repeatedly take the current best
    items = [it for it in items if it[0] >= min_score]
    cur = [[it[0], it[1], it[2], it[3]] for it in items]
    while cur:
        best = max(range(len(cur)), key=lambda k: (cur[k][0], -cur[k][1]))
        top = cur.pop(best)
        out.append((top[2], top[0], top[3]))
        nxt = []
        for it in cur:
            if it[3] == top[3]:
                u = _iou1(top[2], it[2])
                if method == "soft_gaussian":
                    it[0] *= math.exp(-(u * u) / sigma)
                elif u > thr:
                    it[0] *= 1.0 - u
            if it[0] >= min_score:
                nxt.append(it)
        cur = nxt
    out.sort(key=lambda t: -t[1])
    return out[:max_num] if max_num is not None else out


# ----------------------------------------------------------------- IoU / IoF


def test_iou_hand_values():
    a = torch.tensor([[0.0, 10.0]])
    b = torch.tensor([[5.0, 15.0], [10.0, 20.0], [0.0, 10.0], [2.0, 4.0], [3.0, 3.0]])
    assert torch.allclose(segment_iou(a, b), torch.tensor([[5 / 15, 0.0, 1.0, 0.2, 0.0]]))
    assert torch.allclose(segment_iof(b, a).squeeze(1), torch.tensor([0.5, 0.0, 1.0, 1.0, 0.0]))


def test_empty_and_dtypes():
    for dtype in (torch.float32, torch.float64):
        a = torch.zeros((0, 2), dtype=dtype)
        b = torch.tensor([[0.0, 1.0]], dtype=dtype)
        assert segment_iou(a, b).shape == (0, 1)
        assert segment_iou(b, a).shape == (1, 0)
        assert segment_iou(b, b).dtype == dtype
        out = nms(a, torch.zeros(0, dtype=dtype), torch.zeros(0, dtype=torch.long), "nmw")
        assert out[0].shape == (0, 2)
        assert out[1].shape == (0,)
        assert out[0].dtype == dtype


def test_bad_shape_is_an_error():
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        segment_iou(torch.zeros(3), torch.zeros((1, 2)))
    with pytest.raises(ValueError, match="unknown NMS method"):
        nms(torch.zeros((1, 2)), torch.zeros(1), torch.zeros(1, dtype=torch.long), "fast")


@settings(max_examples=60, deadline=None)
@given(segment_sets(), segment_sets())
def test_iou_symmetric_and_bounded(a, b):
    ab, ba = segment_iou(a, b), segment_iou(b, a)
    assert torch.allclose(ab, ba.T)
    assert bool(((ab >= 0) & (ab <= 1)).all())


@settings(max_examples=60, deadline=None)
@given(segment_sets(min_len=0.01))
def test_iof_with_itself_is_one(a):
    assert torch.allclose(segment_iof(a, a).diagonal(), torch.ones(a.shape[0], dtype=a.dtype))


# ----------------------------------------------------------------- coding


@settings(max_examples=60, deadline=None)
@given(segment_sets(min_size=1, min_len=0.5), st.integers(0, 2**31 - 1))
def test_encode_decode_round_trip(anchors, seed):
    g = torch.Generator().manual_seed(seed)
    n = anchors.shape[0]
    # targets whose log-length delta is within the clamp (<= 1)
    ratio = torch.exp(torch.rand(n, generator=g, dtype=torch.float64) * 2.0 - 1.5)
    shift = (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 3
    wa = anchors[:, 1] - anchors[:, 0]
    c = (anchors[:, 0] + anchors[:, 1]) / 2 + shift * wa
    w = wa * ratio
    seg = torch.stack([c - w / 2, c + w / 2], 1)
    assert torch.allclose(decode(encode(seg, anchors), anchors), seg, atol=1e-9)


def test_decode_clamps_width_and_ends():
    anchors = torch.tensor([[10.0, 20.0]])
    out = decode(torch.tensor([[0.0, 3.0]]), anchors)  # log-width clamped at 1.0
    assert torch.allclose(out, torch.tensor([[15 - 5 * math.e, 15 + 5 * math.e]]))
    out = decode(torch.tensor([[0.0, 3.0]]), anchors, max_length=16.0)
    assert torch.allclose(out, torch.tensor([[1.4086, 16.0]]), atol=1e-4)


def test_filter_topk():
    scores = torch.tensor([[0.1, 0.9], [0.005, 0.5], [0.7, 0.0]])
    rows, cols, vals = filter_topk(scores, 0.005, topk=3)
    assert rows.tolist() == [0, 2, 1]
    assert cols.tolist() == [1, 0, 1]
    assert torch.allclose(vals, torch.tensor([0.9, 0.7, 0.5]))
    rows, _, _ = filter_topk(scores, 0.0)
    assert len(rows) == 5  # 0.005 is > 0, the exact 0.0 is not


# ----------------------------------------------------------------- NMS


def _as_list(out):
    seg, sc, lab = out
    return [(tuple(s), float(v), int(c)) for s, v, c in zip(seg.tolist(), sc, lab, strict=True)]


def _close(a, b):
    assert len(a) == len(b)
    for (sa, va, ca), (sb, vb, cb) in zip(a, b, strict=True):
        assert ca == cb
        assert abs(va - vb) < 1e-9
        assert abs(sa[0] - sb[0]) < 1e-9
        assert abs(sa[1] - sb[1]) < 1e-9


@pytest.mark.parametrize("method", ["hard", "nmw"])
@settings(max_examples=80, deadline=None)
@given(det=detections(), thr=st.sampled_from([0.3, 0.5, 0.7]), max_num=st.sampled_from([None, 3]))
def test_greedy_nms_equals_sequential_reference(method, det, thr, max_num):
    seg, sc, lab = det
    got = _as_list(nms(seg, sc, lab, method, thr, max_num=max_num))
    want = reference_nms(seg, sc, lab, method, thr, max_num=max_num)
    _close(got, want)


@pytest.mark.parametrize("method", ["soft_linear", "soft_gaussian"])
@settings(max_examples=60, deadline=None)
@given(det=detections(), min_score=st.sampled_from([0.0, 0.05]))
def test_soft_nms_equals_sequential_reference(method, det, min_score):
    seg, sc, lab = det
    # distinct scores: soft-NMS ties across classes have no canonical order
    sc = sc + torch.arange(sc.shape[0], dtype=sc.dtype) * 1e-4
    got = _as_list(nms(seg, sc, lab, method, 0.5, sigma=0.5, min_score=min_score))
    want = reference_nms(seg, sc, lab, method, 0.5, sigma=0.5, min_score=min_score)
    _close(sorted(got, key=lambda t: (t[2], -t[1])), sorted(want, key=lambda t: (t[2], -t[1])))
    assert [v for _, v, _ in got] == sorted((v for _, v, _ in got), reverse=True)


@settings(max_examples=60, deadline=None)
@given(det=detections(), thr=st.sampled_from([0.3, 0.5]))
def test_hard_nms_properties(det, thr):
    seg, sc, lab = det
    kseg, ksc, klab = nms(seg, sc, lab, "hard", thr)
    if sc.numel():
        assert float(ksc[0]) == float(sc.max())
    for c in klab.unique():
        m = klab == c
        iou = segment_iou(kseg[m], kseg[m])
        iou.fill_diagonal_(0)
        assert bool((iou <= thr + 1e-12).all())
    # nothing new appears
    orig = {(tuple(s), float(v), int(c)) for s, v, c in zip(seg.tolist(), sc, lab, strict=True)}
    assert set(_as_list((kseg, ksc, klab))) <= orig


@settings(max_examples=60, deadline=None)
@given(det=detections())
def test_soft_nms_never_raises_a_score(det):
    seg, sc, lab = det
    for method in ("soft_linear", "soft_gaussian"):
        kseg, ksc, klab = nms(seg, sc, lab, method, 0.5)
        for s, v, c in zip(kseg.tolist(), ksc.tolist(), klab.tolist(), strict=True):
            same = [float(sc[i]) for i in range(len(sc)) if seg[i].tolist() == s and int(lab[i]) == c]
            assert v <= max(same) + 1e-12


@settings(max_examples=60, deadline=None)
@given(det=detections())
def test_nmw_boundaries_inside_the_merged_hull(det):
    seg, sc, lab = det
    kseg, _, klab = nms(seg, sc, lab, "nmw", 0.5)
    for s, c in zip(kseg.tolist(), klab.tolist(), strict=True):
        same = seg[lab == c]
        assert s[0] >= float(same[:, 0].min()) - 1e-9
        assert s[1] <= float(same[:, 1].max()) + 1e-9


def test_hand_cases_each_method():
    seg = torch.tensor([[0.0, 10.0], [1.0, 11.0], [0.0, 5.0], [20.0, 30.0], [0.0, 10.0]])
    sc = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    lab = torch.tensor([0, 0, 0, 0, 1])
    # IoU(top, 1) = 9/11 = 0.818, IoU(top, 2) = 0.5 exactly
    s, v, c = nms(seg, sc, lab, "hard", 0.5)
    assert v.tolist() == pytest.approx([0.9, 0.7, 0.6, 0.5])  # IoU 0.5 is not > 0.5: kept
    assert c.tolist() == [0, 0, 0, 1]  # class 1 is never suppressed by class 0
    s, v, c = nms(seg, sc, lab, "nmw", 0.5)
    assert v.tolist() == pytest.approx([0.9, 0.6, 0.5])  # IoU 0.5 merges (>=)
    w = torch.tensor([0.9 * 1.0, 0.8 * 9 / 11, 0.7 * 0.5])
    start = float((w * torch.tensor([0.0, 1.0, 0.0])).sum() / w.sum())
    end = float((w * torch.tensor([10.0, 11.0, 5.0])).sum() / w.sum())
    assert s[0].tolist() == pytest.approx([start, end], abs=1e-5)
    s, v, c = nms(seg, sc, lab, "soft_linear", 0.5)
    assert v.tolist() == pytest.approx([0.9, 0.7, 0.6, 0.5, 0.8 * (1 - 9 / 11)], abs=1e-6)
    s, v, c = nms(seg, sc, lab, "soft_gaussian", 0.5, sigma=0.5)
    # round 1 keeps 0.9; [1, 11] decays to 0.8*exp(-(9/11)^2/0.5) = 0.2109 and [0, 5] to
    # 0.7*exp(-0.25/0.5) = 0.4246, which is kept next and decays [1, 11] again
    second = 0.8 * math.exp(-((9 / 11) ** 2) / 0.5) * math.exp(-(_iou1((0, 5), (1, 11)) ** 2) / 0.5)
    assert v.tolist() == pytest.approx([0.9, 0.6, 0.5, 0.7 * math.exp(-0.5), second], abs=1e-6)
    s, v, c = nms(seg, sc, lab, "soft_gaussian", 0.5, min_score=0.45)
    assert min(v.tolist()) >= 0.45


def test_nmw_zero_length_top_counts_itself():
    seg = torch.tensor([[5.0, 5.0], [5.0, 5.0]])
    s, v, _ = nms(seg, torch.tensor([0.9, 0.8]), torch.tensor([0, 0]), "nmw", 0.5)
    # zero-length segments have IoU 0 with everything: both survive, unchanged
    assert s.tolist() == [[5.0, 5.0], [5.0, 5.0]]
    assert v.tolist() == pytest.approx([0.9, 0.8])
