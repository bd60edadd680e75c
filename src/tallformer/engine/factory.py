"""The factory: one table from ``model.kind`` to its detector family, and `build_detector`.

Adding a family is one line here (its `tallformer.engine.family.Family`), its modules
(the network in ``tallformer/models/``, the engine side in ``tallformer/engine/families/``)
and a config; docs/adding-a-family.md lists what it provides.

Imports neither torch nor the families' networks (they are built on demand), so the
command line reads the families' test options without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tallformer.config import ConfigError
from tallformer.engine.families.actionformer import ActionFormerFamily
from tallformer.engine.families.afsd import AfsdFamily
from tallformer.engine.families.anchor import AnchorFamily
from tallformer.engine.family import Family

if TYPE_CHECKING:
    from tallformer.config import Config
    from tallformer.models.protocol import DetectorModel

__all__ = ["FAMILIES", "build_detector", "family_for", "parameter_counts"]

FAMILIES: dict[str, Family] = {
    "anchor": AnchorFamily(),  # TALLFormer's THUMOS14 detector: sliding windows, anchor head
    "afsd": AfsdFamily(),  # the ActivityNet detector: one pass, video-level labels
    "actionformer": ActionFormerFamily(),  # ActionFormer's network: one pass over the whole video
}


def family_for(cfg: Config) -> Family:
    """The family of ``cfg.model.kind`` (a `ConfigError` naming the known kinds otherwise)."""
    try:
        return FAMILIES[cfg.model.kind]
    except KeyError:
        raise ConfigError(f"model.kind={cfg.model.kind!r} is not a detector family; known: "
                          f"{', '.join(FAMILIES)}") from None


def build_detector(cfg: Config) -> DetectorModel:
    """The detector of `cfg`: its family's (``model.kind``) network, built from `cfg.model`
    (and `cfg.data.num_frames`, `cfg.test`); no weights loaded (see
    `tallformer.models.load_backbone_weights`, `tallformer.load_model`).

    Works under ``with torch.device("meta"):`` (parameter counting). With
    ``model.sync_bn`` the BatchNorm layers of a family that has them become SyncBatchNorm
    only when a ``torch.distributed`` process group exists: build after
    ``init_process_group`` (the training engine does).

    Example::

        >>> import tallformer
        >>> model = tallformer.build_detector(tallformer.load_config("demo"))
        >>> type(model).__name__, model.num_classes, model.backbone.num_features
        ('TALLFormer', 4, 192)
    """
    return family_for(cfg).build(cfg)


def parameter_counts(cfg: Config) -> dict[str, Any]:
    """`tallformer.models.info.count_parameters` of the detector of `cfg`, built on the
    meta device (no memory, no weights read, so Swin-B is instant)."""
    import torch

    from tallformer.models.info import count_parameters

    with torch.device("meta"):
        model = build_detector(cfg)
    return count_parameters(model)
