"""Topology of the 478-point MediaPipe face mesh: triangles, mirror pairs and named landmark groups.

The landmark model of the face analysis (`engine.faces.landmarker`) defines this topology, so it lives
with the core: editors build on it, and the audit's symmetry judge reads its mirror pairs. The data is
in `engine/faces/data/face_mesh.json`, written once by `scripts/make_mesh_data.py` (see the `note`
field in that file for how each part was derived). Index conventions follow MediaPipe: "left" means
the subject's left, which appears on the image's right in a non-mirrored photo.

Pixel convention used by every editor: a landmark at `(x, y)` is in continuous pixel units where
pixel `(row i, column j)` covers `[j, j + 1) x [i, i + 1)`, so its centre is `(j + 0.5, i + 0.5)`; this
is what MediaPipe's normalised coordinates times the image size give.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

MESH_DATA_PATH = Path(__file__).parent / "data" / "face_mesh.json"
NUM_LANDMARKS = 478
#: Iris centres (subject's right, subject's left); they are the only iris points in the triangulation.
IRIS_CENTRES: tuple[int, int] = (468, 473)


@lru_cache(maxsize=1)
def _mesh_data() -> dict[str, Any]:
    with open(MESH_DATA_PATH, encoding="utf-8") as handle:
        return json.load(handle)


@lru_cache(maxsize=1)
def face_triangles() -> np.ndarray:
    """Triangles `(T, 3)` int64 covering the face oval, eye and mouth openings included.

    MediaPipe's canonical mesh (eyes and mouth closed over), with each eye opening re-triangulated as a
    fan around its iris centre so that the iris centres are vertices too.
    """
    tris = np.asarray(_mesh_data()["triangles"], dtype=np.int64)
    tris.setflags(write=False)
    return tris


@lru_cache(maxsize=1)
def mirror_index() -> np.ndarray:
    """`(478,)` int64: `mirror_index()[i]` is the left/right partner of landmark `i` (itself on the midline)."""
    mirror = np.asarray(_mesh_data()["mirror"], dtype=np.int64)
    mirror.setflags(write=False)
    return mirror


@lru_cache(maxsize=1)
def landmark_groups() -> dict[str, tuple[int, ...]]:
    """Named landmark groups.

    Keys: face_oval (ordered loop), left_eye / right_eye (ordered eye-opening loops), left_eyebrow,
    right_eyebrow, left_iris / right_iris (centre first), lips_outer / lips_inner (ordered loops), lips,
    nose, midline, left_side / right_side (every landmark strictly on one side).
    """
    return {name: tuple(int(i) for i in idx) for name, idx in _mesh_data()["groups"].items()}


def mirror_pairs() -> np.ndarray:
    """`(P, 2)` int64 left/right partner landmarks, each pair once (midline points excluded)."""
    mirror = mirror_index()
    idx = np.arange(len(mirror))
    keep = idx < mirror
    return np.stack([idx[keep], mirror[keep]], axis=1)


def landmark_group(name: str) -> tuple[int, ...]:
    """One named group; raises a ValueError listing the available names."""
    groups = landmark_groups()
    if name not in groups:
        raise ValueError(f"landmark group name={name!r} is unknown; available: {sorted(groups)}")
    return groups[name]


@lru_cache(maxsize=1)
def canonical_vertices() -> np.ndarray:
    """`(468, 3)` float32 MediaPipe canonical face (cm, x to the subject's left, y up); iris excluded."""
    verts = np.asarray(_mesh_data()["canonical_vertices"], dtype=np.float32)
    verts.setflags(write=False)
    return verts


def visible_vertices(landmarks: np.ndarray | torch.Tensor) -> torch.Tensor:
    """`(N, 478)` bool: landmarks whose surrounding triangles all face the camera in the image.

    False for landmarks hidden behind the face (turned head) or on a fold of the projected mesh, such as
    the cheek silhouette or the side of a nose wing, and for the iris ring points (not mesh vertices).
    """
    import torch

    points = torch.as_tensor(landmarks)[..., :2].double()
    tris = torch.from_numpy(np.array(face_triangles()))
    a, b, c = points[:, tris[:, 0]], points[:, tris[:, 1]], points[:, tris[:, 2]]
    area = (b - a)[..., 0] * (c - a)[..., 1] - (b - a)[..., 1] * (c - a)[..., 0]
    facing = torch.sign(area) == torch.sign(area.sum(dim=1, keepdim=True))  # (N, T)
    incident = torch.zeros(len(tris), points.shape[1], dtype=torch.double)
    incident[torch.arange(len(tris)).repeat_interleave(3), tris.reshape(-1)] = 1.0
    backward_count = (~facing).double() @ incident  # (N, P): back-facing triangles around each landmark
    in_mesh = incident.sum(dim=0) > 0
    return (backward_count == 0) & in_mesh
