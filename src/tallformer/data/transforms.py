"""Clip augmentation on top of ``torchvision.transforms.v2``.

Training follows the original's order (original:
configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py:25-49): random crop, photometric
distortion (p=0.5), rotation within +-45 degrees with reflect borders (p=0.5), horizontal
flip (p=0.5), normalisation. Testing: centre crop and normalisation (original:
vedatad/datasets/pipelines/transforms.py:224-235). Every random parameter is drawn ONCE
per clip and shared by all its frames.

The API separates drawing from applying, so that the memory-bank training can augment
only the kept chunks of a window, all with the same parameters::

    params = draw_params(generator, frame_size=(256, 256), crop_size=224)
    for chunk in kept_chunks:                     # uint8 [T, H, W, 3] each
        x = apply_params(chunk, params, mean, std)   # float32 [3, T, 224, 224]

The clips are handled as ``tv_tensors.Video`` ``[T, 3, H, W]`` by the ``v2.functional``
kernels, with parameters we draw ourselves from the given ``torch.Generator`` (torchvision's
own ``make_params`` draws from the global RNG, which would break per-sample determinism).

The photometric distortion computes the original's formulas (original:
vedatad/datasets/pipelines/transforms.py:306-345), in this order:

- brightness (p=1/2): add ``delta ~ U(-32, 32)`` (0-255 scale), clip;
- contrast, first or last (a coin flip; p=1/2): multiply by ``alpha ~ U(0.5, 1.5)``, clip;
- to HSV; saturation (p=1/2): ``S *= U(0.5, 1.5)`` without a clip; hue (always): ``H +=
  U(-18, 18)`` degrees, wrapped; back to RGB, clipped;
- channel swap (p=1/2): a random permutation of the three channels.

Where the result differs from the original, and why that is acceptable:

- Colour work is done in float32 on ``[0, 1]`` RGB (the original works on float32
  ``[0, 255]`` BGR): the brightness delta is divided by 255; only the scale and the channel
  order differ (a permutation drawn uniformly is as random in either order).
- The HSV round trip uses torchvision's formulas (those of its ``adjust_hue``, so the hue
  step alone is exactly torchvision's); they are OpenCV's up to float rounding.
- Hue: ``+-18`` degrees is ``+-0.05`` of a turn (torchvision's unit).
- Rotation: torchvision's ``rotate`` only fills with a constant, so we reflect-pad (torch
  "reflect" is OpenCV's reflect-101: the edge pixel is not repeated), rotate with bilinear
  interpolation around the centre and centre-crop back. The result equals a rotation with
  reflect-101 borders except for the sub-pixel centre convention (torchvision rotates about
  ``(W/2, H/2)`` in pixel-edge coordinates, OpenCV about ``((W-1)/2, (H-1)/2)``, the same
  point) and bilinear weights near the padded border. The angle's sign convention differs
  (torchvision: counter-clockwise positive), which does not matter for a symmetric range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = [
    "AugParams",
    "apply_params",
    "center_params",
    "draw_params",
    "test_transform",
    "to_video_tensor",
]

# PhotoMetricDistortion(brightness_delta=32, contrast=(0.5, 1.5), saturation=(0.5, 1.5),
# hue_delta=18, p=0.5) and Rotate(limit=45, p=0.5) (original:
# vedatad/datasets/pipelines/transforms.py:279-353, 475-500)
PHOTOMETRIC_P = 0.5
BRIGHTNESS_DELTA = 32.0  # added, U(-32, 32), on the 0-255 scale
CONTRAST_RANGE = (0.5, 1.5)  # a factor
SATURATION_RANGE = (0.5, 1.5)  # a factor of HSV's S
HUE_DELTA = 18.0 / 360.0  # +-18 degrees = +-0.05 of a full turn
ROTATE_P = 0.5
ROTATE_LIMIT = 45.0  # degrees
FLIP_P = 0.5  # SpatialRandomFlip(0.5) (original: vedatad/datasets/pipelines/transforms.py:43-48)


@dataclass(frozen=True)
class AugParams:
    """One draw of augmentation parameters, shared by every frame (and chunk) of a clip.

    Crop box in input pixels. Photometric parts (None = not applied): ``brightness`` a
    delta added on the 0-255 scale, ``contrast`` a factor (applied before the HSV step when
    ``contrast_before``, else after it), ``saturation`` a factor of HSV's S, ``hue`` a shift
    in turns (1 = 360 degrees), ``channel_permutation`` the new order of the RGB channels.
    ``angle`` in degrees (None = no rotation).
    """

    top: int
    left: int
    height: int
    width: int
    photometric: bool = False
    brightness: float | None = None
    contrast: float | None = None
    contrast_before: bool = True
    saturation: float | None = None
    hue: float | None = None
    channel_permutation: tuple[int, int, int] | None = None
    angle: float | None = None
    flip: bool = False


def _uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=generator).item())


def _coin(generator: torch.Generator, p: float) -> bool:
    return bool(torch.rand((), generator=generator).item() < p)


def _crop_size_pair(crop_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(crop_size, int):
        return crop_size, crop_size
    h, w = crop_size
    return int(h), int(w)


def _check_crop(frame_size: Sequence[int], crop: tuple[int, int]) -> tuple[int, int]:
    if len(frame_size) != 2:
        raise ValueError(f"frame_size must be (height, width), got {frame_size!r}")
    fh, fw = int(frame_size[0]), int(frame_size[1])
    if crop[0] > fh or crop[1] > fw or min(crop) < 1:
        raise ValueError(
            f"crop size {crop} does not fit frames of size {(fh, fw)}; "
            "set data.crop_size <= data.frame_size"
        )
    return fh, fw


def center_params(frame_size: Sequence[int], crop_size: int | Sequence[int]) -> AugParams:
    """Centre crop only (test time: offset ``int((256-224)/2)``, original:
    vedatad/datasets/pipelines/transforms.py:224-235)."""
    crop = _crop_size_pair(crop_size)
    fh, fw = _check_crop(frame_size, crop)
    return AugParams(top=(fh - crop[0]) // 2, left=(fw - crop[1]) // 2, height=crop[0], width=crop[1])


def draw_params(
    generator: torch.Generator,
    frame_size: Sequence[int],
    crop_size: int | Sequence[int],
    *,
    augment: bool = True,
) -> AugParams:
    """Draw one set of training augmentation parameters from `generator`.

    Args:
        generator: per-sample ``torch.Generator`` (the only source of randomness).
        frame_size: (H, W) of the decoded frames (256x256 by default).
        crop_size: crop side (224) or (h, w).
        augment: False gives the test-time centre crop (``data.augment = false``).
    """
    if not augment:
        return center_params(frame_size, crop_size)
    crop = _crop_size_pair(crop_size)
    fh, fw = _check_crop(frame_size, crop)
    # offsets uniform integers in [0, H - h] x [0, W - w] (original: transforms.py:179-190)
    top = int(torch.randint(0, fh - crop[0] + 1, (), generator=generator).item())
    left = int(torch.randint(0, fw - crop[1] + 1, (), generator=generator).item())
    kw: dict[str, object] = {}
    # the whole distortion with p=0.5, then each part with p=1/2, hue always (original:
    # transforms.py:306-345); the draws' order is ours
    if _coin(generator, PHOTOMETRIC_P):
        kw["photometric"] = True
        kw["brightness"] = (
            _uniform(generator, -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)
            if _coin(generator, 0.5) else None
        )
        kw["contrast_before"] = _coin(generator, 0.5)
        kw["contrast"] = _uniform(generator, *CONTRAST_RANGE) if _coin(generator, 0.5) else None
        kw["saturation"] = (
            _uniform(generator, *SATURATION_RANGE) if _coin(generator, 0.5) else None
        )
        kw["hue"] = _uniform(generator, -HUE_DELTA, HUE_DELTA)
        if _coin(generator, 0.5):
            perm = torch.randperm(3, generator=generator).tolist()
            kw["channel_permutation"] = (perm[0], perm[1], perm[2])
    # rotation with p=0.5, angle U(-45, 45) (original: transforms.py:475-500)
    if _coin(generator, ROTATE_P):
        kw["angle"] = _uniform(generator, -ROTATE_LIMIT, ROTATE_LIMIT)
    # horizontal flip with p=0.5 (original: transforms.py:43-48)
    kw["flip"] = _coin(generator, FLIP_P)
    return AugParams(top=top, left=left, height=crop[0], width=crop[1], **kw)  # type: ignore[arg-type]


def to_video_tensor(clip: np.ndarray | torch.Tensor) -> tv_tensors.Video:
    """A uint8 clip as a ``tv_tensors.Video`` ``[T, 3, H, W]``.

    Accepts numpy ``[T, H, W, 3]`` (as `FrameSource.read` returns) or torch ``[T, 3, H, W]``.
    """
    if isinstance(clip, np.ndarray):
        if clip.ndim != 4 or clip.shape[-1] != 3:
            raise ValueError(f"a numpy clip must be uint8 [T, H, W, 3], got shape {clip.shape}")
        if clip.dtype != np.uint8:
            raise ValueError(f"a numpy clip must be uint8 [T, H, W, 3], got dtype {clip.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2)
    elif isinstance(clip, torch.Tensor):
        if clip.ndim != 4 or clip.shape[1] != 3:
            raise ValueError(f"a torch clip must be uint8 [T, 3, H, W], got shape {tuple(clip.shape)}")
        if clip.dtype != torch.uint8:
            raise ValueError(f"a torch clip must be uint8 [T, 3, H, W], got dtype {clip.dtype}")
        tensor = clip
    else:
        raise TypeError(f"clip must be a numpy array or a torch tensor, got {type(clip).__name__}")
    return tv_tensors.Video(tensor)


def _rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` RGB in [0, 1] -> HSV: h in turns [0, 1), s = (max - min) / max, v = max.

    torchvision's formulas (its ``adjust_hue`` kernel), step for step, so that a hue shift
    alone gives exactly what ``F.adjust_hue`` gives.
    """
    r, g, _ = rgb.unbind(dim=-3)
    minc, maxc = torch.aminmax(rgb, dim=-3)
    eqc = maxc == minc  # grey: s = 0 and h = 0 (no division by zero)
    channels_range = maxc - minc
    ones = torch.ones_like(maxc)
    s = channels_range / torch.where(eqc, ones, maxc)
    divisor = torch.where(eqc, ones, channels_range).unsqueeze_(dim=-3)
    rc, gc, bc = ((maxc.unsqueeze(dim=-3) - rgb) / divisor).unbind(dim=-3)
    max_not_r = maxc != r
    max_is_g = maxc == g
    hg = rc.add(2.0).sub_(bc).mul_(max_is_g & max_not_r)
    hr = bc.sub_(gc).mul_(~max_not_r)
    hb = gc.add_(4.0).sub_(rc).mul_(max_not_r.logical_and_(max_is_g.logical_not_()))
    h = hr.add_(hg).add_(hb).mul_(1.0 / 6.0).add_(1.0).fmod_(1.0)
    return torch.stack((h, s, maxc), dim=-3)


_HSV_SELECT = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]])


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` HSV (h in turns, s may exceed 1) -> RGB clipped to [0, 1].

    torchvision's formulas: with ``f`` the position in the hue's sixth,
    ``p = v (1 - s)``, ``q = v (1 - s f)``, ``t = v (1 - s (1 - f))``, each clipped, and
    every channel is one of v, p, q, t (OpenCV's HSV2BGR, then the original's clip).
    """
    h, s, v = hsv.unbind(dim=-3)
    h6 = h.mul(6)
    i = torch.floor(h6)
    f = h6.sub_(i)
    sector = i.to(dtype=torch.int32)
    sxf = s * f
    one_minus_s = 1.0 - s
    q = (1.0 - sxf).mul_(v).clamp_(0.0, 1.0)
    t = sxf.add_(one_minus_s).mul_(v).clamp_(0.0, 1.0)
    p = one_minus_s.mul_(v).clamp_(0.0, 1.0)
    sector.remainder_(6)
    vpqt = torch.stack((v, p, q, t), dim=-3)
    select = _HSV_SELECT.to(device=hsv.device)[:, sector]  # [3, ..., H, W]
    if select.ndim > 3:
        select = select.moveaxis(0, -3)
    return vpqt.gather(-3, select)


def _saturation_hue(video: torch.Tensor, saturation: float | None, hue: float | None
                    ) -> torch.Tensor:
    """One HSV round trip: ``S *= saturation`` (no clip), ``H += hue`` (turns, wrapped),
    back to RGB and clip (original: vedatad/datasets/pipelines/transforms.py:306-345)."""
    h, s, v = _rgb_to_hsv(video).unbind(dim=-3)
    if saturation is not None:
        s = s * saturation
    if hue is not None:
        h = h.add(hue).remainder_(1.0)
    return _hsv_to_rgb(torch.stack((h, s, v), dim=-3))


def _photometric(video: torch.Tensor, params: AugParams) -> torch.Tensor:
    """The original's photometric distortion on float ``[T, 3, H, W]`` in [0, 1] (module doc)."""
    if params.brightness is not None:
        video = (video + params.brightness / 255.0).clamp_(0.0, 1.0)
    if params.contrast is not None and params.contrast_before:
        video = (video * params.contrast).clamp_(0.0, 1.0)
    if params.saturation is not None or params.hue is not None:
        video = _saturation_hue(video, params.saturation, params.hue)
    if params.contrast is not None and not params.contrast_before:
        video = (video * params.contrast).clamp_(0.0, 1.0)
    if params.channel_permutation is not None:
        video = video[..., list(params.channel_permutation), :, :]
    return video


def _rotate_reflect(video: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate ``[T, 3, H, W]`` float by `angle` degrees with reflect borders, same size.

    Reflect-pad by the margin the rotated frame needs (the half-extent of the rotated
    bounding box), rotate bilinearly about the centre, centre-crop back (see module doc).
    """
    h, w = video.shape[-2:]
    rad = math.radians(abs(angle))
    c, s = math.cos(rad), math.sin(rad)
    pad_x = math.ceil((w * c + h * s - w) / 2) + 1
    pad_y = math.ceil((w * s + h * c - h) / 2) + 1
    # reflect padding needs pad < size; for |angle| <= 45 the margin is < 0.21 * (h + w)
    pad_x, pad_y = min(pad_x, w - 1), min(pad_y, h - 1)
    padded = F.pad(video, [pad_x, pad_y, pad_x, pad_y], padding_mode="reflect")
    rotated = F.rotate(padded, angle, interpolation=v2.InterpolationMode.BILINEAR)
    return F.crop(rotated, pad_y, pad_x, h, w)


def apply_params(
    clip: np.ndarray | torch.Tensor,
    params: AugParams,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Apply one parameter draw to a clip (or to one chunk of it).

    Args:
        clip: uint8 numpy ``[T, H, W, 3]`` RGB or torch ``[T, 3, H, W]``.
        params: from `draw_params` / `center_params`.
        mean, std: per-channel RGB statistics on the 0-255 scale (original:
            vedacore/image/photometric.py:21-41).
    Returns:
        float32 ``[3, T, h, w]`` normalised (h, w = the crop size).
    """
    video = to_video_tensor(clip)
    fh, fw = video.shape[-2:]
    if params.top + params.height > fh or params.left + params.width > fw:
        raise ValueError(
            f"crop box (top={params.top}, left={params.left}, {params.height}x{params.width}) "
            f"does not fit frames of size {(fh, fw)}"
        )
    video = F.crop(video, params.top, params.left, params.height, params.width)
    video = F.to_dtype(video, torch.float32, scale=True)  # [0, 1]
    if params.photometric:
        video = tv_tensors.Video(_photometric(video.as_subclass(torch.Tensor), params))
    if params.angle is not None:
        video = _rotate_reflect(video, params.angle)
    if params.flip:
        video = F.horizontal_flip(video)
    video = F.normalize(
        video, mean=[m / 255.0 for m in mean], std=[s / 255.0 for s in std]
    )
    return video.as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous()


def test_transform(
    clip: np.ndarray | torch.Tensor,
    crop_size: int | Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Test-time transform: centre crop + normalise -> float32 ``[3, T, h, w]``."""
    video = to_video_tensor(clip)
    return apply_params(video, center_params(tuple(video.shape[-2:]), crop_size), mean, std)


test_transform.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
