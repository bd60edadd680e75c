"""``tallformer convert-weights``: a file recognised and converted into ours.

An original detector checkpoint (THUMOS14 ``epoch_N_weights.pth``, ActivityNet
``checkpoint-N.ckpt``, an ActionFormer release ``epoch_NNN.pth.tar`` with the Video Swin
weights of the config; `tallformer.models.original_checkpoints`) becomes a tallformer model
checkpoint (`tallformer.engine.checkpoint.save_model`: the model state, the config it fits
and the class names in the original's label-id order) that ``tallformer test``,
``tallformer detect`` and ``model.init_from`` take as our own; anything else (a Video Swin
release, a torchvision or tallformer state dict) is backbone weights
(`tallformer.models.weights.convert_checkpoint`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tallformer.config import Config
from tallformer.engine.checkpoint import save_model
from tallformer.engine.factory import build_detector
from tallformer.models.original_checkpoints import (
    original_kind,
    read_original_checkpoint,
    sibling_error,
)
from tallformer.models.weights import WeightsError, read_checkpoint

__all__ = ["convert_original_checkpoint", "convert_weights_file"]


def convert_original_checkpoint(src: str | Path, out: str | Path, config: str | Path | Config | None = None,
                                overrides: Sequence[str] = (), classes: str | Path | None = None,
                                loaded: Any = None, ema: bool = True) -> dict[str, Any]:
    """Convert an original detector checkpoint into a tallformer model checkpoint at `out`
    (`tallformer.models.original_checkpoints.read_original_checkpoint` for the arguments and
    errors; `ema` picks a checkpoint's EMA weights where it has them).

    Returns:
        ``{"kind", "config", "classes", "epoch", "iter", "num_parameters", "dropped"}``.
    """
    src = Path(src)
    original = read_original_checkpoint(src, build_detector, config, overrides, classes, loaded, ema)
    save_model(out, original.model, original.cfg, original.classes, epoch=original.epoch, step=original.iter,
               source={"path": str(src), "format": f"original-{original.kind}", "dropped": original.dropped})
    return {
        "kind": original.kind, "config": original.cfg, "classes": original.classes, "epoch": original.epoch,
        "iter": original.iter, "num_parameters": sum(p.numel() for p in original.model.parameters()),
        "dropped": original.dropped,
    }


def convert_weights_file(src: str | Path, out: str | Path, *, arch: str | None = None,
                         window: Sequence[int] | None = None, config: str | Path | None = None,
                         overrides: Sequence[str] = (), classes: str | Path | None = None,
                         ema: bool = True) -> tuple[str, dict[str, Any]]:
    """What ``tallformer convert-weights`` does: read `src` once and recognise it.

    An original detector checkpoint -> `convert_original_checkpoint` (`config`,
    `overrides`, `classes`, `ema`); anything else (a Video Swin release, a torchvision or
    tallformer state dict) -> `tallformer.models.weights.convert_checkpoint` (`arch`,
    `window`). Returns (the original's kind, `tallformer.models.original_checkpoints.OriginalKind`,
    or "backbone"; that function's result). Options of the other kind are an error naming them.
    """
    from tallformer.models.weights import convert_checkpoint

    obj = read_checkpoint(src)
    sibling = sibling_error(Path(src), obj)
    if sibling is not None:
        raise sibling
    kind = original_kind(obj)
    if kind is not None:
        if arch is not None or window is not None:
            raise WeightsError(f"{src}: an original {kind} detector checkpoint; --arch/--window are for "
                               "backbone files (set the architecture with --config or overrides, e.g. "
                               "model.backbone.arch=swin_t)")
        return kind, convert_original_checkpoint(src, out, config, overrides, classes, loaded=obj, ema=ema)
    extra = [name for name, given in (("--config", config), ("KEY=VALUE overrides", list(overrides)),
                                      ("--classes", classes), ("--no-ema", not ema)) if given]
    if extra:
        raise WeightsError(f"{src}: not a detector checkpoint of the original release, so "
                           f"{', '.join(extra)} do not apply (they are for epoch_N_weights.pth / "
                           "checkpoint-N.ckpt / epoch_NNN.pth.tar); drop them to convert backbone weights")
    return "backbone", convert_checkpoint(src, out, arch, window, loaded=obj)
