"""Soft region masks and filters for the gender editor, computed from mesh landmarks on the images' device.

Everything here is batched tensor arithmetic: polygons are rasterised with a crossing-number test on a
coarse grid (the masks are feathered afterwards, so a coarse grid loses nothing), and mesh-following
density fields are interpolated from per-landmark values with normalised Gaussian splatting. Grids are
chosen per image size only, never per batch, so a batch gives the same masks as one-by-one calls.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from editors.skin import gaussian_blur, polygon_grid_masks
from engine.faces.mesh import canonical_vertices, landmark_group

#: Subject's right / left eyebrow outlines (upper contour outer -> inner, then lower contour back).
RIGHT_BROW_LOOP: tuple[int, ...] = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
LEFT_BROW_LOOP: tuple[int, ...] = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
#: Upper-lid halves of the eye-opening loops (outer corner -> inner corner), for the lash line.
RIGHT_UPPER_LID: tuple[int, ...] = (33, 246, 161, 160, 159, 158, 157, 173, 133)
LEFT_UPPER_LID: tuple[int, ...] = (263, 466, 388, 387, 386, 385, 384, 398, 362)
RIGHT_LOWER_LID: tuple[int, ...] = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_LOWER_LID: tuple[int, ...] = (263, 249, 390, 373, 374, 380, 381, 382, 362)
RIGHT_IRIS, LEFT_IRIS = 468, 473
CHIN, SUBNASALE, NASION, UPPER_LIP_TOP, LOWER_LIP_BOTTOM = 152, 2, 168, 0, 17


def mask_grid_size(height: int, width: int, cell: int = 2) -> tuple[int, int]:
    """The coarse grid masks are rasterised on: one cell per `cell` pixels (at most 256 cells a side)."""
    step = max(cell, math.ceil(max(height, width) / 256))
    return max(1, height // step), max(1, width // step)


def _grid_points(size: tuple[int, int], out_hw: tuple[int, int], device: torch.device) -> torch.Tensor:
    """Pixel-unit centres `(h*w, 2)` of a coarse grid covering an image of size `size`."""
    (height, width), (gh, gw) = size, out_hw
    ys = (torch.arange(gh, device=device, dtype=torch.float32) + 0.5) * (height / gh)
    xs = (torch.arange(gw, device=device, dtype=torch.float32) + 0.5) * (width / gw)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1).view(-1, 2)


def smooth(images: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Wide Gaussian blur done on an area-downsampled copy (the result is smooth, so nothing is lost).

    The downsampling factor depends on the image size only (1 below 384 px, 2 at 384, 4 at 768), so a
    face gets the same result in any batch.
    """
    height, width = images.shape[-2:]
    factor = max(1, min(height, width) // 192)
    while factor > 1 and (height % factor or width % factor):
        factor -= 1
    if factor == 1:
        return gaussian_blur(images, sigma)
    sig = torch.as_tensor(sigma, dtype=torch.float32, device=images.device).expand(images.shape[0])
    small = F.avg_pool2d(images, factor)
    return upsample(gaussian_blur(small, sig / factor), (height, width))


def upsample(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of coarse masks (or images) to the image size.

    One channel at a time: torch's bilinear kernel for several channels rounds differently with the
    number of threads (1e-7), and the overlapping pipeline runs stages on fewer threads than a plain
    run; one-channel planes give the same result on any number of threads.
    """
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    n, c, h, w = masks.shape
    planes = F.interpolate(masks.reshape(n * c, 1, h, w), size=size, mode="bilinear", align_corners=False)
    return planes.view(n, c, *size)


def soft_polygons(
    polygons: torch.Tensor, size: tuple[int, int], feather_px: torch.Tensor, cell: int = 2
) -> torch.Tensor:
    """Feathered polygon masks `(N, 1, H, W)`: rasterise coarse, blur by `feather_px` (per image), upsample."""
    grid = mask_grid_size(*size, cell=cell)
    hard = polygon_grid_masks(polygons, size, grid)
    scale = grid[0] / size[0]
    return upsample(gaussian_blur(hard, feather_px * scale), size).clamp(0.0, 1.0)


def splat_field(
    landmarks: torch.Tensor,
    values: torch.Tensor,
    size: tuple[int, int],
    sigma_px: torch.Tensor,
    cell: int = 8,
) -> torch.Tensor:
    """Interpolate per-landmark `values (K,)` over the image: normalised Gaussian splatting `(N, 1, H, W)`.

    Only the landmarks with a value are needed, but neighbours with value 0 pin the field down, so all
    K landmarks passed take part. The result follows the mesh as it moves with pose and expression.
    """
    grid = mask_grid_size(*size, cell=cell)
    pts = _grid_points(size, grid, landmarks.device)  # (P, 2)
    d2 = ((pts[None, None] - landmarks[:, :, None, :2]) ** 2).sum(-1)  # (N, K, P)
    g = torch.exp(-0.5 * d2 / sigma_px[:, None, None].clamp(min=1e-3) ** 2)
    field = (g * values.view(1, -1, 1)).sum(1) / g.sum(1).clamp(min=1e-12)
    return upsample(field.view(-1, 1, *grid), size)


@lru_cache(maxsize=1)
def canonical_frame() -> dict[str, np.ndarray]:
    """Canonical-mesh coordinates of the 468 vertices in inter-ocular units (x right in the image, y down).

    Origin at the eye midpoint; the iris points are given their eye's centre. Used to define per-landmark
    weights (beard density, regions) once, independent of any particular face.
    """
    verts = canonical_vertices().astype(np.float64)
    # The canonical mesh has x to the subject's left (the image's right in a frontal photo) and y up.
    xy = np.stack([verts[:, 0], -verts[:, 1]], axis=1)
    right = xy[list(landmark_group("right_eye"))].mean(axis=0)
    left = xy[list(landmark_group("left_eye"))].mean(axis=0)
    iod = float(np.linalg.norm(left - right))
    centre = (left + right) / 2
    coords = (xy - centre) / iod
    full = np.zeros((478, 2))
    full[:468] = coords
    full[468:473] = (right - centre) / iod
    full[473:478] = (left - centre) / iod
    return {"xy": full, "iod_cm": np.array(iod)}
