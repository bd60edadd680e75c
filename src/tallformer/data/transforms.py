"""Clip augmentation on top of ``torchvision.transforms.v2``.

Training follows the original's order (spec memory-data-training §4 steps 6-11): random
crop, photometric distortion (p=0.5), rotation within +-45 degrees with reflect borders
(p=0.5), horizontal flip (p=0.5), normalisation. Testing: centre crop and normalisation
(spec §5). Every random parameter is drawn ONCE per clip and shared by all its frames.

The API separates drawing from applying, so that the memory-bank training can augment
only the kept chunks of a window, all with the same parameters::

    params = draw_params(generator, frame_size=(256, 256), crop_size=224)
    for chunk in kept_chunks:                     # uint8 [T, H, W, 3] each
        x = apply_params(chunk, params, mean, std)   # float32 [3, T, 224, 224]

The clips are handled as ``tv_tensors.Video`` ``[T, 3, H, W]`` by the ``v2.functional``
kernels; the photometric step is applied by ``v2.RandomPhotometricDistort.transform`` with
parameters we draw ourselves from the given ``torch.Generator`` (torchvision's own
``make_params`` draws from the global RNG, which would break per-sample determinism).

Where the result differs from the original, and why that is acceptable:

- Colour work is done in float32 on ``[0, 1]`` (the original works on float32 ``[0, 255]``
  BGR); only the scale differs, so there is no extra rounding.
- Brightness: torchvision multiplies by a factor in ``[0.875, 1.125]``; the original adds
  ``U(-32, 32)`` on the 0-255 scale. The shift is proportional to the pixel value: at most
  32 levels for white (as the original), 16 for mid-grey (128), less for darker pixels, so
  it is a milder jitter than the original's; it is a regulariser whose exact form is not
  critical.
- Contrast: torchvision blends each frame with its mean grey level; the original multiplies
  the pixel values by the factor (which also changes brightness). Same factor range and
  order; frames that are identical stay identical.
- Saturation: torchvision blends with the greyscale image and clips to ``[0, 1]``; the
  original scales S in HSV without a clip (clipped later in BGR). Same range of factors.
- Hue: ``+-18`` degrees is ``+-0.05`` in torchvision units (a full turn is 1); applied
  whenever the photometric step runs, as in the original (torchvision's own transform
  would apply it with p=0.5).
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

# spec memory-data-training §4 step 7 (PhotoMetricDistortion) and step 8 (Rotate)
PHOTOMETRIC_P = 0.5
BRIGHTNESS_RANGE = (0.875, 1.125)  # torchvision's default; original: additive U(-32, 32)
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18.0 / 360.0  # +-18 degrees = +-0.05 of a full turn
ROTATE_P = 0.5
ROTATE_LIMIT = 45.0  # degrees
FLIP_P = 0.5  # spec §4 step 9


@dataclass(frozen=True)
class AugParams:
    """One draw of augmentation parameters, shared by every frame (and chunk) of a clip.

    Crop box in input pixels; photometric factors in torchvision units (None = not applied);
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
    """Centre crop only (test time, spec memory-data-training §5: offset ``int((256-224)/2)``)."""
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
    # spec §4 step 6: offsets uniform integers in [0, H - h] x [0, W - w]
    top = int(torch.randint(0, fh - crop[0] + 1, (), generator=generator).item())
    left = int(torch.randint(0, fw - crop[1] + 1, (), generator=generator).item())
    kw: dict[str, object] = {}
    # spec §4 step 7: the whole distortion with p=0.5, then each part with p=1/2, hue always
    if _coin(generator, PHOTOMETRIC_P):
        kw["photometric"] = True
        kw["brightness"] = (
            _uniform(generator, *BRIGHTNESS_RANGE) if _coin(generator, 0.5) else None
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
    # spec §4 step 8: rotation with p=0.5, angle U(-45, 45)
    if _coin(generator, ROTATE_P):
        kw["angle"] = _uniform(generator, -ROTATE_LIMIT, ROTATE_LIMIT)
    # spec §4 step 9: horizontal flip with p=0.5
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


_PHOTOMETRIC = v2.RandomPhotometricDistort()  # applies the parameters we draw (no randomness)


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
        mean, std: per-channel RGB statistics on the 0-255 scale (spec §4 step 10).
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
        video = _PHOTOMETRIC.transform(
            video,
            {
                "brightness_factor": params.brightness,
                "contrast_factor": params.contrast,
                "contrast_before": params.contrast_before,
                "saturation_factor": params.saturation,
                "hue_factor": params.hue,
                "channel_permutation": (
                    list(params.channel_permutation) if params.channel_permutation else None
                ),
            },
        )
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
