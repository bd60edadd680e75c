"""The shipped configs (tallformer/configs/*.yaml, found by name) and `tallformer model-info`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tallformer.config
from tallformer.cli import main
from tallformer.config import Config, config_to_dict, load_config
from tallformer.engine.factory import build_detector
from tallformer.models.backbone import PRESETS

CONFIGS = Path(tallformer.config.__file__).resolve().parent / "configs"


def test_swin_b_config_is_the_paper_config() -> None:
    """Every number written out in thumos14_swin_b.yaml equals the schema's paper defaults."""
    cfg = config_to_dict(load_config("thumos14_swin_b"))
    default = config_to_dict(Config())
    cfg.pop("run_dir")
    default.pop("run_dir")
    preset = PRESETS["swin_b"]  # schema fields left null take the preset's value
    for key, value in default["model"]["backbone"].items():
        if value is None and key not in ("weights",):
            default["model"]["backbone"][key] = getattr(preset, key)
    for key in ("embed_dim", "depths", "num_heads", "window_size", "patch_size"):
        cfg["model"]["backbone"][key] = getattr(preset, key)  # not written in the file
    assert cfg["test"]["protocol"] == "original"  # the paper config tests with the original's windows
    default["test"]["protocol"] = "original"  # (the schema's default is ours, chunk_grid)
    assert cfg == default
    assert cfg["model"]["backbone"]["drop_path_rate"] == 0.2  # original: CFG:84-101
    assert cfg["model"]["backbone"]["use_checkpoint"] is True
    assert cfg["model"]["sync_bn"] is True  # SyncBN in FPN and head (original: CFG:139,151)
    text = (CONFIGS / "thumos14_swin_b.yaml").read_text()
    assert "original:" in text  # numbers are cited to the original's files
    for unreadable in ("§", "spec", "design.md"):
        assert unreadable not in text


def test_swin_t_config_differs_only_in_the_backbone() -> None:
    b = config_to_dict(load_config("thumos14_swin_b"))
    t = config_to_dict(load_config("thumos14_swin_t"))
    diff = {(k, kk) for k in b if isinstance(b[k], dict)
            for kk in b[k] if b[k][kk] != t[k][kk]}
    assert diff == {("model", "backbone")}
    assert t["model"]["backbone"]["arch"] == "swin_t"
    assert t["model"]["backbone"]["drop_path_rate"] == 0.1  # Swin-T's own rate


def test_demo_config_is_tiny_and_runs() -> None:
    cfg = load_config("demo")
    assert cfg.model.backbone.arch == "tiny"
    assert cfg.train.amp == "none"
    assert cfg.data.frame_size == [36, 36]
    assert cfg.data.crop_size == 32
    assert cfg.model.head.norm == "gn"  # the CPU demo's departure from the paper's head
    assert cfg.data.num_frames == 128
    assert cfg.model.num_classes == 4
    assert cfg.data.annotations is None
    assert cfg.data.videos is None
    torch.manual_seed(0)
    model = build_detector(cfg).eval()
    n = sum(p.numel() for p in model.parameters())
    assert n == 1_753_744
    with torch.no_grad():
        cls, reg = model.forward_infer(torch.randn(1, 3, 128, 32, 32))
    assert [tuple(c.shape) for c in cls] == [(1, 20, n) for n in (16, 8, 4, 2)]
    assert [tuple(r.shape) for r in reg] == [(1, 10, n) for n in (16, 8, 4, 2)]


def _model_info(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["model-info", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_model_info_json_swin_b(capsys: pytest.CaptureFixture[str]) -> None:
    info = _model_info(capsys, "--config", "thumos14_swin_b")
    assert info == {  # the original's modules instantiated with the paper config
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
    info = _model_info(capsys, "--config", "thumos14_swin_t")
    assert info["total"] == 57_296_292
    assert info["parts"]["backbone"]["total"] == 27_850_470
    assert info["parts"]["srm"]["total"] == 1_967_104
    # overrides change the counts: nothing frozen -> everything trainable
    info = _model_info(capsys, "--config", "thumos14_swin_t",
                       "model.backbone.frozen_stages=-1")
    assert info["trainable"] == info["total"] == 57_296_292
    assert main(["model-info", "--config", "demo"]) == 0
    out = capsys.readouterr().out
    for name in ("backbone", "srm", "tcm", "tdm", "fpn", "head", "all"):
        assert name in out
    # a config the model cannot be built from fails with a message naming the key
    assert main(["model-info", "--config", "demo",
                 "model.head.anchor_strides=[8]"]) == 2
    assert "anchor_strides" in capsys.readouterr().err


def test_model_info_module_does_not_import_torch() -> None:
    code = ("import sys, tallformer.commands.model_info; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_every_shipped_config_loads_to_its_file_values() -> None:
    """Each shipped YAML loads, and every value written in it is the loaded value."""
    import yaml

    from tallformer.config import shipped_configs

    names = shipped_configs()
    assert {"demo", "thumos14_swin_b", "thumos14_swin_t"} <= set(names)
    for name in names:
        written = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
        loaded = config_to_dict(load_config(name))
        for section, values in written.items():
            if not isinstance(values, dict):
                assert loaded[section] == values, (name, section)
                continue
            for key, value in values.items():
                if isinstance(value, dict):
                    for sub, v in value.items():
                        assert loaded[section][key][sub] == v, (name, section, key, sub)
                else:
                    assert loaded[section][key] == value, (name, section, key)


@pytest.mark.slow
def test_the_wheel_ships_the_configs_and_runs_from_them(tmp_path: Path) -> None:
    """`pip install tallformer` from a wheel is enough for `model-info --config thumos14_swin_b`."""
    import os
    import zipfile

    root = Path(__file__).resolve().parents[1]
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(root)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("tallformer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for cfg in ("demo", "thumos14_swin_b", "thumos14_swin_t"):
        assert f"tallformer/configs/{cfg}.yaml" in names
    site = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]
    code = ("import sys, tallformer; from tallformer.cli import main; print(tallformer.__file__); "
            "sys.exit(main(['model-info', '--config', 'thumos14_swin_b', '--json']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)})
    assert res.returncode == 0, res.stderr[-2000:]
    first, rest = res.stdout.split("\n", 1)
    assert first.startswith(str(site))  # the installed wheel, not the source tree
    assert json.loads(rest)["total"] == 117_478_022


def _comment_text(path: Path) -> str:
    """Every comment of a YAML file (header and end-of-line ones) as one paragraph."""
    parts = []
    for line in path.read_text().splitlines():
        if "#" in line:
            parts.append(line.split("#", 1)[1].strip())
    return " ".join(parts)


def _ints(found: list[str]) -> list[int]:
    return [int(x.replace(",", "")) for x in found]


def test_demo_config_comments_state_its_values() -> None:
    from tallformer.config import shipped_config_path
    from tallformer.data.synthetic import plan_dataset
    from tallformer.engine.factory import parameter_counts
    from tallformer.memory.selection import num_kept

    text = _comment_text(shipped_config_path("demo"))
    cfg = load_config("demo")
    d, tr, bb = cfg.data, cfg.train, cfg.model.backbone
    training = sum(v.subset == "training" for v in plan_dataset(d.synthetic_videos, d.synthetic_seed))
    steps_per_epoch = -(-training // d.batch_size)
    chunks = d.num_frames // bb.chunk_size
    stride = round(d.num_frames * (1 - d.test_overlap))

    assert _ints(re.findall(r"stride (\d+)", text)) == [stride, stride]
    assert re.findall(r"test_overlap: ([\d.]+)", text) == [f"{d.test_overlap:g}"]
    assert _ints(re.findall(r"(\d+)-frame windows", text)) == [d.num_frames] * 2
    assert {(int(a), int(b)) for a, b in re.findall(r"(\d+)x(\d+) frames", text)} == {tuple(d.frame_size)}
    assert _ints(re.findall(r"(\d+) crop", text)) == [d.crop_size]
    assert set(re.findall(r"(\d+) chunks of (\d+)", text)) == {(str(chunks), str(bb.chunk_size))}
    assert re.findall(r"(\d+) of (\d+) chunks through the backbone", text) == [
        (str(num_kept(chunks, cfg.memory.keep_ratio)), str(chunks))]
    assert _ints(re.findall(r"(\d+) classes", text)) == [cfg.model.num_classes]
    # the run's length, in the header and beside max_epochs
    epoch = re.findall(r"(\d+) steps of (\d+) clips an epoch \((\d+) training videos\): ([\d,]+) steps", text)
    assert epoch == [(str(steps_per_epoch), str(d.batch_size), str(training), str(tr.max_epochs * steps_per_epoch))]
    total = re.findall(r"([\d,]+) steps of (\d+) clips\.", text)
    assert _ints([t for t, _ in total]) == [tr.max_epochs * steps_per_epoch]
    assert re.findall(r"warm-up over (\d+) steps of (\d+) clips", text) == [
        (str(tr.warmup_iters), str(tr.warmup_batch))]
    assert re.findall(r"stochastic depth ([\d.]+) in the backbone", text) == [f"{bb.drop_path_rate:g}"]
    assert re.findall(r"keep the paper's ([\d.]+) drop path and dropout", text) == [
        f"{cfg.model.neck.tcm_drop_path:g}"] == [f"{cfg.model.neck.tdm_dropout:g}"]
    (millions,) = re.findall(r"About ([\d.]+) M parameters", text)
    assert float(millions) == round(parameter_counts(cfg)["total"] / 1e6, 1)


@pytest.mark.parametrize("config", ["anet_demo", "demo"])
def test_model_info_table_columns_line_up(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model-info", "--config", config]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("action_head ") for line in lines) == (config == "anet_demo")
    ends = {tuple(m.end() for m in re.finditer(r"\S+", line))[-2:] for line in lines}
    assert len(ends) == 1, lines  # every row's two numbers end in the header's columns


def test_actionformer_thumos14_config_is_swin_b_with_the_releases_network_and_recipe() -> None:
    from tallformer.config import ActionFormerConfig

    af = config_to_dict(load_config("thumos14_swin_b_actionformer"))
    th = config_to_dict(load_config("thumos14_swin_b"))
    assert af["model"]["kind"] == "actionformer"
    assert af["model"]["backbone"] == th["model"]["backbone"]  # Swin-B as the paper's THUMOS14 config
    assert af["memory"] == th["memory"]
    assert af["memory"]["keep_ratio"] == 0.15
    assert {k: v for k, v in af["data"].items() if k != "batch_size"} == \
        {k: v for k, v in th["data"].items() if k != "batch_size"}
    assert af["data"]["batch_size"] == 2  # the release's loader batch
    assert af["model"]["num_classes"] == 20
    # ActionFormer's THUMOS14 network, train_cfg and test_cfg: the schema's defaults
    assert af["model"]["actionformer"] == config_to_dict(Config())["model"]["actionformer"]
    assert load_config("thumos14_swin_b_actionformer").model.actionformer == ActionFormerConfig()
    t = af["train"]
    assert (t["optimizer"], t["schedule"], t["lr"], t["weight_decay"], t["grad_clip"], t["max_epochs"]) == \
        ("adamw", "warmup_cosine", 0.0001, 0.05, 1.0, 35)
    assert (t["warmup_ratio"], t["lr"] * t["min_lr_ratio"]) == (0.0, pytest.approx(1e-8))
    assert t["warmup_iters"] * t["warmup_batch"] == 5 * 200  # 5 epochs of THUMOS14's 200 validation videos
    tc = af["model"]["actionformer"]["test_cfg"]
    assert (af["test"]["score_thr"], af["test"]["max_per_video"]) == (tc["min_score"], tc["max_seg_num"])
    counts = parameter_counts_of("thumos14_swin_b_actionformer")
    assert counts["parts"]["actionformer"]["total"] == 27_678_748  # the release's THUMOS14 network at input 1024
    text = (CONFIGS / "thumos14_swin_b_actionformer.yaml").read_text()
    assert "original:" in text
    for unreadable in ("§", "spec", "design.md"):
        assert unreadable not in text


def test_actionformer_demo_config_is_the_demo_with_a_network_fitted_to_its_windows() -> None:
    from tallformer.config import (
        actionformer_div_factor,
        actionformer_fpn_strides,
        actionformer_windows,
    )
    from tallformer.data.synthetic import plan_dataset

    af = load_config("demo_actionformer")
    demo = load_config("demo")
    assert af.model.kind == "actionformer"
    assert af.data == demo.data
    assert af.model.backbone == demo.model.backbone
    assert af.memory == demo.memory
    assert af.model.num_classes == demo.model.num_classes
    a = af.model.actionformer
    strides = actionformer_fpn_strides(a)
    factor = actionformer_div_factor(strides, actionformer_windows(a))
    features = af.data.num_frames // 2
    assert a.max_seq_len == features == factor  # a training window's features, no padded step
    assert len(a.regression_range) == len(strides) == 4
    assert (af.test.score_thr, af.test.max_per_video) == (a.test_cfg.min_score, a.test_cfg.max_seg_num)
    assert a.test_cfg == Config().model.actionformer.test_cfg  # the release's post-processing
    assert (af.train.optimizer, af.train.schedule, af.train.grad_clip) == ("adamw", "warmup_cosine", 1.0)
    # the numbers its comments state
    text = _comment_text(CONFIGS / "demo_actionformer.yaml")
    assert re.findall(r"(\d+)-frame windows = (\d+) features", text) == [(str(af.data.num_frames), str(features))]
    assert _ints(re.findall(r"(\d+) levels \(backbone_arch", text)) == [len(strides)]
    assert re.findall(r"strides ([\d, ]+):", text) == [", ".join(map(str, strides))]
    assert _ints(re.findall(r"local attention window (\d+)", text)) == [a.n_mha_win_size]
    (shown,) = re.findall(r"= (\d+) x (\d+) = (\d+) at the top level", text)
    assert (int(shown[0]), int(shown[0]) * int(shown[1])) == (strides[-1], factor) == (strides[-1], int(shown[2]))
    assert _ints(re.findall(r"max_seq_len (\d+) holds", text)) == [a.max_seq_len]
    assert _ints(re.findall(r"(\d+) channels", text)) == [a.embd_dim]
    training = sum(v.subset == "training" for v in plan_dataset(af.data.synthetic_videos, af.data.synthetic_seed))
    steps = -(-training // af.data.batch_size)
    run, warmup = re.findall(r"(\d+) epochs of (\d+) steps of (\d+) clips", text)
    assert run == (str(af.train.max_epochs), str(steps), str(af.data.batch_size))
    assert _ints(re.findall(r"\(([\d,]+) steps; the anchor demo", text)) == [af.train.max_epochs * steps]
    assert _ints(re.findall(r"clips an epoch \(\d+ training videos\): (\d+) steps", text)) == [
        af.train.max_epochs * steps]
    assert int(warmup[0]) * steps == af.train.warmup_iters
    assert warmup[1:] == (str(steps), str(af.train.warmup_batch))


def parameter_counts_of(name: str) -> dict:
    from tallformer.engine.factory import parameter_counts

    return parameter_counts(load_config(name))
