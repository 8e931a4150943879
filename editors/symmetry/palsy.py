"""Where a resting peripheral facial palsy moves the face: per-landmark weights on the canonical mesh.

The regions of `editors.symmetry.asymmetry.AsymmetryEditor` (mouth corner, cheek and nasolabial fold,
brow, lower lid, the healthy side's pull), each as anchor landmarks with a Gaussian falloff over the
3-D canonical face, fading to 0 at the facial midline; and the face's own axes ("down" along the
forehead-to-chin axis, "medial" toward its symmetry plane) that carry them onto every pose.
Sides are the SUBJECT's, as in MediaPipe's landmark names.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from editors.symmetry.mirror import symmetry_plane
from engine.faces.mesh import NUM_LANDMARKS, canonical_vertices, landmark_group

SIDES: tuple[str, ...] = ("left", "right")
#: `side` may also be "auto": per face, the side whose droop raises the symmetry index more.
SIDE_CHOICES: tuple[str, ...] = (*SIDES, "auto")
#: Mouth corners (subject's left, subject's right).
MOUTH_CORNERS = {"left": 291, "right": 61}
#: Falloff radii (IOD) of each region's displacement over the mesh.
RADIUS = {"mouth": 0.38, "cheek": 0.4, "brow_above": 0.5, "brow_below": 0.14, "lid": 0.1, "pull": 0.3}
#: Lip landmarks (upper and lower lip on the midline) that anchor the mouth's pull toward the healthy side.
LIP_MIDLINE = (0, 13, 14, 17)
#: The pull fades from 1 at the midline to 0 this far (IOD) toward the healthy side (about its mouth corner).
PULL_FADE = 0.4
#: The weights reach 1 this far (IOD) from the midline, and are 0 on it.
SIDE_RAMP = 0.25
#: Nasolabial fold, from the nose wing around the mouth, as points of the canonical face (cm, x to the
#: subject's left); each is replaced by its nearest canonical vertex.
NASOLABIAL_PATH_CM = ((1.75, -1.0), (2.75, -2.9), (3.25, -5.0))
#: Cheek point (canonical cm) whose tissue sags with the fold.
CHEEK_CM = (3.5, -2.6)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@lru_cache(maxsize=1)
def _canonical() -> tuple[np.ndarray, float]:
    """Canonical vertices (468, 3) in cm and their inter-ocular distance."""
    canon = np.asarray(canonical_vertices(), dtype=np.float64)
    right = canon[list(landmark_group("right_eye"))].mean(axis=0)
    left = canon[list(landmark_group("left_eye"))].mean(axis=0)
    return canon, float(np.linalg.norm(left - right))


def _nearest_vertex(x_cm: float, y_cm: float) -> int:
    """The canonical vertex nearest to (x, y) in the frontal view, among the front-facing (z > 2 cm) ones."""
    canon, _ = _canonical()
    distance = np.hypot(canon[:, 0] - x_cm, canon[:, 1] - y_cm) + 1e3 * (canon[:, 2] < 2.0)
    return int(distance.argmin())


def lower_lid(eye: str) -> tuple[list[int], np.ndarray]:
    """Lower-lid landmarks of an eye loop and a profile (0 at the corners, 1 mid-lid) along them."""
    canon, _ = _canonical()
    loop = list(landmark_group(eye))
    x = canon[loop, 0]
    first, last = loop[int(x.argmin())], loop[int(x.argmax())]
    t = (canon[loop, 0] - canon[first, 0]) / (canon[last, 0] - canon[first, 0])
    line = canon[first, 1] + t * (canon[last, 1] - canon[first, 1])
    lower = [
        i for i, y, y_line, ti in zip(loop, canon[loop, 1], line, t, strict=True) if y < y_line and 0 < ti < 1
    ]
    profile = np.sin(np.pi * ((canon[lower, 0] - canon[first, 0]) / (canon[last, 0] - canon[first, 0])))
    return lower, profile


@lru_cache(maxsize=2)
def palsy_weights(side: str) -> dict[str, np.ndarray]:
    """Per-landmark weights `(478,)` in [0, 1] of each droop region on the subject's `side`.

    Each is the largest of `profile_j * exp(-(d_ij / radius)^2)` over the region's anchor landmarks j,
    with d the 3-D distance on the canonical face in IODs, times a ramp from 0 at the midline to 1 at
    `SIDE_RAMP`. The irises get 0: the eyeballs do not sag.
    """
    if side not in SIDES:
        raise ValueError(f"side={side!r}: choose one of {SIDES}")
    canon, iod = _canonical()
    sign = 1.0 if side == "left" else -1.0  # canonical x points to the subject's left
    lateral = _smoothstep(sign * canon[:, 0] / iod / SIDE_RAMP)

    def spread(anchors: list[int], profile: np.ndarray, radius: np.ndarray | float) -> np.ndarray:
        d = np.linalg.norm(canon[:, None] - canon[None, anchors], axis=-1) / iod  # (468, A)
        radius = np.asarray(radius, dtype=np.float64).reshape(-1, 1) if np.ndim(radius) else radius
        return (profile[None] * np.exp(-((d / radius) ** 2))).max(axis=1)

    suffix = "left" if side == "left" else "right"
    brow = list(landmark_group(f"{suffix}_eyebrow"))
    brow_x = sign * canon[brow, 0] / iod
    # Lateral brow ptosis is the larger one; the medial brow is partly held by the procerus.
    brow_profile = 0.6 + 0.4 * (brow_x - brow_x.min()) / (brow_x.max() - brow_x.min())
    below_brow = canon[:, 1] < canon[brow, 1].min()
    lid, lid_profile = lower_lid(f"{suffix}_eye")
    # Only what lies below the eye line follows the lower lid: the upper lid and the iris stay.
    eye_centre_y = canon[list(landmark_group(f"{suffix}_eye")), 1].mean()
    below_eye = canon[:, 1] < eye_centre_y
    cheek = _nearest_vertex(sign * CHEEK_CM[0], CHEEK_CM[1])  # given for the subject's left
    weights = {
        "mouth": spread([MOUTH_CORNERS[side]], np.ones(1), RADIUS["mouth"]),
        "cheek": spread([cheek], np.ones(1), RADIUS["cheek"]),
        "brow": spread(brow, brow_profile, np.where(below_brow, RADIUS["brow_below"], RADIUS["brow_above"])),
        "lid": spread(lid, lid_profile, RADIUS["lid"]) * below_eye,
    }
    # The healthy side's tone pulls the lips over: the whole affected half and the midline move, the
    # healthy corner stays (so the pull is not ramped to 0 at the midline like the sagging regions).
    pull = spread([MOUTH_CORNERS[side], *LIP_MIDLINE], np.ones(1 + len(LIP_MIDLINE)), RADIUS["pull"])
    toward_healthy = _smoothstep(1 + sign * canon[:, 0] / iod / PULL_FADE)
    out = {}
    for name, weight in [*((k, w * lateral) for k, w in weights.items()), ("pull", pull * toward_healthy)]:
        full = np.zeros(NUM_LANDMARKS)
        full[: len(canon)] = weight
        out[name] = full
    return out


@lru_cache(maxsize=2)
def nasolabial_path(side: str) -> tuple[int, ...]:
    """Landmarks along the nasolabial fold of the subject's `side`, from the nose wing down."""
    sign = 1.0 if side == "left" else -1.0
    return tuple(_nearest_vertex(sign * x, y) for x, y in NASOLABIAL_PATH_CM)


def face_axes(landmarks: torch.Tensor, side: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per face `(N, 3)` unit "down" (forehead to chin) and "medial" (toward the midline from `side`)
    directions in landmark space, and the 3-D inter-ocular distance `(N,)`."""
    _, normal = symmetry_plane(landmarks)
    left = landmarks[:, list(landmark_group("left_side"))].mean(dim=1)
    centre = landmarks[:, :468].mean(dim=1)
    normal = normal * torch.where(((left - centre) * normal).sum(-1) < 0, -1.0, 1.0)[:, None]
    down = landmarks[:, 152] - landmarks[:, 10]
    down = F.normalize(down - (down * normal).sum(-1, keepdim=True) * normal, dim=-1)
    medial = -normal if side == "left" else normal
    right_eye = landmarks[:, list(landmark_group("right_eye"))].mean(dim=1)
    left_eye = landmarks[:, list(landmark_group("left_eye"))].mean(dim=1)
    return down, medial, (left_eye - right_eye).norm(dim=-1)
