"""Topology of the 478-point MediaPipe face mesh: triangles, mirror pairs and named landmark groups.

The data lives in `editors/data/face_mesh.json`, written once by `scripts/make_mesh_data.py` (see the
`note` field in that file for how each part was derived). Index conventions follow MediaPipe:
"left" means the subject's left, which appears on the image's right in a non-mirrored photo.

Pixel convention used by every editor: a landmark at `(x, y)` is in continuous pixel units where
pixel `(row i, column j)` covers `[j, j + 1) x [i, i + 1)`, so its centre is `(j + 0.5, i + 0.5)`; this
is what MediaPipe's normalised coordinates times the image size give.

The module also has small helpers for scripts, tests and benchmarks: `detect_face_landmarks` (the
MediaPipe Face Landmarker on uint8 RGB arrays), `crop_aligned_face` (an eyes-level square crop) and
`demo_face_crops` (a few real aligned faces). The engine's own face analysis does this for experiments.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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


def detect_face_landmarks(
    images: Sequence[np.ndarray], model_path: str | Path | None = None
) -> list[np.ndarray | None]:
    """Run the MediaPipe Face Landmarker on uint8 RGB images.

    Args:
        images: `(H, W, 3)` uint8 RGB arrays (grey `(H, W)` arrays are stacked to RGB).
        model_path: the `.task` file; defaults to the `face_landmarker` asset.

    Returns:
        Per image, `(478, 3)` float32 landmarks in pixel units (z scaled like x), or None when no face.
    """
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    if model_path is None:
        from engine.assets import asset_path

        model_path = asset_path("face_landmarker")
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(model_path)),
        output_face_blendshapes=True,
        running_mode=vision.RunningMode.IMAGE,
        num_faces=1,
    )
    landmarker = vision.FaceLandmarker.create_from_options(options)
    results: list[np.ndarray | None] = []
    try:
        for image in images:
            if image.dtype != np.uint8:
                raise ValueError(f"images dtype={image.dtype} must be uint8 RGB")
            rgb = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image
            rgb = np.ascontiguousarray(rgb[..., :3])
            found = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
            if not found.face_landmarks:
                results.append(None)
                continue
            height, width = rgb.shape[:2]
            points = np.array([[p.x, p.y, p.z] for p in found.face_landmarks[0]], dtype=np.float32)
            results.append(points * np.array([width, height, width], dtype=np.float32))
    finally:
        landmarker.close()
    return results


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres `(..., 2)` of the subject's right and left eye openings (mean of each eye loop)."""
    right = landmarks[..., list(landmark_group("right_eye")), :2].mean(axis=-2)
    left = landmarks[..., list(landmark_group("left_eye")), :2].mean(axis=-2)
    return right, left


def crop_aligned_face(
    image: np.ndarray, landmarks: np.ndarray, size: int = 384, eye_distance: float = 0.3
) -> np.ndarray:
    """A square, eyes-level crop with inter-ocular distance `eye_distance * size` (uint8 RGB).

    The eye midpoint lands at `(0.5, 0.42) * size`; pixels outside the source repeat its edge.
    """
    from skimage.transform import SimilarityTransform, warp

    right, left = eye_centres(landmarks)
    mid = (right + left) / 2
    angle = np.arctan2(left[1] - right[1], left[0] - right[0])
    scale = eye_distance * size / np.linalg.norm(left - right)
    # crop <- source: rotate eyes level, scale, then place the eye midpoint.
    crop_from_source = (
        SimilarityTransform(translation=(0.5 * size, 0.42 * size)).params
        @ SimilarityTransform(scale=scale, rotation=-angle).params
        @ SimilarityTransform(translation=-mid).params
    )
    # skimage puts pixel centres at integers; our landmarks put them at +0.5.
    shift = SimilarityTransform(translation=(-0.5, -0.5)).params
    unshift = SimilarityTransform(translation=(0.5, 0.5)).params
    inverse = SimilarityTransform(matrix=shift @ np.linalg.inv(crop_from_source) @ unshift)
    rgb = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]
    out = warp(rgb, inverse, output_shape=(size, size), order=3, mode="edge", preserve_range=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def demo_face_crops(count: int, size: int = 384) -> tuple[np.ndarray, np.ndarray]:
    """Real aligned faces for tests and benchmarks: astronaut, Grace Hopper, then LFW faces.

    The LFW faces (`skimage.data.lfw_subset()`, 25 px) are upscaled to 128 px before detection, so they
    are blurry. Faces the landmarker misses are skipped.

    Returns:
        `(count, size, size, 3)` uint8 crops and `(count, 478, 3)` float32 landmarks detected on them.
    """
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    raw = [
        skimage.data.astronaut(),
        np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg"))),
    ]
    for face in skimage.data.lfw_subset()[: max(0, 2 * (count - 2) + 2)]:
        grey = Image.fromarray(np.round(face * 255).astype(np.uint8)).resize((128, 128), Image.BICUBIC)
        raw.append(np.asarray(grey))
    crops = [
        crop_aligned_face(img, lm, size)
        for img, lm in zip(raw, detect_face_landmarks(raw), strict=True)
        if lm is not None
    ]
    found = [(c, lm) for c, lm in zip(crops, detect_face_landmarks(crops), strict=True) if lm is not None][
        :count
    ]
    if len(found) < count:
        raise RuntimeError(f"only {len(found)} demo faces found, wanted count={count}")
    return np.stack([c for c, _ in found]), np.stack([lm for _, lm in found])


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
