"""Detector checkpoints of the original release (`tallformer.models.original_checkpoints`,
`tallformer convert-weights`): THUMOS14 epoch_N_weights.pth and ActivityNet
checkpoint-N.ckpt written from our own modules in the original's layout
(tests/original_release.py), converted back: the same state dict, the same detections on a
real mp4 and on its frames as a PNG folder, through `test`, `detect` and `model.init_from`;
crafted bad files give one-line errors."""

from __future__ import annotations

import argparse
import json
import types
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch

from helpers import write_video
from original_release import (
    anet_state,
    randomize_norm_stats,
    save_anet_checkpoint,
    save_thumos14_epoch,
)
from tallformer.cli import main
from tallformer.config import load_config
from tallformer.engine.checkpoint import load_model
from tallformer.engine.factory import build_detector
from tallformer.engine.infer import Detector, infer_video
from tallformer.engine.model_import import convert_original_checkpoint
from tallformer.engine.run_layout import MODEL_FORMAT
from tallformer.models.original_checkpoints import (
    ANET_MAP,
    THUMOS14_CLASSES,
    THUMOS14_MAP,
    original_kind,
)
from tallformer.models.weights import WeightsError

# thumos14_swin_b (the paper config: test.protocol original) at toy scale
TINY_TH14 = [
    "model.backbone.arch=tiny", "model.backbone.use_checkpoint=false", "model.neck.srm_channels=32",
    "model.neck.tcm_layers=2", "model.neck.tcm_heads=4", "model.neck.tdm_heads=4",
    "model.neck.tdm_kernels=[7,7,5]", "model.neck.fpn_channels=32", "model.head.feat_channels=32",
    "model.head.stacked_convs=2", "model.head.anchor_strides=[8,16,32,64]", "data.num_frames=128",
    "data.frame_size=[64,64]", "data.crop_size=56", "train.device=cpu", "test.score_thr=0.011",
]
NUM_FRAMES = 160  # at 15 fps: windows [0, 128) and [96, 160), the last one padded


def _model(name: str, overrides: list[str], seed: int) -> Any:
    torch.manual_seed(seed)
    model = build_detector(load_config(name, overrides))
    randomize_norm_stats(model, seed)
    with torch.no_grad():  # a trained model's scores are not all the prior's
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def th14(tmp_path_factory: pytest.TempPathFactory) -> types.SimpleNamespace:
    """An original THUMOS14 work dir written from our model, converted with the CLI."""
    root = tmp_path_factory.mktemp("th14")
    model = _model("thumos14_swin_b", TINY_TH14, seed=3)
    weights = save_thumos14_epoch(model, root / "workdir", epoch=700, iteration=12345)
    out = root / "th14_epoch700.pt"
    assert main(["convert-weights", "--src", str(weights), "--out", str(out),
                 "--config", "thumos14_swin_b", *TINY_TH14]) == 0
    return types.SimpleNamespace(root=root, model=model, weights=weights, out=out)


def test_key_maps_are_one_to_one() -> None:
    """Every key of our detectors has one original name, and it maps back."""
    for name, overrides, keymap in (("thumos14_swin_b", TINY_TH14, THUMOS14_MAP),
                                    ("thumos14_swin_b", [], THUMOS14_MAP),
                                    ("anet_demo", ["train.device=cpu"], ANET_MAP),
                                    ("anet_swin_b", [], ANET_MAP)):
        with torch.device("meta"):
            state = build_detector(load_config(name, overrides)).state_dict()
        names = [keymap.to_original(k) for k in state]
        assert None not in names
        assert len(set(names)) == len(names)
        assert [keymap.to_ours(str(n)) for n in names] == [(True, k) for k in state]


def test_thumos14_conversion_is_exact(th14: types.SimpleNamespace) -> None:
    raw = torch.load(th14.weights, weights_only=True)
    assert original_kind(raw) == "thumos14"
    assert "neck.2.pe.pe" in raw
    assert "backbone.layers.0.blocks.0.dummy_tensor" in raw
    saved = torch.load(th14.out, weights_only=True)
    assert saved["format"] == MODEL_FORMAT
    assert saved["classes"] == list(THUMOS14_CLASSES)
    assert (saved["epoch"], saved["step"]) == (700, 12345)  # from epoch_700_meta.pth
    assert saved["config"]["test"]["protocol"] == "original"  # the paper config's default
    assert any(k.endswith("dummy_tensor") for k in saved["source"]["dropped"])
    ours = th14.model.state_dict()
    assert list(saved["model"]) == list(ours)
    for key, value in ours.items():
        assert torch.equal(saved["model"][key], value), key


def _frames_folder(video: Path, folder: Path, fps: float, size: tuple[int, int]) -> Path:
    """The decoded frames of `video` as the original's layout VIDEO/00001.png ..."""
    from PIL import Image

    from tallformer.data.video import open_source

    source = open_source(video, fps, size)
    try:
        frames = source.read(0, len(source))
    finally:
        source.close()
    folder.mkdir(parents=True)
    for i, frame in enumerate(np.asarray(frames)):
        Image.fromarray(frame).save(folder / f"{i + 1:05d}.png")
    return folder


def test_thumos14_same_detections_mp4_frames_test_and_init_from(
        th14: types.SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    from tallformer.data.video import open_source
    from tallformer.engine.train import _init_from

    cfg = load_config("thumos14_swin_b", TINY_TH14)
    videos = th14.root / "videos"
    videos.mkdir()
    mp4 = write_video(videos / "video_test_0000004.mp4", NUM_FRAMES, fps=15, size=(64, 64))
    frames = _frames_folder(mp4, th14.root / "frames" / "video_test_0000004", 15.0, (64, 64))

    # the reference: our own model on the same decoded frames
    source = open_source(mp4, cfg.data.fps, (64, 64))
    try:
        ref = infer_video(th14.model, cfg, source, device=torch.device("cpu"))
    finally:
        source.close()
    assert len(ref.scores) > 5
    assert bool((ref.segments[:, 1] > ref.segments[:, 0]).all())  # no zero-length detection

    detector = Detector.from_checkpoint(th14.out, device="cpu")
    assert detector.cfg.test.protocol == "original"
    want = [(float(s), float(e), THUMOS14_CLASSES[int(c)], float(p))
            for (s, e), c, p in zip(ref.segments.tolist(), ref.labels.tolist(), ref.scores.tolist(), strict=True)]
    assert [(d.start, d.end, d.label, d.score) for d in detector.detect(mp4).detections] == want

    # tallformer detect on the frame folder (the same frames), tallformer test on the mp4
    assert main(["detect", str(frames), "--checkpoint", str(th14.out), "--out", str(th14.root / "det"),
                 "--no-progress", "--device", "cpu"]) == 0
    det = json.loads((th14.root / "det" / "video_test_0000004.json").read_text())
    got = [(d["segment"][0], d["segment"][1], d["label"], d["score"]) for d in det["results"]["video_test_0000004"]]
    assert [g[2] for g in got] == [w[2] for w in want]
    flat = [x for g in got for x in (g[0], g[1], g[3])]
    assert flat == pytest.approx([x for w in want for x in (w[0], w[1], w[3])], rel=1e-6, abs=1e-6)
    gt = {"database": {"video_test_0000004": {
        "subset": "test", "duration": NUM_FRAMES / 15,
        "annotations": [{"segment": [2.0, 5.0], "label": "Diving"}]}}}
    ann = th14.root / "gt.json"
    ann.write_text(json.dumps(gt))
    assert main(["test", "--config", "thumos14_swin_b", "--checkpoint", str(th14.out), "--out",
                 str(th14.root / "test"), "--no-progress", "--device", "cpu", *TINY_TH14,
                 f"data.annotations={ann}", f"data.videos={videos}"]) == 0
    capsys.readouterr()
    found = json.loads((th14.root / "test" / "th14_epoch700" / "results.json").read_text())
    rows = found["results"]["video_test_0000004"]
    assert [(r["segment"][0], r["segment"][1], r["label"]) for r in rows] == [w[:3] for w in want]

    # model.init_from: a fresh run starts from exactly these weights
    detector = build_detector(cfg)
    _init_from(detector, str(th14.out), list(THUMOS14_CLASSES))
    for key, value in th14.model.state_dict().items():
        assert torch.equal(detector.state_dict()[key], value), key
    loaded = load_model(th14.out, device="cpu")
    assert (loaded.epoch, loaded.step) == (700, 12345)


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_thumos14_bad_files(th14: types.SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = torch.load(th14.weights, weights_only=True)
    out = str(tmp_path / "out.pt")

    def convert(state: object, name: str) -> str:
        path = tmp_path / name
        torch.save(state, path)
        return _one_line_error(["convert-weights", "--src", str(path), "--out", out,
                                "--config", "thumos14_swin_b", *TINY_TH14], capsys)

    missing = dict(good)
    del missing["head.retina_reg.bias"]
    err = convert(missing, "missing_weights.pth")
    assert "missing_weights.pth" in err
    assert "missing keys (1): head.retina_reg.bias" in err
    assert "--config" in err
    extra = {**good, "neck.2.extra.weight": torch.zeros(3)}
    assert "unexpected keys (1): neck.2.extra.weight" in convert(extra, "extra.pth")
    wrong = {**good, "neck.0.conv1.bias": torch.zeros(7)}
    assert "mis-shaped keys (1): neck.0.conv1.bias (file [7], model [32])" in convert(wrong, "wrong.pth")
    # a Swin-B file into the tiny config: the architecture named, and the override that fits
    err = _one_line_error(["convert-weights", "--src", str(th14.weights), "--out", out, "--config",
                           "thumos14_swin_b", *[o for o in TINY_TH14 if "arch" not in o],
                           "model.backbone.arch=swin_t"], capsys)
    assert "model.backbone.arch=tiny" in err
    # not a checkpoint; a pickle with a forbidden global; the sibling files
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    err = _one_line_error(["convert-weights", "--src", str(tmp_path / "junk.pth"), "--out", out], capsys)
    assert "junk.pth" in err
    assert "not a PyTorch checkpoint" in err
    torch.save({**good, "cfg": argparse.Namespace(lr=0.01)}, tmp_path / "evil.pth")
    err = _one_line_error(["convert-weights", "--src", str(tmp_path / "evil.pth"), "--out", out], capsys)
    assert "evil.pth" in err
    assert "argparse.Namespace" in err
    for sibling, what in (("epoch_700_optim.pth", "optimizer"), ("epoch_700_meta.pth", "epoch counter")):
        err = _one_line_error(["convert-weights", "--src", str(th14.weights.with_name(sibling)), "--out", out],
                              capsys)
        assert what in err
        assert "epoch_N_weights.pth" in err
    assert not Path(out).exists()


def test_anet_conversion_is_exact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overrides = ["train.device=cpu"]
    model = _model("anet_demo", overrides, seed=5)
    ckpt = save_anet_checkpoint(model, tmp_path / "checkpoints", epoch=10)
    assert original_kind(torch.load(ckpt, weights_only=True)) == "anet"
    out = tmp_path / "anet.pt"
    err = _one_line_error(["convert-weights", "--src", str(ckpt), "--out", str(out), "--config", "anet_demo"],
                          capsys)
    assert "--classes action_name.txt" in err
    assert not out.exists()
    names = tmp_path / "action_name.txt"
    names.write_text("Long jump\nPole vault\nDiving\n")
    assert "3 class names but the model predicts 4" in _one_line_error(
        ["convert-weights", "--src", str(ckpt), "--out", str(out), "--config", "anet_demo",
         "--classes", str(names)], capsys)
    names.write_text("Long jump\nPole vault\nDiving\nShot put\n")
    assert main(["convert-weights", "--src", str(ckpt), "--out", str(out), "--config", "anet_demo",
                 "--classes", str(names), *overrides]) == 0
    loaded = load_model(out, device="cpu")
    assert loaded.classes == ["Long jump", "Pole vault", "Diving", "Shot put"]
    assert loaded.epoch == 10
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    clip = torch.randn(1, 3, 128, 56, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model.forward_infer(clip), cast(Any, loaded.model).forward_infer(clip)
    assert torch.equal(a.action_logits, b.action_logits)
    assert torch.equal(a.prop_loc, b.prop_loc)
    # a THUMOS14 config for an ActivityNet file: one line naming the config to use
    bad = dict(anet_state(model))
    torch.save(bad, tmp_path / "checkpoint-9.ckpt")
    err = _one_line_error(["convert-weights", "--src", str(tmp_path / "checkpoint-9.ckpt"), "--out", str(out),
                           "--config", "thumos14_swin_b", "--classes", str(names)], capsys)
    assert "model.kind=anchor" in err
    assert "anet_swin_b" in err


def test_convert_function_names_the_file(tmp_path: Path) -> None:
    torch.save({"a": torch.zeros(1)}, tmp_path / "plain.pth")
    with pytest.raises(WeightsError, match=r"plain\.pth: not a detector checkpoint of the original release"):
        convert_original_checkpoint(tmp_path / "plain.pth", tmp_path / "o.pt")


def test_padded_window_zero_length_candidates_are_dropped() -> None:
    """The original decodes the anchors over a padded window's padding to [T, T]; ours drops
    those zero-length candidates (docs/differences.md) and keeps every other one."""
    from tallformer.models.anchor_head import AnchorHead

    head = AnchorHead(num_classes=2, in_channels=8, feat_channels=8, stacked_convs=0)
    lengths = [16, 8, 4, 2, 1]  # a 128-frame window
    cls = [torch.full((1, head.num_anchors * 2, n), 10.0) for n in lengths]  # every score passes
    reg = [torch.zeros(1, head.num_anchors * 2, n) for n in lengths]
    real = 20  # frames of video in the window; the rest is padding
    dets = head.predict((cls, reg), [real], [100])[0]
    anchors = head.anchors(lengths)
    kept_anchors = int((anchors[:, 0] < real).sum() - (anchors[:, 1] <= 0).sum())
    assert bool((dets.segments[:, 1] > dets.segments[:, 0]).all())
    assert float(dets.segments.min()) >= 100.0
    assert float(dets.segments.max()) <= 100.0 + real
    assert len(dets.scores) == 2 * kept_anchors  # both classes of every anchor overlapping [0, 20)
