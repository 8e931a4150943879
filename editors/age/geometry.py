"""Pose and reach geometry of the age editor: how frontal a face is, and where the edit may reach.

Both exist because the sharp photos showed what the blurry LFW faces hid: shading drawn for a frontal
view spreads into a dark patch over the near cheek of a turned face, and on a profile the nose and
lips stand out beyond the warp's anchor ring. (The sag warp's smoothing beyond
the inner face, made for the same reason, is `editors.outer_warp`: the asymmetry editor uses it too.)
"""

from __future__ import annotations

import torch

from editors.outer_warp import landmark_hull
from editors.pose import fade_with_yaw
from editors.skin import polygon_masks
from editors.warp import DEFAULT_RING_SCALE, anchor_ring, moved_region

#: Yaw (degrees) from which the broad cheek and temple hollows fade, and at which they are gone: at
#: 30 degrees a full hollow drew a dark patch over the near cheek (photo_table#1, tuning half).
HOLLOWS_FADE_YAW_DEG = (15.0, 35.0)


def frontal_weight(landmarks: torch.Tensor) -> torch.Tensor:
    """`(N,)` 1 up to `HOLLOWS_FADE_YAW_DEG[0]` degrees of yaw, falling linearly to 0 at the second."""
    return fade_with_yaw(landmarks, *HOLLOWS_FADE_YAW_DEG)


def allowed_region(
    landmarks: torch.Tensor, target: torch.Tensor, coords: torch.Tensor, size: tuple[int, int], hair: torch.Tensor
) -> torch.Tensor:
    """`(N, 1, H, W)` where the age edit may change pixels: inside the warp's anchor ring or the face's own hull
    (before and after the sag), wherever the sag warp `coords` moves a pixel, or on hair. On a turned
    face the nose and lips stand out beyond the ring, and a ring alone cut the edit off across the
    upper lip (photo_table#4)."""
    ring = anchor_ring(landmarks[..., :2], DEFAULT_RING_SCALE)
    inside = polygon_masks(ring, size)
    for points in (landmarks, target):
        inside = torch.maximum(inside, polygon_masks(landmark_hull(points), size))
    inside = torch.maximum((inside > 0).float(), moved_region(coords))
    return torch.maximum(inside, (hair > 0.02).float())
