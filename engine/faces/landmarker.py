"""The MediaPipe Face Landmarker: 478 landmarks, 52 blendshapes and head pose per face.

One `FaceLandmarker` object serves every thread of a run: MediaPipe's Tasks landmarker is not
thread-safe, so each thread lazily builds its own instance. Those instances print C++ start-up
chatter (TFLite, absl) on file descriptor 2; it is silenced under one process-wide lock, so two
threads never swap the descriptor under each other (one of them used to restore /dev/null and
leave the process without a stderr).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import weakref
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Serialises every redirection of fd 2 in the process (see the module docstring).
_STDERR_LOCK = threading.Lock()

#: Black margin, as a share of the crop's side on each side, around an aligned face crop whose face
#: the landmarker does not find. MediaPipe's short-range detector misses some faces that fill the
#: frame: 7 of the demo's 109 aligned crops (lfw_023, lfw_087, lfw_097, ...), all found with this
#: margin. The margin moves the blendshapes (median mean |change| 0.022 on 48 tuning faces, against the
#: calibrated expression threshold of about 0.03), so a comparison uses one framing for both images.
CROP_MARGIN = 0.25


def euler_from_matrix(m: np.ndarray) -> np.ndarray:
    """Yaw, pitch, roll in degrees from MediaPipe's facial transformation matrix."""
    r = np.asarray(m, dtype=np.float64)[:3, :3]
    sy = math.hypot(r[0, 0], r[1, 0])
    pitch = math.degrees(math.atan2(r[2, 1], r[2, 2]))
    yaw = math.degrees(math.atan2(-r[2, 0], sy))
    roll = math.degrees(math.atan2(r[1, 0], r[0, 0]))
    return np.array([yaw, pitch, roll], dtype=np.float32)


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what native code prints on file descriptor 2 while the block runs.

    The lock makes the save/redirect/restore sequence atomic across threads; set
    `FACECF_VERBOSE_NATIVE=1` to see the native output.
    """
    if os.environ.get("FACECF_VERBOSE_NATIVE"):
        yield
        return
    with _STDERR_LOCK:
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


def blendshape_names() -> list[str]:
    """The 52 MediaPipe blendshape names in model order (index 0 is `_neutral`)."""
    from mediapipe.tasks.python.vision.face_landmarker import Blendshapes

    return [b.name for b in sorted(Blendshapes, key=lambda b: b.value)]


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
        _LIVE.add(self)

    # No __del__: MediaPipe closes a landmarker by submitting to its dispatcher's worker thread
    # and waiting. When the garbage collector finalises the landmarker in the same cycle as that
    # executor, the worker has already been told to exit and the wait never returns (it hung
    # pytest's final gc). Owners call close(); `close_all` closes whatever an owner forgot, while
    # the dispatchers still run (the test session calls it at its end).

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
            with quiet_native_stderr():
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

    def detect_crop(self, rgb: np.ndarray, margin: bool | None = None) -> dict[str, Any] | None:
        """`detect` on an aligned face crop, framed with `CROP_MARGIN` where the face needs it.

        Args:
            rgb: (H, W, 3) uint8 crop.
            margin: None tries the crop as it is and then with the margin; True uses the margin only;
                False the crop only.

        Returns:
            `detect`'s dict in the crop's pixels, plus "margin": whether the margin was used; or None.
        """
        if margin is not True:
            det = self.detect(rgb)
            if det is not None or margin is False:
                return None if det is None else {**det, "margin": False}
        pad = round(CROP_MARGIN * max(rgb.shape[:2]))
        framed = np.zeros((rgb.shape[0] + 2 * pad, rgb.shape[1] + 2 * pad, 3), dtype=np.uint8)
        framed[pad : pad + rgb.shape[0], pad : pad + rgb.shape[1]] = rgb
        det = self.detect(framed)
        if det is None:
            return None
        landmarks = det["landmarks"].copy()
        landmarks[:, :2] -= pad  # z is in pixels of the same scale: unchanged
        return {**det, "landmarks": landmarks, "margin": True}

    def close(self) -> None:
        with self._lock:
            for lm in self._all:
                try:
                    lm.close()
                except Exception:  # noqa: BLE001 - closing at interpreter exit may fail harmlessly
                    pass
            self._all.clear()
        self._local = threading.local()


#: Every wrapper not yet collected, so that `close_all` can reach those their owners never closed.
_LIVE: weakref.WeakSet[FaceLandmarker] = weakref.WeakSet()


def close_all() -> None:
    """Close every MediaPipe landmarker still open (call before interpreter shutdown starts)."""
    for wrapper in list(_LIVE):
        wrapper.close()
