"""1-D segment operations: IoU/IoF, delta coding, score filtering and NMS variants.

Segments are `[N, 2]` tensors of (start, end) in any unit (frames or seconds), float32 or
float64. Every function accepts empty inputs and zero-length segments. IoU follows the
original's 1-D rule (vedatad/misc/segment/segment.py:9-107: no +1, union clamped to
>= 1e-6), so two zero-length segments have IoU 0 and every value lies in [0, 1].

NMS runs the classes in parallel: a greedy per-class NMS only ever compares segments of
one class, so each "round" takes the best remaining segment of *every* class at once and
handles all its same-class neighbours with vectorised numpy. The loop runs over rounds
(at most the largest number of segments one class keeps), never over candidates.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

__all__ = [
    "NmsMethod",
    "decode",
    "encode",
    "filter_topk",
    "nms",
    "segment_iof",
    "segment_iou",
]

_EPS = 1e-6  # union / length clamp (original: vedatad/misc/segment/segment.py:9-107)
# hard-coded decode clamp (original: vedatad/misc/segment/coders/delta_segment_coder.py:161)
_MAX_LOG_WIDTH_DELTA = 1.0

NmsMethod = Literal["hard", "nmw", "soft_linear", "soft_gaussian"]


def _check_segments(name: str, x: torch.Tensor) -> None:
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"{name} must be a [N, 2] tensor of (start, end), got shape {tuple(x.shape)}")


def _intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise overlap length `[N, M]` of `a [N, 2]` and `b [M, 2]`."""
    start = torch.maximum(a[:, None, 0], b[None, :, 0])
    end = torch.minimum(a[:, None, 1], b[None, :, 1])
    return (end - start).clamp(min=0)


def segment_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise temporal IoU.

    Args:
        a: `[N, 2]` segments. b: `[M, 2]` segments (same dtype).
    Returns:
        `[N, M]` IoU in [0, 1]; overlap / max(union, 1e-6).
    """
    _check_segments("a", a)
    _check_segments("b", b)
    inter = _intersection(a, b)
    len_a = (a[:, 1] - a[:, 0]).clamp(min=0)
    len_b = (b[:, 1] - b[:, 0]).clamp(min=0)
    union = (len_a[:, None] + len_b[None, :] - inter).clamp(min=_EPS)
    return (inter / union).clamp(max=1.0)


def segment_iof(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over the length of each segment of `a`: `[N, M]` in [0, 1]."""
    _check_segments("a", a)
    _check_segments("b", b)
    inter = _intersection(a, b)
    len_a = (a[:, 1] - a[:, 0]).clamp(min=_EPS)
    return (inter / len_a[:, None]).clamp(max=1.0)


def encode(segments: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Centre / log-length deltas of `segments [N, 2]` w.r.t. `anchors [N, 2]` -> `[N, 2]`.

    dc = (c_g - c_a) / w_a, dw = log(w_g / w_a); means 0, stds 1 (original:
    vedatad/misc/segment/coders/delta_segment_coder.py:69-173).
    """
    _check_segments("segments", segments)
    _check_segments("anchors", anchors)
    wa = anchors[:, 1] - anchors[:, 0]
    ca = (anchors[:, 0] + anchors[:, 1]) * 0.5
    wg = segments[:, 1] - segments[:, 0]
    cg = (segments[:, 0] + segments[:, 1]) * 0.5
    return torch.stack([(cg - ca) / wa, torch.log(wg / wa)], dim=1)


def decode(deltas: torch.Tensor, anchors: torch.Tensor, max_length: float | None = None) -> torch.Tensor:
    """Segments `[N, 2]` from deltas `[N, 2]` and anchors `[N, 2]`.

    The log-length delta is clamped at 1.0 from above (original: delta_segment_coder.py:161);
    with `max_length`, both ends are clamped to `[0, max_length]` (test time).
    """
    _check_segments("deltas", deltas)
    _check_segments("anchors", anchors)
    wa = anchors[:, 1] - anchors[:, 0]
    ca = (anchors[:, 0] + anchors[:, 1]) * 0.5
    dw = deltas[:, 1].clamp(max=_MAX_LOG_WIDTH_DELTA)
    w = wa * torch.exp(dw)
    c = ca + wa * deltas[:, 0]
    out = torch.stack([c - 0.5 * w, c + 0.5 * w], dim=1)
    if max_length is not None:
        out = out.clamp(min=0, max=float(max_length))
    return out


def filter_topk(
    scores: torch.Tensor, score_thr: float, topk: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entries of `scores [N, K]` above `score_thr` (strict), best `topk` of them.

    Returns `(rows [P], cols [P], values [P])`, by descending score (ties in row-major
    order).
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [N, K], got shape {tuple(scores.shape)}")
    flat = scores.reshape(-1)
    idx = torch.nonzero(flat > score_thr, as_tuple=False).squeeze(1)
    vals = flat[idx]
    order = torch.sort(vals, descending=True, stable=True).indices
    if topk is not None:
        order = order[:topk]
    idx, vals = idx[order], vals[order]
    k = scores.shape[1]
    return idx // k, idx % k, vals


def _pair_iou(s: np.ndarray, e: np.ndarray, ts: np.ndarray, te: np.ndarray) -> np.ndarray:
    """Elementwise IoU of (s, e) with (ts, te); overlap / max(union, 1e-6)."""
    inter = np.clip(np.minimum(e, te) - np.maximum(s, ts), 0, None)
    union = np.maximum((e - s) + (te - ts) - inter, _EPS)
    return inter / union


def nms(
    segments: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    method: NmsMethod,
    iou_threshold: float = 0.5,
    *,
    sigma: float = 0.5,
    min_score: float = 0.0,
    max_num: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-wise non-maximum suppression; classes never suppress each other.

    Args:
        segments: `[N, 2]`. scores: `[N]`. labels: `[N]` integer class ids.
        method: "hard" (drop same-class segments with IoU > threshold, strict);
            "nmw" (weighted NMS, original: vedatad/misc/segment/segment.py:268-359: merge
            same-class segments with IoU >= threshold into the top one; boundaries =
            score*IoU weighted mean with the top's IoU taken as 1; score = the top's);
            "soft_linear" (score *= 1 - IoU when
            IoU > threshold) and "soft_gaussian" (score *= exp(-IoU^2 / sigma)), both
            dropping scores below `min_score`.
        max_num: keep at most this many (the first ones produced).
    Returns:
        `(segments [K, 2], scores [K], labels [K])` in the order they are produced, which
        is descending score (ties: the earlier input first).
    """
    _check_segments("segments", segments)
    if scores.shape != (segments.shape[0],) or labels.shape != (segments.shape[0],):
        raise ValueError(
            f"scores and labels must be [N] with N = {segments.shape[0]}, got "
            f"{tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    if method not in ("hard", "nmw", "soft_linear", "soft_gaussian"):
        raise ValueError(
            f"unknown NMS method {method!r}; choose hard, nmw, soft_linear or soft_gaussian"
        )
    device, dtype = segments.device, segments.dtype
    seg = segments.detach().cpu().double().numpy()
    sc = scores.detach().cpu().double().numpy()
    lab = labels.detach().cpu().numpy().astype(np.int64)
    if method in ("hard", "nmw"):
        out_seg, out_sc, out_lab = _greedy_nms(seg, sc, lab, iou_threshold, merge=method == "nmw")
    else:
        out_seg, out_sc, out_lab = _soft_nms(
            seg, sc, lab, iou_threshold, sigma, min_score, gaussian=method == "soft_gaussian"
        )
    if max_num is not None:
        out_seg, out_sc, out_lab = out_seg[:max_num], out_sc[:max_num], out_lab[:max_num]
    return (
        torch.from_numpy(np.ascontiguousarray(out_seg).reshape(-1, 2)).to(device=device, dtype=dtype),
        torch.from_numpy(np.ascontiguousarray(out_sc)).to(device=device, dtype=scores.dtype),
        torch.from_numpy(np.ascontiguousarray(out_lab)).to(device=device, dtype=labels.dtype),
    )


def _group_by_class(
    sc: np.ndarray, lab: np.ndarray
) -> np.ndarray:
    """Indices sorted by (class, descending score, input order)."""
    by_score = np.argsort(-sc, kind="stable")
    return by_score[np.argsort(lab[by_score], kind="stable")]


def _group_starts(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For labels grouped contiguously: start index of each group and each element's group."""
    is_start = np.empty(lab.shape[0], dtype=bool)
    is_start[:1] = True
    np.not_equal(lab[1:], lab[:-1], out=is_start[1:])
    starts = np.flatnonzero(is_start)
    return starts, np.cumsum(is_start) - 1


def _greedy_nms(
    seg: np.ndarray, sc: np.ndarray, lab: np.ndarray, thr: float, merge: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hard NMS (merge=False) or weighted NMS (merge=True); see `nms`."""
    n = sc.shape[0]
    global_rank = np.empty(n, dtype=np.int64)
    global_rank[np.argsort(-sc, kind="stable")] = np.arange(n)
    order = _group_by_class(sc, lab)
    s, e, score, cls, rank = seg[order, 0], seg[order, 1], sc[order], lab[order], global_rank[order]
    kept_rank, kept_s, kept_e, kept_sc, kept_lab = [], [], [], [], []
    while s.shape[0]:
        starts, group = _group_starts(cls)
        top = starts[group]  # index of each element's class leader (its best remaining)
        iou = _pair_iou(s, e, s[top], e[top])
        iou[starts] = 1.0  # the top counts itself fully (u_top := 1, segment.py:268-359)
        if merge:
            members = iou >= thr
            w = score * iou * members
            wsum = np.bincount(group, weights=w)
            ok = wsum > 0  # all-zero scores: keep the top's own boundaries
            safe = np.where(ok, wsum, 1.0)
            kept_s.append(np.where(ok, np.bincount(group, weights=w * s) / safe, s[starts]))
            kept_e.append(np.where(ok, np.bincount(group, weights=w * e) / safe, e[starts]))
        else:
            members = iou > thr
            kept_s.append(s[starts])
            kept_e.append(e[starts])
        members[starts] = True
        kept_rank.append(rank[starts])
        kept_sc.append(score[starts])
        kept_lab.append(cls[starts])
        keep = ~members
        s, e, score, cls, rank = s[keep], e[keep], score[keep], cls[keep], rank[keep]
    if not kept_rank:
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=np.int64)
    ranks = np.concatenate(kept_rank)
    out_order = np.argsort(ranks, kind="stable")
    segs = np.stack([np.concatenate(kept_s), np.concatenate(kept_e)], axis=1)[out_order]
    return segs, np.concatenate(kept_sc)[out_order], np.concatenate(kept_lab)[out_order]


def _soft_nms(
    seg: np.ndarray, sc: np.ndarray, lab: np.ndarray, thr: float, sigma: float,
    min_score: float, gaussian: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft-NMS per class, all classes in parallel rounds; see `nms`."""
    order = _group_by_class(sc, lab)
    s, e, score, cls = seg[order, 0], seg[order, 1], sc[order].copy(), lab[order]
    alive = score >= min_score
    s, e, score, cls = s[alive], e[alive], score[alive], cls[alive]
    idx = np.arange(s.shape[0])
    out_s, out_e, out_sc, out_lab, out_round = [], [], [], [], []
    rnd = 0
    while s.shape[0]:
        starts, group = _group_starts(cls)
        best = np.maximum.reduceat(score, starts)
        cand = np.where(score == best[group], idx[: s.shape[0]], s.shape[0])
        tops = np.minimum.reduceat(cand, starts)
        top = tops[group]
        iou = _pair_iou(s, e, s[top], e[top])
        if gaussian:
            decay = np.exp(-(iou * iou) / sigma)
        else:
            decay = np.where(iou > thr, 1.0 - iou, 1.0)
        out_s.append(s[tops])
        out_e.append(e[tops])
        out_sc.append(score[tops])
        out_lab.append(cls[tops])
        out_round.append(np.full(tops.shape[0], rnd))
        score = score * decay
        keep = score >= min_score
        keep[tops] = False
        s, e, score, cls = s[keep], e[keep], score[keep], cls[keep]
        rnd += 1
    if not out_s:
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=np.int64)
    scores = np.concatenate(out_sc)
    rounds = np.concatenate(out_round)
    out_order = np.lexsort((rounds, -scores))
    segs = np.stack([np.concatenate(out_s), np.concatenate(out_e)], axis=1)[out_order]
    return segs, scores[out_order], np.concatenate(out_lab)[out_order]
