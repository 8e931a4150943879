"""Where a diffusion edit may act, from the face analysis, and how its result goes back into the photo.

A generative model redraws everything it is given; these masks keep the change to the region the
property lives in. `region_masks` gives a hard mask (what an inpainting model fills) and a feathered
one (how the result is blended back); `paste_back` blends with it, so pixels where the feathered mask
is zero keep the original's values exactly; `match_colour` removes the global colour drift a VAE
round trip or a regeneration adds, measured where the edit must not act.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from engine.faces.mesh import landmark_group

#: Named regions -> the landmark groups whose hulls make them; "skin" subtracts eyes, brows and lips.
REGIONS: dict[str, tuple[str, ...]] = {
    "face": ("face_oval",),
    "skin": ("face_oval",),
    "mouth": ("lips",),
    "brows": ("left_eyebrow", "right_eyebrow"),
    "eyes": ("left_eye", "right_eye"),
    "nose": ("nose",),
}
_SKIN_HOLES = ("left_eye", "right_eye", "left_eyebrow", "right_eyebrow", "lips")


def _hull(mask: np.ndarray, points: np.ndarray) -> None:
    hull = cv2.convexHull(np.round(points * 4).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA, shift=2)


def _grown(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0:
        return mask
    k = 2 * pixels + 1
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))


def region_masks(landmarks: torch.Tensor, size: tuple[int, int], region: str, grow: float = 0.0,
                 feather: float = 0.03) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard and feathered masks `(N, 1, H, W)` in [0, 1] of a named region of each face.

    Args:
        landmarks: `(N, 478, >=2)` crop-pixel landmarks.
        size: crop `(H, W)`.
        region: a key of `REGIONS`, or "full" (the whole crop: no paste-back).
        grow: dilation, in face widths (0.08 takes in the jawline, the hairline's edge and the ears' roots).
        feather: blur (sigma) of the blend mask across the hard mask's border, in face widths: the
            blend is 1 inside and 0 outside the hard region, beyond the kernel's reach (2 sqrt(2) sigma).
    """
    h, w = size
    n = landmarks.shape[0]
    if region == "full":
        ones = torch.ones(n, 1, h, w, device=landmarks.device)
        return ones, ones.clone()
    if region not in REGIONS:
        raise ValueError(f"region={region!r}: allowed: full, {', '.join(REGIONS)}")
    lms = landmarks[..., :2].detach().float().cpu().numpy()
    hard = np.zeros((n, 1, h, w), np.float32)
    soft = np.zeros((n, 1, h, w), np.float32)
    for i, lm in enumerate(lms):
        width = float(np.ptp(lm[:, 0]))
        m = np.zeros((h, w), np.uint8)
        for group in REGIONS[region]:
            _hull(m, lm[list(landmark_group(group))])
        m = _grown(m, int(round(grow * width)))
        if region == "skin":
            holes = np.zeros((h, w), np.uint8)
            for group in _SKIN_HOLES:
                _hull(holes, lm[list(landmark_group(group))])
            m = np.minimum(m, 255 - _grown(holes, int(round(0.02 * width))))
        inside = (m > 127).astype(np.float32)
        hard[i, 0] = inside
        k = max(1, int(round(feather * width)))
        # Blurred across the border (sigma k, kernel radius 2k): half strength on the border itself,
        # 1 deeper than the kernel's reach inside, exactly 0 beyond it outside.
        soft[i, 0] = cv2.GaussianBlur(inside, (4 * k + 1, 4 * k + 1), k) if k > 1 else inside
    device = landmarks.device
    return torch.from_numpy(hard).to(device), torch.from_numpy(soft).clamp_(0, 1).to(device)


def match_colour(generated: torch.Tensor, original: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
    """`generated` with each channel's mean and spread matched to `original` over the `outside` weights.

    Where the edit must not act, the generated image should equal the original; any global offset or
    gain there is the model's colour drift, and it is removed everywhere.
    """
    wsum = outside.sum(dim=(2, 3), keepdim=True).clamp(min=1.0)

    def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (x * outside).sum(dim=(2, 3), keepdim=True) / wsum
        var = ((x - mean) ** 2 * outside).sum(dim=(2, 3), keepdim=True) / wsum
        return mean, var.clamp(min=1e-8).sqrt()

    mg, sg = stats(generated)
    mo, so = stats(original)
    gain = (so / sg).clamp(0.5, 2.0)
    enough = (outside.sum(dim=(2, 3), keepdim=True) >= 64).float()  # too few pixels: leave it be
    matched = (generated - mg) * gain + mo
    return (enough * matched + (1 - enough) * generated).clamp(0.0, 1.0)


def paste_back(original: torch.Tensor, generated: torch.Tensor, blend: torch.Tensor) -> torch.Tensor:
    """`original` with `generated` blended in by `blend`; exact where `blend` is 0 (lerp by 0 is the start)."""
    return torch.lerp(original, generated, blend.expand_as(original))
