"""Backbone weights: the official Video Swin layout (original: tools/convert_vswin_ckpt.py:20-27,
vedatad/models/backbones/vswin.py), torchvision and tallformer formats, strict key checks,
architecture inference, restricted loading (numpy scalars in `meta`), `convert_checkpoint` and
`tallformer convert-weights`."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.video.swin_transformer import SwinTransformer3d

from official_checkpoints import (
    rename_pickle_globals,
    save_official_format,
    to_official_state_dict,
)
from tallformer.cli import main
from tallformer.errors import TallformerError
from tallformer.models import WeightsError, build_backbone, load_backbone_weights
from tallformer.models.backbone import PRESETS, VideoSwinBackbone
from tallformer.models.weights import (
    arch_override,
    convert_checkpoint,
    infer_arch,
    read_checkpoint,
)

torch.set_num_threads(1)

# official per-block / per-merge parameter names (original: vedatad/models/backbones/vswin.py)
_BLOCK = [
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
    "attn.proj.bias", "attn.relative_position_bias_table", "attn.relative_position_index",
    "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
]
_MERGE = ["reduction.weight", "norm.weight", "norm.bias"]


def _official_keys(depths: list[int]) -> set[str]:
    keys = {"backbone.patch_embed.proj.weight", "backbone.patch_embed.proj.bias",
            "backbone.patch_embed.norm.weight", "backbone.patch_embed.norm.bias",
            "backbone.norm.weight", "backbone.norm.bias",
            "cls_head.fc_cls.weight", "cls_head.fc_cls.bias"}
    for i, d in enumerate(depths):
        keys |= {f"backbone.layers.{i}.blocks.{j}.{n}" for j in range(d) for n in _BLOCK}
        if i < len(depths) - 1:
            keys |= {f"backbone.layers.{i}.downsample.{n}" for n in _MERGE}
    return keys


def _random_tiny(seed: int) -> VideoSwinBackbone:
    """Tiny backbone with every parameter random and non-zero (bias tables std 0.5)."""
    torch.manual_seed(seed)
    m = build_backbone("tiny", chunk_size=None).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            std = 0.5 if "relative_position_bias_table" in name else 0.05
            p.add_(torch.randn_like(p) * std)
    return m


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _torchvision_features(model: VideoSwinBackbone, x: torch.Tensor) -> torch.Tensor:
    """torchvision's own SwinTransformer3d forward (patch_embed -> features -> norm), pooled."""
    a = model.arch
    tv = SwinTransformer3d(
        patch_size=list(a.patch_size), embed_dim=a.embed_dim, depths=list(a.depths),
        num_heads=list(a.num_heads), window_size=list(a.window_size),
        norm_layer=partial(nn.LayerNorm, eps=1e-5), num_classes=3,
    ).eval()
    state = {**model.state_dict(), "head.weight": tv.head.weight, "head.bias": tv.head.bias}
    tv.load_state_dict(state, strict=True)
    tv.avgpool = nn.AdaptiveAvgPool3d((None, 1, 1))  # pool space only (chunk_model.py:82-85)
    tv.head = nn.Identity()
    with torch.no_grad():
        y = tv(x)  # [B, C*T'] after flatten
    return y.reshape(x.shape[0], a.num_features, -1)


# --------------------------------------------------------------------------- official layout


def test_official_layout_keys_and_shapes_for_swin_b() -> None:
    with torch.device("meta"):
        m = build_backbone("swin_b")
    sd = to_official_state_dict(m)
    assert set(sd) == _official_keys([2, 2, 18, 2])
    shapes = {k: list(v.shape) for k, v in sd.items()}
    assert shapes["backbone.patch_embed.proj.weight"] == [128, 3, 2, 4, 4]
    assert shapes["backbone.layers.0.blocks.0.attn.relative_position_bias_table"] == [2535, 4]
    assert shapes["backbone.layers.0.blocks.0.attn.relative_position_index"] == [392, 392]
    assert shapes["backbone.layers.2.blocks.17.mlp.fc1.weight"] == [2048, 512]
    assert shapes["backbone.layers.2.blocks.17.mlp.fc2.weight"] == [512, 2048]
    assert shapes["backbone.layers.2.downsample.reduction.weight"] == [1024, 2048]
    assert shapes["backbone.layers.3.blocks.1.attn.relative_position_bias_table"] == [2535, 32]
    assert shapes["backbone.norm.weight"] == [1024]
    assert shapes["cls_head.fc_cls.weight"] == [400, 1024]
    # params only (no index buffers) + 400-class head = torchvision's documented swin3d_b count
    n = sum(v.numel() for k, v in sd.items() if not k.endswith("relative_position_index"))
    assert n == 88_048_984
    # on the meta device the index values are unknown: the table length alone is ambiguous
    with pytest.raises(WeightsError, match=r"candidates \[.*\(8, 7, 7\)"):
        infer_arch(m.state_dict())
    assert infer_arch(m.state_dict(), prefer_window=(8, 7, 7)) == PRESETS["swin_b"].shape_dict()


def test_official_round_trip_is_exact_and_matches_torchvision(tmp_path: Path) -> None:
    src = _random_tiny(seed=0)
    path = tmp_path / "swin_tiny_official.pth"
    save_official_format(src, path)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"meta", "state_dict"}
    assert set(raw["state_dict"]) == _official_keys([2, 2, 2, 2])
    tables = [v for k, v in raw["state_dict"].items() if k.endswith("bias_table")]
    assert all(t.abs().min() > 0 for t in tables)

    dst = build_backbone("tiny", chunk_size=None).eval()
    assert load_backbone_weights(dst, path) == "official"
    _assert_same_state(src, dst)
    for shape in [(2, 3, 20, 62, 58), (1, 3, 7, 30, 37)]:  # not multiples of patch or window
        x = torch.randn(*shape)
        with torch.no_grad():
            ours = dst(x)
        ref = _torchvision_features(src, x)
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("variant", ["keysfrom_backbone", "module_prefix", "fp16"])
def test_official_variants(tmp_path: Path, variant: str) -> None:
    src = _random_tiny(seed=1)
    sd = to_official_state_dict(src)
    if variant == "keysfrom_backbone":  # the seed's convert_vswin_ckpt.py output: the bare state_dict
        obj: object = sd
    elif variant == "module_prefix":
        obj = {"state_dict": {f"module.{k}": v for k, v in sd.items()}}
    else:
        obj = {"state_dict": {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}}
    torch.save(obj, tmp_path / "w.pth")
    dst = build_backbone("tiny")
    assert load_backbone_weights(dst, tmp_path / "w.pth") == "official"
    if variant == "fp16":
        for k, v in src.state_dict().items():
            torch.testing.assert_close(dst.state_dict()[k], v.half().to(v.dtype), atol=0, rtol=0)
    else:
        _assert_same_state(src, dst)


def test_torchvision_and_tallformer_formats(tmp_path: Path) -> None:
    src = _random_tiny(seed=2)
    a = src.arch
    tv = SwinTransformer3d(patch_size=list(a.patch_size), embed_dim=a.embed_dim,
                           depths=list(a.depths), num_heads=list(a.num_heads),
                           window_size=list(a.window_size), num_classes=400)
    tv.load_state_dict({**src.state_dict(), "head.weight": tv.head.weight, "head.bias": tv.head.bias})
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    torch.save(src.state_dict(), tmp_path / "ours.pth")
    ckpt = {
        "model": {**{f"backbone.{k}": v for k, v in src.state_dict().items()},
                  "neck.srm.conv1.weight": torch.ones(2), "head.cls.weight": torch.ones(3)},
        "optimizer": {"state": {}, "param_groups": []}, "epoch": 3, "config": {"seed": 10},
    }
    torch.save(ckpt, tmp_path / "ckpt.pth")
    for name, fmt in [("tv.pth", "torchvision"), ("ours.pth", "tallformer"), ("ckpt.pth", "tallformer")]:
        dst = build_backbone("tiny")
        assert load_backbone_weights(dst, tmp_path / name) == fmt
        _assert_same_state(src, dst)


# --------------------------------------------------------------------------- errors


def _official_file(tmp_path: Path, edit) -> Path:
    sd = to_official_state_dict(_random_tiny(seed=4))
    edit(sd)
    path = tmp_path / "edited.pth"
    torch.save({"state_dict": sd}, path)
    return path


def test_missing_key_is_listed(tmp_path: Path) -> None:
    def edit(sd):
        del sd["backbone.layers.1.blocks.0.mlp.fc2.bias"]
        del sd["backbone.norm.weight"]
    with pytest.raises(WeightsError, match=r"missing keys \(2\): features\.2\.0\.mlp\.3\.bias, norm\.weight"):
        load_backbone_weights(build_backbone("tiny"), _official_file(tmp_path, edit))


def test_unexpected_key_is_listed(tmp_path: Path) -> None:
    def edit(sd):
        sd["backbone.layers.0.blocks.0.attn.extra"] = torch.ones(1)
        sd["backbone.pos_embed"] = torch.ones(1)
    with pytest.raises(WeightsError, match=r"unexpected keys \(2\): features\.0\.0\.attn\.extra, pos_embed"):
        load_backbone_weights(build_backbone("tiny"), _official_file(tmp_path, edit))


def test_misshaped_key_is_listed(tmp_path: Path) -> None:
    def edit(sd):
        sd["backbone.layers.3.blocks.1.mlp.fc1.weight"] = torch.zeros(10, 192)
    with pytest.raises(WeightsError, match=r"mis-shaped keys \(1\): features\.6\.1\.mlp\.0\.weight "
                                           r"\(file \[10, 192\], model \[768, 192\]\)"):
        load_backbone_weights(build_backbone("tiny"), _official_file(tmp_path, edit))


def test_wrong_relative_position_index_is_an_error(tmp_path: Path) -> None:
    def edit(sd):
        k = "backbone.layers.0.blocks.1.attn.relative_position_index"
        sd[k] = sd[k].flip(0)
    with pytest.raises(WeightsError, match=r"differ from the model's \(1\): features\.0\.1\.attn"):
        load_backbone_weights(build_backbone("tiny"), _official_file(tmp_path, edit))


def test_other_architecture_is_one_line_with_the_override(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pth"
    save_official_format(_random_tiny(seed=5), path)
    other = build_backbone({**PRESETS["tiny"].shape_dict(), "depths": [2, 2, 3, 2]})
    with pytest.raises(WeightsError) as info:
        load_backbone_weights(other, path)
    assert str(info.value) == (
        f"{path}: the weights are tiny but the model is a custom Video Swin "
        "(depths [2, 2, 2, 2] (model [2, 2, 3, 2])); set model.backbone.arch=tiny"
    )
    # a file of a custom shape: the override names every shape field
    shape = {"embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2],
             "window_size": [4, 3, 3], "patch_size": [2, 4, 4]}
    torch.save(build_backbone(shape).state_dict(), tmp_path / "custom.pth")
    with pytest.raises(WeightsError) as info:
        load_backbone_weights(build_backbone("tiny"), tmp_path / "custom.pth")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{tmp_path / 'custom.pth'}: the weights are a custom Video Swin but the model is tiny (")
    assert msg.endswith(
        "; set model.backbone.arch=custom model.backbone.embed_dim=8 model.backbone.depths=[1,1] "
        "model.backbone.num_heads=[1,2] model.backbone.window_size=[4,3,3] "
        "model.backbone.patch_size=[2,4,4]"
    )
    assert arch_override(PRESETS["swin_b"].shape_dict()) == "model.backbone.arch=swin_b"


def test_swin_t_weights_into_a_swin_b_model_name_the_override(tmp_path: Path) -> None:
    """The user's case: the paper config (Swin-B) given Swin-T weights (meta device: shapes only)."""
    with torch.device("meta"):
        swin_t, swin_b = build_backbone("swin_t"), build_backbone("swin_b")
    state = {k: v for k, v in swin_t.state_dict().items() if not k.endswith("relative_position_index")}
    torch.save({k: torch.zeros(v.shape) for k, v in state.items()}, tmp_path / "t.pth")
    with pytest.raises(WeightsError, match=r"the weights are swin_t but the model is swin_b .*"
                                           r"embed_dim 96 \(model 128\).*; set model.backbone.arch=swin_t$"):
        load_backbone_weights(swin_b, tmp_path / "t.pth")


@pytest.mark.parametrize(("obj", "match"), [
    ([1, 2], "expected a dict of tensors, got list"),
    ({"state_dict": {"backbone.norm.weight": torch.ones(1), "backbone.note": "x"}},
     "entries that are not tensors: backbone.note"),
    ({"encoder.weight": torch.ones(1)}, "unrecognised key layout .*encoder.weight"),
])
def test_unreadable_content_is_named(tmp_path: Path, obj: object, match: str) -> None:
    path = tmp_path / "bad.pth"
    torch.save(obj, path)
    with pytest.raises(WeightsError, match=f"{path}: .*{match}"):
        load_backbone_weights(build_backbone("tiny"), path)


def test_missing_and_non_checkpoint_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="weights file not found"):
        load_backbone_weights(build_backbone("tiny"), tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match=f"^{tmp_path}: is a folder, not a weights file$"):
        read_checkpoint(tmp_path)
    (tmp_path / "text.pth").write_text("not a checkpoint")
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps({"model": {}}))
    import zipfile
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("a.txt", "hi")
    for name, what in [("text.pth", "not a file written by torch.save"),
                       ("empty.pth", "the file is empty"),
                       ("config.json", "not a file written by torch.save"),
                       ("other.zip", "not a file written by torch.save")]:
        with pytest.raises(WeightsError) as info:
            load_backbone_weights(build_backbone("tiny"), tmp_path / name)
        assert str(info.value) == f"{tmp_path / name}: not a PyTorch checkpoint ({what}); check the path"


def test_weights_error_is_a_tallformer_error() -> None:
    assert issubclass(WeightsError, TallformerError)
    assert issubclass(WeightsError, ValueError)  # what callers caught before


def _numpy_meta() -> dict[str, object]:
    return {"epoch": np.int64(30), "best_score": np.float64(0.615), "lr": np.float32(1e-3),
            "flag": np.bool_(True), "mmcv_version": "1.3.0"}


@pytest.mark.parametrize("numpy_names", [2, 1])
def test_numpy_scalars_in_meta_load_with_weights_only(tmp_path: Path, numpy_names: int) -> None:
    """Older mmcv wrote numpy scalars into `meta`; numpy 1.x pickles name
    `numpy.core.multiarray.scalar`, numpy 2.x `numpy._core.multiarray.scalar`."""
    src = _random_tiny(seed=8)
    path = tmp_path / "official.pth"
    save_official_format(src, path, meta=_numpy_meta())
    if numpy_names == 1:
        rename_pickle_globals(path, {"numpy._core.multiarray scalar": "numpy.core.multiarray scalar"})
        assert b"numpy.core.multiarray\nscalar" in _pickle_bytes(path)
    with pytest.raises(Exception, match="numpy"):  # torch alone refuses the file
        torch.load(path, weights_only=True)
    raw = read_checkpoint(path)
    assert raw["meta"] == _numpy_meta()
    assert type(raw["meta"]["best_score"]) is np.float64
    dst = build_backbone("tiny")
    assert load_backbone_weights(dst, path) == "official"
    _assert_same_state(src, dst)


def _pickle_bytes(path: Path) -> bytes:
    import zipfile
    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


class _Payload:
    """Unpickling this would run `sys.exit`: weights_only must refuse it, not run it."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (sys.exit, (7,))


@pytest.mark.parametrize(("meta", "name"), [
    (argparse.Namespace(lr=0.01), "argparse.Namespace"),
    (_Payload(), "sys.exit"),
    (np.array([1.0, 2.0]), "numpy._core.multiarray._reconstruct"),
])
def test_other_objects_stay_refused_and_the_global_is_named(tmp_path: Path, meta: object,
                                                            name: str) -> None:
    path = tmp_path / "w.pth"
    save_official_format(_random_tiny(seed=9), path, meta={"x": meta})
    if name.startswith("numpy._core") and np.__version__.startswith("1."):
        name = name.replace("numpy._core", "numpy.core")
    with pytest.raises(WeightsError) as info:
        load_backbone_weights(build_backbone("tiny"), path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: refused to load: the file holds a Python object {name}, ")
    assert "weights_only=True" in msg


# --------------------------------------------------------------------------- inference of arch


def test_infer_arch_uses_the_index_for_non_square_windows() -> None:
    shape = {"embed_dim": 8, "depths": [1, 2], "num_heads": [1, 2],
             "window_size": [2, 3, 5], "patch_size": [2, 2, 2]}
    m = build_backbone(shape)
    assert infer_arch(m.state_dict()) == shape
    no_index = {k: v for k, v in m.state_dict().items() if not k.endswith("relative_position_index")}
    with pytest.raises(WeightsError, match="cannot tell the attention window"):
        infer_arch(no_index)
    assert infer_arch(no_index, prefer_window=(2, 3, 5)) == shape


# --------------------------------------------------------------------------- convert-weights


def test_convert_checkpoint(tmp_path: Path) -> None:
    src = _random_tiny(seed=6)
    save_official_format(src, tmp_path / "official.pth")
    out = tmp_path / "conv" / "tiny.pth"
    info = convert_checkpoint(tmp_path / "official.pth", out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.pth", "tiny.pth.json"]  # no temp left
    plain = torch.load(out, weights_only=True)
    assert set(plain) == set(src.state_dict())
    side_text = Path(str(out) + ".json").read_text()
    assert side_text == json.dumps(info, indent=2) + "\n"
    side = json.loads(side_text)
    assert list(side) == ["arch", "preset", "num_features", "num_parameters", "source",
                          "source_format", "config"]
    assert side["arch"] == PRESETS["tiny"].shape_dict()
    assert side["preset"] == "tiny"
    assert side["num_features"] == 192
    assert side["source"] == str(tmp_path / "official.pth")
    assert side["source_format"] == "official"
    assert side["num_parameters"] == sum(p.numel() for p in src.parameters()) == 1_307_322
    assert side["config"]["model"]["backbone"] == {"arch": "tiny", "weights": str(out)}
    dst = build_backbone(side["arch"])
    assert load_backbone_weights(dst, out) == "tallformer"
    _assert_same_state(src, dst)

    # a custom shape is written out in full
    custom = build_backbone({"embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2],
                             "window_size": [4, 3, 3], "patch_size": [2, 4, 4]})
    torch.save(custom.state_dict(), tmp_path / "custom.pth")
    side = convert_checkpoint(tmp_path / "custom.pth", tmp_path / "c.pth")
    assert side["preset"] is None
    assert side["config"]["model"]["backbone"] == {
        "arch": "custom", "embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2],
        "window_size": [4, 3, 3], "patch_size": [2, 4, 4], "weights": str(tmp_path / "c.pth")}
    # an error writes nothing
    (tmp_path / "bad.pth").write_text("x")
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint"):
        convert_checkpoint(tmp_path / "bad.pth", tmp_path / "none" / "o.pth")
    assert not (tmp_path / "none").exists()


def test_convert_weights_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _random_tiny(seed=6)
    save_official_format(src, tmp_path / "official.pth")
    out = tmp_path / "conv" / "tiny.pth"
    assert main(["convert-weights", "--src", str(tmp_path / "official.pth"), "--out", str(out)]) == 0
    assert capsys.readouterr().out == (
        f"wrote {out} (official -> tallformer, 1,307,322 parameters, arch tiny) and {out}.json\n")
    side = json.loads(Path(str(out) + ".json").read_text())
    assert side["preset"] == "tiny"
    dst = build_backbone(side["arch"])
    assert load_backbone_weights(dst, out) == "tallformer"
    _assert_same_state(src, dst)


def test_convert_weights_refuses_the_wrong_arch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_official_format(_random_tiny(seed=7), tmp_path / "official.pth")
    rc = main(["convert-weights", "--src", str(tmp_path / "official.pth"), "--out",
               str(tmp_path / "o.pth"), "--arch", "swin_t"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "not swin_t" in err
    assert "embed_dim: file 24 vs swin_t 96" in err
    assert not (tmp_path / "o.pth").exists()
    assert main(["convert-weights", "--src", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o.pth")]) == 2
    assert "weights file not found" in capsys.readouterr().err


def test_convert_weights_help_and_light_import() -> None:
    code = (
        "import sys, tallformer.commands.convert_weights as c, argparse\n"
        "assert 'torch' not in sys.modules, 'torch imported at module level'\n"
        "p = argparse.ArgumentParser(); s = p.add_subparsers(); c.register(s)\n"
        "p.parse_args(['convert-weights', '--help'])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "examples:" in res.stdout
    assert "--src" in res.stdout
    assert "--arch" in res.stdout


def _cuts(data: bytes) -> dict[str, int]:
    """Where to cut a torch zip file: one byte into each part of it."""
    import zipfile

    with zipfile.ZipFile(__import__("io").BytesIO(data)) as z:
        infos = z.infolist()
    tensor = next(i for i in infos if "/data/" in i.filename and "/.data/" not in i.filename)
    central = data.rfind(b"PK\x01\x02", 0, data.rfind(b"PK\x05\x06"))
    return {"header": 20, "data.pkl": infos[0].header_offset + 120,
            "tensor": tensor.header_offset + 200 + tensor.compress_size // 2,
            "central directory": central + 10, "end record": len(data) - 1}


def test_a_truncated_checkpoint_says_it_was_cut_short_and_where(tmp_path: Path) -> None:
    from tallformer.engine.checkpoint import CheckpointError, load_checkpoint
    backbone = _random_tiny(0)
    whole = tmp_path / "whole.pt"  # a training checkpoint's layout: {"model": {"backbone.*": ...}, ...}
    torch.save({"model": {f"backbone.{k}": v for k, v in backbone.state_dict().items()}, "step": 3}, whole)
    data = whole.read_bytes()
    tensors = len(backbone.state_dict())
    expected = {
        "header": "inside the header of its first record",
        "data.pkl": "inside record 'whole/data.pkl' (before the tensors)",
        "tensor": f"(tensor 1 of the {tensors} that data.pkl lists)",
        "central directory": "inside the zip's central directory (its index, written last; every record before it is whole)",
        "end record": "inside the zip's central directory",
    }
    for part, at in _cuts(data).items():
        cut = tmp_path / f"cut_{at}.pt"
        cut.write_bytes(data[:at])
        for load in (load_checkpoint, partial(load_backbone_weights, build_backbone("tiny"))):
            with pytest.raises((CheckpointError, WeightsError)) as info:
                load(cut)
            message = str(info.value)
            assert "\n" not in message
            assert message.startswith(f"{cut}: truncated: the zip archive ends at byte {at:,}, "), (part, message)
            assert expected[part] in message, (part, message)
            assert message.endswith("the file was cut short (a copy or a save that did not finish)")
    # torch's legacy format (the original releases' older files) cut short
    legacy = tmp_path / "legacy.pth"
    torch.save({"state_dict": backbone.state_dict()}, legacy, _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    for at in (7, len(data) // 2, len(data) - 3):
        legacy.write_bytes(data[:at])
        with pytest.raises(WeightsError, match=rf"^{legacy}: truncated: torch's legacy format ends at byte "
                                               rf"{at:,} before its data does.*the file was cut short"):
            load_backbone_weights(build_backbone("tiny"), legacy)
