"""Colour side of the age editor: skin tone, pigmentation, feature contrast, greying and smoothing.

All functions work on linear-RGB `(N, 3, H, W)` tensors with soft `(N, 1, H, W)` masks and per-image
amounts `(N,)`; an amount of 0 returns the input unchanged (up to float rounding), which the sham relies on.
"""

from __future__ import annotations

import torch

from editors.skin import feathered, gaussian_blur, guided_smooth, luminance, polygon_masks
from editors.skin import masked_mean as skin_masked_mean
from engine.faces.mesh import landmark_group

#: Subject's right / left eyebrow outlines (upper contour outer -> inner, then the lower contour back).
BROW_LOOPS: tuple[tuple[int, ...], ...] = (
    (70, 63, 105, 66, 107, 55, 65, 52, 53, 46),
    (300, 293, 334, 296, 336, 285, 295, 282, 283, 276),
)
#: Absorption of melanin-like pigment per linear-RGB channel (browns absorb blue most).
PIGMENT = (0.55, 0.8, 1.15)
#: A yellowish, dulled cast of aged skin (linear-RGB gains before luminance normalisation).
YELLOW_GAINS = (1.03, 1.0, 0.86)


def _amount(x: torch.Tensor | float, n: int, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float32, device=device).reshape(-1).expand(n).view(n, 1, 1, 1)


def region_masks(
    landmarks: torch.Tensor, size: tuple[int, int], face_width: torch.Tensor, detail: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Soft masks of the face regions the age editor treats differently.

    Edges are feathered by at least the photo's own detail scale `detail (N,)` (pixels), so region
    boundaries are never sharper than the photo.

    Returns a dict of `(N, 1, H, W)` masks: "oval" (face oval, feathered), "inner" (the oval fading
    to 0 at its outline over 8 % of the face width, for shading that must not end in an edge at the
    face's outline), "eyes" (openings grown a little), "brows", "lips" (outer lip contour), "mouth"
    (inner opening), and "skin" (oval minus the rest, the only place where skin ageing applies).
    """
    feather = torch.maximum(0.012 * face_width, 1.5 * detail)
    lm = landmarks[..., :2].float()

    def poly(name_or_loop: str | tuple[int, ...]) -> torch.Tensor:
        idx = list(landmark_group(name_or_loop)) if isinstance(name_or_loop, str) else list(name_or_loop)
        return polygon_masks(lm[:, idx], size)

    oval_hard = poly("face_oval")
    oval = feathered(oval_hard, torch.maximum(0.02 * face_width, detail))
    inner = (2.0 * gaussian_blur(oval_hard, 0.04 * face_width) - 1.0).clamp(0.0, 1.0)
    eyes = feathered(torch.maximum(poly("right_eye"), poly("left_eye")), feather, grow=0.012 * face_width)
    brows = feathered(torch.maximum(poly(BROW_LOOPS[0]), poly(BROW_LOOPS[1])), 0.7 * feather)
    lips = feathered(poly("lips_outer"), 0.7 * feather)
    mouth = feathered(poly("lips_inner"), 0.5 * feather, grow=0.5 * feather)
    skin = oval * (1 - eyes) * (1 - feathered(poly("lips_outer"), feather, grow=0.01 * face_width))
    skin = skin * (1 - brows)
    return {
        "oval": oval,
        "inner": inner,
        "eyes": eyes,
        "brows": brows,
        "lips": lips,
        "mouth": mouth,
        "skin": skin,
    }


def masked_mean(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`(N, C)` mean of `images` weighted by `mask` (`editors.skin.masked_mean`, flattened)."""
    return skin_masked_mean(images, mask).flatten(1)


def colourfulness(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`(N,)` mean chroma (max - min channel over the mean) inside `mask`: about 0 for grey photos."""
    chroma = (images.amax(dim=1, keepdim=True) - images.amin(dim=1, keepdim=True)) / (
        images.mean(dim=1, keepdim=True) + 1e-3
    )
    return masked_mean(chroma, mask)[:, 0]


def age_skin_tone(
    lin: torch.Tensor,
    skin: torch.Tensor,
    colour_weight: torch.Tensor,
    yellowing: torch.Tensor,
    desaturation: torch.Tensor,
    dulling: torch.Tensor,
    face_width: torch.Tensor,
) -> torch.Tensor:
    """Yellow, desaturate and dull the skin (dulling flattens the sheen above the local mean)."""
    n = lin.shape[0]
    m = skin
    lum = luminance(lin)
    gains = torch.tensor(YELLOW_GAINS, device=lin.device).view(1, 3, 1, 1)
    gains = gains / luminance(gains)
    y = _amount(yellowing, n, lin.device) * _amount(colour_weight, n, lin.device)
    out = lin * (1 + m * y * (gains - 1))
    d = _amount(desaturation, n, lin.device) * m
    out = out + d * (luminance(out) - out)
    sheen = (lum - gaussian_blur(lum, 0.03 * face_width)).clamp(min=0.0)
    dull = _amount(dulling, n, lin.device) * m
    return out * (1 - dull * (0.5 + sheen / (lum + 1e-3)))


def apply_pigment(lin: torch.Tensor, density: torch.Tensor, colour_weight: torch.Tensor) -> torch.Tensor:
    """Darken by a pigment `density (N, 1, H, W)` (Beer-Lambert); grey photos get grey pigment."""
    n = lin.shape[0]
    absorb = torch.tensor(PIGMENT, device=lin.device).view(1, 3, 1, 1)
    w = _amount(colour_weight, n, lin.device)
    absorb = w * absorb + (1 - w) * luminance(absorb)
    return lin * torch.exp(-density * absorb)


def fade_features(
    lin: torch.Tensor, masks: dict[str, torch.Tensor], lips: torch.Tensor, brows: torch.Tensor
) -> torch.Tensor:
    """Move lip and brow colour toward the surrounding skin by fractions `lips`, `brows` (N,).

    Facial contrast (lips against skin, brows against skin) falls with age; negative fractions raise
    it (younger). Done as a per-image colour ratio, so the texture inside the lips and brows stays.
    """
    n = lin.shape[0]
    skin_ref = masked_mean(lin, masks["skin"]).view(n, 3, 1, 1)
    out = lin
    for key, amount in (("lips", lips), ("brows", brows)):
        region = masks[key] * (1 - masks["mouth"]) if key == "lips" else masks[key]
        mean = masked_mean(lin, region).view(n, 3, 1, 1).clamp(min=1e-4)
        # Bounded, so a lip or brow region swamped by shadow is never bleached.
        ratio = (skin_ref.clamp(min=1e-4) / mean).clamp(0.67, 1.5)
        out = out * ratio.pow(_amount(amount, n, lin.device) * region)
    return out


def grey_hair(
    lin: torch.Tensor, hair: torch.Tensor, amount: torch.Tensor, face_width: torch.Tensor
) -> torch.Tensor:
    """Grey the hair: lift its local mean level toward silver and drain most of its colour.

    Strand detail (the level minus its local mean) is kept and slightly raised, as white strands
    among pigmented ones add contrast; a little of the original hue stays. The result is blended in
    by `amount (N,)` times the hair mask, so an amount of 0 changes nothing.
    """
    n = lin.shape[0]
    a = _amount(amount, n, lin.device) * hair
    lum = luminance(lin)
    base = gaussian_blur(lum, 0.015 * face_width)
    silver = 0.42  # linear level of grey-white hair in a typical exposure
    level = base + 0.8 * (silver - base).clamp(min=0.0)
    grey = (level + 1.3 * (lum - base)).clamp(min=0.0)
    hue = gaussian_blur(lin, 0.01 * face_width) / gaussian_blur(lum, 0.01 * face_width).clamp(min=1e-3)
    greyed = grey * (1 + 0.3 * (hue.clamp(0.5, 1.6) - 1))
    return lin + a * (greyed - lin)


def smooth_skin(
    lin: torch.Tensor,
    skin: torch.Tensor,
    folds: torch.Tensor,
    amount: torch.Tensor,
    fold_removal: torch.Tensor,
    face_width: torch.Tensor,
) -> torch.Tensor:
    """Younger skin: edge-preserving smoothing of the skin, stronger and wider over the folds.

    Args:
        lin: linear RGB.
        skin: skin mask.
        folds: `(N, 1, H, W)` in [0, 1], where the mesh-defined folds lie.
        amount, fold_removal: `(N,)` blend fractions.
        face_width: `(N,)` pixels.
    """
    n = lin.shape[0]
    guide = luminance(lin).sqrt()
    fine = guided_smooth(guide, lin, 0.012 * face_width, 2e-3)
    broad = guided_smooth(guide, lin, 0.03 * face_width, 6e-3)
    a = _amount(amount, n, lin.device) * skin
    f = (_amount(fold_removal, n, lin.device) * folds * skin).clamp(0.0, 1.0)
    out = lin + a * (fine - lin)
    return out + f * (broad - out)


def fold_region(relief: torch.Tensor, face_width: torch.Tensor) -> torch.Tensor:
    """Soft `(N, 1, H, W)` mask of where a relief map has folds (for fold removal)."""
    depth = (-relief).clamp(min=0.0)
    return feathered(
        (depth > 0.002 * face_width.view(-1, 1, 1, 1)).float(), 0.01 * face_width, grow=0.01 * face_width
    )
