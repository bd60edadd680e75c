"""ActionFormer's inference after the network against the independent re-statement: per-level
candidates (strict thresholds, per-level top-k), Gaussian soft-NMS and hard NMS as the
release's C++ loops, voting, the batched driver, feature grid to seconds (with -0.0), and
the final detections of a random network end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import actionformer_reference as ref
from tallformer.models.actionformer.net import ActionFormerNet
from tallformer.models.actionformer.nms import batched_nms, hard_nms_1d, soft_nms_1d
from tallformer.models.actionformer.postprocess import (
    ActionFormerPostProcess,
    grid_to_seconds,
    level_candidates,
)

single_thread = ref.single_thread  # autouse: one intra-op thread


def candidates_set(n: int = 120, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Overlapping segments in clusters (so NMS has work), distinct random scores."""
    gen = torch.Generator().manual_seed(seed)
    centres = (torch.randint(0, 8, (n,), generator=gen) * 10).float() + torch.rand(n, generator=gen) * 3
    half = 1 + torch.rand(n, generator=gen) * 4
    segs = torch.stack([centres - half, centres + half], 1)
    scores = torch.rand(n, generator=gen) * 0.9 + 0.05
    labels = torch.randint(0, classes, (n,), generator=gen)
    return segs, scores, labels


@pytest.mark.parametrize(("min_score", "ties"), [(0.001, False), (0.3, False), (0.2, True)])
def test_soft_nms_equals_the_c_loop(min_score: float, ties: bool) -> None:
    segs, scores, _ = candidates_set()
    if ties:  # many equal scores: the first maximum in the (reordered) slots wins
        scores = (scores * 4).round() / 4 + 0.25
    dets, inds = soft_nms_1d(segs, scores, 0.5, min_score)
    dets_ref, inds_ref = ref.soft_nms(segs, scores, 0.5, min_score)
    assert inds.tolist() == inds_ref
    torch.testing.assert_close(dets, torch.tensor(dets_ref), rtol=1e-6, atol=1e-7)
    if min_score > 0.1:
        assert len(inds) < len(scores)  # candidates were removed (and the slots reordered)
    # the cap keeps the first selections
    capped, capped_inds = soft_nms_1d(segs, scores, 0.5, min_score, max_num=7)
    assert capped_inds.tolist() == inds_ref[:7]
    torch.testing.assert_close(capped, dets[:7])


def test_soft_nms_ties_pick_the_first_slot_and_never_test_the_first_pick() -> None:
    segs = torch.tensor([[0.0, 1.0], [5.0, 6.0], [10.0, 11.0]])
    _, inds = soft_nms_1d(segs, torch.tensor([0.5, 0.5, 0.5]), 0.5, 0.9)
    assert inds.tolist() == [0]  # below min_score but selected first; the others dropped
    _, inds = soft_nms_1d(segs, torch.tensor([0.4, 0.5, 0.5]), 0.5, 0.0)
    assert inds.tolist() == [1, 2, 0]
    # removing B and C moves the last slots into theirs (F to 1, then E to 2), so of the tied
    # D, E, F the release picks F first
    segs = torch.tensor([[0.0, 10.0], [0.0, 10.0], [0.0, 10.0], [20.0, 21.0], [30.0, 31.0], [40.0, 41.0]])
    scores = torch.tensor([1.0, 0.9, 0.9, 0.6, 0.6, 0.6])
    assert soft_nms_1d(segs, scores, 0.5, 0.5)[1].tolist() == [0, 5, 4, 3]
    assert ref.soft_nms(segs, scores, 0.5, 0.5)[1] == [0, 5, 4, 3]


def test_hard_nms_equals_the_c_loop() -> None:
    segs, scores, _ = candidates_set(seed=1)
    keep = hard_nms_1d(segs, scores, 0.1)
    assert keep.tolist() == ref.hard_nms(segs, scores, 0.1)
    # IoU exactly at the threshold suppresses (>=): IoU = 1 / (2 (2 + 1e-6) - 1) in float32
    iou = np.float32(1) / ((np.float32(2) + np.float32(1e-6)) * 2 - np.float32(1))
    pair, pair_scores = torch.tensor([[0.0, 2.0], [1.0, 3.0]]), torch.tensor([0.9, 0.8])
    assert hard_nms_1d(pair, pair_scores, float(iou)).tolist() == [0]
    assert hard_nms_1d(pair, pair_scores, float(np.nextafter(iou, np.float32(1)))).tolist() == [0, 1]


@pytest.mark.parametrize(("soft", "multiclass", "voting"), [
    (True, True, 0.7), (False, True, 0.7), (True, False, 0.7), (False, False, 0.7), (True, False, 0.0)])
def test_batched_nms_equals_the_reference(soft: bool, multiclass: bool, voting: float) -> None:
    segs, scores, labels = candidates_set(seed=2)
    got = batched_nms(segs, scores, labels, 0.1, 0.001, 30, use_soft_nms=soft, multiclass=multiclass,
                      sigma=0.5, voting_thresh=voting)
    want = ref.batched(segs, scores, labels, 0.1, 0.001, 30, soft, multiclass, 0.5, voting)
    assert got[2].tolist() == want[2].tolist()
    torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    assert 0 < len(got[0]) <= 30
    if soft:
        assert len(got[0]) == 30


def test_hard_nms_filters_strictly_above_min_score() -> None:
    segs = torch.tensor([[0.0, 1.0], [5.0, 6.0]])
    _, scores, _ = batched_nms(segs, torch.tensor([0.5, 0.25]), torch.tensor([0, 0]), 0.1, 0.25, 10,
                               use_soft_nms=False)
    assert scores.tolist() == [0.5]
    _, scores, _ = batched_nms(segs, torch.tensor([0.5, 0.25]), torch.tensor([0, 0]), 0.1, 0.25, 10)
    assert scores.tolist() == [0.5, 0.25]  # soft-NMS keeps >= min_score


def test_level_candidates_thresholds_are_strict_and_top_k_is_per_level() -> None:
    k = 2
    prob = torch.tensor([[0.5, 0.001], [0.2, 0.9], [0.3, 0.4]])
    logits = torch.log(prob / (1 - prob))
    pts = torch.tensor([[0.0, 0, 9, 2], [2.0, 0, 9, 2], [4.0, 0, 9, 2]])
    off = torch.tensor([[1.0, 1.0], [0.0, 0.025], [0.5, 0.5]])
    mask = torch.tensor([True, True, True])
    segs, scores, labels = level_candidates(logits, off, pts, mask, 0.2, 4, 0.05)
    # > 0.2 leaves 0.9, 0.5, 0.4, 0.3 (0.2 itself is out); 0.9 has length 0.05: out (strict)
    assert labels.tolist() == [0, 1, 0]
    assert scores.tolist() == pytest.approx([0.5, 0.4, 0.3])
    assert segs.tolist() == [[-2.0, 2.0], [3.0, 5.0], [3.0, 5.0]]
    _, top, _ = level_candidates(logits, off, pts, mask, 0.0, 2, 0.0)
    assert top.tolist() == pytest.approx([0.9, 0.5])
    _, masked, labels = level_candidates(logits, off, pts, torch.tensor([True, False, True]), 0.0, 10, 0.0)
    assert masked.tolist() == pytest.approx([0.5, 0.4, 0.3, 0.001])  # step 1 masked out
    assert labels.tolist() == [0, 1, 0, 1]
    assert k == 2


def test_grid_to_seconds_clamps_with_negative_zero() -> None:
    out = grid_to_seconds(torch.tensor([[-3.0, 0.0], [-0.5, 20.0], [10.0, 70.0]]), 2, 2, 10.0, 6.0)
    assert out.flatten().tolist() == pytest.approx([0.0, 0.1, 0.0, 4.1, 2.1, 6.0])
    assert math.copysign(1.0, out[0, 0].item()) == -1.0  # the release's -0.0
    assert math.copysign(1.0, out[1, 0].item()) == 1.0  # (-1 + 1) / fps = +0.0 stays +0.0
    torch.testing.assert_close(out, ref.to_seconds(torch.tensor([[-3.0, 0.0], [-0.5, 20.0], [10.0, 70.0]]),
                                                   2, 2, 10.0, 6.0))


@pytest.mark.parametrize(("method", "multiclass"), [("soft", True), ("hard", False)])
def test_detections_of_a_random_network_equal_the_reference(method: str, multiclass: bool) -> None:
    torch.manual_seed(4)
    net = ActionFormerNet(8, 3, backbone_arch=(1, 1, 2), n_head=2, n_mha_win_size=5, embd_dim=16, fpn_dim=16,
                          head_dim=16, regression_range=((0, 4), (4, 8), (8, 1000)), max_seq_len=32).eval()
    ref.randomize(net, 5)
    feats = torch.randn(1, 8, 45)
    post = ActionFormerPostProcess(pre_nms_thresh=0.05, pre_nms_topk=20, max_seg_num=25, nms_method=method,
                                   multiclass_nms=multiclass, min_score=0.01)
    with torch.no_grad():
        out = net(*net.pad(feats))
        dets = post([c[0] for c in out.cls_logits], [o[0] for o in out.offsets], out.points,
                    [m[0] for m in out.masks], fps=7.5, duration=11.0, feat_stride=2, num_frames=2)
        x, mask = ref.pad(feats[0], 45, ref.Arch(3, (1, 1, 2), n_head=2, windows=(5, 5, 5),
                                                 regression_range=((0, 4), (4, 8), (8, 1000)), max_seq_len=32),
                          training=False)
        r = ref.network(net.state_dict(), ref.Arch(3, (1, 1, 2), n_head=2, windows=(5, 5, 5),
                                                   regression_range=((0, 4), (4, 8), (8, 1000)), max_seq_len=32),
                        x, mask)
    segs, scores, labels = ref.candidates(r, 0.05, 20, 0.05)
    if method != "none":
        segs, scores, labels = ref.batched(segs, scores, labels, 0.1, 0.01, 25, method == "soft", multiclass,
                                           0.5, 0.7)
    want = ref.to_seconds(segs, 2, 2, 7.5, 11.0)
    assert len(dets) == len(want) > 10
    assert dets.labels.tolist() == labels.tolist()
    torch.testing.assert_close(dets.scores, scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dets.segments, want, rtol=1e-4, atol=1e-4)
    assert bool(((dets.segments >= 0) & (dets.segments <= 11.0)).all())
