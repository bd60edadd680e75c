"""Backbone weights: read official Video Swin, torchvision swin3d and tallformer checkpoints.

Three formats are recognised from the keys:

- **official** Video Swin release (e.g. `swin_base_patch244_window877_kinetics400_22k.pth`):
  `{"meta": {...}, "state_dict": {"backbone.layers.0.blocks.0.attn.qkv.weight": ...,
  "cls_head.fc_cls.weight": ...}}`, also its converted `*_keysfrom_backbone.pth` variant
  (the bare `state_dict`, original: tools/convert_vswin_ckpt.py:20-27), with or without a
  leading `module.`. Keys are renamed to torchvision's (`official_to_torchvision`); the
  classifier head is dropped; the `relative_position_index` buffers are checked against ours.
- **torchvision** `SwinTransformer3d` state dicts (`patch_embed.*`, `features.*`, `norm.*`,
  `head.*`): the head is dropped.
- **tallformer**: the state dict of a `VideoSwinBackbone` (what `convert_checkpoint` and
  `tallformer convert-weights` write), or a training checkpoint `{"model": {"backbone.*":
  ..., "neck.*": ...}}`, whose keys outside `backbone.` are ignored.

Every file is read with `torch.load(path, map_location="cpu", weights_only=True)`; the numpy
scalars that older mmcv versions wrote into `meta` are allowed (and nothing else that is not
a tensor or a plain container). Weights of another architecture than the model's are one
`WeightsError` naming the architecture the file implies and the config override that fits
it; any other missing, unexpected or mis-shaped key is a `WeightsError` listing them (the
original loaded non-strictly and skipped them silently: vedacore/misc/checkpoint.py:55-121).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d

from tallformer.atomic import atomic_path, write_text
from tallformer.errors import TallformerError, name_list
from tallformer.models.backbone import PRESETS, SwinArch, build_backbone
from tallformer.models.errors import ModelError

__all__ = [
    "WeightsError",
    "arch_override",
    "check_state_dict",
    "convert_checkpoint",
    "detect_format",
    "extract_backbone_state",
    "infer_arch",
    "load_backbone_weights",
    "match_preset",
    "official_to_torchvision",
    "read_checkpoint",
    "truncation",
]

_INDEX = "relative_position_index"
_MAX_LISTED = 20


class WeightsError(TallformerError, ValueError):
    """A weights file that cannot be loaded into the backbone; the message names the file."""


# --------------------------------------------------------------------------- key mapping

_OFF_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_OFF_DOWN = re.compile(r"^layers\.(\d+)\.downsample\.(.+)$")
# official mlp.fc1 / mlp.fc2 -> torchvision MLP Sequential indices 0 / 3 (the official
# names: vedatad/models/backbones/vswin.py; torchvision's: its SwinTransformer3d)
_MLP_OFF_TO_TV = {"mlp.fc1.": "mlp.0.", "mlp.fc2.": "mlp.3."}


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


# --------------------------------------------------------------------------- reading


def _numpy_safe_globals() -> list[Any]:
    """What a numpy scalar in a pickle needs: `multiarray.scalar` under its numpy 1.x and
    2.x names, `numpy.dtype`, and the dtype classes (BUILD targets of a dtype)."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    dtype_types = []
    for code in np.typecodes["All"]:
        with contextlib.suppress(TypeError):
            t = type(np.dtype(code))
            if t not in dtype_types:
                dtype_types.append(t)
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            np.dtype, *dtype_types]


@contextlib.contextmanager
def _numpy_scalars_allowed() -> Iterator[None]:
    """`torch.serialization.safe_globals` with the numpy scalar globals (torch >= 2.5;
    on older torch a file with numpy scalars stays refused, with the global named)."""
    ctx = getattr(torch.serialization, "safe_globals", None)
    if ctx is None:
        yield
        return
    with ctx(_numpy_safe_globals()):
        yield


_ZIP_LOCAL = b"PK\x03\x04"  # a zip record's local header: torch.save writes one per entry
_ZIP_CENTRAL = b"PK\x01\x02"  # a central directory entry: the zip's index, after every record
_ZIP_END = b"PK\x05\x06"  # the end of the central directory: the last thing a zip writer writes
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a"  # torch's pre-1.6 format: pickle protocol 2, then its magic number
_CUT = "the file was cut short (a copy or a save that did not finish)"


def _zip_records(data: Any) -> list[tuple[int, int, str]]:
    """(offset, data offset, name) of every zip local header in ``data`` (bytes or an mmap)."""
    out: list[tuple[int, int, str]] = []
    pos = data.find(_ZIP_LOCAL)
    while pos >= 0 and pos + 30 <= len(data):
        nlen = int.from_bytes(data[pos + 26:pos + 28], "little")
        xlen = int.from_bytes(data[pos + 28:pos + 30], "little")
        with contextlib.suppress(UnicodeDecodeError):
            out.append((pos, pos + 30 + nlen + xlen, bytes(data[pos + 30:pos + 30 + nlen]).decode("utf-8")))
        pos = data.find(_ZIP_LOCAL, pos + 4)
    return out


def _tensor_count(pickle_bytes: bytes) -> int | None:
    """How many storages a torch ``data.pkl`` refers to (one persistent id each), or None."""
    import pickletools

    try:
        return sum(1 for op, _, _ in pickletools.genops(pickle_bytes) if op.name == "BINPERSID")
    except Exception:  # a pickle cut short
        return None


def _zip_cut(data: Any, size: int) -> str | None:
    """Where a torch zip file is cut short (see `truncation`); None when its end record is whole."""
    end = data.rfind(_ZIP_END, max(0, size - 65_557))
    if end >= 0 and end + 22 <= size and end + 22 + int.from_bytes(data[end + 20:end + 22], "little") == size:
        return None
    records = _zip_records(data)
    total = None
    if len(records) > 1 and records[0][2].endswith("/data.pkl"):
        total = _tensor_count(bytes(data[records[0][1]:records[1][0]]))
    central = data.find(_ZIP_CENTRAL, records[-1][1] if records else 0)
    if central >= 0:
        where = "inside the zip's central directory (its index, written last; every record before it is whole)"
    elif not records or records[-1][0] + 30 + len(records[-1][2].encode()) > size or not records[-1][2]:
        where = "inside the header of its " + ("first record" if len(records) <= 1 else f"record {len(records)}")
    else:
        name = records[-1][2]
        tensors = sum(1 for _, _, n in records if "/data/" in n and "/.data/" not in n)
        of = f" of the {total} that data.pkl lists" if total is not None else ""
        part = (f"tensor {tensors}{of}" if "/data/" in name and "/.data/" not in name
                else f"after {tensors} tensor(s){of}" if tensors else "before the tensors")
        header = "the header of " if records[-1][1] > size else ""
        where = (f"inside {header}record {name!r} ({part}); the records after it and the zip's central "
                 "directory (written last) are missing")
    return f"truncated: the zip archive ends at byte {size:,}, {where}: {_CUT}"


def truncation(path: str | Path, error: BaseException | str | None = None) -> str | None:
    """What is missing from a checkpoint that was cut short, in words; None when it is not
    (recognisably) truncated. ``error``: what ``torch.load`` raised (the legacy format).

    A file in torch's zip format is truncated when its end record (written last) is
    missing or incomplete; the record headers say where the cut falls (which tensor record,
    of how many ``data.pkl`` lists). A file in torch's legacy format is truncated when
    unpickling ran out of bytes.

    Example:
        >>> import os, tempfile, torch
        >>> path = os.path.join(tempfile.mkdtemp(), "cut.pt")
        >>> torch.save({"w": torch.zeros(1000)}, path)
        >>> _ = open(path, "r+b").truncate(3000)
        >>> truncation(path).split(",")[0]
        'truncated: the zip archive ends at byte 3'
    """
    import mmap

    p = Path(path)
    size = p.stat().st_size
    if size == 0:
        return None
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        head = bytes(data[:4])
        if head == _ZIP_LOCAL:
            return _zip_cut(data, size)
    text = str(error or "")
    if head == _LEGACY_MAGIC and (isinstance(error, EOFError) or "EOF" in text or "truncated" in text):
        more = re.search(r"expected (\d+) more bytes", text)
        missing = f"; {int(more.group(1)):,} more bytes were expected" if more else ""
        return f"truncated: torch's legacy format ends at byte {size:,} before its data does{missing}: {_CUT}"
    return None


def _load_error(path: Path, exc: BaseException) -> WeightsError:
    """torch's long `weights_only` message -> one line naming the file (and the global)."""
    cut = truncation(path, exc)
    if cut is not None:
        return WeightsError(f"{path}: {cut}")
    text = str(exc)
    name = re.search(r"GLOBAL ([\w.]+)", text)
    if name:
        return WeightsError(
            f"{path}: refused to load: the file holds a Python object {name.group(1)}, which "
            "torch.load(weights_only=True) does not construct (only tensors, plain containers "
            "and numpy scalars); if you trust the file, save its tensors alone: "
            "torch.save(torch.load(FILE, weights_only=False)['state_dict'], NEW_FILE)"
        )
    marker = "WeightsUnpickler error:"
    detail = text.split(marker, 1)[1].strip().splitlines()[0].strip() if marker in text else ""
    if detail and not detail.startswith("Unsupported operand"):
        return WeightsError(f"{path}: refused to load with weights_only=True: {detail}")
    what = "the file is empty" if path.stat().st_size == 0 else "not a file written by torch.save"
    return WeightsError(f"{path}: not a PyTorch checkpoint ({what}); check the path")


def read_checkpoint(path: str | Path) -> Any:
    """`torch.load(path, map_location="cpu", weights_only=True)`, numpy scalars allowed;
    any failure is one `WeightsError` line naming the file."""
    p = Path(path)
    if p.is_dir():
        raise WeightsError(f"{p}: is a folder, not a weights file")
    if not p.is_file():
        raise WeightsError(f"{p}: weights file not found")
    try:
        with _numpy_scalars_allowed():
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip errors come in many types
        raise _load_error(p, exc) from None


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


def _listing(items: Sequence[str]) -> str:
    return name_list(items, _MAX_LISTED)


def key_problems(missing: Sequence[str], unexpected: Sequence[str], misshaped: Sequence[str],
                 wrong_index: Sequence[str], index_note: str = "") -> list[str]:
    """The parts of a state-dict mismatch message, one per non-empty kind, in the order
    missing, unexpected, mis-shaped, differing index buffers (each "KIND (N): names")."""
    kinds = (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", misshaped),
             (f"relative_position_index buffers that differ from the model's{index_note}", wrong_index))
    return [f"{kind} ({len(names)}): {_listing(names)}" for kind, names in kinds if names]


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
    parts = key_problems(missing, unexpected, misshaped, wrong_index)
    if parts:
        hint = f". The model is {_module_arch(module)}"
        with contextlib.suppress(WeightsError):
            hint += f"; the file implies {infer_arch(state, source=source)}"
        raise WeightsError(f"{source}: does not fit the backbone: " + "; ".join(parts) + hint)
    return {k: v for k, v in state.items() if not k.endswith(_INDEX)}


def arch_override(shape: Mapping[str, Any]) -> str:
    """The config override(s) that build a backbone of this shape: `model.backbone.arch=swin_b`
    for a preset, else `model.backbone.arch=custom` with the five shape fields."""
    preset = match_preset(shape)
    if preset is not None:
        return f"model.backbone.arch={preset}"
    fields = " ".join(
        f"model.backbone.{k}={json.dumps(shape[k], separators=(',', ':'))}"
        for k in ("embed_dim", "depths", "num_heads", "window_size", "patch_size")
    )
    return f"model.backbone.arch=custom {fields}"


def _arch_name(shape: Mapping[str, Any]) -> str:
    preset = match_preset(shape)
    return preset if preset is not None else "a custom Video Swin"


def check_arch(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """One line when the file's architecture differs from the module's (if it can be told)."""
    arch = getattr(module, "arch", None)
    if not isinstance(arch, SwinArch):
        return
    want = arch.shape_dict()
    window = (int(arch.window_size[0]), int(arch.window_size[1]), int(arch.window_size[2]))
    try:
        have = infer_arch(state, prefer_window=window, source=source)
    except WeightsError:
        return  # the architecture cannot be told: the key listing says what is wrong
    if have == want:
        return
    diffs = ", ".join(f"{k} {have[k]} (model {want[k]})" for k in want if have[k] != want[k])
    raise WeightsError(
        f"{source}: the weights are {_arch_name(have)} but the model is {_arch_name(want)} "
        f"({diffs}); set {arch_override(have)}"
    )


def load_backbone_weights(module: nn.Module, path: str | Path) -> str:
    """Load official / torchvision / tallformer weights into a `VideoSwinBackbone`.

    Returns the detected format ("official", "torchvision" or "tallformer"). Raises
    `WeightsError` naming the file: for weights of another architecture, which one and the
    override that fits (`model.backbone.arch=swin_b`); otherwise listing any missing,
    unexpected or mis-shaped key.
    """
    source = str(path)
    state, fmt = extract_backbone_state(read_checkpoint(path), source)
    check_arch(module, state, source)
    state = check_state_dict(module, state, source)
    result = module.load_state_dict(state, strict=False)
    leftover = [k for k in result.missing_keys if not k.endswith(_INDEX)] + list(result.unexpected_keys)
    if leftover:  # cannot happen after check_state_dict; kept as a guard
        raise WeightsError(f"{source}: keys not loaded: {_listing(leftover)}")
    return fmt


# --------------------------------------------------------------------------- conversion


def _window_arg(window: Sequence[int] | None) -> tuple[int, int, int] | None:
    if window is None:
        return None
    if len(window) != 3:
        raise WeightsError(f"window must be 3 integers (T H W), got {list(window)}")
    return int(window[0]), int(window[1]), int(window[2])


def convert_checkpoint(src: str | Path, out: str | Path, arch: str | None = None,
                       window: Sequence[int] | None = None, *, loaded: Any = None) -> dict[str, Any]:
    """Convert a Video Swin checkpoint to a plain tallformer backbone state dict.

    Reads `src` (official, torchvision or tallformer format), renames the keys, infers the
    architecture from the keys and shapes (`window` picks the attention window of files
    without `relative_position_index` buffers), checks every key and shape against the
    backbone it implies (or against preset `arch`, an error if they differ) and writes
    `torch.save(backbone.state_dict())` to `out` and a JSON sidecar `out.json`, both
    atomically. Returns the sidecar's content: `{"arch", "preset", "num_features",
    "num_parameters", "source", "source_format", "config"}`. `loaded`: the file's content
    when the caller has read it already (`read_checkpoint`).
    """
    src, out = Path(src), Path(out)
    if arch is not None and arch not in PRESETS:
        raise WeightsError(f"unknown backbone arch {arch!r}; choose one of {', '.join(PRESETS)}")
    state, fmt = extract_backbone_state(read_checkpoint(src) if loaded is None else loaded, str(src))
    prefer = _window_arg(window)
    if prefer is None and arch is not None:
        prefer = PRESETS[arch].window_size
    shape = infer_arch(state, prefer_window=prefer, source=str(src))
    if arch is not None and PRESETS[arch].shape_dict() != shape:
        want = PRESETS[arch].shape_dict()
        diffs = ", ".join(f"{k}: file {shape[k]} vs {arch} {want[k]}" for k in want if want[k] != shape[k])
        raise WeightsError(f"{src}: the weights are not {arch} ({diffs}); drop --arch to convert them as they are")
    preset = arch or match_preset(shape)
    with torch.device("cpu"):
        try:
            backbone = build_backbone(preset if preset else shape, chunk_size=None)
        except ModelError as exc:
            raise WeightsError(f"{src}: the weights imply a backbone that cannot be built: {exc}") from None
    state = check_state_dict(backbone, state, str(src))
    backbone.load_state_dict(state, strict=False)

    with atomic_path(out) as tmp:
        torch.save(backbone.state_dict(), tmp)
    backbone_cfg: dict[str, Any] = {"arch": preset} if preset else {"arch": "custom", **shape}
    backbone_cfg["weights"] = str(out)
    info = {
        "arch": shape,
        "preset": preset,
        "num_features": backbone.num_features,
        "num_parameters": sum(p.numel() for p in backbone.parameters()),
        "source": str(src),
        "source_format": fmt,
        "config": {"model": {"backbone": backbone_cfg}},
    }
    write_text(Path(str(out) + ".json"), json.dumps(info, indent=2) + "\n")
    return info
