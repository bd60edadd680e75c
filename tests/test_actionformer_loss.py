"""ActionFormer's label assignment and losses against the independent re-statement: centre
sampling, regression ranges, ties within 1e-3 (multi-label), the focal loss with its label
smoothing, the centre DIoU, and the loss normaliser (a buffer, so a checkpoint keeps it)."""

from __future__ import annotations

import pytest
import torch

import actionformer_reference as ref
from tallformer.models.actionformer.loss import ActionFormerLoss, ctr_diou_loss_1d
from tallformer.models.actionformer.net import ActionFormerNet
from tallformer.models.actionformer.points import PointGenerator
from tallformer.models.actionformer.targets import assign_points, frames_to_grid
from tallformer.models.errors import ModelError

single_thread = ref.single_thread  # autouse: one intra-op thread

RANGES = ((0, 4), (4, 8), (8, 1000))


def points(lengths: tuple[int, ...] = (32, 16, 8)) -> torch.Tensor:
    return torch.cat(PointGenerator([1, 2, 4], RANGES)(list(lengths)))


@pytest.mark.parametrize("radius", [1.5, None, 0.5])
def test_assignment_equals_the_loops(radius: float | None) -> None:
    torch.manual_seed(0)
    starts = torch.rand(6) * 28
    gts = torch.stack([starts, starts + 0.5 + torch.rand(6) * 12], 1)
    gts = torch.cat([gts, gts[:1], torch.tensor([[3.0, 9.0], [3.0, 9.0005], [-0.7, 2.2]])])  # ties
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 1, 0, 2, 1])
    pts = points()
    cls, reg = assign_points(pts, gts, labels, 3, "none" if radius is None else "radius",
                             1.5 if radius is None else radius)
    cls_ref, reg_ref = ref.label_points(pts, gts, labels, 3, radius)
    assert torch.equal(cls, cls_ref)
    pos = cls.sum(1) > 0  # the regression target matters (and is defined) on positives only
    assert int(pos.sum()) >= 5
    torch.testing.assert_close(reg[pos], reg_ref[pos], rtol=0, atol=0)
    assert int((cls.sum(1) > 1).sum()) > 0  # some points carry two labels (equal lengths)


def test_assignment_rules_at_their_boundaries() -> None:
    pts = torch.tensor([[2.0, 0.0, 4.0, 1.0], [2.0, 0.0, 3.0, 1.0], [2.0, 5.0, 9.0, 1.0]])
    # d = (2, 2): inside, max distance 2 inside [0, 4] and [0, 3] (inclusive), not in [5, 9]
    cls, reg = assign_points(pts, torch.tensor([[0.0, 4.0]]), torch.tensor([1]), 2)
    assert cls[:, 1].tolist() == [1.0, 1.0, 0.0]
    assert reg[0].tolist() == [2.0, 2.0]
    # max distance exactly hi = 4: kept (inclusive); a point on the boundary: not inside (strict)
    cls, _ = assign_points(torch.tensor([[4.0, 0.0, 4.0, 8.0], [0.0, 0, 100, 8.0]]), torch.tensor([[0.0, 8.0]]),
                           torch.tensor([0]), 1)
    assert cls[:, 0].tolist() == [1.0, 0.0]
    empty_cls, empty_reg = assign_points(pts, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 2)
    assert empty_cls.abs().sum() == 0
    assert empty_reg.shape == (3, 2)


def test_frames_to_grid_is_the_release_conversion() -> None:
    # (f - 0.5 * num_frames) / feat_stride with feat_stride = num_frames = 2
    assert frames_to_grid(torch.tensor([[10.0, 31.0]]), 2, 2).tolist() == [[4.5, 15.0]]


def test_ctr_diou() -> None:
    torch.manual_seed(1)
    a, b = torch.rand(50, 2) * 5, torch.rand(50, 2) * 5
    torch.testing.assert_close(ctr_diou_loss_1d(a, b), ref.diou(a, b).float())
    with pytest.raises(ModelError, match="non-negative"):
        ctr_diou_loss_1d(torch.tensor([[-1.0, 1.0]]), torch.ones(1, 2))


def _outputs(net: ActionFormerNet, feats: torch.Tensor, lengths: list[int]):
    net.train()
    for m in net.modules():
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.0
    return net(*net.pad(feats, lengths))


@pytest.mark.parametrize(("smoothing", "loss_weight"), [(0.0, 1.0), (0.1, -1.0)])
def test_losses_equal_the_reference(smoothing: float, loss_weight: float) -> None:
    torch.manual_seed(2)
    net = ActionFormerNet(8, 3, backbone_arch=(1, 1, 2), n_head=2, n_mha_win_size=5, embd_dim=16, fpn_dim=16,
                          head_dim=16, regression_range=RANGES, max_seq_len=32)
    ref.randomize(net, 3)
    out = _outputs(net, torch.randn(2, 8, 30), [30, 21])
    gts = [torch.tensor([[2.0, 9.0], [12.5, 27.0], [14.0, 16.0]]), torch.tensor([[-0.5, 4.0], [6.0, 20.0]])]
    labels = [torch.tensor([0, 2, 1]), torch.tensor([1, 1])]
    crit = ActionFormerLoss(3, label_smoothing=smoothing, loss_weight=loss_weight, init_loss_norm=100.0)
    got = crit(out.masks, out.cls_logits, out.offsets, out.points, gts, labels)
    per_sample = [{"cls": [c[b] for c in out.cls_logits], "off": [o[b] for o in out.offsets],
                   "mask": [m[b] for m in out.masks], "points": out.points} for b in range(2)]
    want, norm = ref.losses(per_sample, gts, labels, 3, 100.0, 1.5, smoothing, loss_weight)
    for key in ("loss_cls", "loss_reg", "loss"):
        assert float(got[key].detach()) == pytest.approx(want[key], rel=1e-5)
    assert float(crit.loss_normalizer) == norm  # the same float64 recurrence
    # a second step uses the updated normaliser
    got2 = crit(out.masks, out.cls_logits, out.offsets, out.points, gts, labels)
    want2, norm2 = ref.losses(per_sample, gts, labels, 3, norm, 1.5, smoothing, loss_weight)
    assert float(got2["loss_cls"].detach()) == pytest.approx(want2["loss_cls"], rel=1e-5)
    assert float(crit.loss_normalizer) == norm2
    got["loss"].backward()
    assert net.cls_head.cls_head.conv.weight.grad is not None


def test_no_positives_and_bad_labels() -> None:
    crit = ActionFormerLoss(2, init_loss_norm=10.0)
    pts = [torch.tensor([[0.0, 0, 4, 1], [1.0, 0, 4, 1]])]
    masks, logits = [torch.ones(1, 2, dtype=torch.bool)], [torch.zeros(1, 2, 2, requires_grad=True)]
    offsets = [torch.ones(1, 2, 2, requires_grad=True)]
    out = crit(masks, logits, offsets, pts, [torch.zeros(0, 2)], [torch.zeros(0, dtype=torch.long)])
    assert float(out["loss_reg"].detach()) == 0.0
    assert float(crit.loss_normalizer) == pytest.approx(0.9 * 10 + 0.1)
    out["loss"].backward()
    with pytest.raises(ModelError, match="outside"):
        crit(masks, logits, offsets, pts, [torch.tensor([[0.0, 1.0]])], [torch.tensor([2])])


def test_normaliser_is_saved_and_restored() -> None:
    crit = ActionFormerLoss(2, init_loss_norm=100.0)
    crit.loss_normalizer.fill_(37.25)
    state = crit.state_dict()
    assert state["loss_normalizer"].dtype == torch.float64
    fresh = ActionFormerLoss(2, init_loss_norm=100.0)
    assert float(fresh.loss_normalizer) == 100.0
    fresh.load_state_dict(state)
    assert float(fresh.loss_normalizer) == 37.25
