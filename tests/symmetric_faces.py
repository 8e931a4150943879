"""Faces for the symmetry and asymmetry tests: MediaPipe's canonical (symmetric) face as landmarks, and batches."""

from __future__ import annotations

import math

import numpy as np
import torch

from engine.faces import face_masks
from engine.faces.mesh import canonical_vertices, landmark_group, mirror_index
from engine.types import FaceBatch

SIZE = 256


def make_batch(images: torch.Tensor, landmarks: torch.Tensor) -> FaceBatch:
    n = len(images)
    return FaceBatch(
        ids=[f"face{i}" for i in range(n)],
        images=images,
        landmarks=landmarks,
        blendshapes=torch.zeros(n, 52),
        boxes=torch.tensor([[0.2, 0.2, 0.8, 0.8]]).repeat(n, 1) * SIZE,
        face_mask=face_masks(landmarks, (SIZE, SIZE)),
        pose=torch.zeros(n, 3),
    )


def synthetic_face(yaw_degrees: float, asymmetry: float = 0.0) -> torch.Tensor:
    """MediaPipe's canonical (symmetric) face as 478 image-space landmarks, turned by `yaw_degrees`."""
    canon = torch.from_numpy(np.array(canonical_vertices(), dtype=np.float32))
    points = torch.zeros(478, 3)
    points[:468] = canon
    for centre, eye, iris in ((468, "right_eye", "right_iris"), (473, "left_eye", "left_iris")):
        points[centre] = canon[list(landmark_group(eye))].mean(dim=0)
        for k, ring_point in enumerate(landmark_group(iris)[1:]):
            angle = k * math.pi / 2
            points[ring_point] = points[centre] + 0.5 * torch.tensor([math.cos(angle), math.sin(angle), 0.0])
    mirror = torch.from_numpy(np.array(mirror_index()))
    for right in landmark_group("right_iris"):  # make the iris rings exact mirror images
        points[mirror[right]] = points[right] * torch.tensor([-1.0, 1.0, 1.0])
    if asymmetry:  # raise the subject's left mouth corner and brow
        for idx in (291, 409, 270, 375, 321, 282, 295, 283):
            points[idx, 1] += asymmetry
    yaw = math.radians(yaw_degrees)
    rotation = torch.tensor(
        [[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]]
    )
    turned = points @ rotation.T
    # Canonical cm (x to the subject's left, y up, z toward the camera) -> image pixels.
    return (turned * torch.tensor([12.0, -12.0, -12.0]) + torch.tensor([128.0, 128.0, 0.0]))[None]


def gradient_image(n: int = 1) -> torch.Tensor:
    """A smooth, strongly asymmetric image: red grows to the right, green downward, blue in waves."""
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    image = torch.stack([xs / SIZE, ys / SIZE, 0.5 + 0.4 * torch.sin(xs / 9.0) * torch.cos(ys / 13.0)])
    return image[None].repeat(n, 1, 1, 1)


def frontal_batch(image: torch.Tensor) -> FaceBatch:
    face = synthetic_face(0.0)
    return make_batch(image, face)
