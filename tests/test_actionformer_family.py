"""The ActionFormer family through the detector seam (`tallformer.engine.families.actionformer`,
one line of the factory table): the training forward with the memory bank and each window's
real frames, the one-pass test path on real videos (the backbone streamed chunk by chunk over
the whole video, the network over the whole sequence, the release's post-processing, then the
generic filters), all equal to the independent re-statement of the release
(`actionformer_reference`) on the same features; `tallformer test` and `detect` on a
checkpoint of it; AdamW's parameter groups and the warm-up + cosine schedule against the
release's rules.
"""

from __future__ import annotations

import copy
import doctest
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import actionformer_reference as ref
from helpers import write_video
from tallformer.cli import main
from tallformer.config import Config, load_config, save_config
from tallformer.data.transforms import test_transform
from tallformer.data.video import open_source
from tallformer.engine.checkpoint import save_model
from tallformer.engine.factory import FAMILIES, build_detector, family_for
from tallformer.engine.families import actionformer as family_module
from tallformer.engine.families.actionformer import ActionFormerFamily, keep_best
from tallformer.engine.family import InferenceStats
from tallformer.engine.infer import infer_video
from tallformer.engine.optim import decays, make_optimizer
from tallformer.engine.schedule import LrSchedule
from tallformer.engine.step import train_step
from tallformer.models.actionformer import ActionFormerDetector
from tallformer.models.actionformer.blocks import (
    AffineDropPath,
    ChannelLayerNorm,
    Scale,
)
from tallformer.models.shared import compose_features

single_thread = ref.single_thread  # autouse: one intra-op thread

CLASSES = ["a", "b", "c"]
# demo_actionformer (tiny Swin, 36x36 frames, 128-frame windows = 64 features, 4 levels, window 9,
# max_seq_len 64) with a narrower network and no stochastic depth (deterministic training forward)
TINY = ["model.num_classes=3", "model.actionformer.n_head=2", "model.actionformer.embd_dim=16",
        "model.actionformer.fpn_dim=16", "model.actionformer.head_dim=16", "model.backbone.drop_path_rate=0.0",
        "model.actionformer.train_cfg.droppath=0.0", "train.device=cpu"]
ARCH = ref.Arch(3, (2, 2, 3), n_head=2, windows=(9,) * 4, regression_range=((0, 4), (4, 8), (8, 16), (16, 10000)),
                max_seq_len=64)
FPS = 15.0


def _tiny(*extra: str) -> Config:
    return load_config("demo_actionformer", [*TINY, *extra])


def _model(seed: int = 0, *extra: str) -> tuple[Config, ActionFormerDetector]:
    cfg = _tiny(*extra)
    torch.manual_seed(seed)
    model = build_detector(cfg)
    assert isinstance(model, ActionFormerDetector)
    ref.randomize(model.actionformer, seed + 1)
    return cfg, model


# --------------------------------------------------------------------------- the seam


def test_the_factory_table_builds_the_family() -> None:
    cfg = _tiny()
    assert isinstance(FAMILIES["actionformer"], ActionFormerFamily)
    assert family_for(cfg) is FAMILIES["actionformer"]
    with torch.device("meta"):
        model = build_detector(cfg)
    assert type(model) is ActionFormerDetector
    assert model.num_classes == 3
    assert model.backbone.num_features == 192


def test_forward_losses_through_the_bank_equal_the_release_and_mask_a_short_window() -> None:
    """Kept chunks through the backbone, dropped ones from the bank, each window's real frames
    (a 70-frame window: 35 valid features, the rest padding as the release pads a short video):
    the losses and the normaliser equal the re-statement's on the composed features."""
    _, model = _model(0)
    model.train()
    gen = torch.Generator().manual_seed(1)
    fresh = torch.randn(4, 3, 32, 32, 32, generator=gen)  # 2 kept chunks of each of 2 windows
    cached = torch.randn(2, 2, 192, 16, generator=gen)
    keep = torch.tensor([[True, False, True, False], [False, True, True, False]])
    gts = [torch.tensor([[10.0, 40.0], [60.0, 127.0]]), torch.tensor([[3.0, 21.0], [30.0, 69.0]])]
    labels = [torch.tensor([0, 2]), torch.tensor([1, 1])]
    losses, out_fresh = model.forward_losses(fresh, cached, keep, gts, labels, [torch.zeros(0, 2)] * 2,
                                             valid_frames=[128, 70])
    assert out_fresh.shape == (4, 192, 16)
    assert not out_fresh.requires_grad
    with torch.no_grad():
        feats, _ = compose_features(model.backbone, fresh, cached, keep, next(model.actionformer.parameters()))
        state = model.actionformer.state_dict()
        outs = []
        for b, length in enumerate((64, 35)):
            x, mask = ref.pad(feats[b], length, ARCH, training=True)
            outs.append(ref.network(state, ARCH, x, mask, training=True))
    assert [int(m.sum()) for m in outs[1]["mask"]] == [35, 18, 9, 5]
    grid = [(g - 1.0) / 2.0 for g in gts]  # window frames -> feature grid (f - 0.5 * 2) / 2
    want, norm = ref.losses(outs, grid, labels, 3, 100.0)
    for key in ("loss_cls", "loss_reg", "loss"):
        assert float(losses[key].detach()) == pytest.approx(want[key], rel=1e-5), key
    assert float(model.criterion.loss_normalizer) == norm


def test_the_training_step_passes_each_windows_real_frames() -> None:
    cfg, model = _model(2)
    twin = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(3)
    batch = {"chunks": torch.randn(2, 3, 32, 32, 32, generator=gen), "cached": torch.randn(2, 3, 192, 16, generator=gen),
             "keep_mask": torch.tensor([[True, False, False, False], [False, False, True, False]]),
             "keep": [[0], [2]], "segments": [torch.tensor([[5.0, 30.0]]), torch.tensor([[8.0, 40.0]])],
             "labels": [torch.tensor([1]), torch.tensor([2])], "ignore": [torch.zeros(0, 2)] * 2,
             "video_id": ["x", "y"], "offset": [0, 0], "num_frames": [128, 50]}
    stats = train_step(model, batch, make_optimizer(model, cfg.train), device="cpu")
    twin.train()
    want, _ = twin.forward_losses(batch["chunks"], batch["cached"], batch["keep_mask"], batch["segments"],
                                  batch["labels"], batch["ignore"], valid_frames=[128, 50])
    unmasked, _ = copy.deepcopy(model).forward_losses(batch["chunks"], batch["cached"], batch["keep_mask"],
                                                      batch["segments"], batch["labels"], batch["ignore"])
    assert stats["loss"] == float(want["loss"].detach())
    assert float(unmasked["loss"].detach()) != stats["loss"]  # the mask matters


def _positives_worker(rank: int, root: str) -> None:
    import torch.distributed as dist

    from tallformer.models.actionformer.loss import _positives

    dist.init_process_group("gloo", init_method=f"file://{root}/pg", rank=rank, world_size=2)
    try:
        found = []
        for counts in ([3, 0], [0, 0]):
            pos = torch.zeros(2, 8, dtype=torch.bool)
            pos.view(-1)[: counts[rank]] = True
            found.append(_positives(pos))
        Path(root, f"rank{rank}").write_text(json.dumps(found))
    finally:
        dist.destroy_process_group()


def test_under_torchrun_every_process_keeps_the_normaliser_of_the_global_batch(tmp_path: Path) -> None:
    """Two processes (gloo), 3 + 0 and 0 + 0 positives: summed over both, max(sum, 1) / 2 in
    each (the averaged gradients then equal one process on the global batch, and the buffer
    that rank 0 checkpoints is every rank's)."""
    import torch.multiprocessing as mp

    mp.spawn(_positives_worker, args=(str(tmp_path),), nprocs=2)
    got = [json.loads((tmp_path / f"rank{r}").read_text()) for r in range(2)]
    assert got == [[1.5, 0.5]] * 2


# --------------------------------------------------------------------------- the test path


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("af_videos")
    write_video(root / "long.mp4", 600, fps=FPS, size=(36, 36))  # 40 s: 19 chunks, 300 features
    write_video(root / "short.mp4", 45, fps=FPS, size=(36, 36))  # 3 s: a chunk and a partial one
    return root


def test_the_backbone_streams_over_the_whole_video(videos: Path) -> None:
    """Features of the whole video, chunk by chunk, decoded once with a bounded number of
    frames held: equal to the backbone on the whole zero-padded clip at once."""
    cfg, model = _model(4)
    model.eval()
    inference = family_for(cfg).inference(model, cfg, torch.device("cpu"))
    source = open_source(videos / "long.mp4", FPS, (36, 36))
    stats = InferenceStats()
    try:
        assert inference.plan(len(source)) == [(0, 600)]
        feats = inference.features(source, 0, 600, stats)
        frames = source.read(0, 600)
    finally:
        source.close()
    assert feats.shape == (1, 192, 300)
    assert stats.backbone_chunks == 19
    per_call = cfg.data.num_frames // 32
    assert stats.peak_frames <= (2 * per_call + 3) * 32 < 600  # about two calls' frames, not the video
    clip = test_transform(frames, 32, cfg.data.mean, cfg.data.std)
    clip = torch.cat([clip, clip.new_zeros(3, 8, 32, 32)], dim=1)  # 608 = 19 chunks
    with torch.no_grad():
        whole = model.backbone(clip[None])
    torch.testing.assert_close(feats, whole[:, :, :300], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("method", "multiclass"), [("soft", True), ("hard", False)])
def test_detections_equal_the_release_on_the_same_features(videos: Path, method: str, multiclass: bool) -> None:
    """The test path's detections of a 40 s video equal the re-statement of the release's
    network, candidates, NMS and seconds on the same backbone features; the generic
    test.score_thr 0.001 and test.max_per_video 200 leave them unchanged."""
    cfg, model = _model(5, f"model.actionformer.test_cfg.nms_method={method}",
                        f"model.actionformer.test_cfg.multiclass_nms={str(multiclass).lower()}")
    model.eval()
    source = open_source(videos / "long.mp4", FPS, (36, 36))
    try:
        dets = infer_video(model, cfg, source)
        feats = family_for(cfg).inference(model, cfg, torch.device("cpu")).features(source, 0, 600, InferenceStats())
    finally:
        source.close()
    with torch.no_grad():
        x, mask = ref.pad(feats[0], 300, ARCH, training=False)
        r = ref.network(model.actionformer.state_dict(), ARCH, x, mask)
    t = cfg.model.actionformer.test_cfg
    segs, scores, labels = ref.candidates(r, t.pre_nms_thresh, t.pre_nms_topk, t.duration_thresh)
    segs, scores, labels = ref.batched(segs, scores, labels, t.iou_threshold, t.min_score, t.max_seg_num,
                                       method == "soft", multiclass, t.nms_sigma, t.voting_thresh)
    want = ref.to_seconds(segs, 2, 2, FPS, 40.0)
    assert len(dets) == len(want) == 200  # capped by max_seg_num: the generic cap meets it exactly
    assert dets.labels.tolist() == labels.tolist()
    torch.testing.assert_close(dets.scores, scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dets.segments, want, rtol=1e-4, atol=1e-4)
    # the release's own output (the family's post-processing, in seconds) is what comes out
    raw = model.infer_features(feats, FPS, 40.0)
    assert torch.equal(dets.scores, raw.scores)
    assert torch.equal(dets.segments, raw.segments)
    assert torch.equal(dets.labels, raw.labels)
    assert float(dets.scores.min()) >= t.min_score


def test_the_generic_filters_apply_after_the_familys_own(videos: Path) -> None:
    cfg, model = _model(5)
    model.eval()
    strict = _tiny("test.score_thr=0.3", "test.max_per_video=7")
    source = open_source(videos / "long.mp4", FPS, (36, 36))
    try:
        every = infer_video(model, cfg, source)
        few = infer_video(model, strict, source)
    finally:
        source.close()
    best = [s for s in every.scores.tolist() if s >= 0.3][:7]
    assert few.scores.tolist() == best
    assert torch.equal(few.segments, every.segments[: len(best)])


def test_keep_best_keeps_the_order_of_ties_and_cuts() -> None:
    from tallformer.models.outputs import Detections

    d = Detections(torch.arange(10.0).reshape(5, 2), torch.tensor([0.5, 0.5, 0.9, 0.001, 0.0009]),
                   torch.tensor([0, 1, 2, 0, 1]))
    out = keep_best(d, 0.001, 3)
    assert out.labels.tolist() == [2, 0, 1]  # 0.9, then the two 0.5 in their order
    assert keep_best(d, 0.001, 10).scores.tolist()[-1] == pytest.approx(0.001)  # kept: at least the threshold


def test_a_short_videos_partial_chunk_and_seconds_follow_the_release(videos: Path) -> None:
    cfg, model = _model(6)
    model.eval()
    source = open_source(videos / "short.mp4", FPS, (36, 36))
    stats = InferenceStats()
    try:
        inference = family_for(cfg).inference(model, cfg, torch.device("cpu"))
        outputs = inference.run(source, inference.plan(len(source)), stats)
    finally:
        source.close()
    assert stats.backbone_chunks == 2  # 32 frames and 13 zero-padded to 32
    assert stats.windows == 1
    assert [int(m.sum()) for m in outputs.masks] == [23, 12, 6, 3]  # ceil(45 / 2) features
    # one candidate by hand: point t of level 0 with offsets (l, r) -> ((t - l) * 2 + 1) / fps
    t, level = 5, 0
    off = outputs.offsets[level][0, t]
    left, right = ((t - off[0]) * 2 + 1) / FPS, ((t + off[1]) * 2 + 1) / FPS
    from tallformer.engine.family import VideoContext
    from tallformer.models.actionformer.postprocess import grid_to_seconds

    seconds = grid_to_seconds(torch.stack([t - off[0], t + off[1]])[None].clone(), 2, 2, FPS, 3.0)
    assert seconds[0].tolist() == pytest.approx([max(float(left), 0.0), min(float(right), 3.0)])
    dets = inference.merge(outputs, VideoContext("short", FPS, 45, None), family_for(cfg).default_results())
    assert float(dets.segments.max()) <= 3.0  # clamped to frames / fps when the duration is unknown
    assert dets.scores.tolist() == sorted(dets.scores.tolist(), reverse=True)


# --------------------------------------------------------------------------- commands


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, videos: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("af_ckpt")
    cfg, model = _model(7)
    path = save_model(root / "af.pt", model, cfg, CLASSES)
    config = root / "tiny.yaml"
    save_config(cfg, config)
    ann = root / "annotations.json"
    ann.write_text(json.dumps({"database": {
        "long": {"subset": "validation", "duration": 40.0, "annotations": [
            {"segment": [3.0, 7.5], "label": "a"}, {"segment": [20.0, 24.0], "label": "c"}]},
        "short": {"subset": "validation", "duration": 3.0, "annotations": [{"segment": [0.5, 2.0], "label": "b"}]},
    }}))
    return {"root": root, "checkpoint": path, "config": config, "annotations": ann}


def test_tallformer_test_and_detect_run_a_checkpoint(checkpoint: dict[str, Path], videos: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = checkpoint["root"] / "test"
    code = main(["test", "--config", str(checkpoint["config"]), "--checkpoint", str(checkpoint["checkpoint"]),
                 "--out", str(out), "--subset", "validation", "--no-progress",
                 f"data.annotations={checkpoint['annotations']}", f"data.videos={videos}"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    results = json.loads((out / "af" / "results.json").read_text())["results"]
    assert set(results) == {"long", "short"}
    assert len(results["long"]) == 200
    assert max(d["segment"][1] for d in results["short"]) <= 3.0
    metrics = json.loads((out / "af" / "metrics.json").read_text())
    assert metrics["num_videos"] == 2
    assert "avg" in printed.splitlines()[next(i for i, ln in enumerate(printed.splitlines())
                                              if ln.startswith("checkpoint"))]
    det_out = checkpoint["root"] / "detect"
    code = main(["detect", str(videos / "long.mp4"), "--checkpoint", str(checkpoint["checkpoint"]),
                 "--out", str(det_out), "--top-k", "5", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    found = json.loads((det_out / "long.json").read_text())["results"]["long"]
    assert len(found) == 5
    assert [d["score"] for d in found] == [d["score"] for d in results["long"][:5]]
    assert (det_out / "long.html").read_text().startswith("<!DOCTYPE html>")  # the viewer
    assert (det_out / "long.png").is_file()


# --------------------------------------------------------------------------- the recipe


def _release_no_decay(net: nn.Module) -> set[str]:
    """The release's split (original: libs/utils/train_utils.py:60-120), re-stated on our
    module types: no decay on biases, LayerNorm weights, Scale / AffineDropPath scales and
    rel_pe; decay on the weights of Linear / Conv1d (MaskedConv1D's is its Conv1d's)."""
    decay, no_decay = set(), set()
    for mn, m in net.named_modules():
        for pn, _ in m.named_parameters(recurse=False):
            full = f"{mn}.{pn}" if mn else pn
            if pn.endswith("weight") and isinstance(m, (nn.Linear, nn.Conv1d)):
                decay.add(full)
            elif (pn.endswith("bias") or (pn.endswith("weight") and isinstance(m, (ChannelLayerNorm, nn.GroupNorm)))
                  or (pn.endswith("scale") and isinstance(m, (Scale, AffineDropPath))) or pn.endswith("rel_pe")):
                no_decay.add(full)
    assert decay | no_decay == {n for n, _ in net.named_parameters()}, "the release asserts every one is sorted"
    return no_decay


@pytest.mark.parametrize("rel_pe", [False, True])
def test_adamw_groups_are_the_releases(rel_pe: bool) -> None:
    cfg = _tiny("train.optimizer=adamw", "train.weight_decay=0.05", "train.backbone_lr_mult=0.4",
                "model.actionformer.train_cfg.droppath=0.1", f"model.actionformer.use_rel_pe={str(rel_pe).lower()}")
    model = build_detector(cfg)
    assert isinstance(model, ActionFormerDetector)
    opt = make_optimizer(model, cfg.train)
    assert isinstance(opt, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: g for g in opt.param_groups}
    assert list(groups) == ["neck_head", "neck_head_no_decay", "backbone", "backbone_no_decay"]
    no_decay = {names[id(p)].removeprefix("actionformer.") for p in groups["neck_head_no_decay"]["params"]}
    assert no_decay == _release_no_decay(model.actionformer)
    assert any(n.endswith("rel_pe") for n in no_decay) is rel_pe
    assert groups["neck_head"]["weight_decay"] == groups["backbone"]["weight_decay"] == 0.05
    assert groups["neck_head_no_decay"]["weight_decay"] == groups["backbone_no_decay"]["weight_decay"] == 0.0
    assert groups["backbone"]["lr"] == pytest.approx(0.4 * groups["neck_head"]["lr"])
    # Video Swin: its linear layers and patch embedding decay; norms and bias tables do not
    backbone_no_decay = {names[id(p)] for p in groups["backbone_no_decay"]["params"]}
    assert any("relative_position_bias_table" in n for n in backbone_no_decay)
    assert all(n.endswith(("bias", "bias_table")) or ".norm" in n for n in backbone_no_decay)
    assert decays(model.backbone.patch_embed.proj, "weight")


def test_warmup_cosine_is_the_releases_schedule_by_step() -> None:
    """LinearWarmupCosineAnnealingLR in its closed form (original: libs/utils/lr_schedulers.py):
    W = 5 epochs and M = 35 epochs of 4 steps, from 0 up to lr at step W - 1, then down to
    eta_min at M."""
    cfg = _tiny("train.schedule=warmup_cosine", "train.max_epochs=35", "train.warmup_iters=20",
                "train.warmup_batch=2", "train.warmup_ratio=0", "train.min_lr_ratio=0.0001", "data.batch_size=2")
    schedule = LrSchedule.from_config(cfg.train)
    base, eta_min, w, m = 1e-4, 1e-8, 20, 140
    for k in range(m):
        want = (k * base / (w - 1) if k < w else
                eta_min + 0.5 * (base - eta_min) * (1 + math.cos(math.pi * (k - w) / (m - w))))
        got = schedule.lr(base, k // 4, k * 2, 2, steps_per_epoch=4)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-15), k
    assert schedule.lr(base, 0, 0, 2, 4) == 0.0  # the release's first step runs at lr 0
    with pytest.raises(ValueError, match="steps_per_epoch"):
        schedule.lr(base, 0, 0, 2)
    # on 4 processes (global batch 8) the warm-up covers the same clips: 5 steps
    assert schedule.lr(base, 0, 4 * 8, 8, steps_per_epoch=1) == pytest.approx(base)


def test_the_examples_in_the_docstrings_run() -> None:
    from tallformer.engine import optim

    for module in (family_module, optim):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0, module.__name__
        assert result.failed == 0, module.__name__
