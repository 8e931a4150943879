"""A shape-free face template: maps drawn once on the canonical face, warped onto every face by its mesh.

The template is MediaPipe's canonical face mesh seen from the front, scaled into a square of
`TEMPLATE_SIZE` pixels with the eyes level (the same framing as the engine's aligned crops). Crease
relief, pores and age spots are synthesised in this frame, where every face has the same shape, and a
piecewise-affine map through the 478 landmarks carries them onto each face: they follow the face's
surface, scale with its size and foreshorten with its pose (Burt & Perrett's "shape-free" space).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from editors.pose import FACE_EDGES
from editors.warp import apply_backward_map, backward_map
from engine.faces.mesh import NUM_LANDMARKS, canonical_vertices, landmark_group

#: Side of the square template, in pixels.
TEMPLATE_SIZE = 512
#: Template framing (fractions of its side): inter-ocular distance and eye height, as in the crops.
TEMPLATE_EYE_DISTANCE = 0.28
TEMPLATE_EYE_HEIGHT = 0.42
_IRIS_RINGS = {468: (469, 470, 471, 472), 473: (474, 475, 476, 477)}


@lru_cache(maxsize=4)
def template_landmarks(size: int = TEMPLATE_SIZE) -> np.ndarray:
    """`(478, 3)` float32 canonical face in template pixels (x right, y down, z toward the camera small)."""
    verts = canonical_vertices().astype(np.float64)
    points = np.zeros((NUM_LANDMARKS, 3))
    points[: len(verts)] = np.stack([verts[:, 0], -verts[:, 1], -verts[:, 2]], axis=1)
    for centre, eye in ((468, "right_eye"), (473, "left_eye")):
        loop = points[list(landmark_group(eye))]
        points[centre] = loop.mean(axis=0)
        radius = 0.2 * np.ptp(loop[:, 0])
        for ring, (dx, dy) in zip(_IRIS_RINGS[centre], ((1, 0), (0, -1), (-1, 0), (0, 1))):
            points[ring] = points[centre] + np.array([dx, dy, 0.0]) * radius
    right, left = points[468, :2].copy(), points[473, :2].copy()
    scale = TEMPLATE_EYE_DISTANCE * size / np.linalg.norm(left - right)
    points *= scale
    points[:, :2] += np.array([0.5 * size, TEMPLATE_EYE_HEIGHT * size]) - (right + left) * scale / 2
    points[:, 2] -= points[:, 2].min()
    out = points.astype(np.float32)
    out.setflags(write=False)
    return out


def template_face_width(size: int = TEMPLATE_SIZE) -> float:
    """Width of the template face oval, in template pixels (the unit of every size in face widths)."""
    points = template_landmarks(size)
    return float(np.linalg.norm(points[FACE_EDGES[1], :2] - points[FACE_EDGES[0], :2]))


def similarity_fit(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares similarity (Umeyama) taking 2-D `src (N, P, 2)` onto `dst (N, P, 2)`.

    Returns `(A (N, 2, 2), t (N, 2))` with `dst ~ src @ A^T + t`.
    """
    mu_s, mu_d = src.mean(dim=1, keepdim=True), dst.mean(dim=1, keepdim=True)
    s, d = src - mu_s, dst - mu_d
    a = (s * d).sum(dim=(1, 2))
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(dim=1)
    norm = (s * s).sum(dim=(1, 2)).clamp(min=1e-9)
    c, sn = a / norm, b / norm
    mat = torch.stack([torch.stack([c, -sn], -1), torch.stack([sn, c], -1)], -2)
    shift = mu_d[:, 0] - torch.einsum("nij,nj->ni", mat, mu_s[:, 0])
    return mat, shift


def template_sampling_map(
    landmarks: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every crop pixel, the template position its face surface corresponds to.

    The template is first placed on each face by a similarity fit (so the warp's fixed anchor ring sits
    around the face), then the mesh warp takes the placed template onto the face's own landmarks.

    Returns:
        `coords (N, H, W, 2)` in template pixels, and `scale (N,)`: crop pixels per template pixel.
    """
    device = landmarks.device
    tpl = torch.tensor(template_landmarks(), device=device).expand(landmarks.shape[0], -1, -1)
    mat, shift = similarity_fit(tpl[..., :2], landmarks[..., :2].float())
    scale = torch.linalg.det(mat).clamp(min=1e-9).sqrt()
    placed_xy = torch.einsum("nij,npj->npi", mat, tpl[..., :2]) + shift[:, None]
    placed = torch.cat([placed_xy, tpl[..., 2:] * scale[:, None, None]], dim=-1)
    coords = backward_map(placed, landmarks.float(), size)
    inverse = torch.linalg.inv(mat)
    tpl_coords = torch.einsum("nij,nhwj->nhwi", inverse, coords - shift[:, None, None, :])
    return tpl_coords, scale


def sample_template(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Sample template-frame maps `(N, C, T, T)` at `coords (N, H, W, 2)` (zeros outside the template)."""
    return apply_backward_map(maps, coords, padding_mode="zeros")
