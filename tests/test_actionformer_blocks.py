"""ActionFormer's blocks against the independent re-statement (tests/actionformer_reference.py):
masked conv, channel LayerNorm, local and global attention (the band with its masking and
padded keys), the transformer block, and the padding semantics of the last valid step."""

from __future__ import annotations

import pytest
import torch

import actionformer_reference as ref
from tallformer.models.actionformer.attention import (
    LocalMaskedMHCA,
    MaskedMHCA,
    band_scores,
)
from tallformer.models.actionformer.blocks import (
    AffineDropPath,
    ChannelLayerNorm,
    MaskedConv1D,
    drop_path,
    sinusoid_encoding,
)
from tallformer.models.actionformer.padding import pad_features, padded_length
from tallformer.models.actionformer.transformer import TransformerBlock
from tallformer.models.errors import ModelError

single_thread = ref.single_thread  # autouse: one intra-op thread

TOL = {"rtol": 1e-5, "atol": 2e-6}


def _mask(t: int, valid: list[int]) -> torch.Tensor:
    return (torch.arange(t)[None, :] < torch.tensor(valid)[:, None])[:, None, :]


def _state(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def test_masked_conv_and_layer_norm_match_the_definitions() -> None:
    torch.manual_seed(0)
    conv = MaskedConv1D(6, 5, 3, stride=2, groups=1, bias=True)
    ref.randomize(conv, 1)
    x, mask = torch.randn(2, 6, 16), _mask(16, [16, 9])
    y, m = conv(x, mask)
    y_ref, m_ref = ref.masked_conv(x, mask, _state(conv, "c"), "c", stride=2)
    assert torch.equal(m, m_ref)
    assert m[1, 0].tolist() == [True] * 5 + [False] * 3  # ceil(9 / 2) valid steps
    torch.testing.assert_close(y, y_ref, **TOL)
    assert bool((y[1, :, 5:] == 0).all())
    with pytest.raises(ModelError, match="multiple of the stride"):
        conv(torch.randn(1, 6, 15), _mask(15, [15]))
    ln = ChannelLayerNorm(5)
    ref.randomize(ln, 2)
    torch.testing.assert_close(ln(y), ref.layer_norm(y, _state(ln, "n"), "n"), **TOL)
    # a zero (padded) step comes out as the norm's bias
    torch.testing.assert_close(ln(torch.zeros(1, 5, 1)), ln.bias.detach())


@pytest.mark.parametrize(("window", "stride", "rel_pe"), [(5, 1, False), (7, 2, True), (9, 1, True), (1, 2, False)])
def test_attention_equals_dense_band_attention(window: int, stride: int, rel_pe: bool) -> None:
    """Random weights, two samples with padding (one padded at the end of every window
    chunk): equal to dense attention over |i - j| <= w with -1e4 on padded keys and padded
    query rows zeroed (-inf on padded keys for the global one)."""
    torch.manual_seed(window * 10 + stride)
    t = 24 if stride == 1 else 32
    attn: torch.nn.Module
    if window > 1:
        attn = LocalMaskedMHCA(8, 2, window, stride, stride, use_rel_pe=rel_pe)
    else:
        attn = MaskedMHCA(8, 2, stride, stride)
    ref.randomize(attn, window)
    x, mask = torch.randn(2, 8, t), _mask(t, [t - 5, 11])
    x = x * mask  # padded inputs are zero in the network
    y, m = attn(x, mask)
    y_ref, m_ref = ref.attention(x, mask, _state(attn, "a"), "a", 2, window, stride, rel_pe)
    assert torch.equal(m, m_ref)
    torch.testing.assert_close(y, y_ref, **TOL)


def test_band_marks_steps_outside_the_sequence() -> None:
    s = band_scores(torch.ones(1, 3, 1), torch.arange(3.0).reshape(1, 3, 1), 2)
    assert s[0].tolist() == [[float("-inf"), float("-inf"), 0.0, 1.0, 2.0],
                             [float("-inf"), 0.0, 1.0, 2.0, float("-inf")],
                             [0.0, 1.0, 2.0, float("-inf"), float("-inf")]]


def test_window_three_and_even_windows_are_refused() -> None:
    for w in (3, 4):
        with pytest.raises(ModelError, match="odd and >= 5"):
            LocalMaskedMHCA(8, 2, w)


@pytest.mark.parametrize("stride", [1, 2])
def test_transformer_block_matches_with_drop_path_scale(stride: int) -> None:
    torch.manual_seed(3)
    blk = TransformerBlock(8, 2, (stride, stride), path_pdrop=0.1, mha_win_size=5).eval()
    ref.randomize(blk, 4)
    x, mask = torch.randn(2, 8, 20), _mask(20, [20, 13])
    y, _ = blk(x, mask)
    arch = ref.Arch(num_classes=1, n_head=2)
    y_ref, _ = ref.block(x, mask, _state(blk, "b"), "b", arch, 5, stride)
    torch.testing.assert_close(y, y_ref, **TOL)
    assert {k for k in blk.state_dict() if "drop_path" in k} == {"drop_path_attn.scale", "drop_path_mlp.scale"}
    assert not any("drop_path" in k for k in TransformerBlock(8, 2, path_pdrop=0.0).state_dict())


def test_drop_path_scale_applies_in_eval_and_drop_only_in_training() -> None:
    dp = AffineDropPath(3, drop_prob=0.5)
    with torch.no_grad():
        dp.scale.fill_(2.0)
    x = torch.ones(64, 3, 2)
    assert torch.equal(dp.eval()(x), 2 * x)
    torch.manual_seed(0)
    y = dp.train()(x)
    per_sample = y[:, 0, 0]
    assert set(per_sample.tolist()) == {0.0, 4.0}  # dropped, or kept and divided by 0.5
    assert torch.equal(drop_path(x, 0.0, training=True), x)


def test_sinusoid_table() -> None:
    pe = sinusoid_encoding(7, 6)
    torch.testing.assert_close(pe, ref.sinusoids(7, 6))
    assert pe[0, 0, 3] == pytest.approx(float(torch.sin(torch.tensor(3.0))), abs=1e-6)


def test_padded_length_follows_the_release_rule() -> None:
    assert padded_length(240, 576, 576, training=True) == 576
    assert padded_length(576, 576, 576, training=False) == 576
    assert padded_length(577, 576, 576, training=False) == 1152
    assert padded_length(100, 576, 576, training=False) == 576
    with pytest.raises(ModelError, match="max_seq_len"):
        padded_length(600, 576, 576, training=True)
    x, m = pad_features(torch.ones(2, 3, 10), [10, 4], 16, 8, training=True)
    assert x.shape == (2, 3, 16)
    assert m.shape == (2, 1, 16)
    assert x[1, :, 4:].abs().sum() == 0  # steps beyond a sample's length are zeroed
    assert m[1, 0].sum() == 4


def test_the_last_valid_step_depends_on_whether_a_padded_step_exists() -> None:
    """After a LayerNorm a padded step holds its bias, which the next conv reads at the last
    valid step; at the array end it reads zeros. Padding 40 valid steps to 48 or to 96 gives
    the same outputs; 48 valid steps with no padded step differ from the same steps padded."""
    torch.manual_seed(5)
    blk = torch.nn.ModuleList([TransformerBlock(8, 2, (1, 1), mha_win_size=5),
                               TransformerBlock(8, 2, (2, 2), mha_win_size=5)])
    ref.randomize(blk, 6)
    ln = ChannelLayerNorm(8)
    ref.randomize(ln, 7)

    def run(x: torch.Tensor, valid: int) -> torch.Tensor:
        mask = _mask(x.shape[-1], [valid])
        h = torch.relu(ln(x * mask))  # an embedding LN: padded steps become ReLU(bias)
        h, mask = blk[0](h, mask)
        h, mask = blk[1](h, mask)
        return h[..., : (valid + 1) // 2]

    x = torch.randn(1, 8, 96)
    a = run(x[..., :48], 40)
    b = run(torch.cat([x[..., :40], torch.zeros(1, 8, 56)], -1), 40)
    torch.testing.assert_close(a, b, **TOL)
    full = run(x[..., :48], 48)
    padded = run(torch.cat([x[..., :48], torch.zeros(1, 8, 16)], -1), 48)
    assert (full - padded).abs().max() > 1e-3
    # the reference agrees on both
    for length, valid in ((48, 48), (64, 48)):
        xx = torch.cat([x[..., :48], torch.zeros(1, 8, length - 48)], -1)
        mask = _mask(length, [valid])
        p = {**_state(ln, "ln"), **_state(blk[0], "b0"), **_state(blk[1], "b1")}
        h = torch.relu(ref.layer_norm(xx * mask, p, "ln"))
        arch = ref.Arch(num_classes=1, n_head=2)
        h, mask = ref.block(h, mask, p, "b0", arch, 5, 1)
        h, mask = ref.block(h, mask, p, "b1", arch, 5, 2)
        torch.testing.assert_close(run(xx, valid), h[..., :24], **TOL)
