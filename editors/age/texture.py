"""Seeded skin texture of the ageing face in the template frame: pores, mottled pigment and age spots.

Everything is drawn per image from its own generator (on CPU, then moved), at template resolution, so
it follows the face surface once warped and a batch gives the same maps as one-by-one calls.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from editors.age.template import TEMPLATE_SIZE, template_face_width, template_landmarks
from editors.skin import gaussian_blur, polygon_masks
from engine.faces.mesh import landmark_group

MAX_SPOTS = 24
_SPOT_CANDIDATES = 96


@lru_cache(maxsize=2)
def spot_region(size: int = TEMPLATE_SIZE) -> torch.Tensor:
    """`(T, T)` template mask where age spots may appear: the oval minus eyes, brows, lips and nose."""
    lms = torch.tensor(template_landmarks(size))[None, :, :2]
    hw = (size, size)

    def poly(name: str) -> torch.Tensor:
        return polygon_masks(lms[:, list(landmark_group(name))], hw)[0, 0] > 0.5

    unit = template_face_width(size)
    keep = poly("face_oval")
    for name in ("right_eye", "left_eye", "lips_outer"):
        grown = gaussian_blur(poly(name).float()[None, None], 0.04 * unit)[0, 0] > 0.05
        keep &= ~grown
    nose = lms[0, list(landmark_group("nose"))]
    centre, half = nose.mean(0), (nose.amax(0) - nose.amin(0)) / 2 + 0.02 * unit
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    keep &= ~(((xs - centre[0]).abs() < half[0]) & ((ys - centre[1]).abs() < half[1]))
    return keep.float()


def _noise(generators: list[torch.Generator], size: int) -> torch.Tensor:
    return torch.stack([torch.randn(1, size, size, generator=g) for g in generators])


def _unit_std(x: torch.Tensor) -> torch.Tensor:
    return x / x.flatten(1).std(dim=1).clamp(min=1e-8).view(-1, 1, 1, 1)


def texture_maps(
    generators: list[torch.Generator],
    pore_scale: float,
    spots: torch.Tensor,
    size: int = TEMPLATE_SIZE,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Unit-amplitude template maps per image, each `(N, 1, T, T)`.

    Args:
        generators: one per image; draws happen in a fixed order whatever the amounts.
        pore_scale: pore size (Gaussian sigma) in face widths.
        spots: `(N,)` number of age spots per image (at most `MAX_SPOTS`).
        size: template side.
        device: where the maps are returned.

    Returns:
        "pores": band-pass noise (zero mean, unit std); "mottle": low-frequency noise (unit std);
        "spots": pigment blobs with peak density about 1.
    """
    unit = template_face_width(size)
    n = len(generators)
    pores_raw, mottle_raw = _noise(generators, size).to(device), _noise(generators, size).to(device)
    params = torch.stack([torch.rand(_SPOT_CANDIDATES, 5, generator=g) for g in generators])  # (N, C, 5)
    s = pore_scale * unit
    pores = _unit_std(gaussian_blur(pores_raw, s) - gaussian_blur(pores_raw, 2.5 * s))
    mottle = _unit_std(gaussian_blur(mottle_raw, 0.025 * unit))

    region = spot_region(size)
    xy = params[..., :2] * size
    inside = region[xy[..., 1].long().clamp(0, size - 1), xy[..., 0].long().clamp(0, size - 1)] > 0
    # The first `spots[i]` candidates that fall inside the region are used.
    rank = torch.cumsum(inside.long(), dim=1)
    count = spots.to(torch.long).clamp(0, MAX_SPOTS).view(n, 1).cpu()
    use = inside & (rank <= count)
    sigma = (0.005 + 0.012 * params[..., 2]) * unit
    density = (0.4 + 0.6 * params[..., 3]) * use.float()
    radius = int(3 * (0.017 * unit)) + 1
    offs = torch.arange(-radius, radius + 1, dtype=torch.float32)
    oy, ox = torch.meshgrid(offs, offs, indexing="ij")
    cx, cy = xy[..., 0].floor(), xy[..., 1].floor()
    px = cx[..., None, None] + ox  # (N, C, K, K)
    py = cy[..., None, None] + oy
    d2 = (px + 0.5 - xy[..., 0, None, None]) ** 2 + (py + 0.5 - xy[..., 1, None, None]) ** 2
    # Irregular outlines: the blob is stretched by a random aspect along x.
    stretch = (0.7 + 0.6 * params[..., 4])[..., None, None]
    d2 = d2 + ((px + 0.5 - xy[..., 0, None, None]) ** 2) * (stretch - 1)
    blob = density[..., None, None] * torch.exp(-0.5 * d2 / sigma[..., None, None] ** 2)
    valid = (px >= 0) & (px < size) & (py >= 0) & (py < size)
    image_idx = torch.arange(n).view(n, 1, 1, 1).expand_as(px)
    flat = image_idx * size * size + py.clamp(0, size - 1).long() * size + px.clamp(0, size - 1).long()
    canvas = torch.zeros(n * size * size)
    canvas.index_add_(0, flat[valid], blob[valid])
    spots_map = canvas.view(n, 1, size, size).to(device) * (0.75 + 0.25 * mottle.tanh())
    return {"pores": pores, "mottle": mottle, "spots": spots_map.clamp(max=1.5)}
