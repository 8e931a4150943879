"""Face analysis: find the face, cut the aligned crop, measure landmarks, blendshapes and pose.

`FaceAnalyzer` is the production analyser (MediaPipe): detection runs on the source photo (small
images are upscaled first), the crop is cut by the one aligner (`engine.faces.align`), and the
landmarker runs again on the crop, so that originals, shams and edits are all measured by the same
detector on the same framing. `TemplateFaceAnalyzer` is the stand-in for tests and dry runs that
need no detector: it takes every image as an aligned frontal face and places the canonical mesh on
it. Both are Hydra `_target_`s of the `faces` group; the pipeline caches what they return.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from engine.faces.align import CropSpec, align_face, landmark_box
from engine.faces.landmarker import FaceLandmarker
from engine.faces.template import template_landmarks
from engine.types import FaceAnalysis


class FaceAnalyzer:
    """Detect, align and re-detect faces with MediaPipe.

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
        self.spec = CropSpec(crop_size, eye_distance, eye_height)
        if not 0.0 < min_detection_confidence < 1.0:
            raise ValueError(f"faces.min_detection_confidence must be in (0, 1), got {min_detection_confidence}")
        self.upscale_below = upscale_below
        self.min_detection_confidence = min_detection_confidence
        self._landmarker = landmarker

    @property
    def landmarker(self) -> FaceLandmarker:
        """The detector, shared with the audit's re-detection (one model load per run)."""
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
        crop, moved, m = align_face(rgb, lm_src, self.spec)
        # Re-detect on the crop: every condition is then measured on identical framing.
        det2 = self.landmarker.detect(crop)
        if det2 is None:
            landmarks, blend, pose = moved, det["blendshapes"], det["pose"]
            reason = "landmarks transferred from the source photo"
        else:
            landmarks, blend, pose = det2["landmarks"], det2["blendshapes"], det2["pose"]
            reason = ""
        fa = FaceAnalysis(image_id, ok=True, reason=reason, landmarks=landmarks, blendshapes=blend,
                          box=landmark_box(landmarks), pose=pose, crop_from_source=m.astype(np.float32))
        return fa, crop

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()


class TemplateFaceAnalyzer:
    """Takes every image as an aligned, frontal, neutral face: the canonical mesh, no detection.

    For tests and dry runs without MediaPipe (synthetic faces from `engine.faces.template` are
    drawn on exactly these landmarks). Blendshapes and pose are zero. It never finds "no face".

    Args:
        crop_size, eye_distance, eye_height: the crop geometry, as for `FaceAnalyzer`.
    """

    version = "1"
    landmarker = None  # nothing to share with the audit

    def __init__(self, crop_size: int = 384, eye_distance: float = 0.28, eye_height: float = 0.42) -> None:
        self.spec = CropSpec(crop_size, eye_distance, eye_height)

    def fingerprint(self) -> dict[str, Any]:
        return {"class": "TemplateFaceAnalyzer", "version": self.version,
                "spec": [self.spec.size, self.spec.eye_distance, self.spec.eye_height]}

    def analyse(self, image_id: str, rgb: np.ndarray) -> tuple[FaceAnalysis, np.ndarray | None]:
        size = self.spec.size
        h, w = rgb.shape[:2]
        crop = rgb if (h, w) == (size, size) else cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
        landmarks = template_landmarks(self.spec)
        m = np.array([[size / w, 0, 0], [0, size / h, 0]], dtype=np.float32)
        fa = FaceAnalysis(image_id, ok=True, reason="template landmarks (no detection)", landmarks=landmarks,
                          blendshapes=np.zeros(52, np.float32), box=landmark_box(landmarks),
                          pose=np.zeros(3, np.float32), crop_from_source=m)
        return fa, np.ascontiguousarray(crop)

    def close(self) -> None:
        pass
