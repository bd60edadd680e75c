"""ActionFormer release checkpoints (`epoch_NNN.pth.tar` as its train.py saves them) read into
`ActionFormerNet` (original: train.py:137-154, libs/utils/train_utils.py:41-51).

The file is a `torch.save` dict with `epoch`, `state_dict` (the model's, under
nn.DataParallel, so every key starts with `module.`), `scheduler`, `optimizer` and
`state_dict_ema` (the EMA model's, `module.`-prefixed too; the release's eval.py loads
these, original: eval.py:70-76). It loads with `torch.load(weights_only=True)`.

Every key of the network maps one to one: after `module.` is removed, a release key *is*
the `ActionFormerNet` key (the `drop_path_*.scale` keys exist only when the model was
trained with droppath > 0, and then our network has them too). The input width is the
second dimension of `backbone.embd.0.conv.weight`, the number of classes the first of
`cls_head.cls_head.conv.weight`. A missing, unexpected or mis-shaped key is one
`WeightsError` in the release's names.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from tallformer.errors import name_list
from tallformer.models.weights import WeightsError, key_problems, read_checkpoint

__all__ = [
    "CLASSIFIER_KEY",
    "EMBEDDING_KEY",
    "is_release_checkpoint",
    "load_release_weights",
    "map_release_state",
    "release_shapes",
    "release_state_dict",
]

CLASSIFIER_KEY = "cls_head.cls_head.conv.weight"  # [num_classes, head_dim, k]
EMBEDDING_KEY = "backbone.embd.0.conv.weight"  # [embd_dim, input_dim, k]


def _strip(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def is_release_checkpoint(obj: Any) -> bool:
    """True for a dict whose `state_dict` (or `state_dict_ema`) holds ActionFormer's
    classifier (`[module.]cls_head.cls_head.conv.weight`).

    Example:
        >>> import torch
        >>> is_release_checkpoint({"state_dict": {"module.cls_head.cls_head.conv.weight": torch.zeros(1)}})
        True
    """
    if not isinstance(obj, Mapping):
        return False
    for name in ("state_dict_ema", "state_dict"):
        state = obj.get(name)
        if isinstance(state, Mapping) and any(isinstance(k, str) and _strip(k) == CLASSIFIER_KEY for k in state):
            return True
    return False


def release_state_dict(obj: Any, *, ema: bool = True, source: str = "checkpoint") -> dict[str, Tensor]:
    """The network's weights from a loaded release checkpoint: `state_dict_ema` (what the
    release evaluates) or, with `ema=False`, `state_dict`; `module.` removed.

    Raises `WeightsError` naming `source` when the entry is missing or holds non-tensors.

    Example:
        >>> import torch
        >>> obj = {"state_dict": {"module.a": torch.ones(1)}, "state_dict_ema": {"module.a": torch.zeros(1)}}
        >>> release_state_dict(obj)["a"].tolist(), release_state_dict(obj, ema=False)["a"].tolist()
        ([0.0], [1.0])
    """
    name = "state_dict_ema" if ema else "state_dict"
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{source}: not an ActionFormer checkpoint (expected a dict with 'state_dict' and "
                           f"'state_dict_ema', got {type(obj).__name__})")
    state = obj.get(name)
    if not isinstance(state, Mapping):
        other = "--no-ema for the plain weights ('state_dict')" if ema else "the EMA weights ('state_dict_ema')"
        raise WeightsError(f"{source}: has no '{name}' entry (keys: {name_list(sorted(map(str, obj)), 8)}); "
                           f"use {other}")
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(f"{source}: '{name}' has entries that are not named tensors: {name_list(bad, 8)}")
    return {_strip(k): v for k, v in state.items()}


def release_shapes(state: Mapping[str, Tensor], source: str = "checkpoint") -> tuple[int, int]:
    """(input_dim, num_classes) of a release state dict (after `release_state_dict`).

    Example:
        >>> import torch
        >>> release_shapes({EMBEDDING_KEY: torch.zeros(512, 1024, 3), CLASSIFIER_KEY: torch.zeros(20, 512, 3)})
        (1024, 20)
    """
    missing = [k for k in (EMBEDDING_KEY, CLASSIFIER_KEY) if k not in state]
    if missing:
        raise WeightsError(f"{source}: not ActionFormer weights: no {', '.join(missing)}")
    return int(state[EMBEDDING_KEY].shape[1]), int(state[CLASSIFIER_KEY].shape[0])


def map_release_state(state: Mapping[str, Tensor], net_state: Mapping[str, Tensor],
                      source: str = "checkpoint") -> dict[str, Tensor]:
    """Release keys -> `ActionFormerNet` keys (one to one), checked against `net_state`
    (the network's `state_dict()`): every key present, none extra, every shape equal; else
    one `WeightsError` listing them in the release's names. Values are cast to the
    network's dtypes.

    Example:
        >>> import torch
        >>> map_release_state({"a": torch.ones(2)}, {"a": torch.zeros(2)})["a"].tolist()
        [1.0, 1.0]
    """
    missing = [k for k in net_state if k not in state]
    unexpected = [k for k in state if k not in net_state]
    misshaped = [f"{k} (file {list(v.shape)}, model {list(net_state[k].shape)})"
                 for k, v in state.items() if k in net_state and v.shape != net_state[k].shape]
    parts = key_problems(missing, unexpected, misshaped, [])
    if parts:
        hint = ""
        if any(".drop_path_" in k for k in unexpected):
            hint = "; the file was trained with droppath > 0: set model.actionformer.train_cfg.droppath > 0"
        elif any(".drop_path_" in k for k in missing):
            hint = "; the file was trained with droppath 0: set model.actionformer.train_cfg.droppath=0"
        raise WeightsError(f"{source}: does not fit the ActionFormer network of the config: "
                           + "; ".join(parts) + hint
                           + "; pass the model settings it was trained with (model.actionformer.*)")
    return {k: v.to(net_state[k].dtype) for k, v in state.items()}


def load_release_weights(path: str | Path, net: nn.Module, *, ema: bool = True) -> dict[str, Any]:
    """Read a release `.pth.tar` and load its (EMA by default) weights into `net` (an
    `ActionFormerNet`). Returns {"epoch", "input_dim", "num_classes", "ema"}.

    Example:
        >>> import torch, tempfile, os
        >>> from tallformer.models.actionformer.net import ActionFormerNet
        >>> net = ActionFormerNet(8, 2, backbone_arch=(1, 1, 1), n_head=2, n_mha_win_size=5, embd_dim=8,
        ...                       fpn_dim=8, head_dim=8, regression_range=((0, 4), (4, 100)), max_seq_len=16)
        >>> state = {"module." + k: v for k, v in net.state_dict().items()}
        >>> path = os.path.join(tempfile.mkdtemp(), "epoch_035.pth.tar")
        >>> torch.save({"epoch": 35, "state_dict": state, "state_dict_ema": state}, path)
        >>> load_release_weights(path, net)["num_classes"]
        2
    """
    obj = read_checkpoint(path)
    state = release_state_dict(obj, ema=ema, source=str(path))
    input_dim, num_classes = release_shapes(state, str(path))
    mapped = map_release_state(state, net.state_dict(), str(path))
    net.load_state_dict(mapped, strict=True)
    epoch = obj.get("epoch") if isinstance(obj, Mapping) else None
    return {"epoch": int(epoch) if isinstance(epoch, int) else None, "input_dim": input_dim,
            "num_classes": num_classes, "ema": ema}

