"""The ActionFormer family as a whole: the `model.actionformer` config section and its
errors, `build_actionformer` with the Video Swin backbone and the memory bank (training
forward on fresh + cached chunks, losses from window-frame ground truth, inference on a
whole video's features in seconds), release checkpoints read one key to one key, and the
examples in the package's docstrings."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest
import torch

import actionformer_reference as ref
import tallformer.models.actionformer as af
from tallformer.config import Config, ConfigError, load_config
from tallformer.models.actionformer.detector import build_actionformer
from tallformer.models.actionformer.loss import ActionFormerLoss
from tallformer.models.actionformer.net import ActionFormerNet
from tallformer.models.actionformer.release_checkpoint import (
    is_release_checkpoint,
    load_release_weights,
    release_shapes,
    release_state_dict,
)
from tallformer.models.actionformer.targets import frames_to_grid
from tallformer.models.weights import WeightsError

single_thread = ref.single_thread  # autouse: one intra-op thread

SMALL = ["model.kind=actionformer", "model.backbone.arch=tiny", "model.backbone.drop_path_rate=0.0",
         "data.num_frames=64", "data.frame_size=[32, 32]", "data.crop_size=32", "model.num_classes=3",
         "model.actionformer.backbone_arch=[1, 1, 2]", "model.actionformer.n_head=2",
         "model.actionformer.n_mha_win_size=5", "model.actionformer.embd_dim=16", "model.actionformer.fpn_dim=16",
         "model.actionformer.head_dim=16", "model.actionformer.regression_range=[[0, 4], [4, 8], [8, 1000]]",
         "model.actionformer.max_seq_len=48", "model.actionformer.train_cfg.droppath=0.0"]


# --------------------------------------------------------------------------- config


def test_defaults_are_the_release_thumos14_config() -> None:
    a = Config().model.actionformer
    assert (a.backbone_arch, a.n_mha_win_size, a.embd_dim, a.max_buffer_len_factor) == ([2, 2, 5], 19, 512, 6.0)
    assert a.regression_range[-1] == [64.0, 10000.0]
    assert a.max_seq_len == 576
    t, s = a.train_cfg, a.test_cfg
    assert (t.init_loss_norm, t.droppath, t.dropout, t.center_sample_radius) == (100, 0.1, 0, 1.5)
    assert (s.pre_nms_topk, s.min_score, s.max_seg_num, s.voting_thresh, s.multiclass_nms, s.nms_method) == \
        (2000, 0.001, 200, 0.7, True, "soft")


@pytest.mark.parametrize(("override", "message"), [
    ("n_mha_win_size=3", "odd and >= 5"),
    ("n_mha_win_size=8", "odd and >= 5"),
    ("n_mha_win_size=[19, 19]", "6 levels"),
    ("max_seq_len=480", "multiple of 576.*use 576"),
    ("fpn_dim=256", "must equal 'model.actionformer.fpn_dim'"),
    ("n_head=3", "must divide"),
    ("regression_range=[[0, 4], [4, 10000]]", "one \\[lo, hi\\] pair"),
    ("scale_factor=3", "1 or even"),
    ("head_num_layers=1|head_dim=256", "head_num_layers' = 1"),
    ("embd_kernel_size=4", "must be odd"),
    ("fpn_start_level=6", "below the number of backbone levels"),
    ("train_cfg.center_sample=middle", "one of 'radius', 'none'"),
    ("test_cfg.nms_method=linear", "one of 'soft', 'hard', 'none'"),
    ("train_cfg.droppath=1.0", "out of range"),
])
def test_config_errors_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, [f"model.actionformer.{o}" for o in override.split("|")])
    assert "model.actionformer." in str(err.value)
    assert "\n" not in str(err.value)


def test_a_misplaced_key_hints_the_shortest_match() -> None:
    """`nms_method` exists in `test` and in `model.actionformer.test_cfg`: the hint names the first."""
    with pytest.raises(ConfigError, match=r"Did you mean 'test\.nms_method'"):
        load_config(None, ["nms_method=hard"])


def test_global_attention_and_per_level_windows_are_accepted() -> None:
    assert load_config(None, ["model.actionformer.n_mha_win_size=-1", "model.actionformer.max_seq_len=64"])
    cfg = load_config(None, ["model.actionformer.n_mha_win_size=[9, 9, 9, 9, 19, 19]"])
    assert cfg.model.actionformer.n_mha_win_size == [9, 9, 9, 9, 19, 19]


def test_build_errors() -> None:
    with torch.device("meta"), pytest.raises(ConfigError, match="set it to 80 "):
        build_actionformer(load_config(None, [*SMALL, "data.num_frames=160"]))
    with torch.device("meta"), pytest.raises(ConfigError, match="head_empty_cls"):
        build_actionformer(load_config(None, [*SMALL, "model.actionformer.train_cfg.head_empty_cls=[3]"]))


# --------------------------------------------------------------------------- the detector


@pytest.fixture(scope="module")
def small() -> af.ActionFormerDetector:
    torch.manual_seed(0)
    det = build_actionformer(load_config(None, SMALL))
    ref.randomize(det.actionformer, 1)
    return det


def test_state_holds_the_network_and_the_normaliser(small: af.ActionFormerDetector) -> None:
    keys = list(small.state_dict())
    assert "criterion.loss_normalizer" in keys
    net_keys = {k[len("actionformer."):] for k in keys if k.startswith("actionformer.")}
    assert net_keys == set(small.actionformer.state_dict())
    assert small.actionformer.input_dim == small.backbone.num_features == 192
    assert (small.feat_stride, small.num_frames, small.num_classes) == (2, 2, 3)


def test_forward_train_with_the_bank_and_losses_from_window_frames(small: af.ActionFormerDetector) -> None:
    torch.manual_seed(2)
    small.train()
    chunks = torch.randn(1, 3, 32, 32, 32)  # chunk 1 of 2 is fresh, chunk 0 comes from the bank
    cached = torch.randn(1, 1, 192, 16).half()
    keep = torch.tensor([[False, True]])
    out, fresh = small.forward_train(chunks, cached, keep)
    assert fresh.shape == (1, 192, 16)
    assert not fresh.requires_grad
    assert [tuple(c.shape) for c in out.cls_logits] == [(1, 48, 3), (1, 24, 3), (1, 12, 3)]
    assert [int(m.sum()) for m in out.masks] == [32, 16, 8]  # 64 frames -> 32 features, padded to 48
    feats = torch.cat([cached[:, 0].float(), fresh], dim=-1)  # time order
    with torch.no_grad():
        again = small.forward_features(feats)
    torch.testing.assert_close(again.cls_logits[0], out.cls_logits[0].detach())

    gt_frames = [torch.tensor([[10.0, 40.0], [44.0, 60.0]])]
    labels = [torch.tensor([2, 0])]
    norm_before = float(small.criterion.loss_normalizer)
    losses = small.loss(out, gt_frames, labels)
    direct = ActionFormerLoss(3, init_loss_norm=norm_before)(
        out.masks, out.cls_logits, out.offsets, out.points, [torch.tensor([[4.5, 19.5], [21.5, 29.5]])], labels)
    for key in ("loss_cls", "loss_reg", "loss"):
        torch.testing.assert_close(losses[key], direct[key])
    assert float(small.criterion.loss_normalizer) != norm_before
    losses["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in small.backbone.parameters())
    assert small.actionformer.reg_head.offset_head.conv.weight.grad is not None
    small.zero_grad(set_to_none=True)

    short, _ = small.forward_train(chunks, cached, keep, valid_frames=[41])
    assert [int(m.sum()) for m in short.masks] == [21, 11, 6]
    assert torch.equal(frames_to_grid(gt_frames[0], 2, 2), torch.tensor([[4.5, 19.5], [21.5, 29.5]]))


def test_inference_on_a_whole_video_gives_seconds(small: af.ActionFormerDetector) -> None:
    small.eval()
    torch.manual_seed(3)
    feats = torch.randn(1, 192, 70)  # 140 frames: longer than max_seq_len, padded to 80
    dets = small.infer_features(feats, fps=15.0, duration=9.3)
    with torch.no_grad():
        out = small.forward_features(feats)
    assert out.cls_logits[0].shape[1] == 80
    post = small.post_process
    want = post([c[0] for c in out.cls_logits], [o[0] for o in out.offsets], out.points, [m[0] for m in out.masks],
                fps=15.0, duration=9.3, feat_stride=2, num_frames=2)
    assert torch.equal(dets.segments, want.segments)
    assert torch.equal(dets.labels, want.labels)
    assert 0 < len(dets) <= post.max_seg_num
    assert bool(((dets.segments >= 0) & (dets.segments <= 9.3)).all())
    assert dets.labels.dtype == torch.int64
    assert bool((dets.scores[:-1] >= dets.scores[1:]).all())
    with pytest.raises(ValueError, match="one video"):
        small.infer_features(torch.randn(2, 192, 10), fps=15.0, duration=1.0)


# --------------------------------------------------------------------------- release checkpoints


def _net(droppath: float = 0.1, classes: int = 3) -> ActionFormerNet:
    return ActionFormerNet(12, classes, backbone_arch=(2, 1, 2), n_head=2, n_mha_win_size=5, embd_dim=8, fpn_dim=8,
                           head_dim=8, regression_range=((0, 4), (4, 8), (8, 1000)), max_seq_len=16,
                           droppath=droppath)


def _write_release(path: Path, net: ActionFormerNet, ema: ActionFormerNet, prefix: str = "module.") -> None:
    """As the release's train.py saves it: the DataParallel model's and the EMA model's state
    dicts (`module.` keys), the AdamW state and the scheduler's primitives."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    net(*net.pad(torch.randn(1, 12, 10))).cls_logits[0].sum().backward()
    opt.step()
    torch.save({"epoch": 35, "state_dict": {prefix + k: v for k, v in net.state_dict().items()},
                "scheduler": {"base_lrs": [1e-4, 1e-4], "last_epoch": 100, "warmup_epochs": 5, "eta_min": 1e-8},
                "optimizer": opt.state_dict(),
                "state_dict_ema": {prefix + k: v for k, v in ema.state_dict().items()}}, path)


def test_release_checkpoint_converts_exactly(tmp_path: Path) -> None:
    torch.manual_seed(4)
    plain, ema = _net(), _net()
    ref.randomize(ema, 5)
    path = tmp_path / "epoch_035.pth.tar"
    _write_release(path, plain, ema)
    obj = torch.load(path, weights_only=True)
    assert is_release_checkpoint(obj)
    assert not is_release_checkpoint({"state_dict": {"head.retina_cls.weight": 1}})
    assert release_shapes(release_state_dict(obj)) == (12, 3)
    for use_ema, source in ((True, ema), (False, plain)):
        target = _net()
        info = load_release_weights(path, target, ema=use_ema)
        assert info == {"epoch": 35, "input_dim": 12, "num_classes": 3, "ema": use_ema}
        for k, v in source.state_dict().items():
            assert torch.equal(target.state_dict()[k], v), k
    # keys without `module.` (a model saved outside DataParallel) read the same
    bare = tmp_path / "bare.pth.tar"
    _write_release(bare, plain, ema, prefix="")
    target = _net()
    load_release_weights(bare, target)
    assert torch.equal(target.state_dict()["cls_head.cls_head.conv.weight"], ema.state_dict()["cls_head.cls_head.conv.weight"])


def test_release_checkpoint_errors_are_one_line_in_the_release_names(tmp_path: Path) -> None:
    path = tmp_path / "epoch_010.pth.tar"
    _write_release(path, _net(), _net())
    with pytest.raises(WeightsError, match=r"unexpected keys \(6\): backbone\.stem\.0\.drop_path_attn\.scale.*"
                                           r"droppath > 0") as err:
        load_release_weights(path, _net(droppath=0.0))
    assert "\n" not in str(err.value)
    assert str(path) in str(err.value)
    with pytest.raises(WeightsError, match=r"mis-shaped keys \(2\): cls_head\.cls_head\.conv\.weight \(file \[3, 8, 3\], "
                                           r"model \[5, 8, 3\]\)"):
        load_release_weights(path, _net(classes=5))
    obj = torch.load(path, weights_only=True)
    del obj["state_dict_ema"]["module.reg_head.scale.1.scale"]
    obj["state_dict_ema"]["module.extra.weight"] = torch.zeros(1)
    torch.save(obj, path)
    with pytest.raises(WeightsError, match=r"missing keys \(1\): reg_head\.scale\.1\.scale; unexpected keys \(1\): "
                                           r"extra\.weight"):
        load_release_weights(path, _net())
    del obj["state_dict_ema"]
    torch.save(obj, path)
    with pytest.raises(WeightsError, match=r"no 'state_dict_ema'.*--no-ema"):
        load_release_weights(path, _net())
    torch.save([1, 2], path)
    with pytest.raises(WeightsError, match="not an ActionFormer checkpoint"):
        load_release_weights(path, _net())


# --------------------------------------------------------------------------- docstrings


def test_the_examples_in_the_docstrings_run() -> None:
    failed, tried = 0, 0
    for info in pkgutil.iter_modules(af.__path__, prefix="tallformer.models.actionformer."):
        result = doctest.testmod(importlib.import_module(info.name), optionflags=doctest.ELLIPSIS)
        failed, tried = failed + result.failed, tried + result.attempted
    assert failed == 0
    assert tried > 40
