"""`ActionFormerNet`: its state dict is the release's `PtTransformer` one key for key (the
THUMOS14 structure, built on the meta device), and its per-level logits, offsets, masks and
points equal the independent re-statement on random weights and features."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import actionformer_reference as ref
from tallformer.config import load_config
from tallformer.models.actionformer.net import ActionFormerNet
from tallformer.models.errors import ModelError

single_thread = ref.single_thread  # autouse: one intra-op thread

TOL = {"rtol": 1e-4, "atol": 2e-5}


def release_thumos14_keys(input_dim: int, num_classes: int) -> dict[str, list[int]]:
    """The release's 229 state-dict entries for its THUMOS14 config (backbone_arch (2, 2, 5),
    512 channels, droppath 0.1, heads of 3 layers with LN, 6 levels), written out from its
    module tree (libs/modeling/{backbones,blocks,necks,meta_archs}.py)."""
    c, k = 512, 3
    keys: dict[str, list[int]] = {}
    for i in range(2):
        keys[f"backbone.embd.{i}.conv.weight"] = [c, input_dim if i == 0 else c, k]
        keys[f"backbone.embd_norm.{i}.weight"] = [1, c, 1]
        keys[f"backbone.embd_norm.{i}.bias"] = [1, c, 1]
    for blk in [f"backbone.stem.{i}" for i in range(2)] + [f"backbone.branch.{i}" for i in range(5)]:
        for ln in ("ln1", "ln2"):
            keys[f"{blk}.{ln}.weight"] = keys[f"{blk}.{ln}.bias"] = [1, c, 1]
        for part in ("query", "key", "value"):
            keys[f"{blk}.attn.{part}_conv.conv.weight"] = [c, 1, 3]
            keys[f"{blk}.attn.{part}_norm.weight"] = keys[f"{blk}.attn.{part}_norm.bias"] = [1, c, 1]
        for proj in ("query", "key", "value", "proj"):
            keys[f"{blk}.attn.{proj}.weight"] = [c, c, 1]
            keys[f"{blk}.attn.{proj}.bias"] = [c]
        keys[f"{blk}.mlp.0.weight"], keys[f"{blk}.mlp.0.bias"] = [4 * c, c, 1], [4 * c]
        keys[f"{blk}.mlp.3.weight"], keys[f"{blk}.mlp.3.bias"] = [c, 4 * c, 1], [c]
        keys[f"{blk}.drop_path_attn.scale"] = keys[f"{blk}.drop_path_mlp.scale"] = [1, c, 1]
    for i in range(6):
        keys[f"neck.fpn_norms.{i}.weight"] = keys[f"neck.fpn_norms.{i}.bias"] = [1, c, 1]
    for head in ("cls_head", "reg_head"):
        for i in range(2):
            keys[f"{head}.head.{i}.conv.weight"] = [c, c, k]
            keys[f"{head}.norm.{i}.weight"] = keys[f"{head}.norm.{i}.bias"] = [1, c, 1]
    keys["cls_head.cls_head.conv.weight"], keys["cls_head.cls_head.conv.bias"] = [num_classes, c, k], [num_classes]
    for i in range(6):
        keys[f"reg_head.scale.{i}.scale"] = []
    keys["reg_head.offset_head.conv.weight"], keys["reg_head.offset_head.conv.bias"] = [2, c, k], [2]
    return keys


def test_state_dict_is_the_releases_key_for_key() -> None:
    cfg = load_config(None, [])
    with torch.device("meta"):
        net = ActionFormerNet.from_config(cfg.model.actionformer, 1024, 20)
    expected = release_thumos14_keys(1024, 20)
    assert len(expected) == 229
    got = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert got == expected
    # measured parameter counts of the release (I3D width 2048 and Swin-B width 1024)
    assert sum(p.numel() for p in net.parameters()) == 27_678_748
    with torch.device("meta"):
        assert sum(p.numel() for p in ActionFormerNet.from_config(cfg.model.actionformer, 2048, 20).parameters()) \
            == 29_251_612
    assert net.max_div_factor == 576
    assert net.fpn_strides == [1, 2, 4, 8, 16, 32]


def test_initialisation_follows_the_release() -> None:
    torch.manual_seed(0)
    net = ActionFormerNet(16, 4, backbone_arch=(1, 1, 1), n_head=2, n_mha_win_size=5, embd_dim=16, fpn_dim=16,
                          head_dim=16, regression_range=((0, 4), (4, 100)), max_seq_len=16, cls_prior_prob=0.01,
                          head_empty_cls=[2])
    bias = net.cls_head.cls_head.conv.bias.detach()
    assert bias[0].item() == pytest.approx(-4.59511985)
    assert bias[2].item() == pytest.approx(-13.81551)
    assert net.reg_head.scale[1].scale.item() == 1.0
    assert net.backbone.stem[0].drop_path_attn.scale.detach().eq(1e-4).all()
    assert net.backbone.stem[0].attn.proj.bias.detach().eq(0).all()  # backbone biases start at 0
    assert net.reg_head.offset_head.conv.bias.detach().eq(0).all()


def small(**kw: Any) -> tuple[ActionFormerNet, ref.Arch]:
    opts: dict[str, Any] = dict(backbone_arch=(2, 1, 2), n_head=2, n_mha_win_size=5, embd_dim=16, fpn_dim=16,
                                head_dim=12, regression_range=((0, 4), (4, 8), (8, 1000)), max_seq_len=32,
                                droppath=0.1)
    opts.update(kw)
    net = ActionFormerNet(10, 3, **opts)
    ref.randomize(net, 11)
    wins = opts["n_mha_win_size"]
    windows = [wins] * (opts["backbone_arch"][2] + 1) if isinstance(wins, int) else wins
    arch = ref.Arch(num_classes=3, backbone_arch=opts["backbone_arch"], n_head=opts["n_head"], windows=windows,
                    regression_range=opts["regression_range"], fpn_start_level=opts.get("fpn_start_level", 0),
                    use_abs_pe=opts.get("use_abs_pe", False), use_rel_pe=opts.get("use_rel_pe", False),
                    embd_with_ln=opts.get("embd_with_ln", True), fpn_with_ln=opts.get("fpn_with_ln", True),
                    head_with_ln=opts.get("head_with_ln", True), max_seq_len=opts["max_seq_len"])
    return net, arch


def compare(net: ActionFormerNet, arch: ref.Arch, feats: torch.Tensor, lengths: list[int], training: bool) -> None:
    net.train(training)
    if training:  # the drop itself is random; compare the deterministic network
        for m in net.modules():
            if hasattr(m, "drop_prob"):
                m.drop_prob = 0.0
    with torch.no_grad():
        x, mask = net.pad(feats, lengths)
        out = net(x, mask)
    state = net.state_dict()
    for b, length in enumerate(lengths):
        xr, mr = ref.pad(feats[b], length, arch, training)
        assert x.shape[-1] == xr.shape[-1]
        with torch.no_grad():
            r = ref.network(state, arch, xr, mr, training)
        for level in range(len(r["cls"])):
            assert torch.equal(out.masks[level][b], r["mask"][level])
            assert torch.equal(out.points[level], r["points"][level])
            torch.testing.assert_close(out.cls_logits[level][b], r["cls"][level], **TOL)
            torch.testing.assert_close(out.offsets[level][b], r["off"][level], **TOL)


@pytest.mark.parametrize("length", [32, 45, 64])
def test_inference_outputs_equal_the_reference(length: int) -> None:
    """Inference pads to max_seq_len (32) or to the next multiple of max_div_factor (16):
    32 -> 32 and 64 -> 64 (no padded step at any level), 45 -> 48 (shorter inputs are
    padded to max_seq_len as in training, checked there)."""
    net, arch = small()
    assert net.max_div_factor == 16
    torch.manual_seed(length)
    compare(net, arch, torch.randn(1, 10, length), [length], training=False)


def test_training_outputs_equal_the_reference_for_a_padded_batch() -> None:
    net, arch = small()
    torch.manual_seed(1)
    compare(net, arch, torch.randn(2, 10, 30), [30, 17], training=True)


@pytest.mark.parametrize("options", [
    {"use_abs_pe": True},
    {"use_rel_pe": True, "n_mha_win_size": [5, 7, 5]},
    {"fpn_start_level": 1, "regression_range": ((0, 8), (8, 1000))},
    {"n_mha_win_size": -1, "droppath": 0.0},
    {"embd_with_ln": False, "fpn_with_ln": False, "head_with_ln": False},
])
def test_options_equal_the_reference(options: dict[str, Any]) -> None:
    net, arch = small(**options)
    torch.manual_seed(2)
    compare(net, arch, torch.randn(1, 10, 40), [40], training=False)


def test_abs_pe_in_training_equals_the_reference() -> None:
    net, arch = small(use_abs_pe=True)
    torch.manual_seed(3)
    compare(net, arch, torch.randn(1, 10, 25), [25], training=True)


def test_wrong_inputs_are_refused() -> None:
    net, _ = small()
    with pytest.raises(ModelError, match=r"\[B, 10, T\]"):
        net(*net.pad(torch.randn(1, 8, 20)))
    with pytest.raises(ModelError, match="max_seq_len"):
        net.train().pad(torch.randn(1, 10, 40))
    with pytest.raises(ModelError, match="multiple of 16"):
        ActionFormerNet(10, 3, backbone_arch=(1, 1, 2), n_head=2, n_mha_win_size=5, embd_dim=16, fpn_dim=16,
                        regression_range=((0, 4), (4, 8), (8, 100)), max_seq_len=40)
