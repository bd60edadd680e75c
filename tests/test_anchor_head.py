"""Anchor head and its parts: anchors (original: vedatad/bridge/meshgrids/base_anchors/segment.py:37-94),
assignment (vedatad/misc/segment/assigners/max_iou_assigner.py:114, 134-220), focal + DIoU
losses (vedatad/criteria/segment_anchor_criterion.py:83-184), per-window post-processing
(vedatad/bridge/converters/segment_anchor_converter.py:65-134), the head's init
(vedatad/models/heads/retina_head.py:86-94), state dict keys and parameter count."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import Tensor, nn

from tallformer.config import Config, HeadConfig
from tallformer.models.anchor_head import (
    IGNORE,
    NEGATIVE,
    AnchorGenerator,
    AnchorHead,
    AnchorLoss,
    Detections,
    MaxIoUMatcher,
    WindowPostProcess,
    anchor_scales,
    assign_anchors,
    diou_loss,
    flatten_level,
    make_anchors,
)
from tallformer.models.coder import SegmentCoder
from tallformer.models.errors import ModelError
from tallformer.ops.segments import decode, encode

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
    table = {  # segment_anchor_meshgrid.py:73-153 with scales 2 * 2^(a/5)
        8: [16, 18.38, 21.11, 24.25, 27.86],
        16: [32, 36.76, 42.22, 48.50, 55.72],
        32: [64, 73.52, 84.45, 97.01, 111.43],
        64: [128, 147.03, 168.90, 194.01, 222.86],
        128: [256, 294.07, 337.79, 388.02, 445.72],
    }
    start = 0
    for stride, n in zip(PAPER_STRIDES, PAPER_LENGTHS, strict=True):
        level = anchors[start:start + 5 * n].reshape(n, 5, 2)
        start += 5 * n
        lengths = level[..., 1] - level[..., 0]
        assert torch.allclose(lengths, torch.tensor(table[stride])[None].expand(n, 5), atol=0.006)
        centres = level.mean(dim=-1)  # centre t * stride, offset 0; row t * 5 + a
        assert torch.allclose(centres, (torch.arange(n) * stride).float()[:, None].expand(n, 5))


def test_flatten_level_matches_channel_layout() -> None:
    """cls channel a*K + c of position t is row t*A + a, column c (anchor_head.py:21-87)."""
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
    """Our guard: min_pos_iou 0 and a gt with best IoU 0 must not claim every anchor."""
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


def test_ignore_regions_only_with_a_positive_threshold() -> None:
    """max_iou_assigner.py:114: `if self.ignore_iof_thr > 0 and ...`; 0 disables them too."""
    empty = torch.zeros(0, 2)
    ignore = torch.tensor([[28.0, 45.0], [104.0, 130.0]])  # covers [30, 40], 6/10 of [100, 110]
    assert assign_anchors(ANCHORS, empty, ignore, ignore_iof_thr=0.0).tolist() == [NEGATIVE] * 5
    assert assign_anchors(ANCHORS, empty, ignore, ignore_iof_thr=1e-6).tolist() == [
        NEGATIVE, NEGATIVE, NEGATIVE, IGNORE, IGNORE]
    assert assign_anchors(ANCHORS, empty, ignore, ignore_iof_thr=0.6).tolist() == [
        NEGATIVE, NEGATIVE, NEGATIVE, IGNORE, NEGATIVE]  # IoF 0.6 is not > 0.6
    gt = torch.tensor([[30.0, 40.0]])
    assert assign_anchors(ANCHORS, gt, ignore, ignore_iof_thr=0.0)[3].item() == 0


def test_matcher_holds_the_thresholds() -> None:
    m = MaxIoUMatcher.from_config(HeadConfig(ignore_iof_thr=0.5, min_pos_iou=0.95))
    assert m == MaxIoUMatcher(0.6, 0.4, 0.95, 0.5)
    gts = torch.tensor([[30.0, 39.0], [0.0, 4.0]])
    ignore = torch.tensor([[28.0, 45.0]])
    assert torch.equal(m(ANCHORS, gts, ignore),
                       assign_anchors(ANCHORS, gts, ignore, min_pos_iou=0.95, ignore_iof_thr=0.5))
    assert m(ANCHORS, gts, ignore).tolist() == [IGNORE, NEGATIVE, NEGATIVE, IGNORE, NEGATIVE]


def test_coder_is_the_ops_delta_coding() -> None:
    anchors = torch.tensor([[0.0, 10.0], [20.0, 60.0]])
    segs = torch.tensor([[2.0, 14.0], [10.0, 200.0]])
    coder = SegmentCoder()
    deltas = coder.encode(segs, anchors)
    assert torch.equal(deltas, encode(segs, anchors))
    assert torch.equal(coder.decode(deltas, anchors), decode(deltas, anchors))
    torch.testing.assert_close(coder.decode(deltas, anchors)[0], segs[0])  # dw = log(1.2) < 1
    # dw = log(190 / 40) > 1: clamped (delta_segment_coder.py:161); at test, ends clamped
    assert coder.decode(deltas, anchors)[1].diff().item() == pytest.approx(40 * math.e)
    assert coder.decode(deltas, anchors, max_length=100.0)[1].tolist() == pytest.approx(
        [105 - 20 * math.e, 100.0])


# --------------------------------------------------------------------------- losses


def test_diou_hand_values() -> None:
    pred = torch.tensor([[0.0, 10.0], [0.0, 10.0], [0.0, 2.0]])
    target = torch.tensor([[0.0, 10.0], [5.0, 15.0], [4.0, 6.0]])
    # identical: 0; half overlap: 1 - 5/15 + 5^2/15^2; disjoint: 1 - 0 + 4^2/6^2
    expected = torch.tensor([0.0, 1 - 5 / 15 + 25 / 225, 1 + 16 / 36])
    torch.testing.assert_close(diou_loss(pred, target), expected, atol=1e-5, rtol=1e-5)


def _small_head(num_classes: int = 3) -> AnchorHead:
    return AnchorHead(num_classes=num_classes, in_channels=8, feat_channels=8, stacked_convs=1,
                      anchor_generator=AnchorGenerator([8, 16], octave_base_scale=2.0,
                                                       scales_per_octave=2))


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
    """Focal = torchvision's with one-hot targets (focal_loss.py:45-154); normaliser
    N = sum max(#pos, 1) (segment_anchor_criterion.py:268-269, 384-385)."""
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
    head.criterion.cls_loss_weight, head.criterion.reg_loss_weight = 2.0, 0.5
    gt, lab = [torch.tensor([[10.0, 30.0]])], [torch.tensor([1])]
    weighted = head.loss(outputs, gt, lab)
    head.criterion.cls_loss_weight, head.criterion.reg_loss_weight = 1.0, 1.0
    plain = head.loss(outputs, gt, lab)
    torch.testing.assert_close(weighted["loss_cls"], 2.0 * plain["loss_cls"])
    torch.testing.assert_close(weighted["loss_reg"], 0.5 * plain["loss_reg"])
    with pytest.raises(ModelError, match="num_classes"):
        head.loss(outputs, gt, [torch.tensor([3])])


def test_loss_is_the_criterion_on_flattened_outputs() -> None:
    """`AnchorHead.loss` = `AnchorLoss` on the rows of `flatten_level`, with ignore regions."""
    head = _small_head()
    head.criterion.matcher.ignore_iof_thr = 0.5
    lengths = [12, 6]
    outputs = _outputs(head, 1, lengths)
    gt, lab, ign = [torch.tensor([[10.0, 30.0]])], [torch.tensor([1])], [torch.tensor([[60.0, 90.0]])]
    cls = torch.cat([flatten_level(c, 3) for c in outputs[0]], dim=1)
    reg = torch.cat([flatten_level(r, 2) for r in outputs[1]], dim=1)
    anchors = head.anchors(lengths)
    direct = AnchorLoss(MaxIoUMatcher(ignore_iof_thr=0.5))(cls, reg, anchors, gt, lab, ign)
    via_head = head.loss(outputs, gt, lab, ign)
    for k in ("loss_cls", "loss_reg", "loss"):
        assert torch.equal(direct[k], via_head[k])
    # the ignore region changes the classification loss (its anchors get weight 0)
    assert not torch.equal(head.loss(outputs, gt, lab, None)["loss_cls"], via_head["loss_cls"])


def test_focal_matches_torchvision_one_hot() -> None:
    from torchvision.ops import sigmoid_focal_loss

    logits = torch.randn(50, 4) * 3
    target = torch.zeros(50, 4)
    target[torch.arange(0, 50, 3), torch.arange(0, 50, 3) % 4] = 1
    torch.testing.assert_close(sigmoid_focal_loss(logits, target, 0.25, 2.0),
                               _focal_by_hand(logits, target), atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- head module


def _reference_head(num_classes: int, c_in: int, c: int, convs: int, anchors: int) -> nn.Module:
    """The head's modules re-stated in creation order, then the init of retina_head.py:86-94."""
    def tower() -> nn.Sequential:
        return nn.Sequential(*(nn.Sequential(nn.Conv1d(c_in if i == 0 else c, c, 3, padding=1, bias=False),
                                             nn.BatchNorm1d(c), nn.ReLU()) for i in range(convs)))
    ref = nn.Module()
    ref.cls_convs, ref.reg_convs = tower(), tower()
    ref.cls_out = nn.Conv1d(c, anchors * num_classes, 3, padding=1)
    ref.reg_out = nn.Conv1d(c, anchors * 2, 3, padding=1)
    for tower_ in (ref.cls_convs, ref.reg_convs):
        for block in tower_:
            nn.init.normal_(block[0].weight, std=0.01)
    nn.init.normal_(ref.cls_out.weight, std=0.01)
    nn.init.constant_(ref.cls_out.bias, -math.log(99.0))
    nn.init.normal_(ref.reg_out.weight, std=0.01)
    nn.init.zeros_(ref.reg_out.bias)
    return ref


def test_state_dict_keys_and_seeded_init_are_unchanged() -> None:
    """Checkpoints depend on the keys, seeded runs on the creation and init order."""
    torch.manual_seed(3)
    head = _small_head()
    torch.manual_seed(3)
    ref = _reference_head(3, 8, 8, 1, 2)
    assert list(head.state_dict()) == [
        "cls_convs.0.0.weight", "cls_convs.0.1.weight", "cls_convs.0.1.bias",
        "cls_convs.0.1.running_mean", "cls_convs.0.1.running_var", "cls_convs.0.1.num_batches_tracked",
        "reg_convs.0.0.weight", "reg_convs.0.1.weight", "reg_convs.0.1.bias",
        "reg_convs.0.1.running_mean", "reg_convs.0.1.running_var", "reg_convs.0.1.num_batches_tracked",
        "cls_out.weight", "cls_out.bias", "reg_out.weight", "reg_out.bias",
    ]
    assert list(head.state_dict()) == list(ref.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(head.state_dict()[k], v), k
    torch.manual_seed(4)
    paper = AnchorHead.from_config(HeadConfig(), 256, Config().test, num_classes=20)
    torch.manual_seed(4)
    ref = _reference_head(20, 256, 256, 4, 5)
    for k, v in ref.state_dict().items():
        assert torch.equal(paper.state_dict()[k], v), k


def test_from_config_passes_the_sections_whole() -> None:
    cfg = Config()
    hk = HeadConfig(feat_channels=16, stacked_convs=2, anchor_strides=[8, 16],
                    octave_base_scale=3.0, scales_per_octave=3, pos_iou_thr=0.7, neg_iou_thr=0.3,
                    min_pos_iou=0.1, ignore_iof_thr=0.5, focal_gamma=1.5, focal_alpha=0.5,
                    cls_loss_weight=2.0, reg_loss_weight=0.5)
    head = AnchorHead.from_config(hk, 32, dataclasses.replace(cfg.test, score_thr=0.1, nms_pre=7), num_classes=4)
    assert head.num_classes == 4
    assert head.num_anchors == 3
    assert head.anchor_strides == [8, 16]
    assert head.anchor_generator.scales == anchor_scales(3.0, 3)
    assert head.criterion.matcher == MaxIoUMatcher(0.7, 0.3, 0.1, 0.5)
    assert (head.criterion.focal_gamma, head.criterion.focal_alpha) == (1.5, 0.5)
    assert (head.criterion.cls_loss_weight, head.criterion.reg_loss_weight) == (2.0, 0.5)
    assert (head.post_process.score_thr, head.post_process.nms_pre) == (0.1, 7)
    assert head.cls_convs[0][0].in_channels == 32
    assert len(head.cls_convs) == 2
    assert head.cls_out.out_channels == 12
    paper = AnchorHead.from_config(cfg.model.head, cfg.model.neck.fpn_channels, cfg.test,
                                   num_classes=cfg.model.num_classes)
    assert paper.anchor_strides == [8, 16, 32, 64, 128]
    assert paper.post_process == WindowPostProcess(0.005, 1000)
    assert paper.criterion == AnchorLoss()


def test_paper_head_parameters_init_and_shapes() -> None:
    head = AnchorHead()
    # 8 x (196,608 + BN 512) + cls 76,800 + 100 + reg 7,680 + 10, the original's count
    assert sum(p.numel() for p in head.parameters()) == 1_661_550
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
    assert head.post_process.score_thr == 0.005
    lengths = [12, 6]
    cls = [torch.full((2, 6, n), -10.0) for n in lengths]  # sigmoid(-10) = 4.5e-5 < 0.005
    reg = [torch.zeros(2, 4, n) for n in lengths]
    cls[0][0, 1 * 3 + 2, 0] = 4.0  # window 0: level 0, t 0, anchor 1, class 2
    cls[1][1, 0 * 3 + 1, 5] = 0.0  # window 1: level 1, t 5, anchor 0, class 1 (score 0.5)
    reg[1][1, 1, 5] = 5.0  # log-width delta 5 -> clamped at 1.0 (delta_segment_coder.py:161)
    dets = head.predict((cls, reg), lengths=[96, 70], offsets=[0, 360])
    assert isinstance(dets[0], Detections)
    assert len(dets[0]) == 1
    assert len(dets[1]) == 1
    # anchor [0 - 8*2.83/2, 0 + 8*2.83/2], start clamped to 0
    half = 8 * anchor_scales(2.0, 2)[1] / 2
    torch.testing.assert_close(dets[0].segments, torch.tensor([[0.0, half]]))
    assert dets[0].labels.tolist() == [2]
    assert dets[0].scores.item() == pytest.approx(1 / (1 + math.exp(-4.0)))
    # centre 80, width 32 * e = 87 -> [36.5, 123.5] clamped to [0, 70], then + 360
    torch.testing.assert_close(dets[1].segments, torch.tensor([[80 - 16 * math.e + 360, 430.0]]))
    assert dets[1].labels.tolist() == [1]
    assert dets[1].scores.item() == pytest.approx(0.5)
    # strict threshold: a score equal to score_thr is dropped
    head.post_process.score_thr = 0.5
    assert len(head.predict((cls, reg), [96, 70], [0, 360])[1]) == 0


def test_predict_nms_pre_keeps_the_best_anchors() -> None:
    head = _small_head()
    head.post_process.nms_pre = 4
    lengths = [12, 6]
    cls = [torch.full((1, 6, n), -10.0) for n in lengths]
    reg = [torch.zeros(1, 4, n) for n in lengths]
    cls[0][0, 0, :6] = torch.linspace(0.0, 1.0, 6)  # 6 candidates on level 0 (24 anchors)
    dets = head.predict((cls, reg), [96], None)[0]
    assert len(dets) == 4
    assert dets.scores.min().item() > torch.tensor(0.2).sigmoid().item()


def test_predict_is_the_post_process_on_the_head_anchors() -> None:
    head = _small_head()
    lengths = [12, 6]
    cls = [torch.randn(2, 6, n) for n in lengths]
    reg = [0.5 * torch.randn(2, 4, n) for n in lengths]
    post = WindowPostProcess(score_thr=0.3, nms_pre=10)
    head.post_process = post
    direct = post((cls, reg), head.anchors(lengths), 2, 3, torch.tensor([96, 50]), torch.tensor([0, 72]))
    via_head = head.predict((cls, reg), [96, 50], [0, 72])
    assert [len(d) for d in via_head] == [len(d) for d in direct]
    assert len(via_head[0]) > 0
    for a, b in zip(direct, via_head, strict=True):
        assert torch.equal(a.segments, b.segments)
        assert torch.equal(a.scores, b.scores)
        assert torch.equal(a.labels, b.labels)
    with pytest.raises(ValueError, match="2 windows but 1 lengths"):
        head.predict((cls, reg), [96])


def test_output_types_are_importable_from_the_models_package() -> None:
    import tallformer.models as models
    from tallformer.models import outputs

    assert models.Detections is outputs.Detections is Detections
    assert models.HeadOutputs is outputs.HeadOutputs
