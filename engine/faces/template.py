"""Synthetic faces drawn on the canonical mesh: test inputs that need no photo and no detector.

`template_landmarks` places MediaPipe's canonical face (frontal, neutral) in an aligned crop exactly
where `engine.faces.align` puts a real face's eyes. `draw_faces` paints simple, deterministic faces
on such landmarks (skin with soft shading, eyes, irises, brows, lips, a nose shadow), so editors,
classifiers and the pipeline can be exercised in milliseconds. They are not photographs: tests that
measure how an edit looks to a detector or a judge use the real demo photos instead.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from engine.faces.align import (
    LEFT_IRIS_CENTRE,
    RIGHT_IRIS_CENTRE,
    CropSpec,
    alignment_matrix,
    transform_landmarks,
)
from engine.faces.mesh import NUM_LANDMARKS, canonical_vertices, landmark_group

#: Iris radius as a fraction of the inter-ocular distance (about 6 mm of 63 mm).
IRIS_RADIUS = 0.095


@lru_cache(maxsize=8)
def _template(spec: CropSpec) -> np.ndarray:
    canon = canonical_vertices().astype(np.float64)
    # Canonical space: cm, x to the subject's left (the image's right), y up, z toward the camera.
    # Image space: pixels, y down, and MediaPipe's depth (smaller = closer to the camera).
    points = np.zeros((NUM_LANDMARKS, 3))
    points[: len(canon), 0] = canon[:, 0]
    points[: len(canon), 1] = -canon[:, 1]
    points[: len(canon), 2] = -canon[:, 2]
    iod = 0.0
    for centre, eye in ((RIGHT_IRIS_CENTRE, "right_eye"), (LEFT_IRIS_CENTRE, "left_eye")):
        points[centre] = points[list(landmark_group(eye))].mean(axis=0)
    iod = float(np.linalg.norm(points[LEFT_IRIS_CENTRE, :2] - points[RIGHT_IRIS_CENTRE, :2]))
    for centre in (RIGHT_IRIS_CENTRE, LEFT_IRIS_CENTRE):
        # The four ring points: subject-left, top, subject-right, bottom, at the iris radius.
        for k, (dx, dy) in enumerate(((1, 0), (0, -1), (-1, 0), (0, 1))):
            points[centre + 1 + k] = points[centre] + IRIS_RADIUS * iod * np.array([dx, dy, 0.0])
    out = transform_landmarks(points.astype(np.float32), alignment_matrix(points, spec))
    out.setflags(write=False)
    return out


def template_landmarks(spec: CropSpec | None = None) -> np.ndarray:
    """`(478, 3)` float32 canonical landmarks in the pixels of an aligned crop of `spec`."""
    return np.array(_template(spec or CropSpec()))


def _poly(landmarks: np.ndarray, group: str) -> np.ndarray:
    return np.round(landmarks[list(landmark_group(group)), :2] * 16).astype(np.int32)


def draw_faces(landmarks: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Paint one synthetic face per landmark set.

    Args:
        landmarks: `(N, 478, 2|3)` landmarks in pixels of a `size` x `size` image.
        size: image side in pixels.
        seed: varies skin tone, lighting and background per face, deterministically.

    Returns:
        `(N, size, size, 3)` uint8 RGB.
    """
    lms = np.asarray(landmarks, dtype=np.float64)
    out = np.empty((len(lms), size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    for i, lm in enumerate(lms):
        rng = np.random.default_rng([seed, i])
        skin = np.array([205.0, 160.0, 135.0]) * rng.uniform(0.75, 1.1) + rng.normal(0, 6, 3)
        img = np.empty((size, size, 3))
        img[:] = rng.uniform(60, 200, 3)
        face = np.zeros((size, size), np.uint8)
        cv2.fillPoly(face, [_poly(lm, "face_oval")], 255, lineType=cv2.LINE_AA, shift=4)
        centre = lm[list(landmark_group("face_oval")), :2].mean(axis=0)
        width = float(np.ptp(lm[list(landmark_group("face_oval")), 0]))
        # Soft light from one side, so shading-based measures see a face-like gradient.
        light = 1.0 + rng.uniform(-0.12, 0.12) * (xx - centre[0]) / width
        light -= 0.25 * (((xx - centre[0]) / width) ** 2 + ((yy - centre[1]) / (1.3 * width)) ** 2)
        alpha = (cv2.GaussianBlur(face, (0, 0), max(1.0, size / 200)) / 255.0)[..., None]
        img = img * (1 - alpha) + (skin * light[..., None]) * alpha
        features = np.zeros((size, size, 3))
        weight = np.zeros((size, size), np.uint8)
        for group, colour in (("left_eyebrow", (70, 50, 40)), ("right_eyebrow", (70, 50, 40)),
                              ("left_eye", (235, 235, 230)), ("right_eye", (235, 235, 230)),
                              ("lips_outer", (170, 80, 80))):
            mask = np.zeros((size, size), np.uint8)
            pts = _poly(lm, group)
            # The brow groups are point sets, not loops: their hull is the brow.
            pts = cv2.convexHull(pts) if group.endswith("eyebrow") else pts
            cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_AA, shift=4)
            features[mask > 0] = colour
            weight = np.maximum(weight, mask)
        iod = float(np.linalg.norm(lm[LEFT_IRIS_CENTRE, :2] - lm[RIGHT_IRIS_CENTRE, :2]))
        for c in (RIGHT_IRIS_CENTRE, LEFT_IRIS_CENTRE):
            mask = np.zeros((size, size), np.uint8)
            cv2.circle(mask, tuple(np.round(lm[c, :2] * 16).astype(int)), int(IRIS_RADIUS * iod * 16), 255,
                       -1, lineType=cv2.LINE_AA, shift=4)
            eye = np.zeros((size, size), np.uint8)
            cv2.fillPoly(eye, [_poly(lm, "right_eye" if c == RIGHT_IRIS_CENTRE else "left_eye")], 255, shift=4)
            mask = np.minimum(mask, eye)
            features[mask > 0] = (60, 45, 35)
        nose = np.zeros((size, size), np.uint8)  # a soft shadow under the nose tip (landmark 2: its base)
        cv2.ellipse(nose, tuple(np.round(lm[2, :2] * 16).astype(int)), (int(0.25 * iod * 16), int(0.08 * iod * 16)),
                    0, 0, 360, 255, -1, lineType=cv2.LINE_AA, shift=4)
        w = (cv2.GaussianBlur(weight, (0, 0), max(0.6, size / 400)) / 255.0)[..., None]
        img = img * (1 - w) + features * w
        img *= 1 - 0.15 * (cv2.GaussianBlur(nose, (0, 0), max(1.0, size / 100)) / 255.0)[..., None]
        img += rng.normal(0, 2.0, img.shape)  # sensor noise, so no two faces share pixels
        out[i] = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return out


def synthetic_faces(n: int, spec: CropSpec | None = None, seed: int = 0,
                    jitter: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """`n` synthetic aligned faces and their landmarks.

    Args:
        n: number of faces.
        spec: crop geometry (default: the analyser's).
        seed: deterministic variation of appearance (and of shape, with `jitter`).
        jitter: smooth random displacement of the landmarks, in inter-ocular distances, so faces
            differ in shape and are not perfectly symmetric.

    Returns:
        `(n, S, S, 3)` uint8 crops and `(n, 478, 3)` float32 landmarks in their pixels.
    """
    spec = spec or CropSpec()
    base = template_landmarks(spec).astype(np.float64)
    iod = float(np.linalg.norm(base[LEFT_IRIS_CENTRE, :2] - base[RIGHT_IRIS_CENTRE, :2]))
    lms = np.repeat(base[None], n, axis=0)
    if jitter > 0:
        rng = np.random.default_rng([seed, 7])
        # Low-order (affine plus quadratic) fields: smooth shape variation, never a folded mesh.
        x = (base[:, 0] - base[:, 0].mean()) / iod
        y = (base[:, 1] - base[:, 1].mean()) / iod
        basis = np.stack([x, y, x * x, x * y, y * y], axis=1)
        for i in range(n):
            coef = rng.normal(0, jitter / 3, (5, 2))
            lms[i, :, :2] += basis @ coef * iod
    lms = lms.astype(np.float32)
    return draw_faces(lms, spec.size, seed), lms
