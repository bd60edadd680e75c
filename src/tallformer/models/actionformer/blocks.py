"""ActionFormer's small building blocks: masked 1-D conv, channel LayerNorm, Scale, drop
path with a learned per-channel scale, and the sinusoid position table (original:
libs/modeling/blocks.py).

Every tensor is `[B, C, T]` with a bool mask `[B, 1, T]` (True = a real time step). A
masked op multiplies its output by its output mask, so padded steps hold 0 after it; a
LayerNorm after it turns those zeros into its bias, which the next conv reads at the last
valid step (the release's padding semantics, reproduced as is).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from tallformer.models.errors import ModelError

__all__ = [
    "AffineDropPath",
    "ChannelLayerNorm",
    "MaskedConv1D",
    "Scale",
    "drop_path",
    "sinusoid_encoding",
]


class MaskedConv1D(nn.Module):
    """Conv1d with "same" zero padding (`kernel // 2`), output multiplied by the mask
    (original: libs/modeling/blocks.py:10-60).

    With stride s the output mask is the input mask at steps 0, s, 2s, ... (the release's
    nearest-neighbour resampling, exact when T is a multiple of s, which it asserts), so a
    level keeps ceil(T_valid / s) valid steps. A bias starts at 0.

    `forward(x [B, C_in, T], mask bool [B, 1, T]) -> (y [B, C_out, T // s], mask [B, 1, T // s])`.

    Example:
        >>> conv = MaskedConv1D(4, 8, 3)
        >>> y, m = conv(torch.randn(2, 4, 16), torch.ones(2, 1, 16, dtype=torch.bool))
        >>> tuple(y.shape), tuple(m.shape)
        ((2, 8, 16), (2, 1, 16))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ModelError(f"MaskedConv1D: kernel size {kernel_size} must be odd")
        self.stride = stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                              groups=groups, bias=bias)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        t = x.shape[-1]
        if t % self.stride:
            raise ModelError(f"MaskedConv1D: length {t} is not a multiple of the stride {self.stride}; "
                             "pad the input to a multiple of the model's max_div_factor")
        out_mask = mask[:, :, :: self.stride] if self.stride > 1 else mask
        out = self.conv(x)
        return out * out_mask.to(out.dtype), out_mask


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of `[B, C, T]` at each step: biased variance, eps 1e-5,
    affine weight and bias `[1, C, 1]` (original: libs/modeling/blocks.py:63-105).

    Computed as the release writes it (mean, centred mean square, divide by the square
    root); half-precision inputs are normalised in float32 and cast back.

    Example:
        >>> ln = ChannelLayerNorm(8)
        >>> tuple(ln(torch.randn(2, 8, 5)).shape)
        (2, 8, 5)
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, num_channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, num_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.num_channels:
            raise ModelError(f"ChannelLayerNorm({self.num_channels}): expected [B, {self.num_channels}, T], "
                             f"got {list(x.shape)}")
        dtype = x.dtype
        if dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        mu = x.mean(dim=1, keepdim=True)
        res = x - mu
        sigma = (res ** 2).mean(dim=1, keepdim=True)
        out = res / torch.sqrt(sigma + self.eps)
        out = out * self.weight.to(out.dtype)
        out = out + self.bias.to(out.dtype)
        return out.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


class Scale(nn.Module):
    """A learned scalar (0-dim, initialised to 1.0) multiplying its input (original:
    libs/modeling/blocks.py:789-807).

    Example:
        >>> Scale()(torch.tensor(2.0)).item()
        2.0
    """

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(init_value, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def drop_path(x: Tensor, drop_prob: float = 0.0, training: bool = False) -> Tensor:
    """Stochastic depth per sample: in training, each sample's `x` is zeroed with
    probability `drop_prob`, the others divided by the keep probability (original:
    libs/modeling/blocks.py:812-825). The identity otherwise.

    Example:
        >>> x = torch.ones(2, 3, 4)
        >>> bool(torch.equal(drop_path(x, 0.5, training=False), x))
        True
    """
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = (keep_prob + torch.rand(shape, dtype=x.dtype, device=x.device)).floor_()
    return x.div(keep_prob) * mask


class AffineDropPath(nn.Module):
    """A learned per-channel scale `[1, C, 1]` (initialised to 1e-4) times the branch, then
    `drop_path` (original: libs/modeling/blocks.py:839-854). The scale applies at inference
    too; only the drop is training-only.

    Example:
        >>> dp = AffineDropPath(4, drop_prob=0.1).eval()
        >>> round(float(dp(torch.ones(1, 4, 2)).detach().max()), 6)
        0.0001
    """

    def __init__(self, num_dim: int, drop_prob: float = 0.0, init_scale_value: float = 1e-4) -> None:
        super().__init__()
        self.scale = nn.Parameter(init_scale_value * torch.ones((1, num_dim, 1)))
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(self.scale * x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def sinusoid_encoding(n_position: int, d_hid: int) -> Tensor:
    """The sinusoid table `[1, d_hid, n_position]` (float32, computed in float64): channel
    2i is sin(t / 10000^(2i / d)), channel 2i+1 is cos of the same angle (original:
    libs/modeling/blocks.py:109-120).

    Example:
        >>> tuple(sinusoid_encoding(10, 6).shape)
        (1, 6, 10)
    """
    pos = np.arange(n_position, dtype=np.float64)[:, None]
    j = np.arange(d_hid)
    angles = pos / np.power(10000, 2 * (j // 2) / d_hid)[None, :]
    table = angles.copy()
    table[:, 0::2] = np.sin(angles[:, 0::2])
    table[:, 1::2] = np.cos(angles[:, 1::2])
    return torch.from_numpy(table.astype(np.float32)).t().unsqueeze(0).contiguous()

