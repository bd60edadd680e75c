"""The config schema: YAML loading, dotted overrides, every error path, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from tallformer.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_defaults_are_the_paper_config():
    cfg = load_config()
    assert cfg.data.num_frames == 480
    assert cfg.data.fps == 15.0
    assert cfg.memory.keep_ratio == 0.15
    assert cfg.memory.dtype == "float16"
    assert cfg.model.backbone.arch == "swin_b"
    assert cfg.model.backbone.frozen_stages is None
    assert cfg.test.nms_method == "nmw"
    assert cfg.test.max_per_video == 1200
    assert cfg.seed == 10


def test_yaml_and_overrides(tmp_path):
    p = write(tmp_path, "memory:\n  keep_ratio: 0.3\ntrain:\n  max_epochs: 7\n  weight_decay: 1e-4\n")
    cfg = load_config(p, ["memory.keep_ratio=0.25", "train.max_epochs=3", "data.frame_size=[128, 96]", "data.crop_size=96",
                          "model.backbone.weights=/x/y.pth", "train.grad_clip=null"])
    assert cfg.memory.keep_ratio == 0.25
    assert cfg.train.max_epochs == 3
    assert cfg.train.weight_decay == 1e-4  # YAML 1.1 reads "1e-4" as a string; accepted as float
    assert cfg.data.frame_size == [128, 96]
    assert cfg.data.crop_size == 96
    assert cfg.model.backbone.weights == "/x/y.pth"
    assert cfg.train.grad_clip is None


def test_int_given_for_float_and_integral_float_for_int():
    cfg = load_config(None, ["train.lr=1", "data.num_frames=480.0"])
    assert isinstance(cfg.train.lr, float)
    assert cfg.train.lr == 1.0
    assert isinstance(cfg.data.num_frames, int)


def test_save_and_load_round_trip(tmp_path):
    cfg = load_config(None, ["memory.keep_ratio=0.5", "model.backbone.depths=[1, 1, 2, 1]", "run_dir=runs/x"])
    out = tmp_path / "saved.yaml"
    save_config(cfg, out)
    again = load_config(out)
    assert again == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_unknown_key_in_file_suggests(tmp_path):
    p = write(tmp_path, "memory:\n  keep_ration: 0.2\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert str(p) in msg
    assert "memory.keep_ration" in msg
    assert "Did you mean 'memory.keep_ratio'" in msg


def test_unknown_section_and_override_key():
    with pytest.raises(ConfigError, match=r"command line: unknown key 'memroy'.*Did you mean 'memory'"):
        load_config(None, ["memroy.keep_ratio=0.2"])
    with pytest.raises(ConfigError, match=r"unknown key 'train.max_epoch'.*'train.max_epochs'"):
        load_config(None, ["train.max_epoch=2"])
    with pytest.raises(ConfigError, match=r"is a value, not a section"):
        load_config(None, ["seed.x=1"])
    with pytest.raises(ConfigError, match=r"is a section"):
        load_config(None, ["memory=3"])


def test_wrong_types_name_key_and_expected(tmp_path):
    with pytest.raises(ConfigError, match=r"'train.max_epochs' = 'many' has the wrong type; expected an integer"):
        load_config(None, ["train.max_epochs=many"])
    with pytest.raises(ConfigError, match=r"'memory.frozen'.*true/false"):
        load_config(None, ["memory.frozen=3"])
    with pytest.raises(ConfigError, match=r"'data.frame_size'.*a list of two integers, e.g. \[256, 256\]"):
        load_config(None, ["data.frame_size=256"])
    p = write(tmp_path, "data:\n  fps: fast\n")
    with pytest.raises(ConfigError, match=rf"{p}.*'data.fps'"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"must be a mapping"):
        load_config(write(tmp_path, "data: 3\n"))


def test_choices_listed():
    with pytest.raises(ConfigError, match=r"'memory.mode'.*one of 'random', 'uniform'"):
        load_config(None, ["memory.mode=sometimes"])
    with pytest.raises(ConfigError, match=r"'test.nms_method'.*'hard', 'nmw'"):
        load_config(None, ["test.nms_method=fast"])


def test_ranges():
    with pytest.raises(ConfigError, match=r"'memory.keep_ratio' = 1.5 is out of range; allowed: \[0, 1\]"):
        load_config(None, ["memory.keep_ratio=1.5"])
    with pytest.raises(ConfigError, match=r"'data.fps' = 0.0 is out of range; allowed: \(0, inf\)"):
        load_config(None, ["data.fps=0"])
    with pytest.raises(ConfigError, match=r"'data.frame_size' must have 2 elements"):
        load_config(None, ["data.frame_size=[1, 2, 3]"])
    with pytest.raises(ConfigError, match=r"'data.num_workers' = -1"):
        load_config(None, ["data.num_workers=-1"])


def test_cross_field_rules():
    with pytest.raises(ConfigError, match=r"must be a multiple of 'model.backbone.chunk_size'"):
        load_config(None, ["data.num_frames=100"])
    with pytest.raises(ConfigError, match=r"'data.crop_size'"):
        load_config(None, ["data.crop_size=300"])
    with pytest.raises(ConfigError, match=r"neg_iou_thr"):
        load_config(None, ["model.head.neg_iou_thr=0.7"])


def test_malformed_inputs(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"not valid YAML"):
        load_config(write(tmp_path, "data: [unclosed\n"))
    with pytest.raises(ConfigError, match=r"top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match=r"must look like key.sub=value"):
        load_config(None, ["memory.keep_ratio"])
    with pytest.raises(ConfigError, match=r"has no key"):
        load_config(None, ["=3"])
    assert load_config(write(tmp_path, "")) == Config()


def test_apply_overrides_does_not_mutate():
    raw = {"memory": {"keep_ratio": 0.2}}
    out = apply_overrides(raw, ["memory.keep_ratio=0.4"])
    assert raw["memory"]["keep_ratio"] == 0.2
    assert out["memory"]["keep_ratio"] == 0.4


def test_shipped_configs_load():
    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*.yaml"))
    for f in files:
        cfg = load_config(f)
        assert isinstance(cfg, Config)


def test_key_without_its_section_suggests_the_dotted_key():
    with pytest.raises(ConfigError, match=r"unknown key 'keep_ratio'\. Did you mean 'memory\.keep_ratio'\?"):
        load_config(None, ["keep_ratio=0.3"])


def test_shipped_configs_found_by_name_and_listed():
    from tallformer.config import shipped_config_path, shipped_configs

    names = shipped_configs()
    assert {"demo", "thumos14_swin_b", "thumos14_swin_t"} <= set(names)
    assert load_config("demo") == load_config(shipped_config_path("demo"))
    assert load_config("demo.yaml") == load_config("demo")
    with pytest.raises(ConfigError, match=r"nope: config file not found; .*shipped config name \(.*demo"):
        load_config("nope")


def test_config_given_a_folder_says_so(tmp_path):
    with pytest.raises(ConfigError, match=r"is a folder, not a config file"):
        load_config(tmp_path)


def test_a_file_in_the_working_folder_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.yaml").write_text("seed: 3\n")
    assert load_config("demo.yaml").seed == 3
    assert load_config("demo").seed == 10  # a bare name is the shipped config


def test_config_errors_are_tallformer_errors():
    from tallformer.errors import TallformerError

    assert issubclass(ConfigError, TallformerError)


def test_older_names_load_with_a_note(tmp_path):
    """Configs (and the configs saved in checkpoints) written with `model.kind: thumos14` and
    `model.head.num_classes` load under today's names, with one note each."""
    from tallformer.config import config_from_dict
    from tallformer.errors import TallformerWarning

    old = {"model": {"kind": "thumos14", "head": {"num_classes": 5, "feat_channels": 32}}}
    with pytest.warns(TallformerWarning) as notes:
        cfg = config_from_dict(old, "ckpt.pt (saved config)")
    assert (cfg.model.kind, cfg.model.num_classes, cfg.model.head.feat_channels) == ("anchor", 5, 32)
    assert old["model"]["head"]["num_classes"] == 5  # the given dict is not changed
    texts = sorted(str(n.message) for n in notes)
    assert len(texts) == 2
    assert texts[0].startswith("ckpt.pt (saved config): 'model.head.num_classes' is now 'model.num_classes'")
    assert texts[1].startswith("ckpt.pt (saved config): model.kind: thumos14 is now model.kind: anchor")
    path = tmp_path / "old.yaml"
    path.write_text("model:\n  kind: thumos14\n  head:\n    num_classes: 3\n")
    with pytest.warns(TallformerWarning, match="is now"):
        assert load_config(path).model.num_classes == 3
    with pytest.warns(TallformerWarning, match="'model.head.num_classes' is now 'model.num_classes'"):
        assert load_config("demo", ["model.head.num_classes=7"]).model.num_classes == 7
    with pytest.warns(TallformerWarning, match="model.kind: thumos14 is now model.kind: anchor"):
        assert load_config("demo", ["model.kind=thumos14"]).model.kind == "anchor"
    with pytest.raises(ConfigError, match="both set"):
        config_from_dict({"model": {"num_classes": 4, "head": {"num_classes": 5}}})
