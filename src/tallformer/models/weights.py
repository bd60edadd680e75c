"""Backbone weights: read official Video Swin, torchvision swin3d and tallformer checkpoints.

Three formats are recognised from the keys (spec model-thumos14 §4):

- **official** Video Swin release (e.g. `swin_base_patch244_window877_kinetics400_22k.pth`):
  `{"state_dict": {"backbone.layers.0.blocks.0.attn.qkv.weight": ..., "cls_head.fc_cls.weight":
  ...}}`, also its converted `*_keysfrom_backbone.pth` variant (the bare `state_dict`), with or
  without a leading `module.`. Keys are renamed to torchvision's with the §4 table; the
  classifier head is dropped; the `relative_position_index` buffers are checked against ours.
- **torchvision** `SwinTransformer3d` state dicts (`patch_embed.*`, `features.*`, `norm.*`,
  `head.*`): the head is dropped.
- **tallformer**: the state dict of a `VideoSwinBackbone` (what `tallformer convert-weights`
  writes), or a training checkpoint `{"model": {"backbone.*": ..., "neck.*": ...}}`, whose
  keys outside `backbone.` are ignored.

Every file is read with `torch.load(path, map_location="cpu", weights_only=True)`. Any
missing, unexpected or mis-shaped key is a `WeightsError` listing them (the original loaded
non-strictly and skipped them silently: spec §18.12).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d

from tallformer.models.backbone import PRESETS, SwinArch

__all__ = [
    "WeightsError",
    "detect_format",
    "extract_backbone_state",
    "infer_arch",
    "load_backbone_weights",
    "match_preset",
    "official_to_torchvision",
    "read_checkpoint",
    "save_official_format",
    "to_official_state_dict",
    "torchvision_to_official",
]

_INDEX = "relative_position_index"
_MAX_LISTED = 20


class WeightsError(ValueError):
    """A weights file that cannot be loaded into the backbone; the message names the file."""


# --------------------------------------------------------------------------- key mapping

_OFF_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_OFF_DOWN = re.compile(r"^layers\.(\d+)\.downsample\.(.+)$")
_TV_FEAT = re.compile(r"^features\.(\d+)\.(.+)$")
_TV_BLOCK_REST = re.compile(r"^(\d+)\.(.+)$")
# official mlp.fc1 / mlp.fc2 <-> torchvision MLP Sequential indices 0 / 3 (spec §4 table)
_MLP_OFF_TO_TV = {"mlp.fc1.": "mlp.0.", "mlp.fc2.": "mlp.3."}
_MLP_TV_TO_OFF = {v: k for k, v in _MLP_OFF_TO_TV.items()}


def _swap_prefix(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def official_to_torchvision(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename official Video Swin backbone keys (without `backbone.`) to torchvision's.

    `layers.{i}.blocks.{j}.X` -> `features.{2i}.{j}.X` (mlp.fc1/fc2 -> mlp.0/mlp.3),
    `layers.{i}.downsample.X` -> `features.{2i+1}.X`; `patch_embed.*`, `norm.*` unchanged;
    `cls_head.*`/`head.*` and the TALLFormer-only `dummy_tensor` buffers are dropped.
    Keys that fit no rule are kept unchanged (and then reported as unexpected).
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(("cls_head.", "head.")) or key.endswith("dummy_tensor"):
            continue
        m = _OFF_BLOCK.match(key)
        if m:
            i, j, rest = int(m.group(1)), m.group(2), m.group(3)
            out[f"features.{2 * i}.{j}.{_swap_prefix(rest, _MLP_OFF_TO_TV)}"] = value
            continue
        m = _OFF_DOWN.match(key)
        if m:
            out[f"features.{2 * int(m.group(1)) + 1}.{m.group(2)}"] = value
            continue
        out[key] = value
    return out


def torchvision_to_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of `official_to_torchvision` (keys without the `backbone.` prefix)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        m = _TV_FEAT.match(key)
        if not m:
            out[key] = value
            continue
        k, rest = int(m.group(1)), m.group(2)
        if k % 2 == 0:
            b = _TV_BLOCK_REST.match(rest)
            if b is None:
                raise KeyError(f"unexpected torchvision key {key!r}")
            out[f"layers.{k // 2}.blocks.{b.group(1)}.{_swap_prefix(b.group(2), _MLP_TV_TO_OFF)}"] = value
        else:
            out[f"layers.{(k - 1) // 2}.downsample.{rest}"] = value
    return out


# --------------------------------------------------------------------------- reading


def read_checkpoint(path: str | Path) -> Any:
    """`torch.load(path, map_location="cpu", weights_only=True)` with errors naming the file."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: weights file not found")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip errors come in many types
        raise WeightsError(
            f"{p}: cannot be read as a PyTorch checkpoint with weights_only=True ({exc})"
        ) from None


def _unwrap(obj: Any, source: str) -> dict[str, Tensor]:
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    for wrapper in ("state_dict", "model"):
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping):
            obj = inner
            break
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(
            f"{source}: not a state dict; entries that are not tensors: {_listing(bad)} "
            "(expected the official Video Swin file, a torchvision swin3d state dict or a "
            "tallformer checkpoint)"
        )
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def detect_format(state: Mapping[str, Tensor]) -> str:
    """"official" | "torchvision" | "tallformer" | "unknown" for a state dict (after any
    `backbone.`/`module.` prefix was removed)."""
    official = any(k.startswith("layers.") for k in state)
    torchvision = any(k.startswith("features.") for k in state)
    if official and not torchvision:
        return "official"
    if torchvision and not official:
        return "torchvision" if any(k.startswith("head.") for k in state) else "tallformer"
    return "unknown"


def extract_backbone_state(obj: Any, source: str = "checkpoint") -> tuple[dict[str, Tensor], str]:
    """A loaded checkpoint -> (backbone state dict in torchvision/tallformer keys, format).

    Unwraps `state_dict`/`model`, strips `module.` and `backbone.` (keys outside `backbone.`
    belong to other parts, e.g. `cls_head.*`, `neck.*`, and are ignored), renames official
    keys and drops classifier heads. `relative_position_index` buffers are kept (checked by
    `load_backbone_weights`).
    """
    state = _unwrap(obj, source)
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    fmt = detect_format(state)
    if fmt == "unknown":
        raise WeightsError(
            f"{source}: unrecognised key layout (first keys: {_listing(list(state)[:8])}); "
            "expected official Video Swin keys ('backbone.layers.*'), torchvision swin3d keys "
            "('features.*') or a tallformer checkpoint"
        )
    if fmt == "official":
        state = official_to_torchvision(state)
    else:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    return state, fmt


# --------------------------------------------------------------------------- architecture


def _relative_position_index(window: tuple[int, int, int]) -> Tensor:
    """torchvision's index buffer `[V, V]` for a window (V = Wd*Wh*Ww), on the CPU."""
    with torch.device("cpu"):
        attn = ShiftedWindowAttention3d(1, list(window), [0, 0, 0], num_heads=1)
    return attn.relative_position_index


def _window_candidates(rows: int) -> list[tuple[int, int, int]]:
    """All (a, b, c) with (2a-1)(2b-1)(2c-1) = rows (the bias table's length)."""
    odd = [d for d in range(1, rows + 1, 2) if rows % d == 0]
    out = []
    for x in odd:
        for y in odd:
            if (rows // x) % y == 0:
                z = rows // x // y
                if z % 2 == 1:
                    out.append(((x + 1) // 2, (y + 1) // 2, (z + 1) // 2))
    return out


def infer_arch(state: Mapping[str, Tensor], prefer_window: tuple[int, int, int] | None = None,
               source: str = "weights") -> dict[str, Any]:
    """The architecture a torchvision-layout backbone state dict implies:
    `{"embed_dim", "depths", "num_heads", "window_size", "patch_size"}`.

    The window comes from the `relative_position_index` buffer (its size and values) and the
    bias table length (2Wd-1)(2Wh-1)(2Ww-1); without the buffer, `prefer_window` must be
    one of the windows that fit the table (an error otherwise: a wrong guess would load).
    """
    w = state.get("patch_embed.proj.weight")
    if w is None or w.dim() != 5:
        raise WeightsError(f"{source}: no 5-D 'patch_embed.proj.weight'; cannot infer the architecture")
    embed_dim, patch = int(w.shape[0]), tuple(int(s) for s in w.shape[2:])
    depths: dict[int, int] = {}
    for key in state:
        m = re.match(r"^features\.(\d+)\.(\d+)\.norm1\.weight$", key)
        if m and int(m.group(1)) % 2 == 0:
            stage = int(m.group(1)) // 2
            depths[stage] = max(depths.get(stage, 0), int(m.group(2)) + 1)
    if not depths or sorted(depths) != list(range(len(depths))):
        raise WeightsError(f"{source}: cannot find the stages (features.<2i>.<j>.norm1.weight) in the keys")
    heads = []
    for i in range(len(depths)):
        table = state.get(f"features.{2 * i}.0.attn.relative_position_bias_table")
        if table is None or table.dim() != 2:
            raise WeightsError(f"{source}: missing features.{2 * i}.0.attn.relative_position_bias_table")
        heads.append(int(table.shape[1]))
    rows = int(state["features.0.0.attn.relative_position_bias_table"].shape[0])
    cands = _window_candidates(rows)
    index = state.get(f"features.0.0.attn.{_INDEX}")
    if index is not None and index.device.type != "meta":
        vol = int(index.shape[0])
        cands = [c for c in cands if c[0] * c[1] * c[2] == vol]
        cands = [c for c in cands if torch.equal(_relative_position_index(c), index.cpu().long())]
    if len(cands) > 1 and prefer_window is not None and tuple(prefer_window) in cands:
        cands = [tuple(prefer_window)]  # type: ignore[list-item]
    if len(cands) != 1:
        raise WeightsError(
            f"{source}: cannot tell the attention window from a bias table of {rows} rows "
            f"without the relative_position_index buffers (candidates {cands or 'none'}); "
            "name the architecture (--arch) or the window (--window T H W)"
        )
    return {
        "embed_dim": embed_dim,
        "depths": [depths[i] for i in range(len(depths))],
        "num_heads": heads,
        "window_size": list(cands[0]),
        "patch_size": list(patch),
    }


def match_preset(arch: Mapping[str, Any]) -> str | None:
    """The preset name whose shape equals `arch` (the five shape fields), or None."""
    for name, preset in PRESETS.items():
        if preset.shape_dict() == {k: list(v) if isinstance(v, (list, tuple)) else v
                                   for k, v in arch.items() if k in preset.shape_dict()}:
            return name
    return None


# --------------------------------------------------------------------------- loading


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f", ... and {more} more" if more > 0 else "")


def _module_arch(module: nn.Module) -> str:
    arch = getattr(module, "arch", None)
    return str(arch.shape_dict()) if isinstance(arch, SwinArch) else type(module).__name__


def check_state_dict(module: nn.Module, state: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    """Compare `state` (torchvision layout) with `module`'s; return it without the index
    buffers (which must equal the module's) or raise `WeightsError` listing every problem."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(_INDEX)]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} (file {list(v.shape)}, model {list(expected[k].shape)})"
        for k, v in state.items() if k in expected and v.shape != expected[k].shape
    ]
    wrong_index = [
        k for k, v in state.items()
        if k.endswith(_INDEX) and k in expected and v.shape == expected[k].shape
        and v.device.type != "meta" and expected[k].device.type != "meta"
        and not torch.equal(v.cpu().long(), expected[k].cpu().long())
    ]
    if missing or unexpected or misshaped or wrong_index:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if misshaped:
            parts.append(f"mis-shaped keys ({len(misshaped)}): {_listing(misshaped)}")
        if wrong_index:
            parts.append(
                f"relative_position_index buffers that differ from the model's ({len(wrong_index)}): "
                f"{_listing(wrong_index)}"
            )
        hint = f". The model is {_module_arch(module)}"
        with contextlib.suppress(WeightsError):
            hint += f"; the file implies {infer_arch(state, source=source)}"
        raise WeightsError(f"{source}: does not fit the backbone: " + "; ".join(parts) + hint)
    return {k: v for k, v in state.items() if not k.endswith(_INDEX)}


def load_backbone_weights(module: nn.Module, path: str | Path) -> str:
    """Load official / torchvision / tallformer weights into a `VideoSwinBackbone`.

    Returns the detected format ("official", "torchvision" or "tallformer"). Raises
    `WeightsError` naming the file and listing any missing, unexpected or mis-shaped key.
    """
    source = str(path)
    state, fmt = extract_backbone_state(read_checkpoint(path), source)
    state = check_state_dict(module, state, source)
    result = module.load_state_dict(state, strict=False)
    leftover = [k for k in result.missing_keys if not k.endswith(_INDEX)] + list(result.unexpected_keys)
    if leftover:  # cannot happen after check_state_dict; kept as a guard
        raise WeightsError(f"{source}: keys not loaded: {_listing(leftover)}")
    return fmt


# --------------------------------------------------------------------------- writing


def to_official_state_dict(module: nn.Module, num_classes: int = 400, seed: int = 0) -> dict[str, Tensor]:
    """`module`'s weights in the official Video Swin release layout (spec §4): keys
    `backbone.layers.{i}.blocks.{j}...`, `backbone.layers.{i}.downsample...`,
    `backbone.patch_embed...`, `backbone.norm...`, the `relative_position_index` buffers,
    and a random classifier `cls_head.fc_cls.{weight [num_classes, C], bias [num_classes]}`."""
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    out = {f"backbone.{k}": v for k, v in torchvision_to_official(state).items()}
    c = int(state["norm.weight"].shape[0])
    device = state["norm.weight"].device
    if device.type == "meta":
        out["cls_head.fc_cls.weight"] = torch.empty(num_classes, c, device=device)
        out["cls_head.fc_cls.bias"] = torch.empty(num_classes, device=device)
    else:
        g = torch.Generator().manual_seed(seed)
        out["cls_head.fc_cls.weight"] = torch.randn(num_classes, c, generator=g) * 0.01
        out["cls_head.fc_cls.bias"] = torch.randn(num_classes, generator=g) * 0.01
    return out


def save_official_format(module: nn.Module, path: str | Path, num_classes: int = 400) -> None:
    """Write `{"meta": {...}, "state_dict": to_official_state_dict(module)}` to `path`."""
    torch.save(
        {"meta": {"written_by": "tallformer.models.weights.save_official_format"},
         "state_dict": to_official_state_dict(module, num_classes)},
        Path(path),
    )
