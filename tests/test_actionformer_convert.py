"""`tallformer convert-weights` on an ActionFormer release checkpoint (`epoch_NNN.pth.tar` as its
train.py writes it: `state_dict` and `state_dict_ema`, `module.` keys) written from randomly
initialised modules, with the Video Swin weights of the config in the official layout: the
tallformer checkpoint it writes holds exactly those weights, and `detect` and `test` load it.
Every problem is one error line, in the release's names.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import actionformer_reference as ref
from helpers import write_video
from official_checkpoints import save_official_format
from tallformer.cli import main
from tallformer.config import load_config, save_config
from tallformer.engine.checkpoint import load_model
from tallformer.engine.factory import build_detector
from tallformer.models.actionformer import ActionFormerDetector

single_thread = ref.single_thread  # autouse: one intra-op thread

NAMES = ["Jump", "Throw", "Dive"]
NET = ["model.actionformer.n_head=2", "model.actionformer.embd_dim=16", "model.actionformer.fpn_dim=16",
       "model.actionformer.head_dim=16"]


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A release checkpoint of a 3-class network on the tiny Swin's 192 channels (droppath
    0.1: its drop-path scale keys too), plain and EMA weights different, and the backbone's
    official-layout file."""
    root = tmp_path_factory.mktemp("af_release")
    cfg = load_config("demo_actionformer", ["model.num_classes=3", *NET])
    torch.manual_seed(0)
    model = build_detector(cfg)
    assert isinstance(model, ActionFormerDetector)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.02 * torch.randn_like(p))
    plain = {k: v.clone() for k, v in model.actionformer.state_dict().items()}
    ref.randomize(model.actionformer, 1)
    ema = {k: v.clone() for k, v in model.actionformer.state_dict().items()}
    assert any(".drop_path_attn.scale" in k for k in ema)
    tar = root / "epoch_035.pth.tar"
    torch.save({"epoch": 35, "state_dict": {f"module.{k}": v for k, v in plain.items()},
                "scheduler": {"last_epoch": 350, "warmup_epochs": 50, "eta_min": 1e-8},
                "optimizer": {"state": {}, "param_groups": []},
                "state_dict_ema": {f"module.{k}": v for k, v in ema.items()}}, tar)
    swin = root / "swin_tiny_official.pth"
    save_official_format(model.backbone, swin)
    names = root / "names.txt"
    names.write_text("\n".join(NAMES) + "\n")
    config = root / "af.yaml"  # 20 classes as shipped: the file's classifier sets the number
    save_config(load_config("demo_actionformer", [*NET, f"model.backbone.weights={swin}"]), config)
    return {"root": root, "tar": tar, "swin": swin, "names": names, "config": config, "plain": plain, "ema": ema,
            "backbone": {k: v.clone() for k, v in model.backbone.state_dict().items()}}


def _convert(release: dict, out: Path, *extra: str) -> int:
    return main(["convert-weights", "--src", str(release["tar"]), "--config", str(release["config"]),
                 "--classes", str(release["names"]), "--out", str(out), *extra])


def test_the_ema_weights_by_default_the_plain_ones_with_no_ema(release: dict, capsys: pytest.CaptureFixture[str]) -> None:
    root = release["root"]
    for extra, want in (((), release["ema"]), (("--no-ema",), release["plain"])):
        out = root / f"af{len(extra)}.pt"
        assert _convert(release, out, *extra) == 0, capsys.readouterr().err
        assert "epoch 35" in capsys.readouterr().out
        loaded = load_model(out, device="cpu")
        model = loaded.model
        assert isinstance(model, ActionFormerDetector)
        assert loaded.classes == NAMES
        assert loaded.cfg.model.num_classes == 3
        assert loaded.cfg.model.backbone.weights is None  # the checkpoint holds them
        assert loaded.epoch == 35
        state = model.actionformer.state_dict()
        assert state.keys() == want.keys()
        for k, v in want.items():
            assert torch.equal(state[k], v), k
        for k, v in release["backbone"].items():
            if not k.endswith("relative_position_index"):
                assert torch.equal(model.backbone.state_dict()[k], v), k


def test_detect_and_test_load_the_converted_checkpoint(release: dict, capsys: pytest.CaptureFixture[str]) -> None:
    root = release["root"]
    out = root / "af_detect.pt"
    assert _convert(release, out) == 0
    videos = root / "videos"
    videos.mkdir()
    write_video(videos / "clip.mp4", 90, fps=15, size=(36, 36))
    assert main(["detect", str(videos / "clip.mp4"), "--checkpoint", str(out), "--out", str(root / "det"),
                 "--no-progress"]) == 0, capsys.readouterr().err
    assert (root / "det" / "clip.json").is_file()
    ann = root / "ann.json"
    ann.write_text('{"database": {"clip": {"subset": "test", "duration": 6.0, '
                   '"annotations": [{"segment": [1.0, 3.0], "label": "Throw"}]}}}')
    assert main(["test", "--config", str(release["config"]), "--checkpoint", str(out), "--out", str(root / "test"),
                 "--no-progress", "model.num_classes=3", f"data.annotations={ann}", f"data.videos={videos}",
                 "data.test_subset=test"]) == 0, capsys.readouterr().err
    assert (root / "test" / "af_detect" / "metrics.json").is_file()


@pytest.mark.parametrize(("change", "message"), [
    ("names", r"two\.txt: 2 class names but the model predicts 3"),
    ("no_names", r"needs its class names: pass --classes NAMES\.txt \(3 names"),
    ("no_backbone", r"ActionFormer's network only.*model\.backbone\.weights=FILE"),
    ("width", r"input_dim is 192 \(backbone\.embd\.0\.conv\.weight \[16, 192, 3\]\) but the backbone of the "
              r"config \(model\.backbone\.arch=swin_t\) gives 768-channel features"),
    ("droppath", r"unexpected keys \(\d+\): backbone\.stem\.0\.drop_path_attn\.scale.*droppath > 0"),
    ("missing", r"missing keys \(1\): reg_head\.scale\.2\.scale"),
    ("kind", r"model\.kind=anchor; use --config thumos14_swin_b_actionformer"),
])
def test_every_problem_is_one_line_in_the_releases_names(release: dict, change: str, message: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = release["root"]
    args = ["convert-weights", "--src", str(release["tar"]), "--config", str(release["config"]),
            "--classes", str(release["names"]), "--out", str(root / "bad.pt")]
    if change == "names":
        short = root / "two.txt"
        short.write_text("Jump\nThrow\n")
        args[args.index(str(release["names"]))] = str(short)
    elif change == "no_names":
        i = args.index("--classes")
        del args[i:i + 2]
    elif change == "no_backbone":
        args.append("model.backbone.weights=null")
    elif change == "width":
        args.append("model.backbone.arch=swin_t")  # checked before its weights are read
    elif change == "droppath":
        args.append("model.actionformer.train_cfg.droppath=0")
    elif change == "missing":
        obj = torch.load(release["tar"], weights_only=True)
        del obj["state_dict_ema"]["module.reg_head.scale.2.scale"]
        src = root / "epoch_001.pth.tar"
        torch.save(obj, src)
        args[args.index(str(release["tar"]))] = str(src)
    elif change == "kind":
        args[args.index(str(release["config"]))] = "demo"
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.search(message, err), err
    assert not (root / "bad.pt").exists()


def test_no_ema_is_only_for_actionformer_checkpoints(release: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert-weights", "--src", str(release["swin"]), "--out", str(release["root"] / "b.pth"),
                 "--no-ema"]) == 2
    assert "--no-ema do not apply" in capsys.readouterr().err
