"""The ActivityNet (AFSD) losses against hand-computed cases (original:
AFSD/anet_video_cls/multisegment_loss.py, membank/train_membank.py:123-204,268-283)."""

from __future__ import annotations

import math

import pytest
import torch

from tallformer.models.afsd_loss import (
    AfsdLoss,
    action_targets,
    boundary_bce,
    boundary_targets,
    giou_loss,
    lr_iou,
    match_priors,
    refinement_targets,
    softmax_focal_loss,
)
from tallformer.models.afsd_outputs import AfsdOutputs
from tallformer.models.afsd_pooling import make_priors


def _fl(p: float, alpha: float) -> float:
    """-alpha (1 - p_t)^2 log p_t with p_t = p + 1e-6."""
    pt = p + 1e-6
    return -alpha * (1 - pt) ** 2 * math.log(pt)


def _bce_logits(z: float, u: float) -> float:
    return max(z, 0.0) - z * u + math.log1p(math.exp(-abs(z)))


def test_match_priors_by_level_ranges() -> None:
    """16-frame clip, levels of 2 and 1 cells (priors at frames 4, 12 | 8), ranges (0, 8] and
    (4, 16]: valid when both distances >= 0 and lower < max(l, r) <= upper."""
    priors = make_priors([2, 1])
    ranges = torch.tensor([[0.0, 8.0], [4.0, 16.0]])
    labels, targets = match_priors(priors, torch.tensor([[2.0, 8.0]]), 16, ranges)
    assert labels.tolist() == [1, 0, 1]  # frame 12 is past the end of the GT
    torch.testing.assert_close(targets[[0, 2]], torch.tensor([[2.0, 4.0], [6.0, 0.0]]))
    # lower bound exclusive, upper inclusive, distance 0 allowed
    labels, targets = match_priors(priors, torch.tensor([[4.0, 8.0]]), 16, ranges)
    assert labels.tolist() == [1, 0, 0]  # prior 0: l = 0, r = 4; prior 2: max 4 is not > 4
    labels, targets = match_priors(priors, torch.tensor([[0.0, 12.0]]), 16, ranges)
    assert labels.tolist() == [1, 0, 1]  # prior 0: max 8 <= 8; prior 2: 8 in (4, 16]
    torch.testing.assert_close(targets[0], torch.tensor([4.0, 8.0]))
    # the smallest l + r wins; equal areas: the first GT
    labels, targets = match_priors(priors, torch.tensor([[0.0, 10.0], [1.0, 7.0], [2.0, 8.0]]), 16, ranges)
    assert labels[0] == 1
    torch.testing.assert_close(targets[0], torch.tensor([3.0, 3.0]))  # (1, 7): area 6 first
    labels, targets = match_priors(priors, torch.zeros(0, 2), 16, ranges)
    assert labels.tolist() == [0, 0, 0]
    assert targets.shape == (3, 2)


def test_iou_and_giou_of_distance_pairs() -> None:
    pred = torch.tensor([[3.0, 5.0], [12.0, 12.0], [0.0, 0.0]])
    target = torch.tensor([[2.0, 4.0], [6.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(lr_iou(pred, target), torch.tensor([6 / 8, 6 / 24, 0.0]))
    # segments through one point: the enclosing length is the union, GIoU = IoU
    torch.testing.assert_close(giou_loss(pred, target), torch.tensor([1 - 6 / 8, 1 - 6 / 24, 1.0]))
    assert torch.isfinite(giou_loss(pred, target)).all()  # eps guards the empty case


def test_softmax_focal_loss_alpha_on_background_and_action() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, math.log(3.0)]])
    labels = torch.tensor([1, 0, 0])
    expected = _fl(0.5, 0.75) + _fl(0.75, 0.25) + _fl(0.25, 0.25)
    assert float(softmax_focal_loss(logits, labels)) == pytest.approx(expected, rel=1e-6)


def test_refinement_targets_demote_poor_positives() -> None:
    loc = torch.tensor([[3.0, 5.0], [1.0, 1.0], [12.0, 12.0]])
    targets = torch.tensor([[2.0, 4.0], [0.0, 0.0], [6.0, 0.0]])
    labels = torch.tensor([1, 0, 1])
    refined, offsets = refinement_targets(loc, targets, labels, 0.6)
    assert refined.tolist() == [1, 0, 0]  # IoU 0.75 and 0.25 < min(0.6, 0.75)
    torch.testing.assert_close(offsets[0], torch.tensor([-0.25, -0.25]))  # (g - p) / (w / 2)
    # the best positive always stays: with a threshold above every IoU, only it is kept
    refined, _ = refinement_targets(loc, targets, labels, 0.9)
    assert refined.tolist() == [1, 0, 0]
    refined, _ = refinement_targets(loc, targets, torch.zeros(3, dtype=torch.long), 0.6)
    assert refined.tolist() == [0, 0, 0]


def test_boundary_targets_round_half_to_even_and_clip() -> None:
    t = boundary_targets(torch.tensor([[1.5, 11.5]]), 16)
    # d = max(1, 2) = 2: start round(0.5)..round(2.5) = 0..2, end round(10.5)..round(12.5) = 10..12
    assert torch.nonzero(t[0]).flatten().tolist() == [0, 1, 2]
    assert torch.nonzero(t[1]).flatten().tolist() == [10, 11, 12]
    t = boundary_targets(torch.tensor([[0.0, 15.0], [5.0, 5.0]]), 16)  # d = 2; e <= s skipped
    assert torch.nonzero(t[0]).flatten().tolist() == [0, 1]
    assert torch.nonzero(t[1]).flatten().tolist() == [14, 15]
    t = boundary_targets(torch.tensor([[10.0, 70.0]]), 100)  # d = 6
    assert torch.nonzero(t[0]).flatten().tolist() == list(range(7, 14))
    assert boundary_targets(torch.zeros(0, 2), 8).sum() == 0


def test_boundary_bce_on_mean_tanh() -> None:
    feats = torch.full((1, 4, 3), math.atanh(0.25))
    target = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    expected = (2 * -math.log(0.25) + 2 * -math.log(0.75)) / 4
    assert float(boundary_bce(feats, target)) == pytest.approx(expected, rel=1e-6)
    assert float(boundary_bce(torch.zeros(1, 2, 3), torch.ones(1, 2))) == pytest.approx(100.0)  # log clamp


def test_action_targets_first_valid_gt() -> None:
    segs = [torch.tensor([[5.0, 5.0], [1.0, 4.0], [0.0, 9.0]]), torch.zeros(0, 2)]
    labels = [torch.tensor([7, 2, 3]), torch.zeros(0, dtype=torch.long)]
    assert action_targets(segs, labels, torch.device("cpu")).tolist() == [3, 0]


def _outputs() -> AfsdOutputs:
    """A 16-frame clip, levels of 2 and 1 cells, 3 priors; values of the hand case below."""
    c = math.atanh(0.25)
    loc = torch.tensor([[[3.0, 5.0], [1.0, 1.0], [12.0, 12.0]]], requires_grad=True)
    return AfsdOutputs(
        action_logits=torch.tensor([[0.0, 0.0, 0.0, math.log(2.0), 0.0]]),
        loc=loc, conf=torch.zeros(1, 3, 2),
        prop_loc=torch.tensor([[[0.0, 0.5], [0.0, 0.0], [0.0, 0.0]]], requires_grad=True),
        prop_conf=torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0], [0.0, math.log(3.0)]]]),
        center=torch.tensor([[[0.0], [5.0], [1.0]]], requires_grad=True), priors=make_priors([2, 1]),
        start=torch.full((1, 16, 2), c), end=torch.full((1, 16, 2), c),
        start_loc_prop=torch.full((1, 2, 2), c), end_loc_prop=torch.full((1, 2, 2), c),
        start_conf_prop=torch.full((1, 2, 2), c), end_conf_prop=torch.full((1, 2, 2), c),
    )


def test_afsd_loss_hand_computed_case() -> None:
    """GT (2, 8), label 2, in a 16-frame clip. Positives: priors 0 (targets 2, 4) and 2 (6, 0);
    prior 2's coarse IoU 0.25 < 0.6 demotes it for the refinement."""
    loss = AfsdLoss(16, [[0, 8], [4, 16]], refine_iou=0.6)
    out = _outputs()
    got = loss(out, [torch.tensor([[2.0, 8.0]])], [torch.tensor([2])])
    lg3, lg4 = -math.log(0.25), -math.log(0.75)
    expected = {
        "loss_loc": ((1 - 0.75) + (1 - 0.25)) / 2,
        "loss_cls": (_fl(0.5, 0.75) + _fl(0.5, 0.25) + _fl(0.5, 0.75)) / 2,
        "loss_prop_loc": (0.5 * 0.25 ** 2 + 0.5 * 0.75 ** 2) / 1,  # offsets (-0.25, -0.25) vs (0, 0.5)
        "loss_prop_cls": (_fl(0.25, 0.75) + _fl(0.5, 0.25) + _fl(0.25, 0.25)) / 1,
        # refined (3, 7) vs (2, 4): IoU 0.6; prior 2 unrefined (12, 12) vs (6, 0): 0.25
        "loss_quality": (_bce_logits(0.0, 0.6) + _bce_logits(1.0, 0.25)) / 2,
        # start frames 1..3, end 7..9 of 16; level 0 samples frames 0 and 8
        "loss_start": (3 * lg3 + 13 * lg4) / 16 + 0.1 * 2 * lg4,
        "loss_end": (3 * lg3 + 13 * lg4) / 16 + 0.1 * 2 * (lg3 + lg4) / 2,
        "loss_action": math.log(3.0),  # softmax of (0, 0, 0, ln 2, 0) at class 2 + 1
    }
    assert {k: float(v.detach()) for k, v in got.items() if k != "loss"} == pytest.approx(expected, rel=1e-5)
    assert float(got["loss"].detach()) == pytest.approx(sum(expected.values()), rel=1e-5)
    # weights: lw on both localisation terms, cw on cls, prop_cls and quality
    weighted = AfsdLoss(16, [[0, 8], [4, 16]], 0.6, loc_weight=2.0, cls_weight=3.0, action_weight=0.5)(
        _outputs(), [torch.tensor([[2.0, 8.0]])], [torch.tensor([2])])
    e = expected
    assert float(weighted["loss"].detach()) == pytest.approx(
        2 * (e["loss_loc"] + e["loss_prop_loc"]) + 3 * (e["loss_cls"] + e["loss_prop_cls"] + e["loss_quality"])
        + e["loss_start"] + e["loss_end"] + 0.5 * e["loss_action"], rel=1e-5)


def test_quality_target_detached_or_live() -> None:
    """Ours detaches the IoU target; `detach_quality_target=False` is the original's live
    target, whose gradient dL/du = -logit also reaches loc and prop_loc."""
    gts, labels = [torch.tensor([[2.0, 8.0]])], [torch.tensor([2])]
    for detach in (True, False):
        out = _outputs()
        q = AfsdLoss(16, [[0, 8], [4, 16]], 0.6, detach_quality_target=detach)(out, gts, labels)
        q["loss_quality"].backward()
        assert (out.loc.grad is None) is detach
        if not detach:
            assert out.loc.grad[0, 2].abs().sum() > 0  # prior 2: logit 1, u = 0.25
            assert out.prop_loc.grad[0, 0].abs().sum() == 0  # prior 0: logit 0 -> dL/du = 0


def test_afsd_loss_without_positives_and_batch_average() -> None:
    loss = AfsdLoss(16, [[0, 8], [4, 16]], 0.6)
    out = _outputs()
    got = loss(out, [torch.zeros(0, 2)], [torch.zeros(0, dtype=torch.long)])
    assert float(got["loss_loc"].detach()) == 0.0
    assert float(got["loss_prop_loc"].detach()) == 0.0
    assert float(got["loss_quality"].detach()) == pytest.approx(2.0 * 1e-9)  # mean centre logit x 1e-9
    assert got["loss_quality"].requires_grad  # stays in the graph (DDP sees every parameter used)
    assert float(got["loss_action"]) == pytest.approx(-math.log(1 / 6))  # background target
    # two clips: the per-clip terms are averaged
    one = loss(_outputs(), [torch.tensor([[2.0, 8.0]])], [torch.tensor([2])])
    two_out = AfsdOutputs(*(torch.cat([a, a]) if a.dim() == 3 and name != "priors" else a
                            for name, a in _outputs()._asdict().items()))
    two_out = two_out._replace(action_logits=torch.cat([two_out.action_logits] * 2))
    two = loss(two_out, [torch.tensor([[2.0, 8.0]]), torch.zeros(0, 2)],
               [torch.tensor([2]), torch.zeros(0, dtype=torch.long)])
    assert float(two["loss_loc"].detach()) == pytest.approx((float(one["loss_loc"].detach()) + 0.0) / 2)
    with pytest.raises(ValueError, match="one of each per clip"):
        loss(_outputs(), [], [])
