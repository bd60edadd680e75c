"""Detector checkpoints of the original releases: recognise them, map every key, convert.

Three formats. Two of TALLFormer's release, both a plain state dict written by ``torch.save``:

- **THUMOS14** ``epoch_N_weights.pth`` (vedatad): ``MemSingleStageDetector.state_dict()``
  on the CPU, keys ``backbone.*`` (ChunkVideoSwin = the official Video Swin names),
  ``neck.0..3.*`` (the ``nn.Sequential`` SRMSwin, Transformer1DRelPos, SelfAttnTDM, FPN) and
  ``head.*`` (RetinaHead) (original: vedacore/misc/checkpoint.py:192-254 through
  vedacore/loopers/base_looper.py:153-201; the optimizer and ``{epoch, iter}`` go to the
  sibling files ``epoch_N_optim.pth`` and ``epoch_N_meta.pth``).
- **ActivityNet** ``checkpoint-N.ckpt`` (AFSD ``train_membank.py``):
  ``BDNetMemBank.state_dict()`` of the DDP-wrapped model's ``module``, keys ``backbone.*``
  and ``coarse_pyramid_detection.*`` (original:
  AFSD/anet_video_cls/membank/train_membank.py:382-498; the optimizer's save is commented out,
  :104-120).

And the **ActionFormer** release's ``epoch_NNN.pth.tar`` (a dict with ``state_dict`` and
``state_dict_ema``, keys with or without ``module.``; original: train.py:137-154): its network
only, no backbone, read by `tallformer.models.actionformer.release_checkpoint` (every key
one to one into the family's ``actionformer.`` module; the EMA weights by default), the
Video Swin weights taken from the config's ``model.backbone.weights``.

TALLFormer's keys are mapped by an explicit table (`THUMOS14_KEYS`, `ANET_KEYS`: original name ->
ours, or None for buffers we rebuild and drop by name). Names are templates: ``{i}`` is an
integer, ``{i*2+1}`` the integer computed from it, ``{p}`` a parameter or buffer name
(``weight``, ``running_mean``, ...). SyncBatchNorm statistics (THUMOS14's FPN and head)
load into BatchNorm1d under the same names. A key that fits no rule, a key our model has
and the file lacks, or a shape that differs is one `WeightsError` listing them.

`read_original_checkpoint` builds the detector of the config (the family of the original's
kind: THUMOS14 -> ``model.kind: anchor``, ActivityNet -> ``afsd``) and loads the mapped
weights into it; `tallformer.engine.model_import.convert_original_checkpoint` writes it as a
tallformer model checkpoint (the model state, the config it fits and the class names in
the original's label-id order) that ``tallformer test``, ``tallformer detect`` and
``model.init_from`` take as our own.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from tallformer.config import Config, ConfigError, load_config
from tallformer.errors import name_list
from tallformer.models.actionformer.release_checkpoint import (
    EMBEDDING_KEY,
    is_release_checkpoint,
    map_release_state,
    release_shapes,
    release_state_dict,
)
from tallformer.models.weights import (
    WeightsError,
    check_arch,
    key_problems,
    load_backbone_weights,
    read_checkpoint,
)

if TYPE_CHECKING:
    from tallformer.models.protocol import DetectorModel

__all__ = [
    "ANET_KEYS",
    "ANET_MAP",
    "FAMILY_OF",
    "THUMOS14_CLASSES",
    "THUMOS14_KEYS",
    "THUMOS14_MAP",
    "KeyMap",
    "OriginalKind",
    "OriginalModel",
    "original_kind",
    "read_class_names",
    "read_original_checkpoint",
    "sibling_error",
]

_MAX_LISTED = 12

OriginalKind = Literal["thumos14", "anet", "actionformer"]

# The original's THUMOS14 label ids (original: vedatad/datasets/thumos14.py:16-37).
THUMOS14_CLASSES: tuple[str, ...] = (
    "BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk", "CliffDiving",
    "CricketBowling", "CricketShot", "Diving", "FrisbeeCatch", "GolfSwing", "HammerThrow",
    "HighJump", "JavelinThrow", "LongJump", "PoleVault", "Shotput", "SoccerPenalty",
    "TennisSwing", "ThrowDiscus", "VolleyballSpiking",
)

# The paper config each format fits by default, and the detector family (model.kind) it is.
DEFAULT_CONFIG: dict[OriginalKind, str] = {"thumos14": "thumos14_swin_b", "anet": "anet_swin_b",
                                           "actionformer": "thumos14_swin_b_actionformer"}
FAMILY_OF: dict[OriginalKind, str] = {"thumos14": "anchor", "anet": "afsd", "actionformer": "actionformer"}

# --------------------------------------------------------------------------- key tables

# Video Swin inside the detector (original: vedatad/models/backbones/vswin.py:302-303 the
# block's dummy_tensor, 382-416 PatchMerging, 587-835 the model; the official release's names) ->
# torchvision's SwinTransformer3d under our `backbone.`.
_BACKBONE: tuple[tuple[str, str | None], ...] = (
    ("backbone.patch_embed.proj.{p}", "backbone.patch_embed.proj.{p}"),
    ("backbone.patch_embed.norm.{p}", "backbone.patch_embed.norm.{p}"),
    ("backbone.layers.{i}.blocks.{j}.norm1.{p}", "backbone.features.{i*2}.{j}.norm1.{p}"),
    ("backbone.layers.{i}.blocks.{j}.norm2.{p}", "backbone.features.{i*2}.{j}.norm2.{p}"),
    ("backbone.layers.{i}.blocks.{j}.attn.qkv.{p}", "backbone.features.{i*2}.{j}.attn.qkv.{p}"),
    ("backbone.layers.{i}.blocks.{j}.attn.proj.{p}", "backbone.features.{i*2}.{j}.attn.proj.{p}"),
    ("backbone.layers.{i}.blocks.{j}.attn.relative_position_bias_table",
     "backbone.features.{i*2}.{j}.attn.relative_position_bias_table"),
    # a buffer; its values must equal ours (checked, like the window it encodes)
    ("backbone.layers.{i}.blocks.{j}.attn.relative_position_index",
     "backbone.features.{i*2}.{j}.attn.relative_position_index"),
    ("backbone.layers.{i}.blocks.{j}.mlp.fc1.{p}", "backbone.features.{i*2}.{j}.mlp.0.{p}"),
    ("backbone.layers.{i}.blocks.{j}.mlp.fc2.{p}", "backbone.features.{i*2}.{j}.mlp.3.{p}"),
    # a ones(1) buffer for the reentrant checkpoint (original: vswin.py:302-303): dropped
    ("backbone.layers.{i}.blocks.{j}.dummy_tensor", None),
    ("backbone.layers.{i}.downsample.reduction.weight", "backbone.features.{i*2+1}.reduction.weight"),
    ("backbone.layers.{i}.downsample.norm.{p}", "backbone.features.{i*2+1}.norm.{p}"),
    ("backbone.norm.{p}", "backbone.norm.{p}"),
)


def _srm_tcm(prefix: str) -> tuple[tuple[str, str | None], ...]:
    """SRMSwin (original: vedatad/models/necks/srm_vswin.py:12-76) at `prefix`0 and
    Transformer1DRelPos (srm_vswin.py:167-195; vedatad/models/modules/swin_1d.py:40-239) at
    `prefix`1."""
    tcm = f"{prefix}1.encoder.layers.{{l}}"
    return (
        (f"{prefix}0.conv1.{{p}}", "neck.srm.conv1.{p}"),
        (f"{prefix}0.conv2.{{p}}", "neck.srm.conv2.{p}"),
        (f"{tcm}.norm1.{{p}}", "neck.tcm.layers.{l}.norm1.{p}"),
        (f"{tcm}.norm2.{{p}}", "neck.tcm.layers.{l}.norm2.{p}"),
        (f"{tcm}.attn.qkv.{{p}}", "neck.tcm.layers.{l}.attn.qkv.{p}"),
        (f"{tcm}.attn.proj.{{p}}", "neck.tcm.layers.{l}.attn.proj.{p}"),
        (f"{tcm}.attn.relative_position_bias_table", "neck.tcm.layers.{l}.attn.relative_position_bias_table"),
        # i - j + L - 1, which ours computes (swin_1d.py:40-141): dropped
        (f"{tcm}.attn.relative_position_index", None),
        (f"{tcm}.mlp.fc1.{{p}}", "neck.tcm.layers.{l}.mlp.0.{p}"),
        (f"{tcm}.mlp.fc2.{{p}}", "neck.tcm.layers.{l}.mlp.2.{p}"),
    )


def _fpn(prefix: str, norm: str) -> tuple[tuple[str, str | None], ...]:
    """FPN (original: vedatad/models/necks/fpn.py:71-228) at `prefix`; ConvModule names its
    norm by kind, "bn" for SyncBN, "gn" for GroupNorm (vedacore/modules/bricks/norm.py:109,
    conv_module.py:73,93-95; no conv bias before a norm)."""
    return (
        (f"{prefix}.lateral_convs.{{l}}.conv.weight", "neck.fpn.lateral.{l}.0.weight"),
        (f"{prefix}.lateral_convs.{{l}}.{norm}.{{p}}", "neck.fpn.lateral.{l}.1.{p}"),
        (f"{prefix}.fpn_convs.{{l}}.conv.weight", "neck.fpn.output.{l}.0.weight"),
        (f"{prefix}.fpn_convs.{{l}}.{norm}.{{p}}", "neck.fpn.output.{l}.1.{p}"),
    )


# THUMOS14 (original: configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:84-153).
THUMOS14_KEYS: tuple[tuple[str, str | None], ...] = (
    *_BACKBONE,
    *_srm_tcm("neck."),
    # SelfAttnTDM (original: vedatad/models/necks/tdm.py:151-291): its sinusoid table is a
    # buffer [5000, 1, C] (vedatad/models/modules/positional_encoding.py:14-37), ours computes it
    ("neck.2.pe.pe", None),
    ("neck.2.reductions.{s}.0.weight", "neck.tdm.stages.{s}.reduction.weight"),
    ("neck.2.reductions.{s}.1.{p}", "neck.tdm.stages.{s}.norm.{p}"),
    # vedatad/models/modules/transformer.py:37-134, 267-301 = nn.TransformerEncoderLayer's names
    ("neck.2.trans_layers.{s}.self_attn.in_proj_weight", "neck.tdm.stages.{s}.layer.self_attn.in_proj_weight"),
    ("neck.2.trans_layers.{s}.self_attn.in_proj_bias", "neck.tdm.stages.{s}.layer.self_attn.in_proj_bias"),
    ("neck.2.trans_layers.{s}.self_attn.out_proj.{p}", "neck.tdm.stages.{s}.layer.self_attn.out_proj.{p}"),
    ("neck.2.trans_layers.{s}.linear1.{p}", "neck.tdm.stages.{s}.layer.linear1.{p}"),
    ("neck.2.trans_layers.{s}.linear2.{p}", "neck.tdm.stages.{s}.layer.linear2.{p}"),
    ("neck.2.trans_layers.{s}.norm1.{p}", "neck.tdm.stages.{s}.layer.norm1.{p}"),
    ("neck.2.trans_layers.{s}.norm2.{p}", "neck.tdm.stages.{s}.layer.norm2.{p}"),
    *_fpn("neck.3", "bn"),
    # RetinaHead (original: vedatad/models/heads/retina_head.py:13-117)
    ("head.cls_convs.{c}.conv.weight", "head.cls_convs.{c}.0.weight"),
    ("head.cls_convs.{c}.bn.{p}", "head.cls_convs.{c}.1.{p}"),
    ("head.reg_convs.{c}.conv.weight", "head.reg_convs.{c}.0.weight"),
    ("head.reg_convs.{c}.bn.{p}", "head.reg_convs.{c}.1.{p}"),
    ("head.retina_cls.{p}", "head.cls_out.{p}"),
    ("head.retina_reg.{p}", "head.reg_out.{p}"),
)

_CPD = "coarse_pyramid_detection"
_BRANCH = ("cur_point_conv", "lr_conv", "roi_conv", "proposal_conv")

# ActivityNet (original: AFSD/anet_video_cls/BDNet.py:89-95, 98-133, 136-196, 212-352;
# AFSD/anet_video_cls/configs/membank/1.0.0.py:26-80). AFSD's Unit1D holds its conv as
# `conv1d` (original: AFSD/common/layers.py:174-210).
ANET_KEYS: tuple[tuple[str, str | None], ...] = (
    *_BACKBONE,
    *_srm_tcm(f"{_CPD}.pyramids."),
    # the convolutional TDM (original: vedatad/models/necks/tdm.py:16-148): layer1..layerN
    (f"{_CPD}.pyramids.2.layer{{s+1}}.0.conv.weight", "neck.tdm.stages.{s}.0.weight"),
    (f"{_CPD}.pyramids.2.layer{{s+1}}.0.gn.{{p}}", "neck.tdm.stages.{s}.1.{p}"),
    *_fpn(f"{_CPD}.pyramids.3", "gn"),
    (f"{_CPD}.action_head.cls.{{p}}", "action_head.cls.{p}"),
    (f"{_CPD}.loc_tower.{{t}}.0.conv1d.{{p}}", "head.loc_tower.{t}.0.{p}"),
    (f"{_CPD}.loc_tower.{{t}}.1.{{p}}", "head.loc_tower.{t}.1.{p}"),
    (f"{_CPD}.conf_tower.{{t}}.0.conv1d.{{p}}", "head.conf_tower.{t}.0.{p}"),
    (f"{_CPD}.conf_tower.{{t}}.1.{{p}}", "head.conf_tower.{t}.1.{p}"),
    (f"{_CPD}.loc_head.conv1d.{{p}}", "head.loc_head.{p}"),
    (f"{_CPD}.conf_head.conv1d.{{p}}", "head.conf_head.{p}"),
    *((f"{_CPD}.{side}_proposal_branch.{part}.0.conv1d.{{p}}", f"head.{side}_proposal_branch.{part}.0.{{p}}")
      for side in ("loc", "conf") for part in _BRANCH),
    *((f"{_CPD}.{side}_proposal_branch.{part}.1.{{p}}", f"head.{side}_proposal_branch.{part}.1.{{p}}")
      for side in ("loc", "conf") for part in _BRANCH),
    (f"{_CPD}.prop_loc_head.conv1d.{{p}}", "head.prop_loc_head.{p}"),
    (f"{_CPD}.prop_conf_head.conv1d.{{p}}", "head.prop_conf_head.{p}"),
    (f"{_CPD}.center_head.conv1d.{{p}}", "head.center_head.{p}"),
    # "deconv": a flat Sequential of (Unit1D, GroupNorm, ReLU) x 3 (BDNet.py:289-299)
    (f"{_CPD}.deconv.{{k*3}}.conv1d.{{p}}", "head.frame_branch.{k}.0.{p}"),
    (f"{_CPD}.deconv.{{k*3+1}}.{{p}}", "head.frame_branch.{k}.1.{p}"),
    (f"{_CPD}.loc_heads.{{l}}.scale", "head.scales.{l}.scale"),
)

# --------------------------------------------------------------------------- templates

_SLOT = re.compile(r"\{(\w+)(?:\*(\d+))?(?:([+-])(\d+))?\}")


@dataclass(frozen=True)
class _Template:
    """One side of a rule: a key with slots ``{name}`` / ``{name*a+b}`` (integers) and
    ``{p}`` (a parameter name)."""

    text: str

    def _pattern(self) -> re.Pattern[str]:
        out, pos = [], 0
        for m in _SLOT.finditer(self.text):
            out.append(re.escape(self.text[pos:m.start()]))
            out.append(r"([A-Za-z_]+)" if m.group(1) == "p" else r"(\d+)")
            pos = m.end()
        out.append(re.escape(self.text[pos:]))
        return re.compile("^" + "".join(out) + "$")

    def match(self, key: str) -> dict[str, int | str] | None:
        m = self._pattern().match(key)
        if m is None:
            return None
        values: dict[str, int | str] = {}
        for slot, text in zip(_SLOT.finditer(self.text), m.groups(), strict=True):
            name = slot.group(1)
            if name == "p":
                values[name] = text
                continue
            a = int(slot.group(2) or 1)
            b = int(slot.group(4) or 0) * (-1 if slot.group(3) == "-" else 1)
            v, rem = divmod(int(text) - b, a)
            if rem or v < 0 or values.get(name, v) != v:
                return None
            values[name] = v
        return values

    def render(self, values: Mapping[str, int | str]) -> str:
        def one(m: re.Match[str]) -> str:
            value = values[m.group(1)]
            if m.group(1) == "p":
                return str(value)
            b = int(m.group(4) or 0) * (-1 if m.group(3) == "-" else 1)
            return str(int(value) * int(m.group(2) or 1) + b)

        return _SLOT.sub(one, self.text)


class KeyMap:
    """A table of (original, ours | None) key templates; `to_ours` and its inverse `to_original`."""

    def __init__(self, rules: Sequence[tuple[str, str | None]]) -> None:
        self.rules = [(_Template(o), _Template(n) if n is not None else None) for o, n in rules]

    def to_ours(self, key: str) -> tuple[bool, str | None]:
        """(matched, our key or None for a key dropped by name)."""
        for orig, ours in self.rules:
            values = orig.match(key)
            if values is not None:
                return True, None if ours is None else ours.render(values)
        return False, None

    def to_original(self, key: str) -> str | None:
        """Our key -> the original's name (None when no rule produces it)."""
        for orig, ours in self.rules:
            values = ours.match(key) if ours is not None else None
            if values is not None:
                return orig.render(values)
        return None


THUMOS14_MAP = KeyMap(THUMOS14_KEYS)
ANET_MAP = KeyMap(ANET_KEYS)
KEY_MAPS: dict[str, KeyMap] = {"thumos14": THUMOS14_MAP, "anet": ANET_MAP}

# --------------------------------------------------------------------------- recognition


def _state_of(obj: Any) -> Mapping[str, Any] | None:
    if not isinstance(obj, Mapping):
        return None
    inner = obj.get("state_dict")
    state = inner if isinstance(inner, Mapping) else obj
    if not all(isinstance(k, str) for k in state):
        return None
    return state


def _strip_module(state: Mapping[str, Any]) -> dict[str, Any]:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def original_kind(obj: Any) -> OriginalKind | None:
    """"thumos14" for a vedatad detector state dict (``neck.0.conv1.*`` and
    ``head.retina_cls.*``), "anet" for an AFSD ``train_membank.py`` one
    (``coarse_pyramid_detection.*``), "actionformer" for an ActionFormer release checkpoint
    (``state_dict`` / ``state_dict_ema`` with its classifier), None for anything else (a
    Video Swin release, a torchvision state dict, our checkpoints)."""
    if is_release_checkpoint(obj):
        return "actionformer"
    state = _state_of(obj)
    if state is None:
        return None
    keys = list(_strip_module(state))
    if any(k.startswith(f"{_CPD}.") for k in keys):
        return "anet"
    if any(k.startswith("head.retina_") for k in keys) and any(k.startswith("neck.0.") for k in keys):
        return "thumos14"
    return None


def sibling_error(path: Path, obj: Any) -> WeightsError | None:
    """The original's optimizer / meta files given in place of the weights."""
    if not isinstance(obj, Mapping):
        return None
    if "param_groups" in obj and "state" in obj:
        return WeightsError(f"{path}: this is the original's optimizer state (epoch_N_optim.pth), not "
                            "the model; pass epoch_N_weights.pth")
    if set(obj) <= {"epoch", "iter"} and obj:
        return WeightsError(f"{path}: this is the original's epoch counter (epoch_N_meta.pth), not the "
                            "model; pass epoch_N_weights.pth")
    return None


def _epoch_and_iter(path: Path, kind: OriginalKind) -> tuple[int | None, int | None]:
    """epoch and iteration: from ``epoch_N_meta.pth`` beside ``epoch_N_weights.pth``, else the
    number in the file name (``epoch_N_*``, ``checkpoint-N.ckpt``)."""
    m = re.match(r"^epoch_(\d+)_weights\.pth$", path.name)
    if kind == "thumos14" and m:
        meta = path.with_name(f"epoch_{m.group(1)}_meta.pth")
        if meta.is_file():
            try:
                obj = read_checkpoint(meta)
            except WeightsError:
                obj = None
            if isinstance(obj, Mapping) and isinstance(obj.get("epoch"), int):
                it = obj.get("iter")
                return int(obj["epoch"]), int(it) if isinstance(it, int) else None
        return int(m.group(1)), None
    m = re.match(r"^checkpoint-(\d+)\.ckpt$", path.name)
    if m:
        return int(m.group(1)), None
    return None, None


# --------------------------------------------------------------------------- classes


def read_class_names(path: str | Path, expected: int) -> list[str]:
    """Class names, one a line (blank lines ignored), e.g. the original's
    ``action_name.txt``; an error naming the file when the count is not `expected` or a
    name repeats."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: class names file not found (--classes: one class name a line)")
    names = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != expected:
        raise WeightsError(f"{p}: {len(names)} class names but the model predicts {expected}; "
                           "give one name a line, in the order of the original's label ids")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise WeightsError(f"{p}: repeated class names {name_list(dupes, 5)}")
    return names


# --------------------------------------------------------------------------- conversion


def map_original_state(state: Mapping[str, Tensor], kind: str, model_state: Mapping[str, Tensor],
                       source: str) -> dict[str, Tensor]:
    """The original's keys -> ours, checked against `model_state` (our detector's
    ``state_dict()``): one `WeightsError` listing unexpected, missing and mis-shaped keys
    (in the original's names) and index buffers whose values differ."""
    keymap = KEY_MAPS[kind]
    out: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        matched, ours = keymap.to_ours(key)
        if not matched or (ours is not None and ours not in model_state):
            unexpected.append(key)
        elif ours is not None:
            out[ours] = value
    missing = [keymap.to_original(k) or k for k in model_state if k not in out]
    misshaped = [f"{keymap.to_original(k) or k} (file {list(v.shape)}, model {list(model_state[k].shape)})"
                 for k, v in out.items() if v.shape != model_state[k].shape]
    wrong_index = [keymap.to_original(k) or k for k, v in out.items()
                   if k.endswith("relative_position_index") and v.shape == model_state[k].shape
                   and not torch.equal(v.long(), model_state[k].long())]
    parts = key_problems(missing, unexpected, misshaped, wrong_index, " (another attention window)")
    if parts:
        raise WeightsError(f"{source}: does not fit the {kind} detector of the config: " + "; ".join(parts)
                           + "; pass the config the model was trained with (--config NAME|FILE, "
                           "overrides such as model.backbone.arch=swin_t)")
    return {k: v.to(model_state[k].dtype) if v.is_floating_point() else v for k, v in out.items()}


def _backbone_tv(state: Mapping[str, Tensor], kind: str) -> dict[str, Tensor]:
    """The backbone part in torchvision names (for the architecture check)."""
    out = {}
    for key, value in state.items():
        if key.startswith("backbone."):
            matched, ours = KEY_MAPS[kind].to_ours(key)
            if matched and ours is not None:
                out[ours[len("backbone."):]] = value
    return out


@dataclass
class OriginalModel:
    """An original detector checkpoint read into our detector (`read_original_checkpoint`)."""

    kind: OriginalKind
    model: DetectorModel  # the detector of `cfg`, the original's weights loaded
    cfg: Config  # the config it fits (no weights files named: the weights are the model's)
    classes: list[str]  # label-id order
    epoch: int | None
    iter: int | None
    dropped: list[str]  # the original's buffers we rebuild, dropped by name


def _config(src: Path, kind: OriginalKind, config: str | Path | Config | None, overrides: Sequence[str]) -> Config:
    """The config the file fits (default `DEFAULT_CONFIG`), of the file's family."""
    if isinstance(config, Config):
        cfg = config
    else:
        try:
            cfg = load_config(config if config is not None else DEFAULT_CONFIG[kind], list(overrides))
        except ConfigError as exc:
            raise WeightsError(f"{src}: {exc}") from None
    want = FAMILY_OF[kind]
    if cfg.model.kind != want:
        raise WeightsError(f"{src}: an original {kind} checkpoint, but the config has model.kind="
                           f"{cfg.model.kind}; use --config {DEFAULT_CONFIG[kind]} or a config with "
                           f"model.kind: {want}")
    return cfg


def _read_actionformer(src: Path, obj: Any, build: Callable[[Config], DetectorModel],
                       config: str | Path | Config | None, overrides: Sequence[str],
                       classes: str | Path | None, ema: bool) -> OriginalModel:
    """An ActionFormer release checkpoint (original: train.py:137-154) into the ActionFormer
    family's detector: its network's weights (``state_dict_ema`` by default) one key to one,
    the Video Swin weights from ``model.backbone.weights``; ``model.num_classes`` is the
    checkpoint's classifier width."""
    from tallformer.models.actionformer import ActionFormerDetector

    state = release_state_dict(obj, ema=ema, source=str(src))
    input_dim, num_classes = release_shapes(state, str(src))
    if classes is None:
        raise WeightsError(f"{src}: an ActionFormer checkpoint needs its class names: pass --classes NAMES.txt "
                           f"({num_classes} names, one a line, in the checkpoint's label-id order)")
    names = read_class_names(classes, num_classes)
    cfg = _config(src, "actionformer", config, overrides)
    weights = cfg.model.backbone.weights
    if weights is None:
        raise WeightsError(f"{src}: an ActionFormer checkpoint holds ActionFormer's network only, not the "
                           "Video Swin backbone under it; give the backbone weights its features came from: "
                           "model.backbone.weights=FILE (an official Video Swin release file, e.g. "
                           "swin_base_patch244_window877_kinetics400_22k.pth)")
    # the weights come from the files: the converted checkpoint holds them and points nowhere else
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, num_classes=num_classes, init_from=None,
        backbone=dataclasses.replace(cfg.model.backbone, weights=None)))
    with torch.device("cpu"):
        model = build(cfg)
    assert isinstance(model, ActionFormerDetector)  # FAMILY_OF checked by _config
    width = model.backbone.num_features
    if input_dim != width:
        raise WeightsError(f"{src}: ActionFormer's input_dim is {input_dim} ({EMBEDDING_KEY} "
                           f"{list(state[EMBEDDING_KEY].shape)}) but the backbone of the config "
                           f"(model.backbone.arch={cfg.model.backbone.arch}) gives {width}-channel features; "
                           "a network trained on other features (e.g. I3D's 2048) cannot run on these")
    load_backbone_weights(model.backbone, weights)
    mapped = map_release_state(state, model.actionformer.state_dict(), str(src))
    model.actionformer.load_state_dict(mapped, strict=True)
    epoch = obj.get("epoch") if isinstance(obj, Mapping) else None
    return OriginalModel("actionformer", model, cfg, names, epoch if isinstance(epoch, int) else None, None, [])


def read_original_checkpoint(src: str | Path, build: Callable[[Config], DetectorModel],
                             config: str | Path | Config | None = None, overrides: Sequence[str] = (),
                             classes: str | Path | None = None, loaded: Any = None,
                             ema: bool = True) -> OriginalModel:
    """Read an original THUMOS14 (``epoch_N_weights.pth``), ActivityNet
    (``checkpoint-N.ckpt``) or ActionFormer (``epoch_NNN.pth.tar``) detector checkpoint into
    the detector of its config.

    Args:
        build: the detector factory (`tallformer.engine.factory.build_detector`); the
            config's ``model.kind`` must be the family of the file (`FAMILY_OF`).
        config: the config the model fits (a shipped name, a YAML file or a `Config`);
            default `DEFAULT_CONFIG` (``thumos14_swin_b`` / ``anet_swin_b`` /
            ``thumos14_swin_b_actionformer``), with `overrides`. For ActionFormer its
            ``model.backbone.weights`` are the Video Swin weights put under the network, and
            ``model.num_classes`` is set from the file.
        classes: a file of class names, one a line, in the order of the original's label
            ids; default the original THUMOS14 list; required for ActivityNet (its
            ``action_name.txt``) and ActionFormer.
        loaded: the file's content when the caller has read it already.
        ema: ActionFormer: the EMA weights (``state_dict_ema``, what its eval.py tests);
            False: the plain ones (``state_dict``). The other formats have no EMA weights.
    Raises `WeightsError` naming the file: not an original detector checkpoint, keys that
    do not fit (in the original's names), a missing or wrong class list.
    """
    src = Path(src)
    obj = read_checkpoint(src) if loaded is None else loaded
    sibling = sibling_error(src, obj)
    if sibling is not None:
        raise sibling
    kind = original_kind(obj)
    if kind is None:
        raise WeightsError(f"{src}: not a detector checkpoint of the original release (expected "
                           "epoch_N_weights.pth with 'neck.0.*'/'head.retina_*' keys, checkpoint-N.ckpt "
                           "with 'coarse_pyramid_detection.*' keys or ActionFormer's epoch_NNN.pth.tar)")
    if kind == "actionformer":
        return _read_actionformer(src, obj, build, config, overrides, classes, ema)
    if not ema:
        raise WeightsError(f"{src}: an original {kind} checkpoint has no EMA weights; --no-ema is for "
                           "ActionFormer checkpoints (epoch_NNN.pth.tar)")
    state_any = _strip_module(_state_of(obj) or {})
    bad = [k for k, v in state_any.items() if not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(f"{src}: entries that are not tensors: {name_list(bad, _MAX_LISTED)}")
    state: dict[str, Tensor] = dict(state_any)

    cfg = _config(src, kind, config, overrides)
    if kind == "thumos14" and cfg.model.head.norm != "bn":
        raise WeightsError(f"{src}: the original THUMOS14 head has (Sync)BatchNorm but the config sets "
                           f"model.head.norm={cfg.model.head.norm}; set model.head.norm=bn")
    # the weights come from this file: the converted checkpoint must not point elsewhere
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, init_from=None, backbone=dataclasses.replace(cfg.model.backbone, weights=None)))
    with torch.device("cpu"):
        model = build(cfg)
    check_arch(model.backbone, _backbone_tv(state, kind), str(src))
    mapped = map_original_state(state, kind, model.state_dict(), str(src))
    model.load_state_dict(mapped, strict=True)

    num_classes = cfg.model.num_classes
    if classes is not None:
        names = read_class_names(classes, num_classes)
    elif kind == "thumos14":
        if num_classes != len(THUMOS14_CLASSES):
            raise WeightsError(f"{src}: the model predicts {num_classes} classes, not THUMOS14's 20; "
                               "pass their names with --classes FILE (one a line, label-id order)")
        names = list(THUMOS14_CLASSES)
    else:
        raise WeightsError(f"{src}: an ActivityNet checkpoint needs its class names: pass --classes "
                           "action_name.txt (the original's data/annots/anet/action_name.txt, 200 names "
                           "one a line in label-id order; the release does not ship it)")
    epoch, it = _epoch_and_iter(src, kind)
    dropped = sorted(k for k in state if KEY_MAPS[kind].to_ours(k) == (True, None))
    return OriginalModel(kind, model, cfg, names, epoch, it, dropped)
