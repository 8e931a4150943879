"""Sagging of the ageing face as landmark displacements, for the mesh warp in `editors.warp`.

Soft tissue descends with age: jowls form over the jawline, the cheek fat slides down and deepens the
nasolabial fold, the lateral brow drops (brow ptosis), skin hoods the upper eyelid, and the lips lose
volume. Each part is a displacement of the landmarks near a point of the canonical face, fading with a
Gaussian of the distance, defined in the shape-free template (face widths) and carried onto every face
by its similarity to the template; lip thinning instead moves each outer lip point toward its inner
partner by a fraction of the face's own lip thickness, spread smoothly over the skin around the lips,
while the red lip between the contours shrinks evenly toward the inner one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from editors.age.template import similarity_fit, template_face_width, template_landmarks
from editors.pose import face_frame, face_widths
from engine.faces.mesh import NUM_LANDMARKS, face_triangles, landmark_group, mirror_index

Weights = dict[int, float]


@dataclass(frozen=True)
class Sag:
    """Landmarks near `centre` move by `shift` (x lateral, y down; face widths), Gaussian `radius`."""

    part: str
    centre: Weights
    radius: float
    shift: tuple[float, float]


SAGS: tuple[Sag, ...] = (
    Sag("jowls", {136: 0.5, 150: 0.3, 172: 0.2}, 0.085, (0.032, 0.096)),
    Sag("jowls", {149: 0.6, 176: 0.4}, 0.05, (0.0, 0.048)),
    Sag("cheeks", {205: 0.5, 187: 0.5}, 0.07, (0.0, 0.056)),
    # Brows and lids only a little: the landmarker reads more as browDown / eyeBlink (an expression).
    Sag("brows", {70: 0.5, 46: 0.5}, 0.05, (0.0, 0.007)),
    Sag("brows", {105: 0.5, 52: 0.5}, 0.05, (0.0, 0.0035)),
    Sag("eyelids", {30: 0.4, 29: 0.3, 247: 0.3}, 0.025, (0.0, 0.003)),
)
SAG_PARTS: tuple[str, ...] = ("jowls", "cheeks", "brows", "eyelids", "lips")
#: Outer lip contour point -> its partner on the inner contour (subject's right and midline).
LIP_PAIRS: tuple[tuple[int, int], ...] = (
    (0, 13), (37, 82), (39, 81), (40, 80), (185, 191), (17, 14), (84, 87), (181, 178), (91, 88), (146, 95),
)  # fmt: skip


@lru_cache(maxsize=1)
def _template_shifts() -> np.ndarray:
    """`(P, 478, 2)` template-pixel displacement of every landmark, per part of `SAG_PARTS[:-1]`."""
    lms = template_landmarks()[:, :2].astype(np.float64)
    unit = template_face_width()
    mirror = mirror_index()
    midline_x = lms[:, 0].mean()
    out = np.zeros((len(SAG_PARTS) - 1, NUM_LANDMARKS, 2))
    for sag in SAGS:
        p = SAG_PARTS.index(sag.part)
        for weights, side in ((sag.centre, -1.0), ({int(mirror[k]): w for k, w in sag.centre.items()}, 1.0)):
            centre = sum(w * lms[k] for k, w in weights.items()) / sum(weights.values())
            side = np.sign(centre[0] - midline_x) or side
            fall = np.exp(-0.5 * ((lms - centre) ** 2).sum(-1) / (sag.radius * unit) ** 2)
            out[p] += fall[:, None] * np.array([side * sag.shift[0], sag.shift[1]]) * unit
    return out.astype(np.float32)


def sag_displacements(landmarks: torch.Tensor, amounts: torch.Tensor) -> torch.Tensor:
    """Displacement `(N, 478, 3)` (crop pixels, z unchanged) of ageing sag for each face.

    Args:
        landmarks: `(N, 478, 3)` face landmarks in crop pixels.
        amounts: `(N, len(SAG_PARTS))` multiplier per part; negative values lift instead (younger).
    """
    device = landmarks.device
    n = landmarks.shape[0]
    tpl = torch.tensor(template_landmarks(), device=device)[None, :, :2].expand(n, -1, -1)
    mat, _ = similarity_fit(tpl, landmarks[..., :2].float())
    shifts = torch.tensor(_template_shifts(), device=device)  # (P, 478, 2)
    amounts = amounts.to(device=device, dtype=torch.float32)
    moved = torch.einsum("np,pkc->nkc", amounts[:, :-1], shifts)
    moved = torch.einsum("nij,nkj->nki", mat, moved)
    moved = moved + _lip_thinning(landmarks, amounts[:, -1])
    return torch.cat([moved, torch.zeros_like(moved[..., :1])], dim=-1)


@lru_cache(maxsize=1)
def lip_band() -> tuple[int, ...]:
    """The mesh points of the red lip between the outer and the inner lip contour.

    Found on the mesh (reached from the inner contour without crossing the outer one), not by a
    polygon test: seen from the front a closed mouth's inner contour is a sliver, and upper-lip points
    fall inside it.
    """
    outer, inner = set(landmark_group("lips_outer")), set(landmark_group("lips_inner"))
    neighbours: dict[int, set[int]] = {}
    for triangle in np.asarray(face_triangles()).tolist():
        for a, b in zip(triangle, triangle[1:] + triangle[:1], strict=True):
            neighbours.setdefault(a, set()).add(b)
            neighbours.setdefault(b, set()).add(a)
    band: set[int] = set()
    frontier = [v for k in inner for v in neighbours.get(k, ())]
    while frontier:
        v = frontier.pop()
        if v not in band and v not in outer and v not in inner:
            band.add(v)
            frontier += neighbours[v]
    return tuple(sorted(band))


def lip_depth(xy: torch.Tensor) -> torch.Tensor:
    """`(N, 478)`: where each landmark lies across the red lip of its face (`xy (N, 478, 2)`).

    0 on the inner lip contour, rising to 1 on the outer one (distance to the nearest inner contour
    point over the sum of the distances to both contours, in the image) for the `lip_band` points;
    1 elsewhere (the skin around the lips, which follows the outer contour).
    """
    band = list(lip_band())
    inner, outer = list(landmark_group("lips_inner")), list(landmark_group("lips_outer"))
    points = xy[:, band, None]
    to_inner = (points - xy[:, None, inner]).norm(dim=-1).amin(dim=-1)
    to_outer = (points - xy[:, None, outer]).norm(dim=-1).amin(dim=-1)
    depth = torch.ones(xy.shape[:2], device=xy.device, dtype=xy.dtype)
    depth[:, band] = to_inner / (to_inner + to_outer).clamp(min=1e-6)
    depth[:, inner] = 0.0
    return depth


def _lip_thinning(landmarks: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """`(N, 478, 2)`: outer lip contour toward the inner one, spread smoothly over the nearby skin.

    Moving only the contour points would fold the blurry lip edge into a hard line; spreading the
    same displacement over the surrounding skin (a normalised Gaussian of the distance, 4 % of the
    face width) also lengthens the upper lip a little, as ageing does. The inner contour stays put,
    and the points of the red lip between the contours move by their `lip_depth` share of it: the lip
    shrinks evenly toward the inner contour. (Moved as far as the outer contour, points near the
    inner one crossed it and folded the mesh over the mouth line, a pale streak between the lips.)
    """
    n = landmarks.shape[0]
    mirror = mirror_index()
    pairs = [*LIP_PAIRS, *((int(mirror[o]), int(mirror[i])) for o, i in LIP_PAIRS if int(mirror[o]) != o)]
    outer = [o for o, _ in pairs]
    inner = [i for _, i in pairs]
    xy = landmarks[..., :2].float()
    # At most half the lip thickness goes: beyond that the lips turn into a hard line.
    fraction = (0.4 * amount).clamp(max=0.5).view(n, 1, 1)
    shift = fraction * (xy[:, inner] - xy[:, outer])  # (N, K, 2)
    width = face_widths(xy).view(n, 1, 1)
    dist2 = (xy[:, :, None, :] - xy[:, None, outer, :]).pow(2).sum(-1)  # (N, 478, K)
    weight = torch.exp(-0.5 * dist2 / (0.04 * width) ** 2)
    spread = torch.einsum("njk,nkc->njc", weight, shift) / weight.sum(-1, keepdim=True).clamp(min=1.0)
    return spread * lip_depth(xy)[..., None]


#: Centre of the cardioidal strain in the face frame: on the midline, this many IOD below the eye line
#: (about the ear canals' height seen from the front).
GROWTH_CENTRE_IOD = 0.45


def growth_displacements(landmarks: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Displacement `(N, 478, 3)` (crop pixels, z unchanged) of craniofacial growth, cardioidal strain.

    Pittenger & Shaw (1975) and Todd et al. (1980): the head's profile ages under R' = R (1 + k (1 -
    cos theta)), polar coordinates about a centre near the ear canal with theta from the upward vertical,
    so the crown stays, the lower face grows down and out, and perceived age rises with k. The strain is
    defined on the profile; this is its frontal-plane analogue, about `GROWTH_CENTRE_IOD` below the eye
    line: the lower face lengthens by up to 2k and widens by about k. `k (N,)` < 0 shrinks (younger).
    """
    xy = landmarks[..., :2].float()
    between_eyes, _, ey, iod = face_frame(xy)
    centre = between_eyes + GROWTH_CENTRE_IOD * iod[:, None] * ey
    rel = xy - centre[:, None]
    up = -(rel * ey[:, None]).sum(-1)  # toward the crown
    radius = rel.norm(dim=-1).clamp(min=1e-6)
    cos_theta = up / radius
    moved = rel * (k.view(-1, 1).float() * (1.0 - cos_theta))[..., None]
    return torch.cat([moved, torch.zeros_like(moved[..., :1])], dim=-1)
