"""Pose and warp geometry of the age editor: how frontal a face is, and a sag warp without creases.

Both exist because the sharp photos showed what the blurry LFW faces hid: shading drawn for a frontal
view spreads into a dark patch over the near cheek of a turned face, and the piecewise-affine mesh
warp leaves straight, smeared edges where the jowls push the jawline out.
"""

from __future__ import annotations

import torch

from editors.pose import fade_with_yaw
from editors.skin import gaussian_blur, polygon_masks
from editors.warp import anchor_ring, identity_coords

#: Yaw (degrees) from which the broad cheek and temple hollows fade, and at which they are gone: at
#: 30 degrees a full hollow drew a dark patch over the near cheek (photo_table#1, tuning half).
HOLLOWS_FADE_YAW_DEG = (15.0, 35.0)
#: The sag warp is exact inside the face outline scaled by this about its centroid, and smoothed
#: (Gaussian, this many face widths) outside it: see `smooth_outer_warp`.
INNER_FACE_SCALE = 0.8
OUTER_WARP_SMOOTHING = 0.04


def frontal_weight(landmarks: torch.Tensor) -> torch.Tensor:
    """`(N,)` 1 up to `HOLLOWS_FADE_YAW_DEG[0]` degrees of yaw, falling linearly to 0 at the second."""
    return fade_with_yaw(landmarks, *HOLLOWS_FADE_YAW_DEG)


def smooth_outer_warp(coords: torch.Tensor, target: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """The sag warp with its displacement smoothed toward and beyond the face outline.

    The mesh warp is piecewise affine: where the jowls push the jawline out, the stretch changes
    abruptly at every triangle edge between the outline and the anchor ring, and the skin ends in
    straight, smeared edges over the collar or background. Inside the inner face (the outline
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
