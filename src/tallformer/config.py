"""Typed run configuration: nested dataclasses, YAML files and dotted overrides.

One schema for every command. A YAML file gives any subset of the keys; the rest keep the
defaults below, which are the paper's THUMOS14 Swin-B configuration (numbers cited to
`shared/reference/spec/`). Command-line overrides are dotted keys with YAML scalar or list
values::

    cfg = load_config("configs/thumos14_swin_b.yaml", ["memory.keep_ratio=0.25", "train.max_epochs=3"])

Errors are `ConfigError`: an unknown key (with a "did you mean"), a wrong type or an
out-of-range value names the key, where it came from (the file or "command line") and the
allowed values. `save_config` writes the resolved config back as YAML; loading that file
gives an equal object.

This module imports neither torch nor numpy.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = [
    "BackboneConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "HeadConfig",
    "MemoryConfig",
    "ModelConfig",
    "NeckConfig",
    "TestConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]


class ConfigError(ValueError):
    """A config file or override that does not fit the schema. The message names the key."""


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> dict[str, Any]:
    """Field metadata for a numeric range check (closed unless `*_open`)."""
    return {"range": (lo, hi, lo_open, hi_open)}


def _len(n: int) -> dict[str, Any]:
    return {"length": n}


# --------------------------------------------------------------------------- schema


@dataclass
class DataConfig:
    """Where the videos and annotations are, and how clips are cut from them.

    Defaults: spec memory-data-training §0, §4, §5 (15 fps, 256x256 frames, 224 crop,
    480-frame windows, test overlap 0.25, IoF 0.75) and design.md §8 (start stride 2).
    """

    annotations: str | None = None  # ActivityNet-format JSON (design.md §4)
    videos: str | None = None  # folder of video files, or of frame folders (original layout)
    train_subset: str = "validation"  # THUMOS14 trains on its validation videos
    test_subset: str = "test"
    fps: float = field(default=15.0, metadata=_range(0, None, lo_open=True))
    frame_size: list[int] = field(default_factory=lambda: [256, 256], metadata=_len(2))  # (H, W)
    crop_size: int = field(default=224, metadata=_range(1))
    num_frames: int = field(default=480, metadata=_range(1))  # window length, frames
    test_overlap: float = field(default=0.25, metadata=_range(0, 1, hi_open=True))
    train_start_stride: int = field(default=2, metadata=_range(1))
    iof_th: float = field(default=0.75, metadata=_range(0, 1))
    mean: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53], metadata=_len(3))
    std: list[float] = field(default_factory=lambda: [58.395, 57.12, 57.375], metadata=_len(3))
    augment: bool = True
    batch_size: int = field(default=4, metadata=_range(1))  # clips per GPU
    num_workers: int = field(default=4, metadata=_range(0))


@dataclass
class BackboneConfig:
    """Video Swin (spec model-thumos14 §4). `arch` picks a preset; fields that are set
    (not null) override it; `arch: custom` needs the five shape fields."""

    arch: Literal["swin_t", "swin_s", "swin_b", "tiny", "custom"] = "swin_b"
    embed_dim: int | None = None
    depths: list[int] | None = None
    num_heads: list[int] | None = None
    window_size: list[int] | None = field(default=None, metadata=_len(3))
    patch_size: list[int] | None = field(default=None, metadata=_len(3))
    # None = the preset's value (swin_b: 0.2, 2 frozen stages, checkpointing on; spec §4)
    drop_path_rate: float | None = field(default=None, metadata=_range(0, 1, hi_open=True))
    frozen_stages: int | None = field(default=None, metadata=_range(-1, 4))
    use_checkpoint: bool | None = None
    chunk_size: int = field(default=32, metadata=_range(2))
    weights: str | None = None  # official / torchvision / tallformer checkpoint file


@dataclass
class NeckConfig:
    """SRM, TCM, TDM and FPN (spec model-thumos14 §5-§8)."""

    srm_channels: int = field(default=512, metadata=_range(1))
    tcm_layers: int = field(default=3, metadata=_range(0))
    tcm_heads: int = field(default=16, metadata=_range(1))
    tcm_drop_path: float = field(default=0.1, metadata=_range(0, 1, hi_open=True))
    tdm_heads: int = field(default=8, metadata=_range(1))
    tdm_kernels: list[int] = field(default_factory=lambda: [7, 7, 5, 5])
    tdm_dropout: float = field(default=0.1, metadata=_range(0, 1, hi_open=True))
    fpn_channels: int = field(default=256, metadata=_range(1))


@dataclass
class HeadConfig:
    """Anchor head, anchors, assigner and losses (spec model-thumos14 §9-§11)."""

    num_classes: int = field(default=20, metadata=_range(1))
    feat_channels: int = field(default=256, metadata=_range(1))
    stacked_convs: int = field(default=4, metadata=_range(0))
    anchor_strides: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    octave_base_scale: float = field(default=2.0, metadata=_range(0, None, lo_open=True))
    scales_per_octave: int = field(default=5, metadata=_range(1))
    pos_iou_thr: float = field(default=0.6, metadata=_range(0, 1))
    neg_iou_thr: float = field(default=0.4, metadata=_range(0, 1))
    min_pos_iou: float = field(default=0.0, metadata=_range(0, 1))
    ignore_iof_thr: float = -1.0  # < 0 disables ignore regions, as the paper config
    focal_gamma: float = field(default=2.0, metadata=_range(0))
    focal_alpha: float = field(default=0.25, metadata=_range(0, 1))
    cls_loss_weight: float = field(default=1.0, metadata=_range(0))
    reg_loss_weight: float = field(default=1.0, metadata=_range(0))


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    sync_bn: bool = False  # SyncBatchNorm in FPN/head under DDP (design.md §8)


@dataclass
class MemoryConfig:
    """The long-term memory bank (spec memory-data-training §2; design.md §2, §8)."""

    bank_dir: str | None = None
    keep_ratio: float = field(default=0.15, metadata=_range(0, 1))
    mode: Literal["random", "uniform"] = "random"
    frozen: bool = False  # never write fresh features back
    dtype: Literal["float16", "float32"] = "float16"
    in_place: bool = False  # train on the user's bank instead of a copy in the run directory


@dataclass
class TrainConfig:
    """Optimiser and schedule (spec model-thumos14 §14, memory-data-training §6)."""

    max_epochs: int = field(default=1000, metadata=_range(1))
    lr: float = field(default=0.01, metadata=_range(0, None, lo_open=True))
    backbone_lr_mult: float = field(default=0.4, metadata=_range(0))
    momentum: float = field(default=0.9, metadata=_range(0, 1))
    weight_decay: float = field(default=1e-4, metadata=_range(0))
    warmup_iters: int = field(default=500, metadata=_range(0))
    warmup_ratio: float = field(default=0.1, metadata=_range(0, 1))
    cosine_period: int = field(default=100, metadata=_range(1))  # epochs per cosine cycle
    min_lr_ratio: float = field(default=0.01, metadata=_range(0, 1))
    amp: Literal["none", "bf16", "fp16"] = "bf16"  # autocast on GPU; ignored on CPU
    grad_clip: float | None = None
    checkpoint_interval: int = field(default=100, metadata=_range(1))  # epochs
    log_interval: int = field(default=10, metadata=_range(1))  # steps
    device: str = "auto"


@dataclass
class TestConfig:
    """Post-processing (spec model-thumos14 §12)."""

    score_thr: float = field(default=0.005, metadata=_range(0, 1))
    nms_pre: int = field(default=1000, metadata=_range(1))
    nms_method: Literal["hard", "nmw", "soft_linear", "soft_gaussian"] = "nmw"
    nms_iou: float = field(default=0.5, metadata=_range(0, 1))
    nms_sigma: float = field(default=0.5, metadata=_range(0, None, lo_open=True))
    max_per_video: int = field(default=1200, metadata=_range(1))
    batch_size: int = field(default=1, metadata=_range(1))


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)
    run_dir: str = "runs/default"
    seed: int = 10


# --------------------------------------------------------------------------- mechanism


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp)
        return f"a list of {_describe(arg)}"
    if tp is type(None):
        return "null"
    if _is_dataclass_type(tp):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any) -> Any:
    """Return `value` as type `tp` or raise `_Mismatch`. No lossy conversions."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin is list:
        (arg,) = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            return [_coerce(v, arg) for v in value]
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise _Mismatch


def _check_range(key: str, value: Any, meta: dict[str, Any], source: str) -> None:
    if value is None:
        return
    if "length" in meta and len(value) != meta["length"]:
        raise ConfigError(
            f"{source}: '{key}' must have {meta['length']} elements, got {len(value)}: {value!r}"
        )
    if "range" in meta:
        lo, hi, lo_open, hi_open = meta["range"]
        items = value if isinstance(value, list) else [value]
        for v in items:
            bad = (lo is not None and (v < lo or (lo_open and v == lo))) or (
                hi is not None and (v > hi or (hi_open and v == hi))
            )
            if bad:
                lo_s = "-inf" if lo is None else repr(lo)
                hi_s = "inf" if hi is None else repr(hi)
                allowed = f"{'(' if lo_open or lo is None else '['}{lo_s}, {hi_s}{')' if hi_open or hi is None else ']'}"
                raise ConfigError(
                    f"{source}: '{key}' = {v!r} is out of range; allowed: {allowed}"
                )


def _unknown_key(key: str, name: str, choices: list[str], source: str) -> ConfigError:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
    return ConfigError(
        f"{source}: unknown key '{key}'.{hint} Known keys here: {', '.join(sorted(choices))}"
    )


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: '{prefix or '<top level>'}' must be a mapping, got {type(data).__name__}"
        )
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise _unknown_key(key, str(name), list(fields), source)
        tp = hints[name]
        if _is_dataclass_type(tp):
            kwargs[name] = _build(tp, value if value is not None else {}, f"{key}.", source)
            continue
        try:
            coerced = _coerce(value, tp)
        except _Mismatch:
            raise ConfigError(
                f"{source}: '{key}' = {value!r} has the wrong type; expected {_describe(tp)}"
            ) from None
        _check_range(key, coerced, dict(fields[name].metadata), source)
        kwargs[name] = coerced
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    """Build a validated `Config` from a nested dict (missing keys keep their defaults)."""
    cfg = _build(Config, data or {}, "", source)
    _check_consistency(cfg, source)
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts/lists (YAML- and JSON-serialisable)."""
    return dataclasses.asdict(cfg)


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(
            f"command line: override '{item}' must look like key.sub=value "
            "(for example memory.keep_ratio=0.25)"
        )
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"command line: override '{item}' has no key before '='")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"command line: value of '{key}' is not valid YAML: {exc}") from None
    return key, value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c` in nested dict `data`, checking every name against the schema."""
    cls: type = Config
    node = data
    parts = key.split(".")
    for i, name in enumerate(parts):
        fields = {f.name for f in dataclasses.fields(cls)}
        sofar = ".".join(parts[: i + 1])
        if name not in fields:
            raise _unknown_key(sofar, name, sorted(fields), "command line")
        tp = _hints(cls)[name]
        if i == len(parts) - 1:
            if _is_dataclass_type(tp) and not isinstance(value, dict):
                raise ConfigError(
                    f"command line: '{sofar}' is a section; set one of its keys, e.g. "
                    f"{sofar}.{dataclasses.fields(tp)[0].name}=..."
                )
            node[name] = value
            return
        if not _is_dataclass_type(tp):
            raise ConfigError(f"command line: '{sofar}' is a value, not a section, in '{key}'")
        child = node.get(name)
        if not isinstance(child, dict):
            child = {}
            node[name] = child
        node, cls = child, tp


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted `key=value` overrides to a raw nested dict (returns a new dict)."""
    import copy

    out = copy.deepcopy(data) if data else {}
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(out, key, value)
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when `path` is None) and apply dotted overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found (pass an existing YAML file to --config)")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(loaded).__name__}")
        data = loaded
        _build(Config, data, "", source)  # file errors are reported against the file
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{source} + command line" if path is not None else "command line"
    return config_from_dict(data, source)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML; `load_config(path)` returns an equal object."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _check_consistency(cfg: Config, source: str) -> None:
    """Cross-field rules that a single field's range cannot express."""
    h = cfg.model.head
    if h.neg_iou_thr > h.pos_iou_thr:
        raise ConfigError(
            f"{source}: 'model.head.neg_iou_thr' ({h.neg_iou_thr}) must not exceed "
            f"'model.head.pos_iou_thr' ({h.pos_iou_thr})"
        )
    d = cfg.data
    if d.crop_size > min(d.frame_size):
        raise ConfigError(
            f"{source}: 'data.crop_size' ({d.crop_size}) must not exceed 'data.frame_size' {d.frame_size}"
        )
    chunk = cfg.model.backbone.chunk_size
    if d.num_frames % chunk:
        raise ConfigError(
            f"{source}: 'data.num_frames' ({d.num_frames}) must be a multiple of "
            f"'model.backbone.chunk_size' ({chunk}); the memory bank splits windows into chunks"
        )
