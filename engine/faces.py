"""Face analysis: MediaPipe Face Landmarker, aligned crops, face masks, cached per image content.

Each usable image becomes an aligned square crop (eyes level, fixed inter-ocular distance and eye
height), and every later stage works in that crop's pixel coordinates. Detection runs on the
source photo, the crop is cut with a similarity transform, and the landmarker runs again on the crop
so that originals, shams and edits are all measured by the same detector on the same framing.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from engine.types import FaceAnalysis

log = logging.getLogger(__name__)

N_LANDMARKS = 478
N_BLENDSHAPES = 52
RIGHT_IRIS_CENTRE = 468  # the subject's right eye (image left in a frontal photo)
LEFT_IRIS_CENTRE = 473


def _ordered_loop(edges: list[tuple[int, int]]) -> list[int]:
    """Order the edges of a closed contour into a polygon."""
    nxt: dict[int, int] = {}
    for a, b in edges:
        nxt[a] = b
    start = edges[0][0]
    loop, cur = [start], nxt[start]
    while cur != start and len(loop) <= len(edges):
        loop.append(cur)
        cur = nxt[cur]
    return loop


def _face_oval() -> list[int]:
    from mediapipe.tasks.python.vision import FaceLandmarksConnections as C

    return _ordered_loop([(c.start, c.end) for c in C.FACE_LANDMARKS_FACE_OVAL])


FACE_OVAL: list[int] = _face_oval()


def blendshape_names() -> list[str]:
    """The 52 MediaPipe blendshape names in model order (index 0 is `_neutral`)."""
    from mediapipe.tasks.python.vision.face_landmarker import Blendshapes

    return [b.name for b in sorted(Blendshapes, key=lambda b: b.value)]


@dataclass(frozen=True)
class CropSpec:
    """Geometry of the aligned crop, as fractions of the crop size."""

    size: int = 384
    eye_distance: float = 0.28  # inter-ocular (iris centre) distance
    eye_height: float = 0.42  # vertical position of the eye midpoint


def euler_from_matrix(m: np.ndarray) -> np.ndarray:
    """Yaw, pitch, roll in degrees from MediaPipe's facial transformation matrix."""
    r = np.asarray(m, dtype=np.float64)[:3, :3]
    sy = math.hypot(r[0, 0], r[1, 0])
    pitch = math.degrees(math.atan2(r[2, 1], r[2, 2]))
    yaw = math.degrees(math.atan2(-r[2, 0], sy))
    roll = math.degrees(math.atan2(r[1, 0], r[0, 0]))
    return np.array([yaw, pitch, roll], dtype=np.float32)


class FaceLandmarker:
    """Thread-safe wrapper around MediaPipe's Tasks `FaceLandmarker` (one instance per thread).

    Args:
        model_path: path of `face_landmarker.task`; default: the registry's `face_landmarker` asset.
        min_detection_confidence: detector threshold.
        num_faces: faces to look for; the largest is used and the count is recorded.
    """

    def __init__(self, model_path: str | None = None, min_detection_confidence: float = 0.5, num_faces: int = 2):
        if not 0.0 < min_detection_confidence < 1.0:
            raise ValueError(f"faces.min_detection_confidence must be in (0, 1), got {min_detection_confidence}")
        if model_path is None:
            from engine.assets import asset_path

            model_path = str(asset_path("face_landmarker"))
        self.model_path = model_path
        self.min_detection_confidence = min_detection_confidence
        self.num_faces = num_faces
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def _get(self):
        lm = getattr(self._local, "landmarker", None)
        if lm is None:
            from mediapipe.tasks.python import BaseOptions, vision

            opts = vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=self.model_path),
                running_mode=vision.RunningMode.IMAGE,
                num_faces=self.num_faces,
                min_face_detection_confidence=self.min_detection_confidence,
                min_face_presence_confidence=self.min_detection_confidence,
                output_face_blendshapes=True,
                output_facial_transformation_matrixes=True,
            )
            with _quiet_native_stderr():
                lm = vision.FaceLandmarker.create_from_options(opts)
            self._local.landmarker = lm
            with self._lock:
                self._all.append(lm)
        return lm

    def detect(self, rgb: np.ndarray) -> dict[str, Any] | None:
        """Landmarks (478, 3) in pixels, blendshapes (52,), pose (3,) and face count; None if no face."""
        import mediapipe as mp

        h, w = rgb.shape[:2]
        res = self._get().detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
        if not res.face_landmarks:
            return None
        pts = [np.array([(p.x * w, p.y * h, p.z * w) for p in face], dtype=np.float32) for face in res.face_landmarks]
        areas = [np.ptp(p[:, 0]) * np.ptp(p[:, 1]) for p in pts]
        k = int(np.argmax(areas))
        blend = np.array([c.score for c in res.face_blendshapes[k]], dtype=np.float32)
        pose = euler_from_matrix(np.array(res.facial_transformation_matrixes[k]))
        return {"landmarks": pts[k], "blendshapes": blend, "pose": pose, "n_faces": len(pts)}

    def close(self) -> None:
        with self._lock:
            for lm in self._all:
                try:
                    lm.close()
                except Exception:  # noqa: BLE001 - closing at interpreter exit may fail harmlessly
                    pass
            self._all.clear()
        self._local = threading.local()

    def __del__(self):  # MediaPipe's own __del__ can fail at interpreter exit; close early instead
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence the C++ start-up chatter (TFLite/absl) that MediaPipe prints on file descriptor 2."""
    if os.environ.get("FACECF_VERBOSE_NATIVE"):
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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


def warp_to_crop(rgb: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Cut the aligned crop; large downscales are area-filtered first so the crop is not aliased."""
    scale = math.hypot(m[0, 0], m[1, 0])
    src, mm = rgb, m.copy()
    if scale < 0.5:
        f = scale * 1.5  # keep some headroom so the final resample still interpolates, not decimates
        src = cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        mm[:, :2] /= f
    return cv2.warpAffine(src, mm, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def transform_landmarks(landmarks: np.ndarray, m: np.ndarray) -> np.ndarray:
    out = landmarks.astype(np.float64).copy()
    out[:, :2] = landmarks[:, :2] @ m[:, :2].T + m[:, 2]
    out[:, 2] = landmarks[:, 2] * math.hypot(m[0, 0], m[1, 0])
    return out.astype(np.float32)


def landmark_box(landmarks: np.ndarray) -> np.ndarray:
    return np.array(
        [landmarks[:, 0].min(), landmarks[:, 1].min(), landmarks[:, 0].max(), landmarks[:, 1].max()],
        dtype=np.float32,
    )


def face_masks(landmarks: torch.Tensor, size: tuple[int, int], feather: float = 0.04) -> torch.Tensor:
    """Soft face-oval masks (N, 1, H, W) from landmarks (N, 478, >=2).

    Rasterised with cv2 per face (C code, not a Python pixel loop) and feathered by `feather` x the
    face width, so edits blend into the surroundings instead of ending at a hard edge.
    """
    h, w = size
    lms = landmarks[..., :2].detach().float().cpu().numpy()
    out = np.zeros((len(lms), 1, h, w), dtype=np.float32)
    for i, lm in enumerate(lms):
        poly = np.round(lm[FACE_OVAL] * 4).astype(np.int32)  # 2 bits of sub-pixel precision
        m = np.zeros((h, w), dtype=np.uint8)
        cv2.fillPoly(m, [poly], 255, lineType=cv2.LINE_AA, shift=2)
        width = float(np.ptp(lm[:, 0]))
        k = max(1, int(round(feather * width)))
        m = cv2.GaussianBlur(m, (2 * k + 1, 2 * k + 1), k / 2) if k > 1 else m
        out[i, 0] = m / 255.0
    return torch.from_numpy(out).to(landmarks.device)


class FaceAnalyzer:
    """Detect, align and re-detect faces; results are cached per image content by the caller.

    Args:
        crop_size: side of the aligned square crop in pixels.
        eye_distance: inter-ocular distance as a fraction of the crop.
        eye_height: eye line height as a fraction of the crop.
        min_detection_confidence: MediaPipe detector threshold.
        upscale_below: sources whose short side is smaller are upscaled (bicubic) before detection;
            the short-range detector misses faces under about 100 px.
        landmarker: an existing `FaceLandmarker` to share.
    """

    version = "1"  # bump when the analysis changes, so cached analyses are recomputed

    def __init__(
        self,
        crop_size: int = 384,
        eye_distance: float = 0.28,
        eye_height: float = 0.42,
        min_detection_confidence: float = 0.5,
        upscale_below: int = 160,
        landmarker: FaceLandmarker | None = None,
    ) -> None:
        if not 64 <= crop_size <= 2048:
            raise ValueError(f"faces.crop_size must be in [64, 2048] px, got {crop_size}")
        if not 0.1 <= eye_distance <= 0.6:
            raise ValueError(f"faces.eye_distance must be in [0.1, 0.6], got {eye_distance}")
        if not 0.2 <= eye_height <= 0.6:
            raise ValueError(f"faces.eye_height must be in [0.2, 0.6], got {eye_height}")
        self.spec = CropSpec(crop_size, eye_distance, eye_height)
        self.upscale_below = upscale_below
        self.min_detection_confidence = min_detection_confidence
        self._landmarker = landmarker

    @property
    def landmarker(self) -> FaceLandmarker:
        if self._landmarker is None:
            self._landmarker = FaceLandmarker(min_detection_confidence=self.min_detection_confidence)
        return self._landmarker

    def fingerprint(self) -> dict[str, Any]:
        from engine.assets import get_asset

        return {
            "version": self.version,
            "spec": [self.spec.size, self.spec.eye_distance, self.spec.eye_height],
            "upscale_below": self.upscale_below,
            "min_conf": self.min_detection_confidence,
            "model": get_asset("face_landmarker").sha256,
        }

    def analyse(self, image_id: str, rgb: np.ndarray) -> tuple[FaceAnalysis, np.ndarray | None]:
        """Return the analysis and the aligned crop (RGB uint8), or (ok=False analysis, None)."""
        h, w = rgb.shape[:2]
        up = 1.0
        src = rgb
        if min(h, w) < self.upscale_below:
            up = self.upscale_below / min(h, w)
            src = cv2.resize(rgb, (round(w * up), round(h * up)), interpolation=cv2.INTER_CUBIC)
        det = self.landmarker.detect(src)
        if det is None:
            return FaceAnalysis(image_id, ok=False, reason="no face detected"), None
        lm_src = det["landmarks"].copy()
        lm_src[:, :3] /= up
        m = alignment_matrix(lm_src, self.spec)
        crop = warp_to_crop(rgb, m, self.spec.size)
        # Re-detect on the crop: every condition is then measured on identical framing.
        det2 = self.landmarker.detect(crop)
        if det2 is None:
            landmarks = transform_landmarks(lm_src, m)
            blend, pose = det["blendshapes"], det["pose"]
            redetected = False
        else:
            landmarks, blend, pose = det2["landmarks"], det2["blendshapes"], det2["pose"]
            redetected = True
        box = landmark_box(landmarks)
        fa = FaceAnalysis(
            image_id,
            ok=True,
            reason="" if redetected else "landmarks transferred from the source photo",
            landmarks=landmarks,
            blendshapes=blend,
            box=box,
            pose=pose,
            crop_from_source=m.astype(np.float32),
        )
        return fa, crop

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
