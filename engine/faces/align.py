"""The one face aligner: an eyes-level square crop of fixed inter-ocular distance and eye height.

Every stage after the analysis works in the crop's pixel coordinates (pixel `(i, j)` covers
`[j, j + 1) x [i, i + 1)`, as MediaPipe's normalised coordinates times the image size give). The
pipeline cuts crops with `align_face`; tests, benchmarks and scripts that need real aligned faces
go through the same `FaceAnalyzer`, so no code path aligns faces differently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

RIGHT_IRIS_CENTRE = 468  # the subject's right eye (image left in a frontal photo)
LEFT_IRIS_CENTRE = 473


PADDINGS = ("replicate", "fade")
#: "fade": beyond the photo the crop is the photo mirrored, blurred within `FADE_BLUR_RAMP` of its edge
#: (sigma `FADE_BLUR`) and faded to the photo's median colour over `FADE_COLOUR_RAMP`; fractions of the
#: crop size (as FFHQ's aligner pads its crops).
FADE_BLUR, FADE_BLUR_RAMP, FADE_COLOUR_RAMP = 0.02, 0.05, 0.3


@dataclass(frozen=True)
class CropSpec:
    """Geometry of the aligned crop, as fractions of the crop size."""

    size: int = 384
    eye_distance: float = 0.28  # inter-ocular (iris centre) distance
    eye_height: float = 0.42  # vertical position of the eye midpoint
    padding: str = "replicate"  # beyond the photo: "replicate" its edge pixels, or "fade" (see warp_to_crop)

    def __post_init__(self) -> None:
        if not 64 <= self.size <= 2048:
            raise ValueError(f"faces.crop_size must be in [64, 2048] px, got {self.size}")
        if not 0.1 <= self.eye_distance <= 0.6:
            raise ValueError(f"faces.eye_distance must be in [0.1, 0.6], got {self.eye_distance}")
        if not 0.2 <= self.eye_height <= 0.6:
            raise ValueError(f"faces.eye_height must be in [0.2, 0.6], got {self.eye_height}")
        if self.padding not in PADDINGS:
            raise ValueError(f"faces.padding={self.padding!r}: choose one of {PADDINGS}")


def alignment_matrix(landmarks: np.ndarray, spec: CropSpec) -> np.ndarray:
    """2x3 similarity transform from source pixels to the aligned crop (eyes level and centred)."""
    right_eye = landmarks[RIGHT_IRIS_CENTRE, :2].astype(np.float64)
    left_eye = landmarks[LEFT_IRIS_CENTRE, :2].astype(np.float64)
    d = left_eye - right_eye
    dist = float(np.hypot(*d))
    if dist < 1e-3:
        raise ValueError("degenerate landmarks: eye centres coincide")
    angle = math.atan2(d[1], d[0])
    scale = spec.eye_distance * spec.size / dist
    c, s = math.cos(-angle) * scale, math.sin(-angle) * scale
    mid = (left_eye + right_eye) / 2
    target = np.array([0.5 * spec.size, spec.eye_height * spec.size])
    rot = np.array([[c, -s], [s, c]])
    t = target - rot @ mid
    return np.hstack([rot, t[:, None]]).astype(np.float64)


def warp_to_crop(rgb: np.ndarray, m: np.ndarray, size: int, padding: str = "replicate") -> np.ndarray:
    """Cut the aligned crop; large downscales are area-filtered first so the crop is not aliased.

    Where the crop reaches beyond the photo (tight crops such as LFW's), "replicate" repeats the
    photo's edge pixels, which draws streaks; "fade" mirrors the photo there instead, blurs it within a
    short distance of the photo's edge and fades it toward the photo's median colour further out, so
    the background reads as an out-of-focus continuation. Pixels inside the photo are the same either way.
    """
    scale = math.hypot(m[0, 0], m[1, 0])
    src, mm = rgb, m.copy()
    if scale < 0.5:
        f = scale * 1.5  # keep some headroom so the final resample still interpolates, not decimates
        src = cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        mm[:, :2] /= f
    if padding == "replicate":
        return cv2.warpAffine(src, mm, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    crop = cv2.warpAffine(src, mm, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    inside = cv2.warpAffine(np.ones(src.shape[:2], np.uint8), mm, (size, size), flags=cv2.INTER_NEAREST,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if inside.all():
        return crop
    # Distance (crop px) of every pixel beyond the photo to the nearest pixel inside it.
    distance = cv2.distanceTransform((inside == 0).astype(np.uint8), cv2.DIST_L2, 5)[..., None]
    out = crop.astype(np.float32)
    blurred = cv2.GaussianBlur(out, (0, 0), FADE_BLUR * size)
    out += (blurred - out) * np.clip(distance / (FADE_BLUR_RAMP * size), 0, 1)
    median = np.median(crop[inside > 0], axis=0).astype(np.float32)
    out += (median - out) * np.clip(distance / (FADE_COLOUR_RAMP * size), 0, 1)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def transform_landmarks(landmarks: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Landmarks (478, 3) through the 2x3 transform `m`; depth scales like x and y."""
    out = landmarks.astype(np.float64).copy()
    out[:, :2] = landmarks[:, :2] @ m[:, :2].T + m[:, 2]
    out[:, 2] = landmarks[:, 2] * math.hypot(m[0, 0], m[1, 0])
    return out.astype(np.float32)


def landmark_box(landmarks: np.ndarray) -> np.ndarray:
    """(4,) float32 x0, y0, x1, y1 of the landmarks."""
    return np.array(
        [landmarks[:, 0].min(), landmarks[:, 1].min(), landmarks[:, 0].max(), landmarks[:, 1].max()],
        dtype=np.float32,
    )


def align_face(rgb: np.ndarray, landmarks: np.ndarray, spec: CropSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The aligned crop of the face whose source-pixel landmarks are given.

    Returns:
        (crop (size, size, 3) uint8, landmarks moved into the crop (478, 3) float32, the 2x3
        crop-from-source matrix).
    """
    m = alignment_matrix(landmarks, spec)
    return warp_to_crop(rgb, m, spec.size, spec.padding), transform_landmarks(landmarks, m), m
