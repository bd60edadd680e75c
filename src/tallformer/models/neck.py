"""The TALLFormer neck: SRM -> TCM -> TDM -> FPN (original: vedatad/models/necks/srm_vswin.py,
tdm.py, fpn.py; vedatad/models/modules/swin_1d.py).

Paper configuration (Swin-B, 480-frame windows)::

    backbone features [B, 1024, 240]
      SRM  two stride-2 temporal convs           -> [B, 512, 60]
      TCM  3 pre-norm transformer layers          -> [B, 512, 60]
      TDM  sinusoid + 4 local-attention stages    -> [B, 512, 60|30|15|8|4]
      FPN  lateral + top-down + 3-tap output conv -> [B, 256, 60|30|15|8|4]

Every size is a constructor argument (`Neck.from_config` fills them from `NeckConfig`), so
the tiny CPU config uses the same code.

The ActivityNet (AFSD) neck shares SRM, TCM and FPN and differs by constructor arguments
(original: AFSD/anet_video_cls/configs/membank/1.0.0.py:41-79)::

    backbone features [B, 1024, 384]
      SRM  the same                                -> [B, 512, 96]
      TCM  the same, 96 tokens                     -> [B, 512, 96]
      TDM  `ConvTDM`: input + 5 x (conv k3 s2, GN, ReLU) -> [B, 512, 96|48|24|12|6|3]
      FPN  GroupNorm(32) instead of BatchNorm, 512 channels

    Neck(channels=512, max_len=96, tdm_kind="conv", tdm_kernels=(3,) * 5, norm="gn",
         fpn_channels=512)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

if TYPE_CHECKING:
    from tallformer.config import NeckConfig

__all__ = [
    "FPN",
    "SRM",
    "TCM",
    "TDM",
    "ConvTDM",
    "Neck",
    "RelPosAttention",
    "TCMLayer",
    "convert_sync_batchnorm",
    "srm_output_length",
]


def srm_output_length(length: int) -> int:
    """Temporal length after the SRM's two k3/s2/p1 convs: ceil(ceil(T/2)/2)."""
    for _ in range(2):
        length = (length + 2 - 3) // 2 + 1
    return length


class SRM(nn.Module):
    """Short-term feature reduction (original: vedatad/models/necks/srm_vswin.py:12-76).

    Conv1d(C_in -> C, k3, s2, p1, bias) -> ReLU -> Conv1d(C -> C, k3, s2, p1, bias); no norm,
    PyTorch default init. `[B, C_in, T] -> [B, C, ceil(ceil(T/2)/2)]`. A 5-D input
    `[B, C_in, T, H, W]` is first averaged over space.
    """

    def __init__(self, in_channels: int = 1024, out_channels: int = 512) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, out_channels, 3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(out_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5:
            x = x.mean(dim=(3, 4))
        return self.conv2(F.relu(self.conv1(x)))


class RelPosAttention(nn.Module):
    """Global multi-head self-attention with a learned relative position bias
    (original: vedatad/models/modules/swin_1d.py:40-141).

    logit(h, i, j) = q_i . k_j * d_head^-0.5 + P[i - j + L - 1, h], P of shape [2L-1, heads],
    trunc-normal std 0.02 (cut at +-2) at init. Works for any T <= L. `[B, T, C] -> [B, T, C]`.
    """

    def __init__(self, dim: int, num_heads: int, max_len: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"TCM: channels {dim} are not divisible by heads {num_heads} "
                             "(set model.neck.tcm_heads to a divisor of model.neck.srm_channels)")
        self.num_heads = num_heads
        self.max_len = max_len
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.empty(2 * max_len - 1, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02, a=-2.0, b=2.0)

    def position_bias(self, length: int) -> Tensor:
        """The bias `[heads, T, T]` for T = `length` tokens."""
        if length > self.max_len:
            raise ValueError(
                f"TCM: {length} tokens but the relative position table covers at most "
                f"{self.max_len}; windows must have at most data.num_frames frames (pad shorter "
                "windows, never longer)"
            )
        pos = torch.arange(length, device=self.relative_position_bias_table.device)
        index = pos[:, None] - pos[None, :] + self.max_len - 1  # [T, T]
        return self.relative_position_bias_table[index].permute(2, 0, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, heads, T, d]
        bias = self.position_bias(t).to(q.dtype)[None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


class TCMLayer(nn.Module):
    """One pre-norm block (original: vedatad/models/modules/swin_1d.py:144-206):
    x += DropPath(Attn(LN(x))); x += DropPath(MLP(LN(x))).

    MLP C -> 4C -> C with exact GELU; drop path per sample (`[B, T, C] -> [B, T, C]`).
    """

    def __init__(self, dim: int, num_heads: int, max_len: int, drop_path: float = 0.1,
                 mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = RelPosAttention(dim, num_heads, max_len)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)
        )
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TCM(nn.Module):
    """Temporal context module: stacked `TCMLayer`s (original:
    vedatad/models/necks/srm_vswin.py:167-195), `[B, C, T] -> [B, C, T]`.

    The paper uses 3 layers, 16 heads, drop path 0.1 in every layer (constant, not a ramp)
    and max_len L = num_frames // 8 = 60 tokens. Layers are initialised independently
    (ours, the standard; the original deep-copies one layer, swin_1d.py:224-226, so all
    start identical). No final norm.
    """

    def __init__(self, dim: int = 512, num_layers: int = 3, num_heads: int = 16,
                 max_len: int = 60, drop_path: float = 0.1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TCMLayer(dim, num_heads, max_len, drop_path) for _ in range(num_layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x.transpose(1, 2)
        for layer in self.layers:
            x = layer(x)
        return x.transpose(1, 2)


def sinusoid_table(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """pe[t, 2m] = sin(t / 10000^(2m/dim)), pe[t, 2m+1] = cos(same): `[T, dim]` float32."""
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device)
                    * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe


class TDMStage(nn.Module):
    """Halve the length, then one post-norm local-attention layer (original:
    vedatad/models/necks/tdm.py:189-247).

    Pad an odd length with one zero step at the end, concatenate neighbour pairs along
    channels, Linear(2C -> C, no bias) + LayerNorm, then `nn.TransformerEncoderLayer`
    (post-norm, FFN 4C with ReLU, dropout 0.1 hard-coded as the original) whose attention
    only sees |i - j| <= kernel // 2. `[B, T, C] -> [B, ceil(T/2), C]`.
    """

    def __init__(self, dim: int, num_heads: int, kernel_size: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.half_width = kernel_size // 2
        self.reduction = nn.Linear(2 * dim, dim, bias=False)
        self.norm = nn.LayerNorm(dim)
        self.layer = nn.TransformerEncoderLayer(
            dim, num_heads, dim_feedforward=4 * dim, dropout=dropout, activation="relu",
            batch_first=True, norm_first=False,
        )

    def band_mask(self, length: int, device: torch.device) -> Tensor:
        """Bool `[T, T]`, True where attention is NOT allowed (|i - j| > half width)."""
        pos = torch.arange(length, device=device)
        return (pos[:, None] - pos[None, :]).abs() > self.half_width

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        if t % 2:
            x = F.pad(x, (0, 0, 0, 1))
            t += 1
        x = self.norm(self.reduction(x.reshape(b, t // 2, 2 * c)))
        return self.layer(x, src_mask=self.band_mask(t // 2, x.device))


class TDM(nn.Module):
    """Temporal downsampling module (original: vedatad/models/necks/tdm.py:151-291):
    `[B, C, T] -> [[B, C, T_l]]` for 1 + stages levels.

    Level 0 = Dropout(x + pe / sqrt(C)) (sinusoidal encoding, `tdm_dropout` = 0.1); level l is
    stage l applied to level l-1. Paper kernels 7, 7, 5, 5 (half-widths 3, 3, 2, 2), 8 heads:
    lengths 60 -> 30 -> 15 -> 8 -> 4.
    """

    def __init__(self, dim: int = 512, num_heads: int = 8,
                 kernel_sizes: tuple[int, ...] | list[int] = (7, 7, 5, 5),
                 dropout: float = 0.1, layer_dropout: float = 0.1) -> None:
        super().__init__()
        self.dim = dim
        self.pe_dropout = nn.Dropout(dropout)
        self.stages = nn.ModuleList(
            TDMStage(dim, num_heads, k, layer_dropout) for k in kernel_sizes
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        x = x.transpose(1, 2)  # [B, T, C]
        pe = sinusoid_table(x.shape[1], self.dim, x.device).to(x.dtype)
        x = self.pe_dropout(x + pe * (1.0 / math.sqrt(self.dim)))
        levels = [x]
        for stage in self.stages:
            x = stage(x)
            levels.append(x)
        return [level.transpose(1, 2) for level in levels]


NormKind = Literal["bn", "gn"]


def norm_layer(kind: NormKind, channels: int, num_groups: int = 32) -> nn.Module:
    """`BatchNorm1d(channels)` ("bn", THUMOS14) or `GroupNorm(num_groups, channels)` ("gn",
    ActivityNet: original AFSD/anet_video_cls/configs/membank/1.0.0.py:41-79)."""
    if kind == "bn":
        return nn.BatchNorm1d(channels)
    if kind == "gn":
        if channels % num_groups:
            raise ValueError(f"GroupNorm: {channels} channels are not divisible by {num_groups} "
                             "groups (set the channels to a multiple of model.afsd.norm_groups)")
        return nn.GroupNorm(num_groups, channels)
    raise ValueError(f"unknown norm {kind!r}; choose bn or gn")


class ConvTDM(nn.Module):
    """Convolutional temporal downsampling (original: vedatad/models/necks/tdm.py:16-148, the
    ActivityNet neck): `[B, C, T] -> [[B, C, T_l]]` for 1 + stages levels.

    Level 0 is the input unchanged; stage l is Conv1d(C -> C, k, stride 2, padding k // 2,
    no bias) -> GroupNorm -> ReLU on level l-1 (ConvModule order conv -> norm -> act, the
    bias dropped before a norm: vedacore/modules/bricks/conv_module.py:73,93-94). Paper:
    5 stages of k3, lengths 96 -> 48 -> 24 -> 12 -> 6 -> 3.
    """

    def __init__(self, dim: int = 512, kernel_sizes: tuple[int, ...] | list[int] = (3,) * 5,
                 num_groups: int = 32) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv1d(dim, dim, k, stride=2, padding=k // 2, bias=False),
                          norm_layer("gn", dim, num_groups), nn.ReLU(inplace=True))
            for k in kernel_sizes
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        levels = [x]
        for stage in self.stages:
            x = stage(x)
            levels.append(x)
        return levels


class FPN(nn.Module):
    """Feature pyramid (original: vedatad/models/necks/fpn.py:71-228):
    `[[B, C_in, T_l]] -> [[B, C_out, T_l]]`.

    lateral_l = N(Conv1d k1, no bias); from the coarsest level down, lateral_{l-1} +=
    nearest-upsample(lateral_l) to its length; out_l = N(Conv1d k3 p1, no bias). No
    activation. N is BatchNorm (`norm="bn"`, THUMOS14) or GroupNorm(`num_groups`)
    (`norm="gn"`, ActivityNet). Convs Xavier-uniform, norms 1/0.
    """

    def __init__(self, in_channels: int = 512, out_channels: int = 256, num_levels: int = 5,
                 norm: NormKind = "bn", num_groups: int = 32) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv1d(in_channels, out_channels, 1, bias=False),
                          norm_layer(norm, out_channels, num_groups))
            for _ in range(num_levels)
        )
        self.output = nn.ModuleList(
            nn.Sequential(nn.Conv1d(out_channels, out_channels, 3, padding=1, bias=False),
                          norm_layer(norm, out_channels, num_groups))
            for _ in range(num_levels)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        if len(feats) != len(self.lateral):
            raise ValueError(f"FPN: expected {len(self.lateral)} levels, got {len(feats)}")
        lat = [conv(f) for conv, f in zip(self.lateral, feats, strict=True)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-1], mode="nearest")
        return [conv(x) for conv, x in zip(self.output, lat, strict=True)]


class Neck(nn.Module):
    """SRM -> TCM -> TDM -> FPN: `[B, C_backbone, T] -> [[B, fpn_channels, T_l]]`, 1 + len(kernels) levels.

    `max_len` is the number of TCM tokens of a full window (paper: 480 frames / 8 = 60).
    `tdm_kind` "attention" is THUMOS14's `TDM` (`tdm_heads`, `tdm_dropout` used), "conv"
    ActivityNet's `ConvTDM` (one stage per kernel); `norm` is the FPN's norm ("bn" or "gn"
    with `num_groups`).
    """

    def __init__(self, in_channels: int = 1024, channels: int = 512, max_len: int = 60,
                 tcm_layers: int = 3, tcm_heads: int = 16, tcm_drop_path: float = 0.1,
                 tdm_heads: int = 8, tdm_kernels: tuple[int, ...] | list[int] = (7, 7, 5, 5),
                 tdm_dropout: float = 0.1, fpn_channels: int = 256,
                 tdm_kind: Literal["attention", "conv"] = "attention", norm: NormKind = "bn",
                 num_groups: int = 32) -> None:
        super().__init__()
        self.srm = SRM(in_channels, channels)
        self.tcm = TCM(channels, tcm_layers, tcm_heads, max_len, tcm_drop_path)
        self.tdm: TDM | ConvTDM
        if tdm_kind == "attention":
            self.tdm = TDM(channels, tdm_heads, tuple(tdm_kernels), tdm_dropout)
        elif tdm_kind == "conv":
            self.tdm = ConvTDM(channels, tuple(tdm_kernels), num_groups)
        else:
            raise ValueError(f"unknown TDM kind {tdm_kind!r}; choose attention or conv")
        self.fpn = FPN(channels, fpn_channels, len(tdm_kernels) + 1, norm, num_groups)

    @classmethod
    def from_config(cls, cfg: NeckConfig, in_channels: int, max_len: int,
                    tdm_kind: Literal["attention", "conv"] = "attention", norm: NormKind = "bn",
                    num_groups: int = 32) -> Neck:
        """The neck of `model.neck` on `in_channels` backbone channels, with `max_len` TCM
        tokens per window (num_frames // 8 in the paper: 480 -> 60). The THUMOS14 neck by
        default; the ActivityNet one with `tdm_kind="conv", norm="gn"`."""
        return cls(
            in_channels=in_channels, channels=cfg.srm_channels, max_len=max_len,
            tcm_layers=cfg.tcm_layers, tcm_heads=cfg.tcm_heads, tcm_drop_path=cfg.tcm_drop_path,
            tdm_heads=cfg.tdm_heads, tdm_kernels=list(cfg.tdm_kernels),
            tdm_dropout=cfg.tdm_dropout, fpn_channels=cfg.fpn_channels,
            tdm_kind=tdm_kind, norm=norm, num_groups=num_groups,
        )

    @property
    def num_levels(self) -> int:
        return len(self.fpn.lateral)

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.fpn(self.tdm(self.tcm(self.srm(x))))


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def convert_sync_batchnorm(module: ModuleT) -> ModuleT:
    """Replace every BatchNorm inside `module` with SyncBatchNorm, in place (for DDP when
    `model.sync_bn`; the original uses SyncBN in FPN and head, fpn.py:71-228). Returns
    `module` itself, its children replaced (for the Neck and the head, which are no
    BatchNorm themselves)."""
    return cast(ModuleT, nn.SyncBatchNorm.convert_sync_batchnorm(module))
