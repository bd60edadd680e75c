"""Video Swin backbone: presets, parameter counts (those of the original classes), stochastic
depth (original: vedatad/models/backbones/vswin.py:659-661), chunk-wise run (chunk_model.py:88-124),
frozen stages (vswin.py:695-707), checkpointing (vswin.py:679)."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn
from torchvision.models.video.swin_transformer import SwinTransformer3d

from tallformer.config import BackboneConfig, ConfigError
from tallformer.errors import TallformerError
from tallformer.models import ModelError, build_backbone, build_backbone_from_config
from tallformer.models.backbone import PRESETS, VideoSwinBackbone

torch.set_num_threads(1)


def _count(module: nn.Module, trainable: bool | None = None) -> int:
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


def _tiny(seed: int = 0, **kw) -> VideoSwinBackbone:
    torch.manual_seed(seed)
    return build_backbone("tiny", **kw).eval()


def _torchvision_twin(model: VideoSwinBackbone) -> SwinTransformer3d:
    """torchvision's own SwinTransformer3d with `model`'s weights; its forward returns the
    flattened `[B, C, T, H, W]` map after the final norm (pooling and head replaced by identities)."""
    a = model.arch
    tv = SwinTransformer3d(
        patch_size=list(a.patch_size), embed_dim=a.embed_dim, depths=list(a.depths),
        num_heads=list(a.num_heads), window_size=list(a.window_size),
        stochastic_depth_prob=a.drop_path_rate, norm_layer=partial(nn.LayerNorm, eps=1e-5),
        num_classes=7,
    )
    state = dict(model.state_dict())
    state["head.weight"] = tv.head.weight.detach().clone()
    state["head.bias"] = tv.head.bias.detach().clone()
    tv.load_state_dict(state, strict=True)
    tv.avgpool = nn.Identity()
    tv.head = nn.Identity()
    return tv.eval()


# --------------------------------------------------------------------------- sizes


def test_swin_b_parameter_counts_equal_the_original() -> None:
    with torch.device("meta"):
        m = build_backbone("swin_b")
    assert m.num_features == 1024
    assert m.temporal_stride == 2
    assert m.chunk_size == 32
    assert _count(m) == 87_638_984
    assert _count(m, trainable=True) == 84_930_976
    # frozen parts one by one: patch_embed, stage 1, merge 1, stage 2, merge 2
    assert _count(m.patch_embed) == 12_672
    assert [_count(m.features[i]) for i in range(4)] == [416_824, 132_096, 1_620_080, 526_336]
    assert all(not p.requires_grad for i in range(4) for p in m.features[i].parameters())
    assert [_count(m.features[i]) for i in range(4, 7)] == [57_472_992, 2_101_248, 25_354_688]
    assert _count(m.norm) == 2_048


def test_swin_t_parameter_counts_equal_the_original() -> None:
    with torch.device("meta"):
        m = build_backbone("swin_t")
    assert m.num_features == 768
    assert _count(m) == 27_850_470
    assert _count(m, trainable=False) == 1_539_486


def test_tiny_parameter_counts() -> None:
    m = build_backbone("tiny")
    assert _count(m) == 1_307_322
    assert _count(m, trainable=True) == 1_205_928
    assert m.num_features == 192


@pytest.mark.parametrize(("arch", "rate"), [("swin_b", 0.2), ("swin_t", 0.1)])
def test_stochastic_depth_is_linear_over_blocks(arch: str, rate: float) -> None:
    with torch.device("meta"):
        m = build_backbone(arch)
    probs = [blk.stochastic_depth.p for i in range(0, len(m.features), 2) for blk in m.features[i]]
    assert len(probs) == sum(PRESETS[arch].depths)
    expected = torch.linspace(0, rate, len(probs)).tolist()
    assert probs == pytest.approx(expected, abs=1e-7)
    if arch == "swin_b":  # vswin.py:659-661: stage 3 blocks 0.0348..0.1826, stage 4 0.1913 and 0.2
        assert probs[4] == pytest.approx(0.0348, abs=1e-4)
        assert probs[21] == pytest.approx(0.1826, abs=1e-4)
        assert probs[22:] == pytest.approx([0.1913, 0.2], abs=1e-4)


def test_overrides_and_dict_arch() -> None:
    with torch.device("meta"):
        m = build_backbone("swin_b", drop_path_rate=0.3, frozen_stages=-1, use_checkpoint=False)
        assert m.features[6][1].stochastic_depth.p == pytest.approx(0.3)
        assert _count(m, trainable=True) == _count(m)
        d = build_backbone({"embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2],
                            "window_size": [2, 2, 2], "patch_size": [2, 2, 2], "frozen_stages": 0})
    assert d.num_features == 32
    assert d.temporal_stride == 2
    assert _count(d, trainable=False) == _count(d.patch_embed)


# --------------------------------------------------------------------------- forward


def test_matches_torchvision_forward_on_odd_sizes() -> None:
    """Sizes that are multiples of neither the patch nor the window (T=20, H=62, W=58)."""
    m = _tiny(chunk_size=None)
    torch.manual_seed(1)
    for i in range(0, len(m.features), 2):  # make the relative position bias matter
        for blk in m.features[i]:
            blk.attn.relative_position_bias_table.data.normal_(0, 0.5)
    tv = _torchvision_twin(m)
    x = torch.randn(2, 3, 20, 62, 58)
    with torch.no_grad():
        ours = m.forward_features(x)
        ref = tv(x)
        pooled = m(x)
    b, c, t, h, w = ours.shape
    assert (b, c, t, h, w) == (2, 192, 10, 2, 2)
    torch.testing.assert_close(ours, ref.reshape(b, c, t, h, w), atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled, ours.mean(dim=(3, 4)), atol=1e-6, rtol=0)


def test_chunkwise_equals_each_chunk_alone() -> None:
    m = _tiny(chunk_size=16)
    x = torch.randn(2, 3, 48, 64, 64)
    with torch.no_grad():
        y = m(x)
        fm = m.forward_features(x)
        m.chunk_size = None
        alone = [m(x[:, :, 16 * i: 16 * (i + 1)]) for i in range(3)]
        whole = m(x)
        m.chunk_size = 16
        chunks = x.reshape(2, 3, 3, 16, 64, 64).transpose(1, 2).reshape(6, 3, 16, 64, 64)
        fc = m.forward_chunks(chunks)
    assert y.shape == (2, 192, 24)
    assert fm.shape == (2, 192, 24, 2, 2)
    torch.testing.assert_close(y, torch.cat(alone, dim=2), atol=1e-5, rtol=0)
    torch.testing.assert_close(fc.reshape(2, 3, 192, 8).transpose(1, 2).reshape(2, 192, 24), y,
                               atol=1e-5, rtol=0)
    # chunks really are separate: one piece (attention across chunks) gives other features
    assert (whole - y).abs().max() > 1e-3


@pytest.mark.parametrize("t", [40, 37])
def test_padded_clip_gives_first_rows_of_padded_run(t: int) -> None:
    m = _tiny(chunk_size=16)
    x = torch.randn(1, 3, t, 64, 64)
    padded = torch.cat([x, torch.zeros(1, 3, 48 - t, 64, 64)], dim=2)
    with torch.no_grad():
        y = m(x)
        ref = m(padded)
        f = m.forward_features(x)
    rows = math.ceil(t / 2)
    assert y.shape == (1, 192, rows)
    assert f.shape == (1, 192, rows, 2, 2)
    torch.testing.assert_close(y, ref[:, :, :rows], atol=1e-6, rtol=0)


def test_bad_inputs_are_named() -> None:
    m = _tiny()
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        m(torch.zeros(3, 16, 64, 64))
    with pytest.raises(ValueError, match="forward_chunks"):
        m.forward_chunks(torch.zeros(1, 1, 16, 64, 64))
    # settings the network cannot be built from: ModelError (a TallformerError, one line)
    with pytest.raises(ModelError, match="unknown backbone arch 'swin_x'"):
        build_backbone("swin_x")
    with pytest.raises(ModelError, match="missing key"):
        build_backbone({"embed_dim": 8, "depths": [1]})
    with pytest.raises(ModelError, match=r"num_heads\[1\] = 3"):
        build_backbone({"embed_dim": 8, "depths": [1, 1], "num_heads": [1, 3],
                        "window_size": [2, 2, 2], "patch_size": [2, 4, 4]})
    with pytest.raises(ModelError, match="chunk_size 15"):
        build_backbone("tiny", chunk_size=15)
    with pytest.raises(ModelError, match="frozen_stages"):
        build_backbone("tiny", frozen_stages=5)
    assert issubclass(ModelError, TallformerError)
    assert issubclass(ModelError, ValueError)


# --------------------------------------------------------------------------- training


def test_frozen_stages_get_no_gradient_and_stay_in_eval() -> None:
    m = _tiny(chunk_size=16)
    m.train()
    frozen = [m.patch_embed, m.pos_drop, *m.features[:4]]
    assert all(not mod.training for f in frozen for mod in f.modules())
    assert all(mod.training for f in [*m.features[4:], m.norm] for mod in f.modules())
    m(torch.randn(1, 3, 16, 64, 64)).pow(2).mean().backward()
    for f in frozen:
        assert all(p.grad is None and not p.requires_grad for p in f.parameters())
    trainable = [p for f in [*m.features[4:], m.norm] for p in f.parameters()]
    assert trainable
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    m.eval()
    m.train(True)
    assert not m.features[3].training
    assert m.features[4].training


@pytest.mark.parametrize(("k", "n_frozen_features"), [(-1, 0), (0, 0), (1, 2), (4, 7)])
def test_frozen_stage_counts(k: int, n_frozen_features: int) -> None:
    m = build_backbone("tiny", frozen_stages=k)
    frozen = {id(p) for p in m.parameters() if not p.requires_grad}
    pe = {id(p) for p in m.patch_embed.parameters()}
    assert (pe <= frozen) == (k >= 0)
    for i, layer in enumerate(m.features):
        ids = {id(p) for p in layer.parameters()}
        assert (ids <= frozen) == (i < n_frozen_features)
        assert ids.isdisjoint(frozen) == (i >= n_frozen_features)
    assert all(p.requires_grad for p in m.norm.parameters())


def test_checkpointing_gives_the_same_outputs_and_gradients() -> None:
    """Train mode, drop path on: checkpointed blocks replay the same random drops."""
    results = []
    for ckpt in (False, True):
        m = _tiny(seed=3, chunk_size=16, frozen_stages=1, use_checkpoint=ckpt, drop_path_rate=0.5)
        m.train()
        torch.manual_seed(7)
        x = torch.randn(4, 3, 16, 32, 32)
        saved: list[int] = []

        def pack(t: torch.Tensor, saved: list[int] = saved) -> torch.Tensor:
            saved.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = m(x)
        y.pow(2).sum().backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}
        results.append((y.detach(), grads, sum(saved)))
    (y0, g0, s0), (y1, g1, s1) = results
    assert s1 < s0 / 2  # checkpointed blocks keep only their inputs for backward
    torch.testing.assert_close(y0, y1, atol=1e-6, rtol=0)
    assert g0.keys() == g1.keys()
    assert len(g0) > 0
    for n in g0:
        torch.testing.assert_close(g0[n], g1[n], atol=1e-5, rtol=1e-4, msg=n)


def test_build_from_config() -> None:
    cfg = BackboneConfig(arch="tiny", drop_path_rate=0.0, frozen_stages=1, use_checkpoint=False, chunk_size=16)
    m = build_backbone_from_config(cfg)
    assert m.chunk_size == 16
    assert m.frozen_stages == 1
    assert not m.use_checkpoint
    assert m.arch.window_size == PRESETS["tiny"].window_size
    assert m.features[6][1].stochastic_depth.p == 0.0
    cfg = BackboneConfig(arch="tiny", embed_dim=16, num_heads=[1, 1, 2, 4], window_size=[4, 4, 4])
    m = build_backbone_from_config(cfg)
    assert m.num_features == 128
    assert m.arch.window_size == (4, 4, 4)
    with pytest.raises(ConfigError, match=r"model.backbone.embed_dim"):
        build_backbone_from_config(BackboneConfig(arch="custom"))
    cfg = BackboneConfig(arch="custom", embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                         window_size=[2, 2, 2], patch_size=[2, 4, 4], frozen_stages=0)
    assert build_backbone_from_config(cfg).num_features == 16
    with pytest.raises(ConfigError, match=r"^model.backbone: .*num_heads"):
        build_backbone_from_config(BackboneConfig(arch="tiny", num_heads=[1, 2, 4]))
