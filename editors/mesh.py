"""TEMPORARY shim during the redesign: the mesh topology moved to `engine.faces.mesh`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.faces.mesh import (  # noqa: F401
    IRIS_CENTRES,
    MESH_DATA_PATH,
    NUM_LANDMARKS,
    canonical_vertices,
    face_triangles,
    landmark_group,
    landmark_groups,
    mirror_index,
    visible_vertices,
)

if TYPE_CHECKING:
    pass


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


