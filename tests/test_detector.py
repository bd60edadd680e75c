"""TALLFormer detector: per-part parameter counts (the original classes' counts with the paper
config), shapes (original: vedatad/engines/train_engine.py:66-146), memory-bank composition in
time order (vedatad/models/detectors/mem_single_stage_detector.py:38-71), frozen stages,
SyncBN, and overfitting one clip."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from tallformer.config import Config, ConfigError, load_config, shipped_config_path
from tallformer.engine.factory import build_detector, parameter_counts
from tallformer.errors import TallformerWarning
from tallformer.models import count_parameters
from tallformer.models.anchor_detector import TALLFormer
from tallformer.models.shared import num_tokens

DEMO = shipped_config_path("demo")

PAPER_COUNTS = {  # the original classes instantiated with the paper config: (total, trainable)
    "backbone": (87_638_984, 84_930_976),
    "srm": (2_360_320, 2_360_320),
    "tcm": (9_462_864, 9_462_864),
    "tdm": (14_710_784, 14_710_784),
    "fpn": (1_643_520, 1_643_520),
    "head": (1_661_550, 1_661_550),
}
DEMO_COUNTS = {  # the shipped demo config (tiny backbone, 2 frozen stages): (total, trainable)
    "backbone": (1_307_322, 1_205_928),
    "srm": (49_280, 49_280),
    "tcm": (100_216, 100_216),
    "tdm": (174_912, 174_912),
    "fpn": (66_560, 66_560),
    "head": (55_454, 55_454),
}
DEMO_TOTAL = (1_753_744, 1_652_350)


def _count(module: nn.Module) -> tuple[int, int]:
    ps = list(module.parameters())
    return sum(p.numel() for p in ps), sum(p.numel() for p in ps if p.requires_grad)


def _parts(model: TALLFormer) -> dict[str, nn.Module]:
    return {"backbone": model.backbone, "srm": model.neck.srm, "tcm": model.neck.tcm,
            "tdm": model.neck.tdm, "fpn": model.neck.fpn, "head": model.head}


@pytest.fixture(scope="module")
def paper_meta() -> TALLFormer:
    with torch.device("meta"):
        return build_detector(Config())


@pytest.fixture
def tiny() -> tuple[Config, TALLFormer]:
    torch.manual_seed(0)
    cfg = load_config(DEMO)
    return cfg, build_detector(cfg)


def test_paper_parameter_counts_per_part(paper_meta: TALLFormer) -> None:
    counts = {name: _count(m) for name, m in _parts(paper_meta).items()}
    assert counts == PAPER_COUNTS
    assert _count(paper_meta) == (117_478_022, 114_770_014)
    info = count_parameters(paper_meta)
    assert info == parameter_counts(Config())
    assert list(info["parts"]) == list(PAPER_COUNTS)
    assert {k: (v["total"], v["trainable"]) for k, v in info["parts"].items()} == PAPER_COUNTS
    assert (info["total"], info["trainable"]) == (117_478_022, 114_770_014)


def test_demo_parameter_counts_are_exact(tiny) -> None:
    _, model = tiny
    info = count_parameters(model)
    assert {k: (v["total"], v["trainable"]) for k, v in info["parts"].items()} == DEMO_COUNTS
    assert (info["total"], info["trainable"]) == DEMO_TOTAL


def test_paper_shapes_on_meta_device(paper_meta: TALLFormer) -> None:
    """Training step shapes (train_engine.py:66-146): 2 of 15 chunks fresh, 13 from the bank (fp16)."""
    assert num_tokens(480) == 60
    keep = torch.zeros(4, 15, dtype=torch.bool)
    keep[:, [3, 9]] = True
    with torch.device("meta"):
        paper_meta.train()
        (cls, reg), fresh = paper_meta.forward_train(
            torch.empty(8, 3, 32, 224, 224), torch.empty(4, 13, 1024, 16, dtype=torch.float16), keep)
        assert fresh.shape == (8, 1024, 16)
        assert not fresh.requires_grad
        assert [tuple(c.shape) for c in cls] == [(4, 100, n) for n in (60, 30, 15, 8, 4)]
        assert [tuple(r.shape) for r in reg] == [(4, 10, n) for n in (60, 30, 15, 8, 4)]
        cls, reg = paper_meta.forward_infer(torch.empty(1, 3, 480, 224, 224))
        assert [tuple(c.shape) for c in cls] == [(1, 100, n) for n in (60, 30, 15, 8, 4)]


def test_forward_train_composes_fresh_and_cached_in_time_order(tiny) -> None:
    """With bank features equal to the backbone's, forward_train == forward_infer (eval)."""
    _, model = tiny
    model.eval()
    clip = torch.randn(2, 3, 128, 56, 56)
    chunks = clip.reshape(2, 3, 4, 32, 56, 56).transpose(1, 2)  # [B, n, 3, 32, H, W]
    with torch.no_grad():
        all_feats = model.backbone.forward_chunks(chunks.reshape(8, 3, 32, 56, 56)).reshape(2, 4, 192, 16)
        ref_cls, ref_reg = model.forward_infer(clip)
    keep = torch.tensor([[True, False, True, False], [False, False, True, True]])
    fresh_chunks = chunks[keep]  # sample-major, increasing chunk id
    cached = all_feats[~keep].reshape(2, 2, 192, 16)
    with torch.no_grad():
        (cls, reg), fresh = model.forward_train(fresh_chunks, cached, keep)
    torch.testing.assert_close(fresh, all_feats[keep], atol=1e-5, rtol=1e-5)
    for a, b in zip((*cls, *reg), (*ref_cls, *ref_reg), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # fp16 bank features are cast to the fresh features' dtype
    with torch.no_grad():
        (cls16, _), _ = model.forward_train(fresh_chunks, cached.half(), keep)
    torch.testing.assert_close(cls16[0], ref_cls[0], atol=2e-2, rtol=2e-2)
    with pytest.raises(ValueError, match="kept chunks"):
        model.forward_train(fresh_chunks[:3], cached, keep)
    with pytest.raises(ValueError, match="cached_features"):
        model.forward_train(fresh_chunks, cached[:, :1], keep)


def test_keep_ratio_extremes(tiny) -> None:
    """keep none: no backbone call; keep all: no cached features (ours: the original's
    keep_ratio 1.0 crashes on an empty bank read)."""
    _, model = tiny
    calls = []
    model.backbone.forward_chunks = _counting(model.backbone.forward_chunks, calls)
    keep0 = torch.zeros(2, 4, dtype=torch.bool)
    (cls, _), fresh = model.forward_train(torch.zeros(0, 3, 32, 56, 56), torch.randn(2, 4, 192, 16), keep0)
    assert calls == []
    assert fresh.shape == (0, 192, 16)
    assert [c.shape[-1] for c in cls] == [16, 8, 4, 2]
    keep1 = torch.ones(2, 4, dtype=torch.bool)
    (cls, _), fresh = model.forward_train(torch.randn(8, 3, 32, 56, 56), torch.zeros(2, 0, 0, 16), keep1)
    assert calls == [1]
    assert fresh.shape == (8, 192, 16)
    assert cls[0].shape == (2, 4 * 5, 16)


def _counting(fn, calls: list[int]):
    def wrapped(x):
        calls.append(1)
        return fn(x)
    return wrapped


def test_frozen_stages_stay_frozen(tiny) -> None:
    _, model = tiny
    model.train()
    frozen = model.backbone.frozen_modules()
    assert frozen
    assert all(not m.training for f in frozen for m in f.modules())
    assert model.neck.training
    assert model.head.training
    assert model.backbone.norm.training
    keep = torch.tensor([[True, False, False, False]])
    (cls, reg), _ = model.forward_train(torch.randn(1, 3, 32, 56, 56), torch.randn(1, 3, 192, 16), keep)
    loss = model.loss((cls, reg), [torch.tensor([[10.0, 40.0]])], [torch.tensor([1])])["loss"]
    loss.backward()
    frozen_ids = {id(p) for f in frozen for p in f.parameters()}
    for name, p in model.named_parameters():
        if id(p) in frozen_ids:
            assert not p.requires_grad, name
            assert p.grad is None, name
        else:
            assert p.requires_grad, name
            assert p.grad is not None, name


def test_build_checks_strides_and_levels() -> None:
    cfg = load_config(DEMO, ["model.head.anchor_strides=[8, 16, 32, 64, 128]"])
    with pytest.raises(ConfigError, match="anchor_strides has 5 entries but the neck makes 4 levels"):
        build_detector(cfg)
    cfg = load_config(DEMO, ["model.head.anchor_strides=[4, 8, 16, 32]"])
    with pytest.raises(ConfigError, match=r"set them to \[8, 16, 32, 64\]"):
        build_detector(cfg)


def test_sync_bn_under_distributed(tmp_path: Path) -> None:
    import torch.distributed as dist

    cfg = load_config(DEMO, ["model.sync_bn=true"])
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = build_detector(cfg)
    finally:
        dist.destroy_process_group()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns
    assert all(isinstance(m, nn.SyncBatchNorm) for m in bns)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in build_detector(cfg).modules())


def test_sync_bn_without_process_group_warns_only_when_several_processes_are_expected(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Built before init_process_group under torchrun (WORLD_SIZE > 1), SyncBN would stay off
    silently: a TallformerWarning says so. One process, or sync_bn off: no warning."""
    cfg = load_config(DEMO, ["model.sync_bn=true"])
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.warns(TallformerWarning, match=r"model.sync_bn is true and WORLD_SIZE=4, but "
                                               r"torch.distributed has no process group yet.*"
                                               r"after torch.distributed.init_process_group"):
        model = build_detector(cfg)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_detector(load_config(DEMO, ["model.sync_bn=false"]))
        monkeypatch.setenv("WORLD_SIZE", "1")
        build_detector(cfg)
        monkeypatch.delenv("WORLD_SIZE")
        build_detector(cfg)


def test_tiny_overfits_one_clip(tiny) -> None:
    """Losses, assignment and gradients are wired right: the loss falls by > 90%.

    One chunk goes through the backbone with gradients, the other three come from a fixed
    "bank" tensor; two gt segments in window frames. At the demo's 32x32 crops 60 steps
    reach a loss 4% of the first (and both instances within 2 frames): the thresholds
    below keep a margin of 2.4x and 4x.
    """
    _, model = tiny
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 60 chaotic SGD steps: the same numbers on any machine
    try:
        _overfit_and_check(model)
    finally:
        torch.set_num_threads(threads)


def _overfit_and_check(model: TALLFormer) -> None:
    torch.manual_seed(0)
    model = copy.deepcopy(model).train()
    chunk = torch.randn(1, 3, 32, 32, 32)  # the demo config's crop size
    cached = torch.randn(1, 3, 192, 16)
    keep = torch.tensor([[False, True, False, False]])
    gts, labels = [torch.tensor([[8.0, 40.0], [70.0, 118.0]])], [torch.tensor([1, 3])]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    history = []
    for _ in range(60):
        outputs, _ = model.forward_train(chunk, cached, keep)
        loss = model.loss(outputs, gts, labels)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.1 * history[0], history[::10]
    # the fitted outputs decode to both instances with their classes. Still in train mode:
    # the head's BatchNorm is shared by all levels (as the original's, retina_head.py:13-117), so its running statistics
    # mix the levels and one clip cannot calibrate eval mode.
    with torch.no_grad():
        outputs, _ = model.forward_train(chunk, cached, keep)
    det = model.predict(outputs, [128], [0])[0]
    best = {}
    for seg, score, label in zip(det.segments, det.scores, det.labels, strict=True):
        if score > best.get(int(label), (0, None))[0]:
            best[int(label)] = (float(score), seg)
    assert set(best) >= {1, 3}
    torch.testing.assert_close(best[1][1], gts[0][0], atol=8.0, rtol=0)
    torch.testing.assert_close(best[3][1], gts[0][1], atol=8.0, rtol=0)


def test_forward_train_rejects_cached_layouts_that_would_mix_samples(tiny) -> None:
    """cached_features must be sample-major [B, n-k, C, rows] with the same drop count for
    every sample: the original's chunk-first [n-k, B, C, rows] layout (train_engine.py:85-108), or
    unequal keep counts, have the right element count but would put bank rows into the
    wrong sample."""
    _, model = tiny
    model.eval()
    chunks = torch.randn(2, 3, 32, 56, 56)
    keep = torch.tensor([[True, False, False, False], [False, False, True, False]])
    with torch.no_grad():
        model.forward_train(chunks, torch.randn(2, 3, 192, 16), keep)  # the right layout
        with pytest.raises(ValueError, match=r"expected \[2, 3, C, rows\]"):
            model.forward_train(chunks, torch.randn(3, 2, 192, 16), keep)  # chunk-first
        uneven = torch.tensor([[True, True, True, False], [True, False, False, False]])
        with pytest.raises(ValueError, match="same number of chunks"):
            model.forward_train(torch.randn(4, 3, 32, 56, 56), torch.randn(2, 2, 192, 16), uneven)
