"""Anchor head: anchors (§10), assignment (§11, §18.9), focal + DIoU losses (§11),
post-processing (§12) and the head's init and parameter count (§9, §17)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from tallformer.models.anchor_head import (
    IGNORE,
    NEGATIVE,
    AnchorHead,
    Detections,
    anchor_scales,
    assign_anchors,
    diou_loss,
    flatten_level,
    make_anchors,
    merge_video_detections,
)

PAPER_LENGTHS = [60, 30, 15, 8, 4]
PAPER_STRIDES = [8, 16, 32, 64, 128]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --------------------------------------------------------------------------- anchors


def test_anchor_count_and_lengths_table() -> None:
    scales = anchor_scales(2.0, 5)
    assert scales == pytest.approx([2, 2.2974, 2.6390, 3.0314, 3.4822], abs=1e-4)
    anchors = make_anchors(PAPER_LENGTHS, PAPER_STRIDES, scales)
    assert anchors.shape == (585, 2)
    table = {  # spec §10
        8: [16, 18.38, 21.11, 24.25, 27.86],
        16: [32, 36.76, 42.22, 48.50, 55.72],
        32: [64, 73.52, 84.45, 97.01, 111.43],
        64: [128, 147.03, 168.90, 194.01, 222.86],
        128: [256, 294.07, 337.79, 388.02, 445.72],
    }
    start = 0
    for stride, n in zip(PAPER_STRIDES, PAPER_LENGTHS):
        level = anchors[start:start + 5 * n].reshape(n, 5, 2)
        start += 5 * n
        lengths = level[..., 1] - level[..., 0]
        assert torch.allclose(lengths, torch.tensor(table[stride])[None].expand(n, 5), atol=0.006)
        centres = level.mean(dim=-1)  # centre t * stride, offset 0; row t * 5 + a
        assert torch.allclose(centres, (torch.arange(n) * stride).float()[:, None].expand(n, 5))


def test_flatten_level_matches_channel_layout() -> None:
    """cls channel a*K + c of position t is row t*A + a, column c (spec §9)."""
    a, k, t = 5, 3, 4
    x = torch.arange(a * k * t, dtype=torch.float32).reshape(1, a * k, t)
    flat = flatten_level(x, k)
    assert flat.shape == (1, t * a, k)
    for tt in range(t):
        for aa in range(a):
            for c in range(k):
                assert flat[0, tt * a + aa, c] == x[0, aa * k + c, tt]


# --------------------------------------------------------------------------- assignment


ANCHORS = torch.tensor([[0.0, 10.0], [0.0, 20.0], [5.0, 15.0], [30.0, 40.0], [100.0, 110.0]])


def test_assign_thresholds() -> None:
    # IoUs with gt [0, 10]: 1, 0.5, 1/3, 0, 0
    out = assign_anchors(ANCHORS, torch.tensor([[0.0, 10.0]]))
    assert out.tolist() == [0, IGNORE, NEGATIVE, NEGATIVE, NEGATIVE]


def test_assign_argmax_gt_and_low_quality() -> None:
    gts = torch.tensor([[30.0, 39.0], [0.0, 4.0]])
    out = assign_anchors(ANCHORS, gts)
    # [30, 40] vs gt0: IoU 0.9 -> gt 0; [0, 10] vs gt1: IoU 0.4, gt1's best -> low-quality positive
    assert out.tolist() == [1, NEGATIVE, NEGATIVE, 0, NEGATIVE]
    # without low-quality matching (min_pos_iou above every IoU) [0, 10] is just in the ignore band
    out = assign_anchors(ANCHORS, gts, min_pos_iou=0.95)
    assert out.tolist() == [IGNORE, NEGATIVE, NEGATIVE, 0, NEGATIVE]


def test_assign_low_quality_ties_all_positive() -> None:
    anchors = torch.tensor([[0.0, 10.0], [10.0, 20.0], [40.0, 50.0]])
    out = assign_anchors(anchors, torch.tensor([[5.0, 15.0]]))  # IoU 1/3 with both
    assert out.tolist() == [0, 0, NEGATIVE]


def test_assign_gt_without_overlap_does_not_make_everything_positive() -> None:
    """spec §18.9: min_pos_iou 0 and a gt with best IoU 0 must not claim every anchor."""
    out = assign_anchors(ANCHORS, torch.tensor([[500.0, 510.0]]), min_pos_iou=0.0)
    assert out.tolist() == [NEGATIVE] * 5
    out = assign_anchors(ANCHORS, torch.tensor([[500.0, 510.0], [0.0, 10.0]]))
    assert out.tolist() == [1, IGNORE, NEGATIVE, NEGATIVE, NEGATIVE]


def test_assign_empty_gt_and_ignore_regions() -> None:
    empty = torch.zeros(0, 2)
    assert assign_anchors(ANCHORS, empty).tolist() == [NEGATIVE] * 5
    ignore = torch.tensor([[28.0, 45.0]])  # covers [30, 40] fully
    assert assign_anchors(ANCHORS, empty, ignore, ignore_iof_thr=0.5).tolist() == [
        NEGATIVE, NEGATIVE, NEGATIVE, IGNORE, NEGATIVE]
    # disabled (paper: -1): the region is not used
    assert assign_anchors(ANCHORS, empty, ignore, ignore_iof_thr=-1.0).tolist() == [NEGATIVE] * 5
    # an ignored anchor never becomes positive, not even as a gt's best match
    gt = torch.tensor([[30.0, 40.0]])
    assert assign_anchors(ANCHORS, gt, ignore, ignore_iof_thr=0.5).tolist() == [
        NEGATIVE, NEGATIVE, NEGATIVE, IGNORE, NEGATIVE]
    assert assign_anchors(ANCHORS, gt, ignore, ignore_iof_thr=-1.0)[3].item() == 0


# --------------------------------------------------------------------------- losses


def test_diou_hand_values() -> None:
    pred = torch.tensor([[0.0, 10.0], [0.0, 10.0], [0.0, 2.0]])
    target = torch.tensor([[0.0, 10.0], [5.0, 15.0], [4.0, 6.0]])
    # identical: 0; half overlap: 1 - 5/15 + 5^2/15^2; disjoint: 1 - 0 + 4^2/6^2
    expected = torch.tensor([0.0, 1 - 5 / 15 + 25 / 225, 1 + 16 / 36])
    torch.testing.assert_close(diou_loss(pred, target), expected, atol=1e-5, rtol=1e-5)


def _small_head(num_classes: int = 3) -> AnchorHead:
    return AnchorHead(num_classes=num_classes, in_channels=8, feat_channels=8, stacked_convs=1,
                      anchor_strides=[8, 16], octave_base_scale=2.0, scales_per_octave=2)


def _outputs(head: AnchorHead, b: int, lengths: list[int]) -> tuple[list[Tensor], list[Tensor]]:
    a, k = head.num_anchors, head.num_classes
    cls = [torch.randn(b, a * k, n, requires_grad=True) for n in lengths]
    reg = [(0.3 * torch.randn(b, a * 2, n)).requires_grad_() for n in lengths]
    return cls, reg


def _focal_by_hand(logit: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    p = logit.sigmoid()
    log_p, log_1mp = torch.nn.functional.logsigmoid(logit), torch.nn.functional.logsigmoid(-logit)
    pos = -alpha * (1 - p) ** gamma * log_p
    neg = -(1 - alpha) * p ** gamma * log_1mp
    return torch.where(target > 0, pos, neg)


def test_loss_equals_focal_and_diou_by_hand() -> None:
    """Focal = torchvision's with one-hot targets (spec §11); normaliser N = sum max(#pos, 1)."""
    head = _small_head()
    lengths = [12, 6]
    outputs = _outputs(head, 2, lengths)
    gts = [torch.tensor([[10.0, 30.0], [50.0, 66.0]]), torch.zeros(0, 2)]
    labels = [torch.tensor([2, 0]), torch.zeros(0, dtype=torch.long)]
    losses = head.loss(outputs, gts, labels, None)
    assert set(losses) == {"loss_cls", "loss_reg", "loss"}

    anchors = make_anchors(lengths, [8, 16], anchor_scales(2.0, 2))
    cls = torch.cat([flatten_level(c, 3) for c in outputs[0]], dim=1)
    reg = torch.cat([flatten_level(r, 2) for r in outputs[1]], dim=1)
    fl_sum, reg_sum, norm = 0.0, 0.0, 0
    for i in range(2):
        assigned = assign_anchors(anchors, gts[i])
        pos = assigned >= 0
        target = torch.zeros_like(cls[i])
        target[pos, labels[i][assigned[pos]]] = 1
        keep = assigned != IGNORE
        fl_sum += _focal_by_hand(cls[i][keep], target[keep]).sum()
        w = reg[i][pos]
        wa = anchors[pos, 1] - anchors[pos, 0]
        ca = anchors[pos].mean(dim=1)
        c = ca + wa * w[:, 0]
        width = wa * torch.exp(w[:, 1].clamp(max=1.0))
        pred = torch.stack([c - width / 2, c + width / 2], dim=1)
        reg_sum += diou_loss(pred, gts[i][assigned[pos]]).sum()
        norm += max(int(pos.sum()), 1)
    assert norm > 2  # video 0 has positives, video 1 adds 1
    torch.testing.assert_close(losses["loss_cls"], fl_sum / norm)
    torch.testing.assert_close(losses["loss_reg"], reg_sum / norm)
    torch.testing.assert_close(losses["loss"], losses["loss_cls"] + losses["loss_reg"])
    losses["loss"].backward()
    assert all(t.grad is not None for t in (*outputs[0], *outputs[1]))


def test_loss_weights_and_no_positive_case() -> None:
    head = _small_head()
    outputs = _outputs(head, 1, [12, 6])
    none = head.loss(outputs, [torch.zeros(0, 2)], [torch.zeros(0, dtype=torch.long)])
    assert none["loss_reg"].item() == 0.0  # exactly 0 without positives
    none["loss"].backward()  # the graph stays connected
    head.cls_loss_weight, head.reg_loss_weight = 2.0, 0.5
    gt, lab = [torch.tensor([[10.0, 30.0]])], [torch.tensor([1])]
    weighted = head.loss(outputs, gt, lab)
    head.cls_loss_weight, head.reg_loss_weight = 1.0, 1.0
    plain = head.loss(outputs, gt, lab)
    torch.testing.assert_close(weighted["loss_cls"], 2.0 * plain["loss_cls"])
    torch.testing.assert_close(weighted["loss_reg"], 0.5 * plain["loss_reg"])
    with pytest.raises(ValueError, match="num_classes"):
        head.loss(outputs, gt, [torch.tensor([3])])


def test_focal_matches_torchvision_one_hot() -> None:
    from torchvision.ops import sigmoid_focal_loss

    logits = torch.randn(50, 4) * 3
    target = torch.zeros(50, 4)
    target[torch.arange(0, 50, 3), torch.arange(0, 50, 3) % 4] = 1
    torch.testing.assert_close(sigmoid_focal_loss(logits, target, 0.25, 2.0),
                               _focal_by_hand(logits, target), atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- head module


def test_paper_head_parameters_init_and_shapes() -> None:
    head = AnchorHead()
    assert sum(p.numel() for p in head.parameters()) == 1_661_550  # spec §17
    assert head.cls_out.bias.detach() == pytest.approx(torch.full((100,), -math.log(99.0)), abs=1e-6)
    assert head.reg_out.bias.abs().max() == 0
    assert 0.008 < head.cls_convs[0][0].weight.std().item() < 0.012  # N(0, 0.01)
    feats = [torch.randn(2, 256, n) for n in PAPER_LENGTHS]
    cls, reg = head.eval()(feats)
    assert [tuple(c.shape) for c in cls] == [(2, 100, n) for n in PAPER_LENGTHS]
    assert [tuple(r.shape) for r in reg] == [(2, 10, n) for n in PAPER_LENGTHS]
    assert head.anchors(PAPER_LENGTHS).shape == (585, 2)


# --------------------------------------------------------------------------- post-processing


def test_predict_threshold_clamp_and_offset() -> None:
    head = _small_head()
    head.score_thr = 0.005
    lengths = [12, 6]
    cls = [torch.full((2, 6, n), -10.0) for n in lengths]  # sigmoid(-10) = 4.5e-5 < 0.005
    reg = [torch.zeros(2, 4, n) for n in lengths]
    cls[0][0, 1 * 3 + 2, 0] = 4.0  # window 0: level 0, t 0, anchor 1, class 2
    cls[1][1, 0 * 3 + 1, 5] = 0.0  # window 1: level 1, t 5, anchor 0, class 1 (score 0.5)
    reg[1][1, 1, 5] = 5.0  # log-width delta 5 -> clamped at 1.0 (spec §11)
    dets = head.predict((cls, reg), lengths=[96, 70], offsets=[0, 360])
    assert isinstance(dets[0], Detections) and len(dets[0]) == 1 and len(dets[1]) == 1
    # anchor [0 - 8*2.83/2, 0 + 8*2.83/2], start clamped to 0
    half = 8 * anchor_scales(2.0, 2)[1] / 2
    torch.testing.assert_close(dets[0].segments, torch.tensor([[0.0, half]]))
    assert dets[0].labels.tolist() == [2]
    assert dets[0].scores.item() == pytest.approx(1 / (1 + math.exp(-4.0)))
    # centre 80, width 32 * e = 87 -> [36.5, 123.5] clamped to [0, 70], then + 360
    torch.testing.assert_close(dets[1].segments, torch.tensor([[80 - 16 * math.e + 360, 430.0]]))
    assert dets[1].labels.tolist() == [1] and dets[1].scores.item() == pytest.approx(0.5)
    # strict threshold: a score equal to score_thr is dropped
    head.score_thr = 0.5
    assert len(head.predict((cls, reg), [96, 70], [0, 360])[1]) == 0


def test_predict_nms_pre_keeps_the_best_anchors() -> None:
    head = _small_head()
    head.nms_pre = 4
    lengths = [12, 6]
    cls = [torch.full((1, 6, n), -10.0) for n in lengths]
    reg = [torch.zeros(1, 4, n) for n in lengths]
    cls[0][0, 0, :6] = torch.linspace(0.0, 1.0, 6)  # 6 candidates on level 0 (24 anchors)
    dets = head.predict((cls, reg), [96], None)[0]
    assert len(dets) == 4
    assert dets.scores.min().item() > torch.tensor(0.2).sigmoid().item()


def test_merge_video_detections_nmw_seconds_and_cap() -> None:
    windows = [
        Detections(torch.tensor([[30.0, 60.0], [300.0, 330.0]]), torch.tensor([0.9, 0.3]),
                   torch.tensor([1, 0])),
        Detections(torch.tensor([[33.0, 63.0], [30.0, 60.0]]), torch.tensor([0.6, 0.8]),
                   torch.tensor([1, 2])),
    ]
    out = merge_video_detections(windows, fps=15.0, method="nmw", iou_threshold=0.5)
    # class 1: [30, 60] (0.9) and [33, 63] (0.6, IoU 27/33) merge: weights 0.9*1, 0.6*27/33
    w0, w1 = 0.9, 0.6 * 27 / 33
    merged = (w0 * torch.tensor([30.0, 60.0]) + w1 * torch.tensor([33.0, 63.0])) / (w0 + w1)
    assert out.labels.tolist() == [1, 2, 0]
    assert out.scores.tolist() == pytest.approx([0.9, 0.8, 0.3])
    torch.testing.assert_close(out.segments[0], merged / 15.0)
    torch.testing.assert_close(out.segments[1:], torch.tensor([[2.0, 4.0], [20.0, 22.0]]))
    assert len(merge_video_detections(windows, 15.0, max_per_video=2)) == 2
    assert len(merge_video_detections([], 15.0)) == 0
