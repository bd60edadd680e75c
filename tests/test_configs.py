"""The shipped configs (configs/*.yaml) and `tallformer model-info`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tallformer.cli import main
from tallformer.config import Config, config_to_dict, load_config
from tallformer.models.backbone import PRESETS
from tallformer.models.detector import build_detector

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_swin_b_config_is_the_paper_config() -> None:
    """Every number written out in thumos14_swin_b.yaml equals the schema's paper defaults."""
    cfg = config_to_dict(load_config(CONFIGS / "thumos14_swin_b.yaml"))
    default = config_to_dict(Config())
    cfg.pop("run_dir")
    default.pop("run_dir")
    preset = PRESETS["swin_b"]  # schema fields left null take the preset's value
    for key, value in default["model"]["backbone"].items():
        if value is None and key not in ("weights",):
            default["model"]["backbone"][key] = getattr(preset, key)
    for key in ("embed_dim", "depths", "num_heads", "window_size", "patch_size"):
        cfg["model"]["backbone"][key] = getattr(preset, key)  # not written in the file
    assert cfg == default
    assert cfg["model"]["backbone"]["drop_path_rate"] == 0.2  # spec §4
    assert cfg["model"]["backbone"]["use_checkpoint"] is True
    text = (CONFIGS / "thumos14_swin_b.yaml").read_text()
    assert "§" in text  # numbers are cited to the spec


def test_swin_t_config_differs_only_in_the_backbone() -> None:
    b = config_to_dict(load_config(CONFIGS / "thumos14_swin_b.yaml"))
    t = config_to_dict(load_config(CONFIGS / "thumos14_swin_t.yaml"))
    diff = {(k, kk) for k in b if isinstance(b[k], dict)
            for kk in b[k] if b[k][kk] != t[k][kk]}
    assert diff == {("model", "backbone")}
    assert t["model"]["backbone"]["arch"] == "swin_t"
    assert t["model"]["backbone"]["drop_path_rate"] == 0.1  # spec §4


def test_demo_config_is_tiny_and_runs() -> None:
    cfg = load_config(CONFIGS / "demo.yaml")
    assert cfg.model.backbone.arch == "tiny" and cfg.train.amp == "none"
    assert cfg.data.frame_size == [64, 64] and cfg.data.crop_size == 56
    assert cfg.data.num_frames == 128 and cfg.model.head.num_classes == 4
    assert cfg.data.annotations is None and cfg.data.videos is None
    torch.manual_seed(0)
    model = build_detector(cfg).eval()
    n = sum(p.numel() for p in model.parameters())
    assert 300_000 < n < 5_000_000
    with torch.no_grad():
        cls, reg = model.forward_infer(torch.randn(1, 3, 128, 56, 56))
    assert [tuple(c.shape) for c in cls] == [(1, 20, n) for n in (16, 8, 4, 2)]
    assert [tuple(r.shape) for r in reg] == [(1, 10, n) for n in (16, 8, 4, 2)]


def _model_info(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["model-info", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_model_info_json_swin_b(capsys: pytest.CaptureFixture[str]) -> None:
    info = _model_info(capsys, "--config", str(CONFIGS / "thumos14_swin_b.yaml"))
    assert info == {  # spec model-thumos14 §17
        "parts": {
            "backbone": {"total": 87_638_984, "trainable": 84_930_976},
            "srm": {"total": 2_360_320, "trainable": 2_360_320},
            "tcm": {"total": 9_462_864, "trainable": 9_462_864},
            "tdm": {"total": 14_710_784, "trainable": 14_710_784},
            "fpn": {"total": 1_643_520, "trainable": 1_643_520},
            "head": {"total": 1_661_550, "trainable": 1_661_550},
        },
        "total": 117_478_022,
        "trainable": 114_770_014,
    }


def test_model_info_swin_t_overrides_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    info = _model_info(capsys, "--config", str(CONFIGS / "thumos14_swin_t.yaml"))
    assert info["total"] == 57_296_292  # spec §17
    assert info["parts"]["backbone"]["total"] == 27_850_470
    assert info["parts"]["srm"]["total"] == 1_967_104
    # overrides change the counts: nothing frozen -> everything trainable
    info = _model_info(capsys, "--config", str(CONFIGS / "thumos14_swin_t.yaml"),
                       "model.backbone.frozen_stages=-1")
    assert info["trainable"] == info["total"] == 57_296_292
    assert main(["model-info", "--config", str(CONFIGS / "demo.yaml")]) == 0
    out = capsys.readouterr().out
    for name in ("backbone", "srm", "tcm", "tdm", "fpn", "head", "all"):
        assert name in out
    # a config the model cannot be built from fails with a message naming the key
    assert main(["model-info", "--config", str(CONFIGS / "demo.yaml"),
                 "model.head.anchor_strides=[8]"]) == 2
    assert "anchor_strides" in capsys.readouterr().err


def test_model_info_module_does_not_import_torch() -> None:
    code = ("import sys, tallformer.commands.model_info; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
