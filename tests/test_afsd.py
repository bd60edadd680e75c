"""The ActivityNet (AFSD) detector: per-part parameter counts (the original classes' counts
with the paper config, AFSD/anet_video_cls/BDNet.py + configs/membank/1.0.0.py), shapes at
the paper's size on the meta device, init (BDNet.py:481-557), priors and proposal regions
(BDNet.py:301-306,355-399), boundary max pooling against a loop re-statement of the CUDA
kernel (AFSD/prop_pooling/boundary_max_pooling_kernel.cu:17-46), the memory-bank
composition, and a few-step overfit on a synthetic video."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tallformer.config import ConfigError, load_config
from tallformer.engine.factory import build_detector, parameter_counts
from tallformer.models import count_parameters
from tallformer.models.afsd import AFSD, ScaleExp, build_afsd
from tallformer.models.afsd_pooling import (
    boundary_max_pool,
    make_priors,
    proposal_regions,
)
from tallformer.models.neck import ConvTDM, Neck

PAPER_COUNTS = {  # the original classes with the paper's ActivityNet config: (total, trainable)
    "backbone": (87_638_984, 87_638_984),  # Swin-B, frozen_stages -1
    "srm": (2_360_320, 2_360_320),
    "tcm": (9_466_320, 9_466_320),  # 3 x 3,152,384 + 3 x (2 * 96 - 1) * 16 bias table
    "tdm": (3_937_280, 3_937_280),  # 5 x (512 * 512 * 3 + GN 1024)
    "fpn": (6_303_744, 6_303_744),  # 6 x (512 * 512 + 1024 + 512 * 512 * 3 + 1024)
    "action_head": (206_025, 206_025),  # Linear 1024 -> 201
    "head": (9_210_895, 9_210_895),
}
PAPER_TOTAL = 119_123_568
# the head by module, as the original's Unit1D convs (bias) + GroupNorm
HEAD_COUNTS = {
    "loc_tower": 2 * (512 * 512 * 3 + 512 + 1024), "conf_tower": 2 * (512 * 512 * 3 + 512 + 1024),
    "loc_head": 512 * 2 * 3 + 2, "conf_head": 512 * 2 * 3 + 2,
    "loc_proposal_branch": 2_104_832, "conf_proposal_branch": 2_104_832,
    "prop_loc_head": 512 * 2 + 2, "prop_conf_head": 512 * 2 + 2, "center_head": 512 * 3 + 1,
    "frame_branch": 2 * (512 * 512 * 3 + 512 + 1024) + 512 * 512 + 512 + 1024, "scales": 6,
}
DEMO_COUNTS = {
    "backbone": (1_307_322, 1_307_322), "srm": (49_280, 49_280), "tcm": (100_216, 100_216),
    "tdm": (37_248, 37_248), "fpn": (66_560, 66_560), "action_head": (965, 965),
    "head": (147_853, 147_853),
}


@pytest.fixture(scope="module")
def paper_meta() -> AFSD:
    with torch.device("meta"):
        model = build_detector(load_config("anet_swin_b"))
    assert isinstance(model, AFSD)
    return model


@pytest.fixture
def tiny() -> AFSD:
    torch.manual_seed(0)
    model = build_detector(load_config("anet_demo"))
    assert isinstance(model, AFSD)
    return model


def test_paper_parameter_counts_per_part(paper_meta: AFSD) -> None:
    info = count_parameters(paper_meta)
    assert list(info["parts"]) == list(PAPER_COUNTS)
    assert {k: (v["total"], v["trainable"]) for k, v in info["parts"].items()} == PAPER_COUNTS
    assert (info["total"], info["trainable"]) == (PAPER_TOTAL, PAPER_TOTAL)
    assert info == parameter_counts(load_config("anet_swin_b"))
    head = {name: sum(p.numel() for p in m.parameters()) for name, m in paper_meta.head.named_children()}
    assert head == HEAD_COUNTS
    # ProposalBranch: k1 convs 512->512, 512->1024, 512->512, 2048->512 (bias) + GroupNorms
    assert HEAD_COUNTS["loc_proposal_branch"] == (262_656 + 1024) + (525_312 + 2048) + (262_656 + 1024) + (1_049_088 + 1024)


def test_demo_parameter_counts_are_exact(tiny: AFSD) -> None:
    info = count_parameters(tiny)
    assert {k: (v["total"], v["trainable"]) for k, v in info["parts"].items()} == DEMO_COUNTS
    assert info["total"] == sum(t for t, _ in DEMO_COUNTS.values()) == 1_709_444


def test_paper_shapes_on_meta_device(paper_meta: AFSD) -> None:
    """A 768-frame video: 9 of 24 chunks fresh, 15 from the bank (fp16); then a test pass."""
    keep = torch.zeros(1, 24, dtype=torch.bool)
    keep[0, ::3] = True
    keep[0, 22] = True
    shapes = {"action_logits": (1, 201), "loc": (1, 189, 2), "conf": (1, 189, 2),
              "prop_loc": (1, 189, 2), "prop_conf": (1, 189, 2), "center": (1, 189, 1),
              "priors": (189, 2), "start": (1, 768, 256), "end": (1, 768, 256),
              "start_loc_prop": (1, 96, 512), "end_loc_prop": (1, 96, 512),
              "start_conf_prop": (1, 96, 512), "end_conf_prop": (1, 96, 512)}
    with torch.device("meta"):
        paper_meta.train()
        out, fresh = paper_meta.forward_train(torch.empty(9, 3, 32, 224, 224),
                                              torch.empty(1, 15, 1024, 16, dtype=torch.float16), keep)
        assert fresh.shape == (9, 1024, 16)
        assert not fresh.requires_grad
        assert {k: tuple(v.shape) for k, v in out._asdict().items()} == shapes
        levels = paper_meta.neck(torch.empty(2, 1024, 384))
        assert [tuple(f.shape) for f in levels] == [(2, 512, n) for n in (96, 48, 24, 12, 6, 3)]
        paper_meta.eval()
        out = paper_meta.forward_infer(torch.empty(1, 3, 768, 224, 224))
        assert {k: tuple(v.shape) for k, v in out._asdict().items()} == shapes
    assert paper_meta.head.strides == [8, 16, 32, 64, 128, 256]
    assert paper_meta.neck.tcm.layers[0].attn.max_len == 96
    assert isinstance(paper_meta.neck.tdm, ConvTDM)
    norms = [m for m in paper_meta.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms == []  # GroupNorm everywhere (original: configs/membank/1.0.0.py:41-79)


def test_init_is_the_originals(tiny: AFSD) -> None:
    """Every Conv1d of neck / action head / head Xavier-uniform with bias 0, then the
    refinement-related convs N(0, 0.01); GroupNorm 1 / 0; Linear and ScaleExp defaults."""
    def bound(conv: nn.Conv1d) -> float:
        o, i, k = conv.weight.shape
        return math.sqrt(6 / (i * k + o * k))

    refine = {id(m) for r in tiny.head.refine_modules() for m in r.modules()}
    xavier = [m for part in (tiny.neck, tiny.head) for m in part.modules()
              if isinstance(m, nn.Conv1d) and id(m) not in refine]
    assert xavier  # SRM, TDM, FPN and the frame branch
    for conv in xavier:
        assert conv.weight.abs().max() <= bound(conv)
        assert conv.weight.std() > 0.5 * bound(conv) / math.sqrt(3)
        assert conv.bias is None or not conv.bias.any()
    weights = torch.cat([m.weight.flatten() for m in tiny.head.modules()
                         if isinstance(m, nn.Conv1d) and id(m) in refine])
    assert abs(float(weights.detach().std()) - 0.01) < 0.0005
    assert all(not m.bias.any() for m in tiny.head.modules() if isinstance(m, nn.Conv1d) and id(m) in refine)
    for m in tiny.modules():
        if isinstance(m, nn.GroupNorm):
            assert bool((m.weight == 1).all())
            assert not m.bias.any()
    lin = tiny.action_head.cls
    assert lin.weight.abs().max() <= 1 / math.sqrt(lin.in_features)  # PyTorch default
    assert all(float(s.scale.detach()) == 1.0 for s in tiny.head.scales)


def test_scale_exp_caps_at_four_strides() -> None:
    s = ScaleExp(4.0)
    z = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    torch.testing.assert_close(s(z), torch.tensor([math.exp(-1), 1.0, math.e, 4.0]))
    torch.testing.assert_close(ScaleExp(None)(z), torch.exp(z))


def test_priors_and_proposal_regions() -> None:
    priors = make_priors([96, 48, 24, 12, 6, 3])
    assert priors.shape == (189, 2)
    assert priors[0].tolist() == [pytest.approx(0.5 / 96), 0.0]
    assert priors[188].tolist() == [pytest.approx(2.5 / 3), 5.0]
    assert torch.bincount(priors[:, 1].long()).tolist() == [96, 48, 24, 12, 6, 3]
    # level of 4 cells in a 32-frame clip (8 frames per cell), cell 1 (x = 1.5 / 4, 12 frames)
    loc = torch.tensor([[[8.0, 16.0], [4.0, 4.0], [40.0, 40.0], [0.0, 0.0]]])
    level, frame = proposal_regions(loc, priors[:0, 0].new_tensor([0.125, 0.375, 0.625, 0.875]), 32)
    # cell 0: distances in cells (1, 2), length 3: in = max(0.75, 1) = 1, out = max(0.3, 1) = 1;
    # left = 0 - 1, right = 0 + 2 -> round(-2, 0, 1, 3)
    assert level[0, 0].tolist() == [-2.0, 0.0, 1.0, 3.0]
    # cell 1: distances (0.5, 0.5), in = out = 1, left 0.5, right 1.5 -> round(-0.5, 1.5, 0.5,
    # 2.5) = (0, 2, 0, 2): half-to-even, as torch.round
    assert level[0, 1].tolist() == [0.0, 2.0, 0.0, 2.0]
    # frames: S = 12 - 4 = 8, E = 16, length 9: in = 2.25, out = 1 -> round(7, 10.25, 13.75, 17)
    assert frame[0, 1].tolist() == [7.0, 10.0, 14.0, 17.0]
    # cell 2: S = 20 - 40 = -20, E = 60, length 81: in = 20.25, out = 8.1
    assert frame[0, 2].tolist() == [round(-20 - 8.1), round(-20 + 20.25), round(60 - 20.25), round(60 + 8.1)]
    # zero distances: in = out = 1 (the floors); half-to-even rounding of x * t - 0.5
    assert level[0, 3].tolist() == [2.0, 4.0, 2.0, 4.0]
    assert frame[0, 3].tolist() == [27.0, 29.0, 27.0, 29.0]


def _loop_bmp(x: torch.Tensor, segments: torch.Tensor, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The CUDA kernel re-stated as loops: forward max and the (correct) arg-max backward."""
    b, c, t = x.shape
    n = segments.shape[1]
    out = torch.zeros(b, c, n, dtype=x.dtype)
    grad = torch.zeros_like(x)
    for i in range(b):
        for ch in range(c):
            kind = ch // (c // 2)
            for k in range(n):
                lo = min(max(0, int(segments[i, k, 2 * kind])), t - 1)
                hi = min(max(0, int(segments[i, k, 2 * kind + 1])), t - 1)
                best, arg = x[i, ch, lo], lo
                for j in range(lo + 1, hi + 1):
                    if x[i, ch, j] > best:
                        best, arg = x[i, ch, j], j
                out[i, ch, k] = best
                grad[i, ch, arg] += grad_out[i, ch, k]
    return out, grad


def test_boundary_max_pool_matches_the_kernel_values_and_gradients() -> None:
    """Integer-valued features (many ties: the first arg-max wins), regions past both ends,
    empty regions (hi < lo -> x[lo]), fractional bounds (truncated toward zero)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (2, 6, 20), generator=g).double()
    segments = torch.randint(-5, 25, (2, 7, 4), generator=g).double()
    segments[0, 0] = torch.tensor([-1.7, 3.9, 12.2, 8.0])  # start [0, 3], end empty -> x[12]
    segments[1, 1] = torch.tensor([19.5, 40.0, -3.0, -1.0])  # [19, 19] and [0, 0]
    x.requires_grad_(True)
    out = boundary_max_pool(x, segments)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    out.backward(grad_out)
    ref_out, ref_grad = _loop_bmp(x.detach(), segments, grad_out)
    torch.testing.assert_close(out.detach(), ref_out, rtol=0, atol=0)
    torch.testing.assert_close(x.grad, ref_grad, rtol=0, atol=0)
    # float features too, with float32 segments as the model gives them
    xf = torch.randn(1, 4, 30, generator=g, requires_grad=True)
    segf = torch.sort(torch.randint(-3, 33, (1, 5, 4), generator=g).float(), dim=-1).values
    outf = boundary_max_pool(xf, segf)
    outf.backward(torch.ones_like(outf))
    ref_out, ref_grad = _loop_bmp(xf.detach(), segf, torch.ones_like(outf))
    torch.testing.assert_close(outf.detach(), ref_out, rtol=0, atol=0)
    torch.testing.assert_close(xf.grad, ref_grad, rtol=0, atol=0)
    assert torch.autograd.gradcheck(lambda v: boundary_max_pool(v, segf.double()),
                                    (torch.randn(1, 4, 30, dtype=torch.float64, requires_grad=True),))
    with pytest.raises(ValueError, match="even channel count"):
        boundary_max_pool(torch.zeros(1, 3, 5), torch.zeros(1, 2, 4))


def test_boundary_max_pool_stays_within_the_candidates_ranges() -> None:
    """The paper's frame-level call (F_frame [1, 512, 768], 96 level-0 proposals of at most
    4 strides per side): what autograd keeps is a small fraction of the
    B x 256 x 96 x 768 floats per half that a mask over every frame would need."""
    torch.manual_seed(0)
    x = torch.randn(1, 512, 768, requires_grad=True)
    loc = torch.rand(1, 96, 2) * 32  # coarse distances capped at 4 x 8 frames
    _, frame = proposal_regions(loc, make_priors([96])[:, 0], 768)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = boundary_max_pool(x, frame)
    mask_bytes = 256 * 96 * 768 * 4  # one half of the mask formulation, float32
    assert sum(saved) < 0.02 * mask_bytes, sum(saved)
    width = int((frame[..., 1] - frame[..., 0]).max()) + 1
    assert width <= 26  # the widest start region, not T
    out.sum().backward()
    assert int((x.grad != 0).sum()) <= 512 * 96  # one arg-max per output


def test_frame_branch_and_heads_are_wired(tiny: AFSD) -> None:
    """start / end are the two halves of F_frame; the frame-level input is level 0
    nearest-upsampled (frame f <- cell f // 8); every parameter gets a gradient."""
    tiny.eval()
    feats = torch.randn(1, 192, 64)
    with torch.no_grad():
        pyramid = tiny.neck(feats)
        out = tiny.head(pyramid, tiny.action_head(feats))
        up = torch.repeat_interleave(pyramid[0], 8, dim=-1)
        frame = tiny.head.frame_branch(up)
    torch.testing.assert_close(out.start, frame[:, :32].transpose(1, 2))
    torch.testing.assert_close(out.end, frame[:, 32:].transpose(1, 2))
    assert (out.start >= 0).all()
    torch.testing.assert_close(out.priors, make_priors([16, 8, 4, 2]))
    assert bool((out.loc > 0).all())
    assert bool((out.loc <= 4 * torch.tensor(
        [8] * 16 + [16] * 8 + [32] * 4 + [64] * 2)[None, :, None]).all())
    tiny.train()
    out = tiny.forward_infer(torch.randn(1, 3, 128, 32, 32))
    tiny.loss(out, [torch.tensor([[10.0, 60.0]])], [torch.tensor([2])])["loss"].backward()
    assert [n for n, p in tiny.named_parameters() if p.grad is None] == []


def test_forward_train_composes_fresh_and_cached_in_time_order(tiny: AFSD) -> None:
    """With bank features equal to the backbone's, forward_train == forward_infer (eval)."""
    tiny.eval()
    clip = torch.randn(1, 3, 128, 32, 32)
    chunks = clip.reshape(1, 3, 4, 32, 32, 32).transpose(1, 2)[0]
    keep = torch.tensor([[False, True, False, True]])
    with torch.no_grad():
        feats = tiny.backbone.forward_chunks(chunks)
        ref = tiny.forward_infer(clip)
        out, fresh = tiny.forward_train(chunks[keep[0]], feats[~keep[0]][None], keep)
    torch.testing.assert_close(fresh, feats[keep[0]], atol=1e-5, rtol=1e-5)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="pad every clip"):
        tiny.forward_infer(torch.randn(1, 3, 96, 32, 32))


def test_build_checks_the_level_ranges() -> None:
    cfg = load_config("anet_demo", ["model.afsd.level_ranges=[[0, 16], [8, 32]]"])
    with pytest.raises(ConfigError, match=r"one \[lower, upper\] pair .* per feature level \(4"):
        build_afsd(cfg)
    cfg = load_config("anet_demo", ["model.afsd.norm_groups=24"])
    with pytest.raises(ConfigError, match="not divisible by 24 groups"):
        build_afsd(cfg)


def test_thumos14_neck_unchanged_by_the_new_arguments() -> None:
    """The ActivityNet neck options default to the THUMOS14 neck: same keys, same numbers."""
    torch.manual_seed(0)
    a = Neck(in_channels=8, channels=32, max_len=4, tcm_layers=1, tcm_heads=2, tdm_heads=2,
             tdm_kernels=[3], fpn_channels=32)
    torch.manual_seed(0)
    b = Neck(in_channels=8, channels=32, max_len=4, tcm_layers=1, tcm_heads=2, tdm_heads=2,
             tdm_kernels=[3], fpn_channels=32, tdm_kind="attention", norm="bn")
    assert list(a.state_dict()) == list(b.state_dict())
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    c = Neck(in_channels=8, channels=32, max_len=4, tcm_layers=1, tcm_heads=2,
             tdm_kernels=[3, 3], fpn_channels=32, tdm_kind="conv", norm="gn", num_groups=8)
    levels = c(torch.randn(2, 8, 16))
    assert [tuple(f.shape) for f in levels] == [(2, 32, n) for n in (4, 2, 1)]
    assert isinstance(c.fpn.lateral[0][1], nn.GroupNorm)
    assert c.fpn.lateral[0][1].num_groups == 8


def _synthetic_clip(tmp_path, num_frames: int = 128, crop: int = 56) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One synthetic video (about 8 s at 15 fps), decoded, centre-cropped to `crop` and zero-
    padded to `num_frames`: (clip [1, 3, T, crop, crop] normalised, GT frames [N, 2], labels [N])."""
    import json

    from tallformer.data.synthetic import class_names, generate_synthetic_dataset
    from tallformer.data.video import VideoFileSource

    ann = generate_synthetic_dataset(tmp_path, 1, seed=3, min_length=8.0, max_length=8.4,
                                     val_fraction=0.0, progress=False)
    (vid, info), = json.loads(ann.read_text())["database"].items()
    with VideoFileSource(tmp_path / "videos" / f"{vid}.mp4", info["fps"], (64, 64)) as src:
        frames = src.read(0, min(len(src), num_frames))  # [T, H, W, 3] uint8
    clip = torch.zeros(num_frames, crop, crop, 3)
    lo = (64 - crop) // 2
    clip[: len(frames)] = torch.from_numpy(np.ascontiguousarray(frames[:, lo:lo + crop, lo:lo + crop])).float()
    mean, std = torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375])
    clip = ((clip - mean) / std).permute(3, 0, 1, 2)[None]
    names = class_names(4)
    segs = torch.tensor([a["segment"] for a in info["annotations"]]) * info["fps"]
    labels = torch.tensor([names.index(a["label"]) for a in info["annotations"]])
    return clip, segs, labels


def test_tiny_overfits_a_synthetic_video(tmp_path, tiny: AFSD) -> None:
    """forward_train + loss + Adam on one whole synthetic video (1 of 4 chunks fresh, the
    others from a fixed "bank" of eval-mode features): the loss falls clearly."""
    clip, segs, labels = _synthetic_clip(tmp_path, crop=32)  # 32 x 32: a cheaper backbone
    assert segs.shape[0] >= 1
    chunks = clip[0].reshape(3, 4, 32, 32, 32).transpose(0, 1)
    keep = torch.tensor([[False, False, True, False]])
    with torch.no_grad():
        tiny.eval()
        cached = tiny.backbone.forward_chunks(chunks[~keep[0]])[None]
    torch.manual_seed(0)
    tiny.train()
    opt = torch.optim.Adam(tiny.parameters(), lr=3e-3)
    history = []
    for _ in range(12):
        out, _ = tiny.forward_train(chunks[keep[0]], cached, keep)
        losses = tiny.loss(out, [segs], [labels])
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append(float(losses["loss"].detach()))
    assert all(math.isfinite(v) for v in history)
    assert min(history[-3:]) < 0.4 * history[0], [round(v, 3) for v in history]


def test_the_training_engine_steps_it_unchanged(tiny: AFSD) -> None:
    """`tallformer.engine.step.train_step` (the THUMOS14 engine's step) trains the AFSD
    detector as it is: forward_train, loss, backward, optimizer step."""
    from tallformer.engine.step import train_step

    keep = torch.tensor([[False, True, False, False]])
    batch = {
        "chunks": torch.randn(1, 3, 32, 32, 32), "cached": torch.randn(1, 3, 192, 16),
        "keep_mask": keep, "keep": [[1]], "segments": [torch.tensor([[8.0, 60.0]])],
        "labels": [torch.tensor([1])], "ignore": [torch.zeros(0, 2)], "video_id": ["v"],
        "offset": [0],
    }
    opt = torch.optim.SGD(tiny.parameters(), lr=0.01)
    before = tiny.head.loc_head.weight.detach().clone()
    out = train_step(tiny, batch, opt, None, device="cpu")
    assert {"loss", "loss_loc", "loss_cls", "loss_prop_loc", "loss_prop_cls", "loss_quality",
            "loss_start", "loss_end", "loss_action", "fresh_chunks", "written_chunks"} <= set(out)
    assert out["fresh_chunks"] == 1.0
    assert math.isfinite(out["loss"])
    assert not torch.equal(before, tiny.head.loc_head.weight)
