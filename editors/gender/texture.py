"""Texture half of the gender editor: sex-typical skin, brow, beard, lip and eye cues, all multiplicative.

Every cue is a per-pixel gain (or a blend toward the face's own smoothed skin) inside a soft region that
follows the mesh, so it keeps the photo's own lighting, skin tone and grain and never paints a colour in.
Colour shifts (lip redness, the bluish cast of beard shadow) are scaled by how colourful the face is, so a
grey photo stays grey. Stubble grain is drawn from the per-image generators and softened to the photo's own
estimated blur, so it is fine on a sharp portrait and a soft shadow on an upscaled thumbnail.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from editors.gender import masks as gm
from editors.skin import image_means, masked_mean
from engine.faces.mesh import landmark_group

LUMA = (0.299, 0.587, 0.114)
#: Gain per channel of lip colour (redder: more red, less green/blue), scaled by colourfulness.
LIP_TINT = (1.0, -0.7, -0.4)
_FOLLICLE_FRACTION = 0.3  # share of pixels that start a hair before softening
_GRAIN_CLIP = 2.5
_GRAIN_FLOOR = 0.35  # least grain spread (in units of the sharp grain's) left after the photo's blur


@lru_cache(maxsize=1)
def beard_density() -> np.ndarray:
    """Per-landmark `(478,)` beard density on the canonical face: moustache and chin full, cheeks less, lips 0.

    The cheek boundary runs from the sideburn (beside the ear, a third of an IOD below the eyes) down to the
    moustache beside the mouth corner, the usual male beard line.
    """
    xy = gm.canonical_frame()["xy"]
    ax, ay = np.abs(xy[:, 0]), xy[:, 1]
    # Beard line: level with the nostrils' base beside the moustache, then down and out to the jaw angle.
    line = np.where(ax < 0.45, 0.80, 0.80 + (ax - 0.45) * (0.2 / 0.7))
    inside = 1.0 / (1.0 + np.exp(-(ay - line) / 0.07)) * (1.0 / (1.0 + np.exp(-(1.3 - ax) / 0.04)))
    moustache = np.exp(-0.5 * ((xy[:, 0] / 0.38) ** 2 + ((ay - 0.88) / 0.07) ** 2))
    chin = np.exp(-0.5 * ((xy[:, 0] / 0.42) ** 2 + ((ay - 1.65) / 0.3) ** 2))
    density = inside * (0.55 + 0.45 * np.maximum(moustache, chin))
    # Beard grows up to the vermilion border: the outer lip contour keeps its density, the lips' inner
    # contour pins the field to 0 inside the mouth (the lip polygon itself is cut out by the caller).
    density[list(landmark_group("lips_inner"))] = 0.0
    return density.astype(np.float32)


@lru_cache(maxsize=1)
def cheek_weights() -> np.ndarray:
    """Per-landmark `(478,)` weights of the upper cheeks, the reference for clean skin tone."""
    xy = gm.canonical_frame()["xy"]
    d = np.minimum(np.hypot(xy[:, 0] + 0.62, xy[:, 1] - 0.5), np.hypot(xy[:, 0] - 0.62, xy[:, 1] - 0.5))
    return (d < 0.18).astype(np.float32)


@lru_cache(maxsize=4)
def _subset(y_min: float, y_max: float) -> list[int]:
    """Landmarks between two canonical heights (IOD units): the ones a regional field needs."""
    y = gm.canonical_frame()["xy"][:, 1]
    return [int(i) for i in np.nonzero((y > y_min) & (y < y_max))[0]]


@dataclass
class RegionMasks:
    """Soft `(N, 1, H, W)` regions of a batch, computed from (target) landmarks."""

    oval: torch.Tensor
    skin: torch.Tensor
    beard: torch.Tensor
    cheeks: torch.Tensor
    lips: torch.Tensor
    brows: torch.Tensor
    brows_wide: torch.Tensor
    lash_upper: torch.Tensor
    lash_lower: torch.Tensor
    lids: torch.Tensor


def region_masks(
    landmarks: torch.Tensor, size: tuple[int, int], iod: torch.Tensor, blur_px: torch.Tensor
) -> RegionMasks:
    """All regions the texture cues use, scaled to each face's inter-ocular distance `iod (N,)`.

    Edges are feathered by the face's own blur `blur_px (N,)` too, so a region is never sharper than the
    photo it lies on (a crisp brow on a blurry thumbnail looks drawn on).
    """
    lm = landmarks[..., :2]

    def soft(feather: float) -> torch.Tensor:
        return ((feather * iod) ** 2 + blur_px**2).sqrt()

    def poly(group: tuple[int, ...] | str, feather: float) -> torch.Tensor:
        idx = list(landmark_group(group)) if isinstance(group, str) else list(group)
        return gm.soft_polygons(lm[:, idx], size, soft(feather))

    oval = poly("face_oval", 0.03)
    lips_outer = poly("lips_outer", 0.012)
    lips = (lips_outer - poly("lips_inner", 0.012)).clamp(0.0, 1.0)
    lips_zone = poly("lips_outer", 0.04)
    brows = (poly(gm.RIGHT_BROW_LOOP, 0.015) + poly(gm.LEFT_BROW_LOOP, 0.015)).clamp(0.0, 1.0)
    brows_wide = (poly(gm.RIGHT_BROW_LOOP, 0.035) + poly(gm.LEFT_BROW_LOOP, 0.035)).clamp(0.0, 1.0)
    brows_wide = torch.maximum(
        brows, brows_wide / brows_wide.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-6)
    )
    eyes = (poly("right_eye", 0.04) + poly("left_eye", 0.04)).clamp(0.0, 1.0)
    eyes_core = (poly("right_eye", 0.008) + poly("left_eye", 0.008)).clamp(0.0, 1.0)
    mid = _subset(0.2, 1.0)
    nostrils = gm.splat_field(
        lm[:, mid], torch.as_tensor(_nostril_values()[mid], device=lm.device), size, soft(0.05)
    )
    lash_upper = sum(
        poly_band(lm, lid, -0.022, size, iod, soft(0.006)) for lid in (gm.RIGHT_UPPER_LID, gm.LEFT_UPPER_LID)
    )
    lash_lower = sum(
        poly_band(lm, lid, 0.012, size, iod, soft(0.006)) for lid in (gm.RIGHT_LOWER_LID, gm.LEFT_LOWER_LID)
    )
    # Upper-lid area: between the upper lid contour and the lower edge of the brow (eyeshadow zone).
    lids = (
        lid_zone(lm, gm.RIGHT_UPPER_LID, RIGHT_BROW_LOWER, size, soft(0.03))
        + lid_zone(lm, gm.LEFT_UPPER_LID, LEFT_BROW_LOWER, size, soft(0.03))
    ).clamp(0.0, 1.0) * (1.0 - eyes_core)
    low = _subset(0.2, 3.0)
    density = torch.as_tensor(beard_density()[low], device=lm.device)
    # The lip margin stays clear: beard shadow on the vermilion border reads as a lip-contour change to
    # the landmarker (mouth blendshapes move).
    beard = gm.splat_field(lm[:, low], density, size, 0.06 * iod) * poly("face_oval", 0.05) * (1.0 - lips_zone)
    cheeks = gm.splat_field(
        lm[:, mid], torch.as_tensor(cheek_weights()[mid], device=lm.device), size, 0.06 * iod
    )
    skin = oval * (1.0 - brows_wide) * (1.0 - eyes) * (1.0 - lips_zone) * (1.0 - nostrils)
    return RegionMasks(
        oval=oval,
        skin=skin.clamp(0.0, 1.0),
        beard=beard.clamp(0.0, 1.0),
        cheeks=cheeks * oval,
        lips=lips,
        brows=brows,
        brows_wide=brows_wide,
        lash_upper=lash_upper,
        lash_lower=lash_lower,
        lids=lids,
    )


#: Lower brow contours, outer -> inner, matching the lid contours' order.
RIGHT_BROW_LOWER: tuple[int, ...] = (46, 53, 52, 65, 55)
LEFT_BROW_LOWER: tuple[int, ...] = (276, 283, 282, 295, 285)


def lid_zone(
    landmarks: torch.Tensor,
    lid: tuple[int, ...],
    brow_lower: tuple[int, ...],
    size: tuple[int, int],
    feather_px: torch.Tensor,
    reach: float = 0.55,
) -> torch.Tensor:
    """Soft region from the upper lid contour up `reach` of the way to the brow's lower edge."""
    line = landmarks[:, list(lid), :2]
    brow = landmarks[:, list(brow_lower), :2]
    # Resample the brow onto the lid's points by their position along the eye (outer -> inner).
    t_lid = torch.linspace(0.0, 1.0, len(lid), device=landmarks.device)
    pos = t_lid * (len(brow_lower) - 1)
    lo = pos.floor().long().clamp(max=len(brow_lower) - 2)
    frac = (pos - lo.float())[None, :, None]
    brow_at = brow[:, lo] * (1 - frac) + brow[:, lo + 1] * frac
    top = line + reach * (brow_at - line)
    return gm.soft_polygons(torch.cat([line, top.flip(1)], dim=1), size, feather_px)


def poly_band(
    landmarks: torch.Tensor,
    lid: tuple[int, ...],
    offset: float,
    size: tuple[int, int],
    iod: torch.Tensor,
    feather_px: torch.Tensor,
) -> torch.Tensor:
    """Soft band between a lid contour (outer -> inner corner) and a copy shifted `offset` IOD down the face.

    The shift tapers from full at the outer corner to a third at the inner corner, like a lash line.
    """
    line = landmarks[:, list(lid), :2]
    right, left = landmarks[:, gm.RIGHT_IRIS, :2], landmarks[:, gm.LEFT_IRIS, :2]
    ex = (left - right) / (left - right).norm(dim=-1, keepdim=True).clamp(min=1e-6)
    ey = torch.stack([-ex[:, 1], ex[:, 0]], dim=-1)
    taper = torch.linspace(1.0, 1.0 / 3.0, len(lid), device=landmarks.device)
    shifted = line + (offset * iod)[:, None, None] * taper[None, :, None] * ey[:, None, :]
    band = torch.cat([line, shifted.flip(1)], dim=1)
    return gm.soft_polygons(band, size, feather_px)


@lru_cache(maxsize=1)
def _nostril_values() -> np.ndarray:
    values = np.zeros(478, dtype=np.float32)
    values[[64, 294, 98, 327, 97, 326, 2, 240, 460, 75, 305]] = 1.0
    return values


def luminance(images: torch.Tensor) -> torch.Tensor:
    weights = images.new_tensor(LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def colourfulness(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`(N, 1, 1, 1)` in [0, 1]: 0 for a grey photo, 1 once the face's mean chroma reaches 0.06."""
    chroma = (images - luminance(images)).abs().mean(dim=1, keepdim=True)
    return (masked_mean(chroma, mask) / 0.06).clamp(0.0, 1.0)


def estimate_blur(images: torch.Tensor, mask: torch.Tensor, probe_px: float = 1.5) -> torch.Tensor:
    """Gaussian blur `(N,)` in pixels the face already has, by the re-blur ratio of gradient energy.

    For an edge blurred by sigma, blurring again by `probe_px` lowers the gradient by
    sqrt(sigma^2 / (sigma^2 + probe^2)); inverting the measured ratio gives sigma.
    """
    y = luminance(images)

    def grad(img: torch.Tensor) -> torch.Tensor:
        gx = (img[..., :, 1:] - img[..., :, :-1]).abs()[..., :-1, :]
        gy = (img[..., 1:, :] - img[..., :-1, :]).abs()[..., :, :-1]
        return masked_mean(gx + gy, mask[..., :-1, :-1])

    sharp = grad(y)
    soft = grad(gm.gaussian_blur(y, probe_px))
    ratio2 = (sharp / soft.clamp(min=1e-8)).pow(2).clamp(min=1.0 + 1e-4)
    return (probe_px / (ratio2 - 1.0).sqrt()).view(-1)


def skin_estimate(images: torch.Tensor, hole: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The surrounding skin under a feature: normalised convolution that leaves the `hole` out."""
    keep = 1.0 - hole
    return gm.smooth(images * keep, sigma) / gm.smooth(keep, sigma).clamp(min=1e-3)


def stubble_grain(
    generators: list[torch.Generator],
    size: tuple[int, int],
    grain_px: torch.Tensor,
    blur_px: torch.Tensor,
    device: torch.device,
) -> torch.Tensor:
    """Zero-mean hair grain `(N, 1, H, W)`: sparse follicles softened to `grain_px (N,)`, unit variance at
    that scale, then blurred by the photo's own blur `blur_px (N,)` without renormalising, so on a blurry
    photo the grain averages out into an even shadow, as it would in a real blurry photo of stubble.
    """
    noise = torch.stack([torch.rand(size, generator=g) for g in generators]).unsqueeze(1).to(device)
    follicles = (noise < _FOLLICLE_FRACTION).float()
    soft = gm.gaussian_blur(follicles, grain_px)
    centred = soft - image_means(soft)
    scale = image_means(centred.pow(2)).sqrt().clamp(min=1e-6)
    grain = gm.gaussian_blur((centred / scale).clamp(-_GRAIN_CLIP, _GRAIN_CLIP), blur_px)
    # A blurry photo of stubble still shows a mottled shadow at its own resolution: keep some variance.
    spread = image_means(grain.pow(2)).sqrt().clamp(min=1e-6)
    return grain * (spread.clamp(min=_GRAIN_FLOOR) / spread)


def hair_colour(images: torch.Tensor, brows: torch.Tensor, share: float = 0.25) -> torch.Tensor:
    """`(N, 3, 1, 1)` the person's facial hair colour: the mean of the darkest `share` of the brow pixels.

    The darkest pixels are hair rather than the skin between hairs, on a blurry photo too (a mean over
    the whole brow is mostly skin); the brows are the one facial hair every face shows.
    """
    lum = luminance(images)[:, 0]
    out = []
    for n in range(images.shape[0]):  # a quantile per face: the brows' pixel counts differ
        inside = brows[n, 0] > 0.5
        if int(inside.sum()) < 4:  # no brow to read (a mask off the crop): the mean of the brow region
            out.append(masked_mean(images[n:n + 1], brows[n:n + 1]).view(3))
            continue
        values = lum[n][inside]
        dark = values <= torch.quantile(values, share)
        out.append(images[n][:, inside][:, dark].mean(dim=1))
    return torch.stack(out).view(-1, 3, 1, 1)


def hair_tint(hair: torch.Tensor, skin: torch.Tensor) -> torch.Tensor:
    """Per-channel weights `(N, 3, 1, 1)`, mean 1 in luminance (each kept within 0.3-1.7), of a darkening
    toward the colour of `hair` on `skin` (both `(N, 3, 1, 1)`): a channel in which hair is much darker
    than skin darkens more.

    So stubble shadow takes the person's own hair colour (warm brown on fair skin with light brows,
    neutral on a grey photo, where every weight is 1) at the luminance darkening it is asked for.
    """
    drop = (1.0 - hair / skin.clamp(min=1e-3)).clamp(0.0, 1.0)
    luma = drop.new_tensor(LUMA).view(1, 3, 1, 1)
    return (drop / (drop * luma).sum(dim=1, keepdim=True).clamp(min=1e-3)).clamp(0.3, 1.7)
