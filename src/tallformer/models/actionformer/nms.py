"""ActionFormer's 1-D NMS: Gaussian soft-NMS, hard NMS, segment voting and the batched
(multiclass or class-agnostic) driver, as the release computes them (original:
libs/utils/nms.py; libs/utils/csrc/nms_cpu.cpp).

The release's C++ loops run in float32; these run the same float32 arithmetic in numpy,
one selected segment at a time, each step vectorised over the remaining candidates:

- soft-NMS (`softnms_1d_cpu`, Gaussian, nms_cpu.cpp:67-160): areas are x2 - x1 + 1e-6;
  at step i the highest current score among the slots [i, n) is selected (the first one
  in slot order on ties) and swapped into slot i; every later candidate's score is
  multiplied by exp(-IoU^2 / sigma) (`iou_threshold` is unused), and one whose score
  falls below `min_score` is removed by moving the last slot into its place (which
  reorders the slots exactly as the release does). The first pick is never tested
  against `min_score`.
- hard NMS (`nms_1d_cpu`, nms_cpu.cpp:19-58; `NMSop`, nms.py:8-35): when min_score > 0
  only scores > min_score (strict) take part; candidates in `torch.sort(descending=True)`
  order; a later candidate with IoU >= `iou_threshold` with a kept one is suppressed.

Both stop after `max_num` selections, the cap the release applies to their output; the
selections before it do not depend on the ones after.

`tallformer.ops.segments` (IoU, soft-NMS) follows the TALLFormer release's conventions
(union clamped at 1e-6 and no area epsilon, candidates below `min_score` dropped before the
first pick, ties by input order) and so gives other numbers here; it is not used.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["batched_nms", "hard_nms_1d", "seg_voting", "soft_nms_1d"]


def _f32(x: Tensor) -> np.ndarray:
    return x.detach().cpu().to(torch.float32).numpy().copy()


def _compact(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slot moves of the release's removal loop over slots 0..m-1 (keep flags): the holes
    below the kept count get the kept slots above it, the last one first. Returns
    (holes, donors), both relative slot indices."""
    count = int(keep.sum())
    holes = np.flatnonzero(~keep[:count])
    donors = np.flatnonzero(keep[count:])[::-1] + count
    return holes, donors


def soft_nms_1d(segs: Tensor, scores: Tensor, sigma: float, min_score: float,
                max_num: int = 0) -> tuple[Tensor, Tensor]:
    """Gaussian soft-NMS of `segs [N, 2]`, `scores [N]` (see the module docstring).

    Returns:
        (dets `[M, 3]` float32 rows (x1, x2, decayed score) in selection order, input
        indices `[M]` int64), M <= max_num when max_num > 0.

    Example:
        >>> import torch
        >>> dets, inds = soft_nms_1d(torch.tensor([[0.0, 2.0], [0.0, 2.0], [5.0, 6.0]]),
        ...                          torch.tensor([0.9, 0.8, 0.7]), sigma=0.5, min_score=0.001)
        >>> inds.tolist(), [round(float(s), 4) for s in dets[:, 2]]
        ([0, 2, 1], [0.9, 0.7, 0.1083])
    """
    x1, x2 = _f32(segs[:, 0]), _f32(segs[:, 1])
    sc = _f32(scores)
    areas = (x2 - x1) + np.float32(1e-6)
    inds = np.arange(x1.shape[0], dtype=np.int64)
    sig, floor = np.float32(sigma), np.float32(min_score)
    limit = max_num if max_num > 0 else x1.shape[0]
    n = x1.shape[0]
    out_rows: list[tuple[np.float32, np.float32, np.float32]] = []
    out_inds: list[int] = []
    i = 0
    with np.errstate(invalid="ignore", divide="ignore"):
        while i < n and len(out_inds) < limit:
            m = i + int(np.argmax(sc[i:n]))
            for arr in (x1, x2, sc, areas, inds):
                arr[i], arr[m] = arr[m], arr[i]
            ix1, ix2, iarea = x1[i], x2[i], areas[i]
            out_rows.append((ix1, ix2, sc[i]))
            out_inds.append(int(inds[i]))
            rest = slice(i + 1, n)
            inter = np.maximum(np.float32(0), np.minimum(ix2, x2[rest]) - np.maximum(ix1, x1[rest]))
            ovr = inter / ((iarea + areas[rest]) - inter)
            sc[rest] = sc[rest] * np.exp(-(ovr * ovr) / sig)
            keep = ~(sc[rest] < floor)
            holes, donors = _compact(keep)
            for arr in (x1, x2, sc, areas, inds):
                arr[i + 1 + holes] = arr[i + 1 + donors]
            n = i + 1 + int(keep.sum())
            i += 1
    dets = torch.tensor(np.array(out_rows, dtype=np.float32).reshape(-1, 3))
    return dets, torch.tensor(out_inds, dtype=torch.int64)


def hard_nms_1d(segs: Tensor, scores: Tensor, iou_threshold: float, max_num: int = 0) -> Tensor:
    """Hard NMS (no score filter; see `batched_nms` for it): indices `[M]` of the kept
    segments in descending score order, M <= max_num when max_num > 0.

    Example:
        >>> import torch
        >>> hard_nms_1d(torch.tensor([[0.0, 2.0], [0.0, 2.0], [5.0, 6.0]]), torch.tensor([0.9, 0.8, 0.7]), 0.1).tolist()
        [0, 2]
    """
    n = segs.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64)
    order = torch.sort(scores.detach().cpu().float(), descending=True).indices.numpy()
    x1, x2 = _f32(segs[:, 0])[order], _f32(segs[:, 1])[order]
    areas = (x2 - x1) + np.float32(1e-6)
    thr = np.float32(iou_threshold)
    limit = max_num if max_num > 0 else n
    select = np.ones(n, dtype=bool)
    kept: list[int] = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in range(n):
            if not select[i]:
                continue
            kept.append(int(order[i]))
            if len(kept) == limit:
                break
            inter = np.maximum(np.float32(0), np.minimum(x2[i], x2[i + 1:]) - np.maximum(x1[i], x1[i + 1:]))
            ovr = inter / ((areas[i] + areas[i + 1:]) - inter)
            select[i + 1:] &= ~(ovr >= thr)
    return torch.tensor(kept, dtype=torch.int64)


def seg_voting(nms_segs: Tensor, all_segs: Tensor, all_scores: Tensor, iou_threshold: float) -> Tensor:
    """Segment voting (original: libs/utils/nms.py:67-101): each kept segment becomes the
    average of every input segment j with IoU >= `iou_threshold`, weighted by score_j x IoU
    (IoU without an epsilon; the input scores, not the decayed ones).

    Example:
        >>> import torch
        >>> seg_voting(torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, 2.0], [0.0, 2.2]]),
        ...            torch.tensor([1.0, 1.0]), 0.5).tolist()  # doctest: +ELLIPSIS
        [[0.0, 2.09...]]
    """
    left = torch.maximum(nms_segs[:, None, 0], all_segs[None, :, 0])
    right = torch.minimum(nms_segs[:, None, 1], all_segs[None, :, 1])
    inter = (right - left).clamp(min=0)
    lens_n = (nms_segs[:, 1] - nms_segs[:, 0])[:, None]
    lens_a = (all_segs[:, 1] - all_segs[:, 0])[None, :]
    iou = inter / (lens_n + lens_a - inter)
    weights = (iou >= iou_threshold).to(all_scores.dtype) * all_scores[None, :] * iou
    weights = weights / weights.sum(dim=1, keepdim=True)
    return weights @ all_segs


def batched_nms(segs: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float, min_score: float,
                max_seg_num: int, use_soft_nms: bool = True, multiclass: bool = True, sigma: float = 0.5,
                voting_thresh: float = 0.75) -> tuple[Tensor, Tensor, Tensor]:
    """The release's `batched_nms` (original: libs/utils/nms.py:103-190), on the CPU.

    Multiclass: one NMS per class in ascending class id, each capped at `max_seg_num`, no
    voting. Class-agnostic: one NMS capped at `max_seg_num`, then `seg_voting` when
    `voting_thresh` > 0. Finally `torch.sort(descending=True)` of the scores (not stable)
    and the first `max_seg_num`.

    Args:
        segs: `[N, 2]` float32 (grid units); scores `[N]`; labels `[N]` int64.
    Returns:
        (segs `[M, 2]`, scores `[M]`, labels `[M]`), best first.

    Example:
        >>> import torch
        >>> s, p, c = batched_nms(torch.tensor([[0.0, 2.0], [0.0, 2.0]]), torch.tensor([0.9, 0.8]),
        ...                       torch.tensor([0, 1]), 0.1, 0.001, 200)
        >>> c.tolist()
        [0, 1]
    """
    segs, scores, labels = segs.detach().cpu(), scores.detach().cpu(), labels.detach().cpu()
    if segs.shape[0] == 0:
        return torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=labels.dtype)

    def one(s: Tensor, p: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if use_soft_nms:
            dets, inds = soft_nms_1d(s, p, sigma, min_score, max_seg_num)
            return dets[:, :2].to(s.dtype), dets[:, 2].to(p.dtype), c[inds]
        if min_score > 0:
            valid = p > min_score
            s, p, c = s[valid], p[valid], c[valid]
        inds = hard_nms_1d(s, p, iou_threshold, max_seg_num)
        return s[inds], p[inds], c[inds]

    if multiclass:
        parts = [one(segs[idx], scores[idx], labels[idx])
                 for idx in (torch.where(labels == k)[0] for k in torch.unique(labels))]
        new_segs = torch.cat([p[0] for p in parts])
        new_scores = torch.cat([p[1] for p in parts])
        new_labels = torch.cat([p[2] for p in parts])
    else:
        new_segs, new_scores, new_labels = one(segs, scores, labels)
        if voting_thresh > 0:
            new_segs = seg_voting(new_segs, segs, scores, voting_thresh)
    order = torch.sort(new_scores, descending=True).indices[:max_seg_num]
    return new_segs[order], new_scores[order], new_labels[order]
