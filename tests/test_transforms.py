"""Clip augmentation: one parameter draw for every frame and chunk, determinism, test crop,
and the original's colour formulas."""

from __future__ import annotations

import colorsys
import dataclasses

import numpy as np
import pytest
import torch

from tallformer.data import transforms as TR

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def _random_clip(t: int = 8, h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _everything_on(params: TR.AugParams) -> TR.AugParams:
    """The drawn crop and factors, with every optional step switched on."""
    return dataclasses.replace(
        params,
        photometric=True,
        brightness=params.brightness or 20.0,
        contrast=params.contrast or 0.7,
        saturation=params.saturation or 1.3,
        hue=params.hue or 0.04,
        channel_permutation=params.channel_permutation or (2, 0, 1),
        angle=params.angle or 33.0,
        flip=True,
    )


@pytest.mark.parametrize("seed", range(6))
def test_identical_frames_stay_identical(seed):
    frame = _random_clip(1, 40, 48, seed)
    clip = np.repeat(frame, 6, axis=0)
    params = TR.draw_params(torch.Generator().manual_seed(seed), (40, 48), 32)
    for p in (params, _everything_on(params)):
        out = TR.apply_params(clip, p, MEAN, STD)
        assert out.shape == (3, 6, 32, 32)
        assert out.dtype == torch.float32
        for t in range(1, 6):
            torch.testing.assert_close(out[:, t], out[:, 0], rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(4))
def test_chunks_get_the_same_parameters_as_the_whole_clip(seed):
    # augmenting chunks separately == augmenting the whole clip (crop offsets, colour,
    # angle and flip are per sample, not per call)
    clip = _random_clip(12, 40, 48, seed + 10)
    params = _everything_on(TR.draw_params(torch.Generator().manual_seed(seed), (40, 48), 32))
    whole = TR.apply_params(clip, params, MEAN, STD)
    parts = [TR.apply_params(clip[a:b], params, MEAN, STD) for a, b in ((0, 4), (4, 5), (5, 12))]
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=0, atol=1e-5)


def test_draw_is_deterministic_per_generator_seed():
    draws = [TR.draw_params(torch.Generator().manual_seed(s), (256, 256), 224) for s in (7, 7, 8)]
    assert draws[0] == draws[1]
    assert draws[0] != draws[2]
    clip = _random_clip(4, 64, 64)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = TR.apply_params(clip, TR.draw_params(g1, (64, 64), 56), MEAN, STD)
    b = TR.apply_params(clip, TR.draw_params(g2, (64, 64), 56), MEAN, STD)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_draw_distribution_matches_the_original_recipe():
    # original: vedatad/datasets/pipelines/transforms.py:43-48 (flip), 179-190 (crop),
    # 306-345 (photometric), 475-500 (rotation)
    g = torch.Generator().manual_seed(0)
    draws = [TR.draw_params(g, (256, 256), 224) for _ in range(2000)]
    tops = {d.top for d in draws}
    lefts = {d.left for d in draws}
    assert min(tops) == 0
    assert max(tops) == 32
    assert min(lefts) == 0
    assert max(lefts) == 32
    for name in ("photometric", "flip"):
        rate = np.mean([getattr(d, name) for d in draws])
        assert abs(rate - 0.5) < 0.05, name
    assert abs(np.mean([d.angle is not None for d in draws]) - 0.5) < 0.05
    angles = [d.angle for d in draws if d.angle is not None]
    assert -45 <= min(angles) < -40
    assert 40 < max(angles) <= 45
    photo = [d for d in draws if d.photometric]
    hues = [d.hue for d in photo]
    assert all(h is not None and abs(h) <= 0.05 for h in hues)  # +-18 degrees, always on
    for name, lo, hi in (("contrast", 0.5, 1.5), ("saturation", 0.5, 1.5), ("brightness", -32, 32)):
        vals = [getattr(d, name) for d in photo if getattr(d, name) is not None]
        assert abs(len(vals) / len(photo) - 0.5) < 0.07, name
        assert lo <= min(vals), name
        assert max(vals) <= hi, name
        assert max(vals) - min(vals) > 0.9 * (hi - lo), name  # the whole range is used
    perms = {d.channel_permutation for d in photo if d.channel_permutation is not None}
    assert len(perms) == 6
    assert all(not d.photometric and d.hue is None for d in draws if not d.photometric)


def test_no_augment_is_the_centre_crop():
    g = torch.Generator().manual_seed(0)
    p = TR.draw_params(g, (256, 256), 224, augment=False)
    assert p == TR.center_params((256, 256), 224)
    assert (p.top, p.left) == (16, 16)  # original: vedatad/datasets/pipelines/transforms.py:224-235
    assert not p.photometric
    assert p.angle is None
    assert not p.flip


def test_test_transform_is_centre_crop_and_normalise():
    clip = _random_clip(3, 40, 50, seed=5)
    out = TR.test_transform(clip, 32, MEAN, STD)
    ref = clip[:, 4:36, 9:41].astype(np.float32)
    ref = (ref - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    ref = torch.from_numpy(ref).permute(3, 0, 1, 2)
    assert out.shape == (3, 3, 32, 32)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    # torch [T, 3, H, W] input gives the same as numpy [T, H, W, 3]
    out_t = TR.test_transform(torch.from_numpy(clip).permute(0, 3, 1, 2), 32, MEAN, STD)
    torch.testing.assert_close(out_t, out, rtol=0, atol=0)


def test_mean_colour_normalises_to_zero():
    clip = np.tile(np.array(MEAN, dtype=np.float32).round().astype(np.uint8), (2, 8, 8, 1))
    out = TR.test_transform(clip, 8, MEAN, STD)
    assert out.abs().max() < 0.01


def test_flip_mirrors_the_crop():
    clip = _random_clip(2, 40, 48, seed=3)
    base = TR.center_params((40, 48), 32)
    plain = TR.apply_params(clip, base, MEAN, STD)
    flipped = TR.apply_params(clip, dataclasses.replace(base, flip=True), MEAN, STD)
    torch.testing.assert_close(flipped, plain.flip(-1), rtol=0, atol=0)


def test_channel_swap_permutes_rgb():
    clip = _random_clip(2, 16, 16, seed=4)
    base = TR.center_params((16, 16), 16)
    p = dataclasses.replace(base, photometric=True, channel_permutation=(2, 0, 1))
    out = TR.apply_params(clip, p, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    src = torch.from_numpy(clip).permute(3, 0, 1, 2).float()
    torch.testing.assert_close(out, src[[2, 0, 1]], rtol=0, atol=1e-3)


def test_rotation_uses_reflect_borders():
    video = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    # a constant picture stays constant: the corners come from reflection, not a fill colour
    const = torch.full((1, 3, 24, 24), 0.6)
    torch.testing.assert_close(TR._rotate_reflect(const, 37.0), const, rtol=0, atol=1e-5)
    # zero angle is the identity; a quarter turn is rot90 (the padding is centred)
    torch.testing.assert_close(TR._rotate_reflect(video, 0.0), video, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        TR._rotate_reflect(video, 90.0), torch.rot90(video, 1, dims=(-2, -1)), rtol=0, atol=1e-4
    )
    # near the border, a rotated image takes values mirrored from inside the frame
    out = TR._rotate_reflect(video, 45.0)
    assert out.shape == video.shape
    assert out[..., 0, 0].abs().min() > 0  # no zero fill at the corner


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\]"):
        TR.apply_params(np.zeros((2, 8, 8, 3), np.float32), TR.center_params((8, 8), 8), MEAN, STD)
    with pytest.raises(ValueError, match=r"\[T, 3, H, W\]"):
        TR.test_transform(torch.zeros(2, 8, 8, 3, dtype=torch.uint8), 8, MEAN, STD)
    with pytest.raises(ValueError, match=r"data\.crop_size"):
        TR.draw_params(torch.Generator(), (64, 64), 96)
    with pytest.raises(ValueError, match="does not fit"):
        TR.apply_params(_random_clip(1, 16, 16), TR.center_params((64, 64), 56), MEAN, STD)


# ----------------------------------------------------------------- the original's colour formulas
# A direct re-statement of PhotoMetricDistortion (original:
# vedatad/datasets/pipelines/transforms.py:306-345), in numpy on the 0-255 scale, with
# Python's colorsys for the HSV round trip (OpenCV's formulas; hue in degrees there).


def _ref_brightness(x: np.ndarray, delta: float) -> np.ndarray:
    return np.clip(x + delta, 0, 255)  # imgs += delta; _filter


def _ref_contrast(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.clip(x * alpha, 0, 255)  # imgs *= alpha; _filter


def _ref_saturation_hue(x: np.ndarray, saturation: float | None, hue_deg: float,
                        clip_s: bool = False) -> np.ndarray:
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        h, s, v = colorsys.rgb_to_hsv(*(x[idx] / 255.0))
        if saturation is not None:
            s *= saturation  # no clip in the original
            if clip_s:
                s = min(s, 1.0)
        h = h * 360 + hue_deg
        h = h - 360 if h > 360 else h + 360 if h < 0 else h
        out[idx] = np.asarray(colorsys.hsv_to_rgb(h / 360, s, v)) * 255
    return np.clip(out, 0, 255)  # hsv2bgr; _filter


def _colour_clip() -> np.ndarray:
    """uint8 [2, 8, 8, 3]: random pixels plus saturated and grey ones."""
    clip = _random_clip(2, 8, 8, seed=21)
    clip[0, 0, :4] = [[250, 20, 10], [10, 240, 30], [5, 15, 230], [128, 128, 128]]
    clip[1, 0, :3] = [[200, 120, 40], [0, 0, 0], [255, 255, 255]]
    return clip


def _apply_255(clip: np.ndarray, **photometric: object) -> np.ndarray:
    """apply_params with only the given photometric parts, back on the 0-255 scale, [T, H, W, 3]."""
    params = dataclasses.replace(TR.center_params((8, 8), 8), photometric=True, **photometric)
    out = TR.apply_params(clip, params, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # [3, T, H, W]
    return out.permute(1, 2, 3, 0).double().numpy()


@pytest.mark.parametrize("delta", [-30.0, 0.5, 25.0])
def test_brightness_adds_a_delta_and_clips(delta):
    clip = _colour_clip()
    np.testing.assert_allclose(_apply_255(clip, brightness=delta),
                               _ref_brightness(clip.astype(np.float64), delta), atol=1e-3)


@pytest.mark.parametrize(("alpha", "before"), [(0.6, True), (1.4, True), (1.45, False)])
def test_contrast_multiplies_and_clips(alpha, before):
    clip = _colour_clip()
    np.testing.assert_allclose(_apply_255(clip, contrast=alpha, contrast_before=before),
                               _ref_contrast(clip.astype(np.float64), alpha), atol=1e-3)


@pytest.mark.parametrize("factor", [0.5, 1.3, 1.5])
def test_saturation_scales_s_without_a_clip(factor):
    clip = _colour_clip()
    got = _apply_255(clip, saturation=factor)
    ref = _ref_saturation_hue(clip.astype(np.float64), factor, 0.0)
    np.testing.assert_allclose(got, ref, atol=2e-3)
    if factor > 1:  # S above 1 is kept: not the same as clipping S first
        clipped = _ref_saturation_hue(clip.astype(np.float64), factor, 0.0, clip_s=True)
        assert np.abs(got - clipped).max() > 5


@pytest.mark.parametrize("hue", [-0.05, 0.013, 0.05])
def test_hue_shifts_h_and_is_torchvision_s(hue):
    clip = _colour_clip()
    got = _apply_255(clip, hue=hue)
    np.testing.assert_allclose(got, _ref_saturation_hue(clip.astype(np.float64), None, hue * 360),
                               atol=2e-3)
    # unchanged from before: exactly torchvision's adjust_hue, on the [0, 1] clip
    video = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255.0
    params = dataclasses.replace(TR.center_params((8, 8), 8), photometric=True, hue=hue)
    assert torch.equal(TR._photometric(video, params), TR.F.adjust_hue(video, hue))


@pytest.mark.parametrize("before", [True, False])
def test_photometric_order_is_the_original_one(before):
    clip = _colour_clip()
    parts = dict(brightness=-12.0, contrast=1.35, contrast_before=before, saturation=1.4,
                 hue=-0.03, channel_permutation=(2, 0, 1))
    ref = _ref_brightness(clip.astype(np.float64), -12.0)
    if before:
        ref = _ref_contrast(ref, 1.35)
    ref = _ref_saturation_hue(ref, 1.4, -0.03 * 360)
    if not before:
        ref = _ref_contrast(ref, 1.35)
    ref = ref[..., [2, 0, 1]]
    np.testing.assert_allclose(_apply_255(clip, **parts), ref, atol=2e-3)
