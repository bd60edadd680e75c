"""Video Swin backbone (torchvision `SwinTransformer3d`) run chunk-wise, as TALLFormer does.

The network is torchvision's `SwinTransformer3d`, built directly so that every size and the
stochastic depth rate can be set (original: vedatad/models/backbones/vswin.py:613-635). Only
its feature part is kept
(`patch_embed`, `pos_drop`, `features`, `norm`; no classifier), so the state dict of a
`VideoSwinBackbone` is torchvision's swin3d state dict without `head.*`.

A clip `[B, 3, T, H, W]` is zero-padded at the end to a multiple of `chunk_size`, each chunk
goes through the network on its own (chunks are folded into the batch; no attention across
chunks), the temporal steps that come from the padding are dropped, and the map after the
final LayerNorm is averaged over space: `[B, C, ceil(T / 2)]` (original:
vedatad/models/backbones/chunk_model.py:88-124). `forward_chunks` takes chunks that are already split, for the memory bank.

    backbone = build_backbone("swin_b")                 # C = 1024, frozen_stages 2
    feats = backbone(clip)                              # [B, 1024, ceil(T/2)]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.models.video.swin_transformer import SwinTransformer3d

from tallformer.config import ConfigError
from tallformer.models.errors import ModelError

if TYPE_CHECKING:
    from tallformer.config import BackboneConfig

__all__ = [
    "PRESETS",
    "SwinArch",
    "VideoSwinBackbone",
    "build_backbone",
    "build_backbone_from_config",
    "resolve_arch",
]


@dataclass(frozen=True)
class SwinArch:
    """Everything that fixes a Video Swin's shape and training behaviour.

    `depths` and `num_heads` have one entry per stage; stage `i` has `embed_dim * 2**i`
    channels; `window_size` and `patch_size` are (T, H, W).
    """

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: tuple[int, int, int] = (8, 7, 7)
    patch_size: tuple[int, int, int] = (2, 4, 4)
    drop_path_rate: float = 0.2
    frozen_stages: int = 2
    use_checkpoint: bool = False

    @property
    def num_features(self) -> int:
        """Channels of the output (last stage): embed_dim * 2**(stages - 1)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    def shape_dict(self) -> dict[str, Any]:
        """The five shape fields as JSON-friendly lists (what a converted file implies)."""
        d = asdict(self)
        return {k: (list(d[k]) if isinstance(d[k], tuple) else d[k])
                for k in ("embed_dim", "depths", "num_heads", "window_size", "patch_size")}

    def validate(self, where: str = "backbone arch") -> None:
        """Raise `ModelError` naming the field when the numbers cannot build a network."""
        if self.embed_dim < 1:
            raise ModelError(f"{where}: embed_dim must be >= 1, got {self.embed_dim}")
        if not self.depths or any(d < 1 for d in self.depths):
            raise ModelError(f"{where}: depths must be a non-empty list of positive ints, got {list(self.depths)}")
        if len(self.num_heads) != len(self.depths):
            raise ModelError(
                f"{where}: num_heads {list(self.num_heads)} must have one entry per stage "
                f"(depths {list(self.depths)} has {len(self.depths)})"
            )
        for i, h in enumerate(self.num_heads):
            dim = self.embed_dim * 2**i
            if h < 1 or dim % h:
                raise ModelError(
                    f"{where}: num_heads[{i}] = {h} must divide the stage's {dim} channels"
                )
        for name in ("window_size", "patch_size"):
            v = getattr(self, name)
            if len(v) != 3 or any(int(x) < 1 for x in v):
                raise ModelError(f"{where}: {name} must be 3 positive ints (T, H, W), got {list(v)}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ModelError(f"{where}: drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if not -1 <= self.frozen_stages <= len(self.depths):
            raise ModelError(
                f"{where}: frozen_stages must be in [-1, {len(self.depths)}], got {self.frozen_stages}"
            )


# Presets. Swin-T/S/B shapes: the official Video Swin's (original:
# vedatad/models/backbones/vswin.py:613-635); Swin-B drop_path 0.2, frozen_stages 2,
# checkpointing on: configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:87-101; Swin-T
# drop_path 0.1, frozen_stages 2, no checkpointing: tools/data/extract_features.py:23-36.
# "tiny" is ours, a CPU variant for tests and the demo (64x64 input; 1,307,322
# parameters, C = 192).
PRESETS: dict[str, SwinArch] = {
    "swin_t": SwinArch(96, (2, 2, 6, 2), (3, 6, 12, 24), drop_path_rate=0.1),
    "swin_s": SwinArch(96, (2, 2, 18, 2), (3, 6, 12, 24), drop_path_rate=0.2),
    "swin_b": SwinArch(128, (2, 2, 18, 2), (4, 8, 16, 32), drop_path_rate=0.2, use_checkpoint=True),
    "tiny": SwinArch(24, (2, 2, 2, 2), (1, 2, 4, 8), window_size=(8, 4, 4), drop_path_rate=0.1),
}

_ARCH_KEYS = ("embed_dim", "depths", "num_heads", "window_size", "patch_size")
_OPTIONAL_KEYS = ("drop_path_rate", "frozen_stages", "use_checkpoint")


def resolve_arch(arch: str | Mapping[str, Any] | SwinArch, **overrides: Any) -> SwinArch:
    """A preset name, a dict of the fields, or a `SwinArch`, with `None`-free overrides applied.

    A dict needs `embed_dim`, `depths`, `num_heads`, `window_size`, `patch_size` and may
    give `drop_path_rate`, `frozen_stages`, `use_checkpoint` (defaults 0.2, 2, False).
    """
    if isinstance(arch, SwinArch):
        base = arch
    elif isinstance(arch, str):
        if arch not in PRESETS:
            raise ModelError(
                f"unknown backbone arch {arch!r}; choose one of {', '.join(sorted(PRESETS))} "
                f"or pass a dict with {', '.join(_ARCH_KEYS)}"
            )
        base = PRESETS[arch]
    elif isinstance(arch, Mapping):
        unknown = sorted(set(arch) - set(_ARCH_KEYS) - set(_OPTIONAL_KEYS))
        if unknown:
            raise ModelError(
                f"backbone arch dict: unknown key(s) {unknown}; allowed: "
                f"{', '.join(_ARCH_KEYS + _OPTIONAL_KEYS)}"
            )
        missing = [k for k in _ARCH_KEYS if arch.get(k) is None]
        if missing:
            raise ModelError(f"backbone arch dict: missing key(s) {missing}; all of {list(_ARCH_KEYS)} are needed")
        base = SwinArch(
            embed_dim=int(arch["embed_dim"]),
            depths=tuple(int(x) for x in arch["depths"]),
            num_heads=tuple(int(x) for x in arch["num_heads"]),
            window_size=tuple(int(x) for x in arch["window_size"]),  # type: ignore[arg-type]
            patch_size=tuple(int(x) for x in arch["patch_size"]),  # type: ignore[arg-type]
            **{k: arch[k] for k in _OPTIONAL_KEYS if arch.get(k) is not None},
        )
    else:
        raise TypeError(f"backbone arch must be a preset name, a dict or a SwinArch, got {type(arch).__name__}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    for k in ("depths", "num_heads", "window_size", "patch_size"):
        if k in changes:
            changes[k] = tuple(int(x) for x in changes[k])
    out = replace(base, **changes) if changes else base
    out.validate()
    return out


class VideoSwinBackbone(nn.Module):
    """Video Swin feature extractor: torchvision `SwinTransformer3d` without its head.

    Args:
        arch: the network's shape and training behaviour.
        chunk_size: frames per chunk of the chunk-wise run (32 in the paper, original:
            configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:7-9); `None` runs a clip
            as one piece.

    Attributes:
        num_features: output channels C (768 for Swin-T, 1024 for Swin-B).
        chunk_size: as given.
        temporal_stride: frames per output step (the temporal patch size, 2).
        arch: the `SwinArch` it was built from.

    Submodules `patch_embed`, `pos_drop`, `features`, `norm` are torchvision's own, so
    the state dict keys are torchvision's (`patch_embed.*`, `features.*`, `norm.*`).
    """

    def __init__(self, arch: SwinArch, chunk_size: int | None = 32) -> None:
        super().__init__()
        arch.validate()
        if chunk_size is not None and (chunk_size < 1 or chunk_size % arch.patch_size[0]):
            raise ModelError(
                f"chunk_size {chunk_size} must be a positive multiple of the temporal patch size "
                f"{arch.patch_size[0]} (or None to run clips in one piece)"
            )
        swin = SwinTransformer3d(
            patch_size=list(arch.patch_size),
            embed_dim=arch.embed_dim,
            depths=list(arch.depths),
            num_heads=list(arch.num_heads),
            window_size=list(arch.window_size),
            mlp_ratio=4.0,
            dropout=0.0,
            attention_dropout=0.0,
            stochastic_depth_prob=arch.drop_path_rate,  # linear over blocks (vswin.py:659-661)
            norm_layer=partial(nn.LayerNorm, eps=1e-5),  # eps 1e-5, patch norm on (vswin.py:683-691)
            num_classes=1,
        )
        self.patch_embed = swin.patch_embed
        self.pos_drop = swin.pos_drop
        self.features = swin.features
        self.norm = swin.norm
        del swin  # the classifier head and pooling are not used

        self.arch = arch
        self.chunk_size = chunk_size
        self.num_features = arch.num_features
        self.temporal_stride = arch.patch_size[0]
        self.frozen_stages = arch.frozen_stages
        self.use_checkpoint = arch.use_checkpoint
        self._freeze()

    # ------------------------------------------------------------------ freezing

    def frozen_modules(self) -> list[nn.Module]:
        """Modules kept frozen (original: vedatad/models/backbones/vswin.py:695-707):
        frozen_stages = k >= 0 freezes `patch_embed`; k >= 1 also `features[0 .. 2k-1]`
        (stages 1..k and the patch merging after each: the original's merge belongs to the
        stage before it, vswin.py:678)."""
        k = self.frozen_stages
        if k < 0:
            return []
        mods: list[nn.Module] = [self.patch_embed]
        if k >= 1:
            mods.append(self.pos_drop)
            mods.extend(self.features[i] for i in range(min(2 * k, len(self.features))))
        return mods

    def _freeze(self) -> None:
        for m in self.frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> VideoSwinBackbone:
        """As `nn.Module.train`, but frozen parts stay in eval mode (original: vswin.py:836-839)."""
        super().train(mode)
        if mode:
            for m in self.frozen_modules():
                m.eval()
        return self

    # ------------------------------------------------------------------ forward

    def _run(self, x: Tensor) -> Tensor:
        """`[N, 3, T, H, W]` -> channels-last map after the final norm `[N, T', H', W', C]`."""
        x = self.patch_embed(x)
        x = self.pos_drop(x)
        ckpt = self.use_checkpoint and self.training and torch.is_grad_enabled()
        first_ckpt_stage = max(self.frozen_stages, 0)  # trainable stages only (vswin.py:679)
        for idx, layer in enumerate(self.features):
            if ckpt and idx % 2 == 0 and idx // 2 >= first_ckpt_stage:
                for block in layer:
                    x = checkpoint(block, x, use_reentrant=False)
            else:
                x = layer(x)
        return self.norm(x)

    def _check_input(self, x: Tensor, name: str) -> None:
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(
                f"VideoSwinBackbone.{name}: expected a clip [B, 3, T, H, W], got shape {list(x.shape)}"
            )
        if x.shape[2] == 0:
            raise ValueError(f"VideoSwinBackbone.{name}: the clip has no frames (T = 0)")

    def _run_chunked(self, x: Tensor) -> Tensor:
        """`[B, 3, T, H, W]` -> `[B, T'', h, w, C]`, T'' = ceil(T / temporal_stride)."""
        b, _, t, h, w = x.shape
        if self.chunk_size is None:
            return self._run(x)
        c = self.chunk_size
        pad = (-t) % c
        if pad:
            x = F.pad(x, (0, 0, 0, 0, 0, pad))  # zeros at the end of T (chunk_model.py:88-124)
        n = (t + pad) // c
        x = x.reshape(b, 3, n, c, h, w).transpose(1, 2).reshape(b * n, 3, c, h, w)
        y = self._run(x)  # [B*n, c', h', w', C]
        _, tc, hh, ww, ch = y.shape
        y = y.reshape(b, n * tc, hh, ww, ch)
        drop = pad // self.temporal_stride  # drop pad_d // 2 steps (chunk_model.py:88-124)
        if drop:
            y = y[:, : n * tc - drop]
        return y

    def forward_features(self, x: Tensor) -> Tensor:
        """Unpooled map after the final norm: `[B, 3, T, H, W]` -> `[B, C, ceil(T/2), H', W']`."""
        self._check_input(x, "forward_features")
        return self._run_chunked(x).permute(0, 4, 1, 2, 3)

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features: `[B, 3, T, H, W]` -> `[B, C, ceil(T/2)]` (mean over H', W')."""
        self._check_input(x, "forward")
        return self._run_chunked(x).mean(dim=(2, 3)).transpose(1, 2)

    def forward_chunks(self, chunks: Tensor) -> Tensor:
        """Chunks already split: `[N, 3, chunk, H, W]` -> `[N, C, chunk/2]` (each on its own)."""
        self._check_input(chunks, "forward_chunks")
        return self._run(chunks).mean(dim=(2, 3)).transpose(1, 2)

    def extra_repr(self) -> str:
        a = self.arch
        return (
            f"embed_dim={a.embed_dim}, depths={list(a.depths)}, num_heads={list(a.num_heads)}, "
            f"window_size={list(a.window_size)}, patch_size={list(a.patch_size)}, "
            f"drop_path_rate={a.drop_path_rate}, frozen_stages={a.frozen_stages}, "
            f"use_checkpoint={a.use_checkpoint}, chunk_size={self.chunk_size}"
        )


def build_backbone(
    arch: str | Mapping[str, Any] | SwinArch,
    chunk_size: int | None = 32,
    *,
    drop_path_rate: float | None = None,
    frozen_stages: int | None = None,
    use_checkpoint: bool | None = None,
) -> VideoSwinBackbone:
    """Build a Video Swin backbone.

    Args:
        arch: "swin_t" | "swin_s" | "swin_b" | "tiny", or a dict with `embed_dim`, `depths`,
            `num_heads`, `window_size`, `patch_size` (optional `drop_path_rate`,
            `frozen_stages`, `use_checkpoint`).
        chunk_size: frames per chunk (32 in the paper); None runs clips in one piece.
        drop_path_rate, frozen_stages, use_checkpoint: override the preset when not None.

    Works under `with torch.device("meta"):` for parameter counting without memory.
    """
    resolved = resolve_arch(
        arch, drop_path_rate=drop_path_rate, frozen_stages=frozen_stages, use_checkpoint=use_checkpoint
    )
    return VideoSwinBackbone(resolved, chunk_size=chunk_size)


def build_backbone_from_config(cfg: BackboneConfig) -> VideoSwinBackbone:
    """Build from `model.backbone` of the config: the preset `cfg.arch` with every shape
    field that is set overriding it (`arch: custom` needs all five), plus `drop_path_rate`,
    `frozen_stages`, `use_checkpoint` and `chunk_size`. Does not load `cfg.weights`:
    call `load_backbone_weights(module, cfg.weights)` for that."""
    shape = {k: getattr(cfg, k) for k in _ARCH_KEYS}
    if cfg.arch == "custom":
        missing = [f"model.backbone.{k}" for k, v in shape.items() if v is None]
        if missing:
            raise ConfigError(
                f"model.backbone.arch is 'custom' but {', '.join(missing)} not set; set them or "
                f"pick a preset ({', '.join(sorted(PRESETS))})"
            )
        base: str | dict[str, Any] = dict(shape)
    else:
        base = cfg.arch
    try:
        resolved = resolve_arch(
            base,
            **{k: v for k, v in shape.items() if cfg.arch != "custom"},
            drop_path_rate=cfg.drop_path_rate,
            frozen_stages=cfg.frozen_stages,
            use_checkpoint=cfg.use_checkpoint,
        )
    except ModelError as exc:
        raise ConfigError(f"model.backbone: {exc}") from None
    return VideoSwinBackbone(resolved, chunk_size=cfg.chunk_size)

