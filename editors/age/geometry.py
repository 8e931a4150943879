"""Pose geometry of the age editor: how frontal a face is.

It exists because the sharp photos showed what the blurry LFW faces hid: shading drawn for a frontal
view spreads into a dark patch over the near cheek of a turned face. (The sag warp's smoothing beyond
the inner face, made for the same reason, is `editors.outer_warp`: the asymmetry editor uses it too.)
"""

from __future__ import annotations

import torch

from editors.pose import fade_with_yaw

#: Yaw (degrees) from which the broad cheek and temple hollows fade, and at which they are gone: at
#: 30 degrees a full hollow drew a dark patch over the near cheek (photo_table#1, tuning half).
HOLLOWS_FADE_YAW_DEG = (15.0, 35.0)


def frontal_weight(landmarks: torch.Tensor) -> torch.Tensor:
    """`(N,)` 1 up to `HOLLOWS_FADE_YAW_DEG[0]` degrees of yaw, falling linearly to 0 at the second."""
    return fade_with_yaw(landmarks, *HOLLOWS_FADE_YAW_DEG)
