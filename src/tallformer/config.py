"""Typed run configuration: nested dataclasses, YAML files and dotted overrides.

One schema for every command. A YAML file gives any subset of the keys; the rest keep the
defaults below, which are the paper's THUMOS14 Swin-B configuration (original:
configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py). The configs shipped with the package
(`tallformer/configs/*.yaml`) are found by name; any other argument is a file path.
Command-line overrides are dotted keys with YAML scalar or list values::

    cfg = load_config("thumos14_swin_b", ["memory.keep_ratio=0.25", "train.max_epochs=3"])

Errors are `ConfigError`: an unknown key (with a "did you mean"), a wrong type or an
out-of-range value names the key, where it came from (the file or "command line") and the
allowed values. `save_config` writes the resolved config back as YAML; loading that file
gives an equal object.

This module imports neither torch nor numpy (only `tallformer.errors` of ours).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from tallformer.atomic import write_text
from tallformer.errors import TallformerError, TallformerWarning

__all__ = [
    "ActionFormerConfig",
    "ActionFormerTestConfig",
    "ActionFormerTrainConfig",
    "AfsdConfig",
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
    "actionformer_div_factor",
    "actionformer_fpn_strides",
    "actionformer_windows",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "migrate_config_dict",
    "resolve_config_path",
    "save_config",
    "shipped_config_path",
    "shipped_configs",
]

SHIPPED_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(TallformerError, ValueError):
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

    Defaults: the paper config (original: configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:7-10, 25-73: 15 fps, 256x256
    frames, 224 crop, 480-frame windows, test overlap 0.25, IoF 0.75); the start stride 2
    is ours (window starts on bank rows; docs/differences.md).
    """

    annotations: str | None = None  # ActivityNet-format JSON (README: "Annotations")
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
    # > 0 with data.annotations / data.videos null: train on that many videos of the built-in
    # synthetic dataset, generated once into data/synthetic/ under the working folder
    synthetic_videos: int = field(default=0, metadata=_range(0))
    synthetic_seed: int = field(default=0, metadata=_range(0))
    # what the synthetic classes are (tallformer.data.synthetic.TASKS): "shapes" (the demo's,
    # in data/synthetic/) or "drift" (a texture sliding one of 4 ways, in data/synthetic_drift/)
    synthetic_task: Literal["shapes", "drift"] = "shapes"


@dataclass
class BackboneConfig:
    """Video Swin (original: configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:84-101). `arch` picks a preset; fields that are set
    (not null) override it; `arch: custom` needs the five shape fields."""

    arch: Literal["swin_t", "swin_s", "swin_b", "tiny", "custom"] = "swin_b"
    embed_dim: int | None = None
    depths: list[int] | None = None
    num_heads: list[int] | None = None
    window_size: list[int] | None = field(default=None, metadata=_len(3))
    patch_size: list[int] | None = field(default=None, metadata=_len(3))
    # None = the preset's value (swin_b: 0.2, 2 frozen stages, checkpointing on)
    drop_path_rate: float | None = field(default=None, metadata=_range(0, 1, hi_open=True))
    frozen_stages: int | None = field(default=None, metadata=_range(-1, 4))
    use_checkpoint: bool | None = None
    chunk_size: int = field(default=32, metadata=_range(2))
    weights: str | None = None  # official / torchvision / tallformer checkpoint file


@dataclass
class NeckConfig:
    """SRM, TCM, TDM and FPN (original: configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:102-141)."""

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
    """Anchor head, anchors, assigner and losses of the anchor family (original:
    configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:142-205); the classes are
    `model.num_classes`."""

    feat_channels: int = field(default=256, metadata=_range(1))
    stacked_convs: int = field(default=4, metadata=_range(0))
    anchor_strides: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    octave_base_scale: float = field(default=2.0, metadata=_range(0, None, lo_open=True))
    scales_per_octave: int = field(default=5, metadata=_range(1))
    pos_iou_thr: float = field(default=0.6, metadata=_range(0, 1))
    neg_iou_thr: float = field(default=0.4, metadata=_range(0, 1))
    min_pos_iou: float = field(default=0.0, metadata=_range(0, 1))
    ignore_iof_thr: float = -1.0  # <= 0 disables ignore regions (the paper config: -1)
    focal_gamma: float = field(default=2.0, metadata=_range(0))
    focal_alpha: float = field(default=0.25, metadata=_range(0, 1))
    cls_loss_weight: float = field(default=1.0, metadata=_range(0))
    reg_loss_weight: float = field(default=1.0, metadata=_range(0))
    # the conv towers' norm: "bn" = one BatchNorm per conv shared by all levels (the
    # original, retina_head.py:13-117); "gn" = GroupNorm(norm_groups) (ours, for the CPU demo:
    # at batch 2 the shared BatchNorm's running statistics mix the levels and eval-mode
    # predictions differ from train-mode ones; GroupNorm has no running statistics)
    norm: Literal["bn", "gn"] = "bn"
    norm_groups: int = field(default=16, metadata=_range(1))


@dataclass
class AfsdConfig:
    """The ActivityNet detector (`model.kind: afsd`): the AFSD-style coarse + refine head and
    the video-level action head (original: AFSD/anet_video_cls/BDNet.py,
    multisegment_loss.py; configs/membank/1.0.0.py). The video-level classes are
    `model.num_classes` actions + background; the neck's TDM is convolutional (one
    stage per `model.neck.tdm_kernels` entry) and every norm is GroupNorm(`norm_groups`).
    Defaults: the paper's ActivityNet-1.3 run (`--lw=1 --cw=1 --piou=0.6`, README.md:202)."""

    proposal_channels: int = field(default=512, metadata=_range(1))  # AFSD/anet_video_cls/BDNet.py:212-262
    norm_groups: int = field(default=32, metadata=_range(1))
    # matching ranges in frames per level: max(left, right) in (lower, upper]
    # (original: AFSD/anet_video_cls/multisegment_loss.py:133-147)
    level_ranges: list[list[float]] = field(default_factory=lambda: [
        [0.0, 30.0], [15.0, 60.0], [30.0, 120.0], [60.0, 240.0], [96.0, 768.0], [256.0, 768.0]])
    # exp(scale * z) capped at this many strides per side (BDNet.py:89-95); null: no cap
    max_stride_distance: float | None = field(default=4.0, metadata=_range(0, None, lo_open=True))
    refine_iou: float = field(default=0.6, metadata=_range(0, 1))  # --piou
    loc_weight: float = field(default=1.0, metadata=_range(0))  # --lw
    cls_weight: float = field(default=1.0, metadata=_range(0))  # --cw
    action_weight: float = field(default=1.0, metadata=_range(0))  # configs/membank/1.0.0.py:8
    action_dropout: float = field(default=0.5, metadata=_range(0, 1, hi_open=True))
    # ours: the quality (IoU) target is detached; false = the original's live target
    detach_quality_target: bool = True
    classifier_top_k: int = field(default=2, metadata=_range(1))  # labels per proposal
    # true = the original: background may be one of the builtin top-k and is labelled
    # with the last class (test.py:210-241); ours: top-k over the actions only
    builtin_includes_background: bool = False
    # true = the original's soft-NMS, which never keeps the last open candidate
    # (AFSD/common/segment_utils.py:128-157); ours keeps it
    soft_nms_drop_last: bool = False


# ---- model.actionformer: ActionFormer's network on the memory bank (model.kind: actionformer)


@dataclass
class ActionFormerTrainConfig:
    """`model.actionformer.train_cfg`: ActionFormer's `train_cfg` under its own key names;
    defaults = its THUMOS14 run (original: libs/core/config.py:83-100, configs/thumos_i3d.yaml:31-37).
    Its `clip_grad_l2norm` is the engine's ``train.grad_clip`` (1.0 in the ActionFormer configs)."""

    center_sample: Literal["radius", "none"] = "radius"
    center_sample_radius: float = field(default=1.5, metadata=_range(0))  # in strides
    loss_weight: float = 1.0  # on the regression loss; <= 0: cls.detach() / max(reg, 0.01)
    cls_prior_prob: float = field(default=0.01, metadata=_range(0, 1, lo_open=True, hi_open=True))
    init_loss_norm: float = field(default=100.0, metadata=_range(0, None, lo_open=True))
    head_empty_cls: list[int] = field(default_factory=list, metadata=_range(0))  # class ids
    dropout: float = field(default=0.0, metadata=_range(0, 1, hi_open=True))
    droppath: float = field(default=0.1, metadata=_range(0, 1, hi_open=True))
    label_smoothing: float = field(default=0.0, metadata=_range(0, 1))


@dataclass
class ActionFormerTestConfig:
    """`model.actionformer.test_cfg`: ActionFormer's `test_cfg` under its own key names;
    defaults = its THUMOS14 run (original: libs/core/config.py:101-113, configs/thumos_i3d.yaml:38-48).
    Thresholds in feature-grid units where the original has them so (`duration_thresh`)."""

    pre_nms_thresh: float = field(default=0.001, metadata=_range(0, 1))  # score > this (strict)
    pre_nms_topk: int = field(default=2000, metadata=_range(1))  # per feature level
    iou_threshold: float = field(default=0.1, metadata=_range(0, 1))  # hard NMS only
    min_score: float = field(default=0.001, metadata=_range(0, 1))
    max_seg_num: int = field(default=200, metadata=_range(1))
    nms_method: Literal["soft", "hard", "none"] = "soft"  # soft = Gaussian soft-NMS
    nms_sigma: float = field(default=0.5, metadata=_range(0, None, lo_open=True))
    duration_thresh: float = field(default=0.05, metadata=_range(0))  # length > this, grid steps
    multiclass_nms: bool = True
    voting_thresh: float = field(default=0.7, metadata=_range(0, 1))  # class-agnostic NMS only


@dataclass
class ActionFormerConfig:
    """ActionFormer's network (`model.kind: actionformer`) under its own key names (the
    `model` section of its config); defaults = its THUMOS14 run (original:
    libs/core/config.py:43-81, configs/thumos_i3d.yaml:18-21). Its `input_dim` is the
    backbone's width and its `num_classes` is `model.num_classes`.

    `max_seq_len` (a `dataset` key in the original, used by the model: the training padding,
    the test padding and the point buffer) must be a multiple of the factor the windows and
    the levels impose, max over FPN levels of stride x 2 * (window // 2) (stride alone for
    global attention): 576 for window 19 and 6 levels (32 x 18). A 480-frame window gives
    240 backbone features (2 frames each); 576 is the smallest multiple that holds them,
    as the original pads every training sample to its max_seq_len (2304 = 4 x 576).
    """

    backbone_arch: list[int] = field(default_factory=lambda: [2, 2, 5], metadata={**_len(3), **_range(0)})
    scale_factor: int = field(default=2, metadata=_range(1))  # 1 or even
    # one [lo, hi] per FPN level, in feature steps: lo <= max(left, right) <= hi
    regression_range: list[list[float]] = field(default_factory=lambda: [
        [0.0, 4.0], [4.0, 8.0], [8.0, 16.0], [16.0, 32.0], [32.0, 64.0], [64.0, 10000.0]])
    n_head: int = field(default=4, metadata=_range(1))
    # local attention window: odd and >= 5, or <= 1 for global attention; one int or one
    # per backbone level (1 + backbone_arch[2])
    n_mha_win_size: int | list[int] = 19
    embd_kernel_size: int = field(default=3, metadata=_range(1))  # odd
    embd_dim: int = field(default=512, metadata=_range(1))
    embd_with_ln: bool = True
    fpn_dim: int = field(default=512, metadata=_range(1))  # must equal embd_dim (identity FPN)
    fpn_with_ln: bool = True
    fpn_start_level: int = field(default=0, metadata=_range(0))
    head_dim: int = field(default=512, metadata=_range(1))
    head_kernel_size: int = field(default=3, metadata=_range(1))  # odd
    head_num_layers: int = field(default=3, metadata=_range(1))  # including the classifier
    head_with_ln: bool = True
    # the original buffers points for max_seq_len x this many features and stops beyond;
    # ours computes the same points for any length (docs/differences.md)
    max_buffer_len_factor: float = field(default=6.0, metadata=_range(0, None, lo_open=True))
    use_abs_pe: bool = False
    use_rel_pe: bool = False
    # 576: a 480-frame window's 240 features padded to the window x level factor (32 x 18)
    max_seq_len: int = field(default=576, metadata=_range(1))
    train_cfg: ActionFormerTrainConfig = field(default_factory=ActionFormerTrainConfig)
    test_cfg: ActionFormerTestConfig = field(default_factory=ActionFormerTestConfig)


def actionformer_windows(a: ActionFormerConfig) -> list[int]:
    """The attention window of each backbone level (an int is repeated `1 + backbone_arch[2]`
    times; original: libs/modeling/meta_archs.py:209-213)."""
    n = a.backbone_arch[2] + 1
    return [a.n_mha_win_size] * n if isinstance(a.n_mha_win_size, int) else list(a.n_mha_win_size)


def actionformer_fpn_strides(a: ActionFormerConfig) -> list[int]:
    """The FPN levels' strides in feature steps, `scale_factor ** l` for l = fpn_start_level ..
    backbone_arch[2] (original: libs/modeling/meta_archs.py:197-199)."""
    return [a.scale_factor ** i for i in range(a.fpn_start_level, a.backbone_arch[2] + 1)]


def actionformer_div_factor(strides: list[int], windows: list[int]) -> int:
    """The length every padded input must be a multiple of: the max over (stride, window)
    pairs of stride x 2 * (window // 2), or stride for global attention (original:
    libs/modeling/meta_archs.py:214-220, which pairs the FPN strides with the windows in order)."""
    return max([s * (w // 2) * 2 if w > 1 else s for s, w in zip(strides, windows, strict=False)] + [1])


def _check_actionformer(a: ActionFormerConfig, source: str) -> None:
    """`model.actionformer` rules a single field's range cannot express (the settings the
    original asserts or crashes on)."""
    key = "model.actionformer"
    levels = a.backbone_arch[2] + 1
    windows = actionformer_windows(a)
    if len(windows) != levels:
        raise ConfigError(f"{source}: '{key}.n_mha_win_size' has {len(windows)} windows but the backbone "
                          f"has {levels} levels (1 + backbone_arch[2]); give one int or {levels} values")
    bad = [w for w in windows if w > 1 and (w % 2 == 0 or w < 5)]
    if bad:
        raise ConfigError(f"{source}: '{key}.n_mha_win_size' = {a.n_mha_win_size!r}: a local attention window must be odd "
                          "and >= 5 (3 crashes the original), or <= 1 for global attention")
    if a.scale_factor != 1 and a.scale_factor % 2:
        raise ConfigError(f"{source}: '{key}.scale_factor' = {a.scale_factor} must be 1 or even (the "
                          "strided attention convs need it)")
    if a.fpn_start_level >= levels:
        raise ConfigError(f"{source}: '{key}.fpn_start_level' = {a.fpn_start_level} must be below the "
                          f"number of backbone levels ({levels} = 1 + backbone_arch[2])")
    strides = actionformer_fpn_strides(a)
    if len(a.regression_range) != len(strides) or any(len(r) != 2 or r[0] > r[1] for r in a.regression_range):
        raise ConfigError(f"{source}: '{key}.regression_range' must give one [lo, hi] pair (lo <= hi) per "
                          f"FPN level ({len(strides)}), got {a.regression_range}")
    if a.embd_dim != a.fpn_dim:
        raise ConfigError(f"{source}: '{key}.embd_dim' ({a.embd_dim}) must equal '{key}.fpn_dim' "
                          f"({a.fpn_dim}): the identity FPN does not change the width")
    if a.embd_dim % a.n_head:
        raise ConfigError(f"{source}: '{key}.n_head' ({a.n_head}) must divide '{key}.embd_dim' ({a.embd_dim})")
    for name in ("embd_kernel_size", "head_kernel_size"):
        if getattr(a, name) % 2 == 0:
            raise ConfigError(f"{source}: '{key}.{name}' = {getattr(a, name)} must be odd")
    if a.head_num_layers == 1 and a.head_dim != a.fpn_dim:
        raise ConfigError(f"{source}: '{key}.head_num_layers' = 1 (no hidden layer) needs '{key}.head_dim' "
                          f"({a.head_dim}) = '{key}.fpn_dim' ({a.fpn_dim})")
    factor = actionformer_div_factor(strides, windows)
    if a.max_seq_len % factor:
        up = -(-a.max_seq_len // factor) * factor
        raise ConfigError(f"{source}: '{key}.max_seq_len' = {a.max_seq_len} must be a multiple of {factor} "
                          f"(largest FPN stride x 2 * (window // 2) for windows {sorted(set(windows))} and "
                          f"strides up to {max(strides)}); use {up}")


@dataclass
class ModelConfig:
    """The detector: `kind` names its family (the engine's factory table,
    `tallformer.engine.factory.FAMILIES`), each family reads the sections it needs."""

    # the detector family: "anchor" = TALLFormer's anchor head (the THUMOS14 paper config);
    # "afsd" = the AFSD-style ActivityNet detector; "actionformer" = ActionFormer's network. "thumos14" (older configs) loads as anchor
    kind: Literal["anchor", "afsd", "actionformer"] = "anchor"
    # action classes (no background), read by every family
    num_classes: int = field(default=20, metadata=_range(1))
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    afsd: AfsdConfig = field(default_factory=AfsdConfig)
    actionformer: ActionFormerConfig = field(default_factory=ActionFormerConfig)
    sync_bn: bool = True  # SyncBatchNorm in FPN/head under DDP (original: configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:139,151)
    # a fresh run starts from these detector weights (a tallformer checkpoint, e.g. one
    # `tallformer convert-weights` made from an original release's detector): fine-tuning
    init_from: str | None = None


@dataclass
class MemoryConfig:
    """The long-term memory bank (original: configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:173-180; differences in docs/differences.md)."""

    bank_dir: str | None = None
    keep_ratio: float = field(default=0.15, metadata=_range(0, 1))
    mode: Literal["random", "uniform"] = "random"
    frozen: bool = False  # never write fresh features back
    dtype: Literal["float16", "float32"] = "float16"
    in_place: bool = False  # train on the user's bank instead of a copy in the run directory
    # several nodes (docs/cluster.md): "shared" = one bank per run (RUN_DIR/bank), used by every
    # rank of a node; "node_local" = every training video belongs to one node for the whole run
    # and each node keeps only its own videos' rows, in memory.node_dir on its local disk
    placement: Literal["shared", "node_local"] = "shared"
    # node_local: the node's shard of the run's bank and its undo journal (the same path on every
    # node, on local disk; "{node}" is replaced by torchrun's node rank, for several "nodes" on one
    # machine); null = RUN_DIR/node{node}
    node_dir: str | None = None


@dataclass
class TrainConfig:
    """Optimiser and schedule (original: configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:211-258)."""

    max_epochs: int = field(default=1000, metadata=_range(1))
    # sgd: the THUMOS14 recipe (momentum); adam: the ActivityNet one (L2 weight decay, not AdamW);
    # adamw: ActionFormer's (decoupled weight decay on the weights of linear and conv layers
    # only; biases, norms, scales and position tables without)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    # cosine: restarts every cosine_period epochs; multistep: lr x gamma at each milestone epoch;
    # warmup_cosine: ActionFormer's, per step: linear warm-up (warmup_iters, from warmup_ratio x
    # lr), then one cosine to min_lr_ratio x lr at the end of max_epochs (cosine_period unused)
    schedule: Literal["cosine", "multistep", "warmup_cosine"] = "cosine"
    milestones: list[int] = field(default_factory=list, metadata=_range(1))
    gamma: float = field(default=0.1, metadata=_range(0, 1, lo_open=True))
    lr: float = field(default=0.01, metadata=_range(0, None, lo_open=True))
    backbone_lr_mult: float = field(default=0.4, metadata=_range(0))
    momentum: float = field(default=0.9, metadata=_range(0, 1))
    weight_decay: float = field(default=1e-4, metadata=_range(0))
    warmup_iters: int = field(default=500, metadata=_range(0))
    # the warm-up counts samples: warmup_iters steps of warmup_batch clips (the paper's global
    # batch, 4 GPUs x 4), the same on any number of GPUs; null = steps of this run's batch
    warmup_batch: int | None = field(default=16, metadata=_range(1))
    warmup_ratio: float = field(default=0.1, metadata=_range(0, 1))
    cosine_period: int = field(default=100, metadata=_range(1))  # epochs per cosine cycle
    min_lr_ratio: float = field(default=0.01, metadata=_range(0, 1))
    amp: Literal["none", "bf16", "fp16"] = "bf16"  # autocast on GPU; ignored on CPU
    grad_clip: float | None = None
    checkpoint_interval: int = field(default=100, metadata=_range(1))  # epochs; every one kept
    checkpoint_steps: int = field(default=0, metadata=_range(0))  # optimizer steps; 0 = off
    keep_checkpoints: int = field(default=3, metadata=_range(1))  # step checkpoints kept
    max_steps: int | None = field(default=None, metadata=_range(1))  # stop after N steps in all
    resume: Literal["auto", "never", "always"] = "auto"  # auto: when run_dir has a checkpoint
    log_interval: int = field(default=10, metadata=_range(1))  # steps
    device: str = "auto"


@dataclass
class TestConfig:
    """Post-processing (original: configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:225-235)."""

    score_thr: float = field(default=0.005, metadata=_range(0, 1))
    nms_pre: int = field(default=1000, metadata=_range(1))
    nms_method: Literal["hard", "nmw", "soft_linear", "soft_gaussian"] = "nmw"
    nms_iou: float = field(default=0.5, metadata=_range(0, 1))
    nms_sigma: float = field(default=0.5, metadata=_range(0, None, lo_open=True))
    max_per_video: int = field(default=1200, metadata=_range(1))
    batch_size: int = field(default=1, metadata=_range(1))
    # test windows: "chunk_grid" (ours) starts every window on a multiple of
    # model.backbone.chunk_size (stride int(num_frames * (1 - test_overlap)) rounded down to
    # one: 352 for 480 frames), so a chunk shared by two windows goes through the backbone
    # once per video; "original" is the original's stride (360), every window through the
    # whole backbone (original: vedatad/datasets/pipelines/test_time_aug.py:22-53)
    protocol: Literal["chunk_grid", "original"] = "chunk_grid"
    interval: int = field(default=0, metadata=_range(0))  # test during training every N epochs; 0 = off
    tiou_thresholds: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7],
                                         metadata=_range(0, 1))  # THUMOS14 (original: tools/test.py:87-93)


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
        plural = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
        return f"a list of {plural.get(arg, _describe(arg))}"
    if tp is type(None):
        return "null"
    if _is_dataclass_type(tp):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


class _Mismatch(Exception):
    pass


def _coerce_scalar(value: Any, tp: Any) -> Any:
    """`_coerce` for bool, int, float and str."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if isinstance(value, bool):
        raise _Mismatch
    if tp is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is str and isinstance(value, str):
        return value
    raise _Mismatch


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
    return _coerce_scalar(value, tp)


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


def _leaf_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema below `cls` (`data.fps`, `model.backbone.arch`, ...)."""
    keys = []
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        if _is_dataclass_type(tp):
            keys.extend(_leaf_keys(tp, f"{prefix}{f.name}."))
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _unknown_key(key: str, name: str, choices: list[str], source: str) -> ConfigError:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    if close:
        hint = f" Did you mean '{prefix}{close[0]}'?"
    else:  # a key of another section, or given without its section (keep_ratio=0.3)
        elsewhere = sorted((k for k in _leaf_keys() if k.rsplit(".", 1)[-1] == name), key=lambda k: k.count("."))
        hint = f" Did you mean '{elsewhere[0]}'?" if elsewhere else ""
    return ConfigError(
        f"{source}: unknown key '{key}'.{hint} Known keys here: {', '.join(sorted(choices))}"
    )


def _expected(tp: Any, f: dataclasses.Field[Any]) -> str:
    """What a field takes, in words, with the default as an example for lists."""
    text = _describe(tp)
    if "length" in f.metadata:
        words = {2: "two", 3: "three"}
        text = text.replace("a list of", f"a list of {words.get(f.metadata['length'], f.metadata['length'])}", 1)
    is_list = typing.get_origin(tp) is list or any(
        typing.get_origin(a) is list for a in typing.get_args(tp))
    if is_list and f.default_factory is not dataclasses.MISSING:
        text += f", e.g. {f.default_factory()!r}"
    return text


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
                f"{source}: '{key}' = {value!r} has the wrong type; expected {_expected(tp, fields[name])}"
            ) from None
        _check_range(key, coerced, dict(fields[name].metadata), source)
        kwargs[name] = coerced
    return cls(**kwargs)


# --------------------------------------------------------------------------- older names

# keys and values renamed since configs (and the configs saved in checkpoints) were written
# with them: old dotted key -> new one; (key, old value) -> new value
RENAMED_KEYS = {"model.head.num_classes": "model.num_classes"}
RENAMED_VALUES = {("model.kind", "thumos14"): "anchor"}


def _rename_note(source: str, old: str, new: str) -> None:
    warnings.warn(f"{source}: {old} is now {new} (same meaning); loaded as {new}, rename it "
                  "to silence this note", TallformerWarning, stacklevel=4)


def _renamed(key: str, value: Any, source: str) -> tuple[str, Any]:
    """An override's key and value under today's names (a note when one was renamed)."""
    if key in RENAMED_KEYS:
        _rename_note(source, f"'{key}'", f"'{RENAMED_KEYS[key]}'")
        key = RENAMED_KEYS[key]
    if isinstance(value, str) and (key, value) in RENAMED_VALUES:
        new = RENAMED_VALUES[(key, value)]
        _rename_note(source, f"{key}: {value}", f"{key}: {new}")
        value = new
    return key, value


def migrate_config_dict(data: dict[str, Any] | None, source: str = "config") -> dict[str, Any]:
    """`data` (a nested config dict: a YAML file's, or one saved in a checkpoint) with the
    renamed keys and values under today's names (`RENAMED_KEYS`, `RENAMED_VALUES`), one
    `TallformerWarning` note per rename. Returns a new dict; `data` is not changed."""
    import copy

    out: dict[str, Any] = copy.deepcopy(data) if data else {}
    for old, new in RENAMED_KEYS.items():
        *parents, name = old.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or name not in node:
            continue
        value = node.pop(name)
        *new_parents, new_name = new.split(".")
        target: Any = out
        for part in new_parents:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        if new_name in target and target[new_name] != value:
            raise ConfigError(f"{source}: '{old}' ({value!r}) and '{new}' ({target[new_name]!r}) "
                              f"are both set; '{old}' is the old name of '{new}': keep only '{new}'")
        target[new_name] = value
        _rename_note(source, f"'{old}'", f"'{new}'")
    for (key, old_value), new_value in RENAMED_VALUES.items():
        *parents, name = key.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(name) == old_value:
            node[name] = new_value
            _rename_note(source, f"{key}: {old_value}", f"{key}: {new_value}")
    return out


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    """Build a validated `Config` from a nested dict (missing keys keep their defaults;
    renamed keys and values load under today's names with a note, `migrate_config_dict`)."""
    cfg = _build(Config, migrate_config_dict(data, source), "", source)
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
        key, value = _renamed(key, value, "command line")
        _set_dotted(out, key, value)
    return out


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the package (`demo`, `thumos14_swin_b`, ...)."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def shipped_config_path(name: str) -> Path:
    """The file of the shipped config `name` (with or without `.yaml`)."""
    stem = name[:-5] if name.endswith(".yaml") else name
    path = SHIPPED_DIR / f"{stem}.yaml"
    if not path.is_file():
        raise ConfigError(f"no shipped config named '{name}'; shipped: {', '.join(shipped_configs())}")
    return path


def resolve_config_path(name_or_path: str | Path) -> Path:
    """`--config` argument -> file: an existing file path, else a shipped config's name.

    A path to an existing file wins over a shipped name (`demo.yaml` in the working
    folder is that file); `configs/demo.yaml` (the layout of a source checkout before the
    configs moved into the package) finds the shipped file when no such file exists.
    """
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder, not a config file; pass a YAML file or a shipped "
                          f"config name ({', '.join(shipped_configs())})")
    stem = p.name[:-5] if p.name.endswith(".yaml") else p.name
    if (SHIPPED_DIR / f"{stem}.yaml").is_file() and (len(p.parts) == 1 or p.parent.name == "configs"):
        return SHIPPED_DIR / f"{stem}.yaml"
    raise ConfigError(f"{p}: config file not found; pass an existing YAML file or a shipped config "
                      f"name ({', '.join(shipped_configs())})")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config (a YAML file or a shipped name; the defaults when `path` is None) and
    apply dotted overrides (`tallformer.load_config`). Errors are `ConfigError` naming the
    key and where it came from.

    Example::

        >>> import tallformer
        >>> cfg = tallformer.load_config("demo", ["memory.keep_ratio=0.25", "train.max_epochs=3"])
        >>> cfg.model.kind, cfg.model.num_classes, cfg.memory.keep_ratio, cfg.train.max_epochs
        ('anchor', 4, 0.25, 3)
        >>> tallformer.load_config("demo", ["keep_ratio=0.3"])
        Traceback (most recent call last):
        ...
        tallformer.config.ConfigError: command line: unknown key 'keep_ratio'. Did you mean 'memory.keep_ratio'? ...
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = resolve_config_path(path)
        source = str(p)
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: cannot read the config file: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(loaded).__name__}")
        data = migrate_config_dict(loaded, source)
        _build(Config, data, "", source)  # file errors are reported against the file
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{source} + command line" if path is not None else "command line"
    return config_from_dict(data, source)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML; `load_config(path)` returns an equal object."""
    write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


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
    _check_actionformer(cfg.model.actionformer, source)
    chunk = cfg.model.backbone.chunk_size
    if d.num_frames % chunk:
        raise ConfigError(
            f"{source}: 'data.num_frames' ({d.num_frames}) must be a multiple of "
            f"'model.backbone.chunk_size' ({chunk}); the memory bank splits windows into chunks"
        )
