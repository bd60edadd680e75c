"""SRM / TCM / TDM / FPN: shapes, the arithmetic of the original (vedatad/models/necks/srm_vswin.py,
tdm.py, fpn.py; vedatad/models/modules/swin_1d.py), init, SyncBN."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tallformer.models.neck import (
    FPN,
    SRM,
    TCM,
    TDM,
    Neck,
    RelPosAttention,
    TDMStage,
    convert_sync_batchnorm,
    sinusoid_table,
    srm_output_length,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_paper_neck_shapes_and_parameter_counts() -> None:
    """[B, 1024, 240] -> SRM [B, 512, 60] -> TDM 60/30/15/8/4 -> FPN 256 ch, the original's counts."""
    neck = Neck().eval()
    counts = {name: sum(p.numel() for p in getattr(neck, name).parameters())
              for name in ("srm", "tcm", "tdm", "fpn")}
    assert counts == {"srm": 2_360_320, "tcm": 9_462_864, "tdm": 14_710_784, "fpn": 1_643_520}
    x = torch.randn(2, 1024, 240)
    with torch.no_grad():
        s = neck.srm(x)
        assert s.shape == (2, 512, 60)
        t = neck.tcm(s)
        assert t.shape == (2, 512, 60)
        levels = neck.tdm(t)
        assert [tuple(y.shape) for y in levels] == [(2, 512, n) for n in (60, 30, 15, 8, 4)]
        outs = neck.fpn(levels)
        assert [tuple(y.shape) for y in outs] == [(2, 256, n) for n in (60, 30, 15, 8, 4)]
        assert all(torch.isfinite(y).all() for y in outs)


def test_srm_is_two_strided_convs_with_relu() -> None:
    srm = SRM(8, 6)
    x = torch.randn(2, 8, 23)
    expected = F.conv1d(F.relu(F.conv1d(x, srm.conv1.weight, srm.conv1.bias, stride=2, padding=1)),
                        srm.conv2.weight, srm.conv2.bias, stride=2, padding=1)
    torch.testing.assert_close(srm(x), expected)
    assert srm(x).shape[-1] == srm_output_length(23) == 6
    # a 5-D map is averaged over space first (srm_vswin.py:12-76)
    x5 = torch.randn(2, 8, 12, 3, 3)
    torch.testing.assert_close(srm(x5), srm(x5.mean(dim=(3, 4))))


def test_relative_position_attention_matches_the_formula() -> None:
    """logit(h,i,j) = q_i.k_j / sqrt(d) + P[i - j + L - 1, h] (swin_1d.py:40-141), for T < L too."""
    dim, heads, max_len, t = 16, 4, 7, 5
    attn = RelPosAttention(dim, heads, max_len)
    assert attn.relative_position_bias_table.shape == (2 * max_len - 1, heads)
    with torch.no_grad():
        attn.relative_position_bias_table.normal_(0, 1.0)  # large enough to matter
    x = torch.randn(2, t, dim)
    q, k, v = attn.qkv(x).reshape(2, t, 3, heads, dim // heads).unbind(2)
    out = torch.zeros(2, t, heads, dim // heads)
    table = attn.relative_position_bias_table
    for b in range(2):
        for h in range(heads):
            for i in range(t):
                logits = torch.stack([
                    q[b, i, h] @ k[b, j, h] / math.sqrt(dim // heads) + table[i - j + max_len - 1, h]
                    for j in range(t)
                ])
                out[b, i, h] = torch.softmax(logits, 0) @ v[b, :, h]
    expected = attn.proj(out.reshape(2, t, dim))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="at most 7"):
        attn(torch.randn(1, max_len + 1, dim))


def test_tcm_layers_are_independent_and_init_as_the_original() -> None:
    tcm = TCM(64, num_layers=3, num_heads=4, max_len=60, drop_path=0.1)
    tables = [layer.attn.relative_position_bias_table for layer in tcm.layers]
    assert tables[0].shape == (119, 4)
    assert not torch.equal(tables[0], tables[1])  # ours: not deep copies (swin_1d.py:224-226 copies)
    assert all(t.abs().max() <= 2.0 for t in tables)  # trunc-normal cut at +-2
    assert 0.01 < torch.cat(tables).std().item() < 0.03  # std 0.02
    assert all(layer.drop_path.p == 0.1 for layer in tcm.layers)  # constant, not a ramp
    x = torch.randn(2, 64, 60)
    tcm.eval()
    torch.testing.assert_close(tcm(x), tcm(x))  # drop path off in eval
    # pre-norm residual: a layer whose branches output zero is the identity
    layer = tcm.layers[0]
    with torch.no_grad():
        for lin in (layer.attn.proj, layer.mlp[2]):
            lin.weight.zero_()
            lin.bias.zero_()
    y = torch.randn(2, 60, 64)
    torch.testing.assert_close(layer(y), y)


def test_tdm_level0_is_input_plus_scaled_sinusoid() -> None:
    tdm = TDM(32, num_heads=4, kernel_sizes=(7, 7, 5, 5)).eval()
    x = torch.randn(1, 32, 60)
    levels = tdm(x)
    pe = sinusoid_table(60, 32)
    assert pe[1, 0].item() == pytest.approx(math.sin(1.0))
    assert pe[1, 1].item() == pytest.approx(math.cos(1.0))
    assert pe[3, 2].item() == pytest.approx(math.sin(3 / 10000 ** (2 / 32)))
    torch.testing.assert_close(levels[0], x + pe.T[None] / math.sqrt(32))
    assert [y.shape[-1] for y in levels] == [60, 30, 15, 8, 4]


def test_tdm_stage_pads_odd_lengths_at_the_end_and_concatenates_pairs() -> None:
    stage = TDMStage(8, num_heads=2, kernel_size=5).eval()
    x = torch.randn(2, 15, 8)
    padded = torch.cat([x, torch.zeros(2, 1, 8)], dim=1)
    torch.testing.assert_close(stage(x), stage(padded))
    assert stage(x).shape == (2, 8, 8)
    # token t of the reduction is Linear(concat(x[2t], x[2t+1]))
    red = stage.reduction(padded.reshape(2, 8, 16))
    manual = torch.cat([padded[:, 0::2], padded[:, 1::2]], dim=-1) @ stage.reduction.weight.T
    torch.testing.assert_close(red, manual)


@pytest.mark.parametrize("kernel", [7, 5])
def test_tdm_stage_attention_is_local(kernel: int) -> None:
    """Output token i depends only on reduced tokens within kernel // 2 (tdm.py:228-247)."""
    half = kernel // 2
    stage = TDMStage(8, num_heads=2, kernel_size=kernel).eval()
    x = torch.randn(1, 32, 8)  # 16 reduced tokens
    base = stage(x)
    for j in (0, 9, 15):  # perturb reduced token j (input steps 2j, 2j+1)
        y = x.clone()
        y[:, 2 * j: 2 * j + 2] += 5.0
        changed = (stage(y) - base).abs().amax(dim=-1)[0] > 1e-6
        expected = torch.tensor([abs(i - j) <= half for i in range(16)])
        assert torch.equal(changed, expected)
    mask = stage.band_mask(6, torch.device("cpu"))
    assert mask[0, half].item() is False
    assert mask[0, half + 1].item() is True


def test_fpn_top_down_nearest_and_init() -> None:
    fpn = FPN(16, 8, num_levels=5)
    for seq in (*fpn.lateral, *fpn.output):
        conv, bn = seq
        assert conv.bias is None
        assert isinstance(bn, nn.BatchNorm1d)
        fan_in, fan_out = conv.weight.shape[1] * conv.weight.shape[2], conv.weight.shape[0] * conv.weight.shape[2]
        assert conv.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out))  # Xavier uniform
    fpn.eval()
    feats = [torch.randn(2, 16, n) for n in (60, 30, 15, 8, 4)]
    outs = fpn(feats)
    assert [tuple(o.shape) for o in outs] == [(2, 8, n) for n in (60, 30, 15, 8, 4)]
    # top-down only: a change at the finest level leaves the coarser outputs alone
    feats2 = [f.clone() for f in feats]
    feats2[0] += 1.0
    outs2 = fpn(feats2)
    assert not torch.allclose(outs2[0], outs[0])
    for a, b in zip(outs[1:], outs2[1:], strict=True):
        torch.testing.assert_close(a, b)
    # level 2 (15 steps) gets level 3 (8 steps) by nearest: src = floor(i * 8 / 15)
    lat = [seq(f) for seq, f in zip(fpn.lateral, feats, strict=True)]
    l4 = lat[4]
    l3 = lat[3] + l4[..., [i * 4 // 8 for i in range(8)]]
    l2 = lat[2] + l3[..., [i * 8 // 15 for i in range(15)]]
    torch.testing.assert_close(outs[2], fpn.output[2](l2))


def test_tiny_neck_shapes() -> None:
    neck = Neck(in_channels=192, channels=64, max_len=16, tcm_layers=2, tcm_heads=4,
                tdm_heads=4, tdm_kernels=[7, 7, 5], fpn_channels=64)
    outs = neck(torch.randn(2, 192, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 64, n) for n in (16, 8, 4, 2)]
    assert neck.num_levels == 4
    outs[0].sum().backward()
    assert all(p.grad is not None for p in neck.srm.parameters())


def test_convert_sync_batchnorm() -> None:
    neck = Neck(in_channels=8, channels=16, max_len=4, tcm_layers=1, tcm_heads=2, tdm_heads=2,
                tdm_kernels=[3], fpn_channels=8)
    n_bn = sum(isinstance(m, nn.BatchNorm1d) for m in neck.modules())
    assert n_bn == 4
    converted = convert_sync_batchnorm(neck)
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in converted.modules()) == n_bn
    assert not any(type(m) is nn.BatchNorm1d for m in converted.modules())
