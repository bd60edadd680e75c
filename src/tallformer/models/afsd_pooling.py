"""AFSD priors, proposal boundary regions and boundary max pooling, in plain tensor ops.

Boundary max pooling (original: AFSD/prop_pooling/boundary_max_pooling_kernel.cu:17-46, a
CUDA kernel) takes, for every candidate segment, the maximum of a feature over the frames
of its start region (first half of the channels) and of its end region (second half).
Here it is a gather over each candidate's own frames followed by a max, so autograd gives
the max-pool gradient (to the first arg-max, as the kernel's forward picks it; the
original's backward is broken for the frame-level call, see `boundary_max_pool`).

Memory: the gathered tensor is `[B, N, W, C/2]` per half with W the widest region of the
call (plus one), not `[B, C/2, N, T]` as a mask over every frame would be. At the paper's
size the frame-level call of level 0 has N = 96 candidates with regions of at most ~24
frames (coarse distances are capped at 4 strides), so W <= ~25 instead of T = 768.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["boundary_max_pool", "make_priors", "proposal_regions"]


def make_priors(lengths: list[int], device: torch.device | None = None) -> Tensor:
    """Anchor points of all levels: `[P, 2]` rows (x, level), x = (c + 0.5) / t_l for cell c of
    level l of length t_l (original: AFSD/anet_video_cls/BDNet.py:301-306; 96, 48, 24, 12, 6, 3
    at the paper's size: P = 189). x is computed in float64, stored float32, as the
    original's Python floats."""
    rows = []
    for level, t in enumerate(lengths):
        x = (torch.arange(t, dtype=torch.float64, device=device) + 0.5) / t
        rows.append(torch.stack([x, torch.full_like(x, float(level))], dim=1))
    if not rows:
        return torch.zeros(0, 2, device=device)
    return torch.cat(rows).float()


@torch.no_grad()
def proposal_regions(loc: Tensor, x: Tensor, num_frames: int) -> tuple[Tensor, Tensor]:
    """Start / end regions of the coarse proposals of one level (original:
    AFSD/anet_video_cls/BDNet.py:355-399), without gradient.

    Args:
        loc: `[B, t, 2]` coarse distances (left, right) in frames.
        x: `[t]` the level's prior centres (fractions of the clip).
        num_frames: clip length T in frames (768).
    Returns:
        (level regions, frame regions), each `[B, t, 4]` = rounded (start - out, start + in,
        end - in, end + out), in level cells and in frames. With length l (cells: a_l + a_r;
        frames: E - S + 1), in = max(l / 4, 1), out = max(l / 10, 1); rounding is
        half-to-even (`torch.round`).
    """
    loc = loc.float()
    t = loc.shape[1]
    seg = loc / num_frames * t  # distances in level cells
    prior = x.to(loc.dtype)[None, :, None].expand(loc.shape[0], t, 1)
    cell = torch.round(prior * t - 0.5)
    length = seg[..., :1] + seg[..., 1:]
    inner = torch.clamp(length / 4.0, min=1.0)
    outer = torch.clamp(length / 10.0, min=1.0)
    left = cell - seg[..., :1]
    right = cell + seg[..., 1:]
    level = torch.cat([torch.round(left - outer), torch.round(left + inner),
                       torch.round(right - inner), torch.round(right + outer)], dim=-1)
    start = prior * num_frames - loc[..., :1]
    end = prior * num_frames + loc[..., 1:]
    length = end - start + 1.0
    inner = torch.clamp(length / 4.0, min=1.0)
    outer = torch.clamp(length / 10.0, min=1.0)
    frame = torch.cat([torch.round(start - outer), torch.round(start + inner),
                       torch.round(end - inner), torch.round(end + outer)], dim=-1)
    return level, frame


def _pool_half(x: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Max of `x [B, C, T]` over frames [lo, hi] (inclusive, `[B, N]` each) -> `[B, C, N]`."""
    b, _, _ = x.shape
    n = lo.shape[1]
    if x.device.type == "meta" or n == 0:
        width = 1  # shapes only (meta) or nothing to pool
    else:
        width = int((hi - lo).max()) + 1
    pos = lo[..., None] + torch.arange(width, device=lo.device)  # [B, N, W]
    pos = torch.minimum(pos, hi[..., None])  # past the end: repeat the last frame
    batch = torch.arange(b, device=lo.device)[:, None]
    xt = x.transpose(1, 2)  # [B, T, C]
    gathered = xt[batch, pos.reshape(b, n * width)]  # [B, N*W, C]
    gathered = gathered.reshape(b, n, width, -1)
    # first maximal index on ties, i.e. the lowest frame, as the kernel's strict `>`
    return gathered.max(dim=2).values.transpose(1, 2)


def boundary_max_pool(x: Tensor, segments: Tensor) -> Tensor:
    """Boundary max pooling: `x [B, C, T]`, `segments [B, N, 4]` -> `[B, C, N]`.

    Channel c < C/2 pools frames [s0, s1], c >= C/2 frames [s2, s3] (inclusive), each bound
    truncated to an integer and clamped to [0, T - 1]; an empty region (hi < lo) gives
    x[lo] (original: AFSD/prop_pooling/boundary_max_pooling_kernel.cu:17-46). `segments`
    carries no gradient. The gradient of an output goes to its arg-max frame (the first one
    on ties). The original's backward reads the time length from the output (N) instead
    of the input (T), so its frame-level gradients land in the wrong cells
    (boundary_max_pooling_kernel.cu:119-122); this one is the correct max-pool gradient.
    """
    if x.dim() != 3 or segments.dim() != 3 or segments.shape[-1] != 4:
        raise ValueError(f"boundary_max_pool: expected x [B, C, T] and segments [B, N, 4], "
                         f"got {list(x.shape)} and {list(segments.shape)}")
    b, c, t = x.shape
    if c % 2 or segments.shape[0] != b:
        raise ValueError(f"boundary_max_pool: x needs an even channel count and one segment "
                         f"set per sample, got {list(x.shape)} and {list(segments.shape)}")
    seg = segments.detach().trunc().long().clamp(0, t - 1)
    lo_s, hi_s, lo_e, hi_e = seg.unbind(-1)
    half = c // 2
    start = _pool_half(x[:, :half], lo_s, torch.maximum(hi_s, lo_s))
    end = _pool_half(x[:, half:], lo_e, torch.maximum(hi_e, lo_e))
    return torch.cat([start, end], dim=1)
