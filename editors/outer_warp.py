"""A mesh warp without straight edges beyond the inner face.

The sharp photos showed what the blurry LFW faces hid: a piecewise-affine mesh warp that moves the
face outline leaves straight, smeared edges over the collar or background (the age editor's jowls),
and on a turned face, whose outline runs along the nose and lips, a hard line across the upper lip
(the asymmetry droop on the profile photo_table#4).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from editors.skin import gaussian_blur, polygon_masks
from editors.warp import anchor_ring, identity_coords

#: A warp is exact inside the face outline scaled by this about its centroid, and smoothed (Gaussian,
#: this many face widths) outside it: see `smooth_outer_warp`.
INNER_FACE_SCALE = 0.8
OUTER_WARP_SMOOTHING = 0.04


def smooth_outer_warp(coords: torch.Tensor, target: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """A mesh warp with its displacement smoothed toward and beyond the face outline.

    The mesh warp is piecewise affine: where it moves the outline (the age editor's jowls pushing the
    jawline out; the asymmetry droop on a turned face, whose outline runs along the nose and lips), the
    stretch changes abruptly at every triangle edge between the outline and the anchor ring, and the
    skin ends in straight, smeared edges or a hard line over the background. Inside the inner face (the outline
    scaled by `INNER_FACE_SCALE`) the displacement stays exact (lips, lids, brows); from there out
    it is blended into its Gaussian blur (`OUTER_WARP_SMOOTHING` face widths). Zero displacement
    stays exactly zero, so the sham is untouched.
    """
    n, h, w, _ = coords.shape
    ident = identity_coords(n, (h, w), coords.device)
    disp = (coords - ident).permute(0, 3, 1, 2)
    # gaussian_blur runs each face alone, so a face's warp does not depend on its batch
    smooth = gaussian_blur(disp, OUTER_WARP_SMOOTHING * width)
    inner = gaussian_blur(polygon_masks(anchor_ring(target[..., :2], INNER_FACE_SCALE), (h, w)), 0.05 * width)
    disp = inner * disp + (1.0 - inner) * smooth
    return ident + disp.permute(0, 2, 3, 1)


def landmark_hull(landmarks: torch.Tensor) -> torch.Tensor:
    """`(N, M, 2)` each face's convex hull of its landmarks (x, y) as a closed polygon.

    The hulls are padded to one length by repeating their last vertex (a zero-length edge crosses no
    scanline of `editors.skin.polygon_masks`). On a turned face the nose and lips stand out beyond the
    face oval, and so beyond an anchor ring made from it; the hull holds them.
    """
    points = landmarks[..., :2].detach().float().cpu().numpy()
    hulls = [cv2.convexHull(face.astype(np.float32))[:, 0] for face in points]
    size = max(len(h) for h in hulls)
    padded = np.stack([np.concatenate([h, np.repeat(h[-1:], size - len(h), axis=0)]) for h in hulls])
    return torch.from_numpy(padded).to(landmarks.device)
