"""Writers of official Video Swin release files, for the tests of `tallformer.models.weights`.

The official layout (keys `backbone.layers.{i}.blocks.{j}...`, `backbone.layers.{i}.downsample...`,
`backbone.patch_embed...`, `backbone.norm...`, the `relative_position_index` buffers and a
classifier `cls_head.fc_cls.*`) is the one the original loads (original:
tools/convert_vswin_ckpt.py:20-27; vedatad/models/backbones/vswin.py). Also a writer of the
numpy scalars older mmcv versions put into `meta`, under numpy 1.x names.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

_TV_FEAT = re.compile(r"^features\.(\d+)\.(.+)$")
_TV_BLOCK_REST = re.compile(r"^(\d+)\.(.+)$")
# torchvision MLP Sequential indices 0 / 3 -> official mlp.fc1 / mlp.fc2
_MLP_TV_TO_OFF = {"mlp.0.": "mlp.fc1.", "mlp.3.": "mlp.fc2."}


def _swap_prefix(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def torchvision_to_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of `tallformer.models.weights.official_to_torchvision` (keys without the
    `backbone.` prefix)."""
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


def to_official_state_dict(module: nn.Module, num_classes: int = 400, seed: int = 0) -> dict[str, Tensor]:
    """`module`'s weights in the official Video Swin release layout, plus a random classifier
    `cls_head.fc_cls.{weight [num_classes, C], bias [num_classes]}`."""
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


def save_official_format(module: nn.Module, path: str | Path, num_classes: int = 400,
                         meta: dict[str, Any] | None = None) -> None:
    """Write `{"meta": meta, "state_dict": to_official_state_dict(module)}` to `path`."""
    torch.save(
        {"meta": meta if meta is not None else {"written_by": "tests/official_checkpoints.py"},
         "state_dict": to_official_state_dict(module, num_classes)},
        Path(path),
    )


def rename_pickle_globals(path: Path, renames: Mapping[str, str]) -> None:
    """Rewrite the pickle inside the torch.save archive at `path`, replacing GLOBAL
    `module name` references (e.g. numpy 2's `numpy._core.multiarray scalar` by numpy 1's
    `numpy.core.multiarray scalar`), as if another library version had written the file."""
    with zipfile.ZipFile(path) as z:
        entries = [(info.filename, z.read(info.filename)) for info in z.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            if name.endswith("/data.pkl"):
                for old, new in renames.items():
                    old_b = ("c" + old.replace(" ", "\n") + "\n").encode()
                    new_b = ("c" + new.replace(" ", "\n") + "\n").encode()
                    if old_b not in data:
                        raise KeyError(f"GLOBAL {old!r} is not in {path}")
                    data = data.replace(old_b, new_b)
            z.writestr(name, data)
    path.write_bytes(buf.getvalue())
