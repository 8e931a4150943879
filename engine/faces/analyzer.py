"""Face analysis: find the face, cut the aligned crop, measure landmarks, blendshapes and pose.

`FaceAnalyzer` is the production analyser (MediaPipe): detection runs on the source photo (small
images are upscaled first), the crop is cut by the one aligner (`engine.faces.align`), and the
landmarker runs again on the crop, so that originals, shams and edits are all measured by the same
detector on the same framing. With `multi`, every face of a photo is analysed (`analyse_all`): the
full-range detector (`engine.faces.detector`, on tiles of large photos) finds them, including small
faces and the faces of group photos that the landmarker's own short-range detector misses. `TemplateFaceAnalyzer` is the stand-in for tests and dry runs that
need no detector: it takes every image as an aligned frontal face and places the canonical mesh on
it. Both are Hydra `_target_`s of the `faces` group; the pipeline caches what they return.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from engine.faces.align import LEFT_IRIS_CENTRE, RIGHT_IRIS_CENTRE, CropSpec, align_face, landmark_box
from engine.faces.landmarker import FaceLandmarker
from engine.faces.template import template_landmarks
from engine.types import (
    LANDMARKS_FROM_SOURCE,
    REDETECTED_ON_CROP,
    REDETECTED_WITH_MARGIN,
    TEMPLATE_LANDMARKS,
    FaceAnalysis,
)

#: Multi-face analysis: the detector's threshold (MediaPipe's full-range graph uses 0.6; the landmarker
#: confirms every proposal anyway), the landmark region around a detection box (box sides), the least
#: side the region is upscaled to, and a version to bump when any of this changes.
MULTI_MIN_SCORE = 0.6
REGION_SCALE = 2.0
REGION_MIN_SIDE = 384
MULTI_VERSION = "2"  # 2: proposals the landmarker does not confirm come back as skipped faces
#: The reason a detector proposal that the landmarker could not fit is skipped with (its record: skipped.csv).
UNCONFIRMED_PROPOSAL = "face proposed by the detector but not fitted by the landmarker"


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
        multi: analyse every face of a photo (True), only the largest (False), or "auto": as the
            dataset prefers (the demo set: every face).
        min_face_iod: with `multi`, faces whose eyes are closer than this (source pixels) are skipped
            with that reason: too small to edit or judge.
        tile: with `multi`, photos larger than this on their long side are also searched in tiles of
            this side (faces down to about a tenth of it are found).
    """

    version = "2"  # bump when the analysis changes, so cached analyses are recomputed (2: crop margin)

    def __init__(
        self,
        crop_size: int = 384,
        eye_distance: float = 0.28,
        eye_height: float = 0.42,
        min_detection_confidence: float = 0.5,
        upscale_below: int = 160,
        landmarker: FaceLandmarker | None = None,
        multi: bool | str = False,
        min_face_iod: float = 16.0,
        tile: int = 384,
        padding: str = "replicate",
    ) -> None:
        self.spec = CropSpec(crop_size, eye_distance, eye_height, padding)
        if not 0.0 < min_detection_confidence < 1.0:
            raise ValueError(f"faces.min_detection_confidence must be in (0, 1), got {min_detection_confidence}")
        if multi not in (True, False, "auto"):
            raise ValueError(f"faces.multi={multi!r}: allowed: true, false, auto")
        if not min_face_iod > 0:
            raise ValueError(f"faces.min_face_iod must be > 0 px, got {min_face_iod}")
        if tile < 64:
            raise ValueError(f"faces.tile must be >= 64 px, got {tile}")
        self.upscale_below = upscale_below
        self.min_detection_confidence = min_detection_confidence
        self.multi = multi
        self.min_face_iod = float(min_face_iod)
        self.tile = tile
        self._landmarker = landmarker
        self._detectors: dict[bool, Any] = {}

    @property
    def landmarker(self) -> FaceLandmarker:
        """The detector, shared with the audit's re-detection (one model load per run)."""
        if self._landmarker is None:
            self._landmarker = FaceLandmarker(min_detection_confidence=self.min_detection_confidence)
        return self._landmarker

    def detector(self, tiled: bool) -> Any:
        """The full-range face detector, on the whole photo or also on tiles (multi-face analysis)."""
        if tiled not in self._detectors:
            from engine.faces.detector import FullRangeFaceDetector

            self._detectors[tiled] = FullRangeFaceDetector(min_score=MULTI_MIN_SCORE, tile=self.tile if tiled else None)
        return self._detectors[tiled]

    def fingerprint(self) -> dict[str, Any]:
        from engine.assets import get_asset

        fp = {
            "version": self.version,
            "spec": [self.spec.size, self.spec.eye_distance, self.spec.eye_height],
            "upscale_below": self.upscale_below,
            "min_conf": self.min_detection_confidence,
            "model": get_asset("face_landmarker").sha256,
        }
        if self.spec.padding != "replicate":  # replicate-padded analyses keep their keys (and cached work)
            fp["padding"] = self.spec.padding
        if self.multi is True:  # single-face analyses keep their keys (and their cached work)
            fp["multi"] = {"v": MULTI_VERSION, "min_face_iod": self.min_face_iod, "tile": self.tile,
                           "min_score": MULTI_MIN_SCORE, "detector": get_asset("face_detection_full_range").sha256}
        return fp

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
        return self._aligned(image_id, rgb, lm_src, det)

    def _aligned(self, image_id: str, rgb: np.ndarray, lm_src: np.ndarray,
                 det: dict[str, Any] | None) -> tuple[FaceAnalysis, np.ndarray]:
        """Cut the aligned crop of the face with source landmarks `lm_src` and re-detect on it."""
        crop, moved, m = align_face(rgb, lm_src, self.spec)
        # Re-detect on the crop: every condition is then measured on identical framing.
        det2 = self.landmarker.detect_crop(crop)
        if det2 is not None:
            landmarks, blend, pose = det2["landmarks"], det2["blendshapes"], det2["pose"]
            reason = REDETECTED_WITH_MARGIN if det2["margin"] else REDETECTED_ON_CROP
        else:
            landmarks = moved
            blend = det["blendshapes"] if det is not None else np.zeros(52, np.float32)
            pose = det["pose"] if det is not None else np.zeros(3, np.float32)
            reason = LANDMARKS_FROM_SOURCE
        fa = FaceAnalysis(image_id, ok=True, reason=reason, landmarks=landmarks, blendshapes=blend,
                          box=landmark_box(landmarks), pose=pose, crop_from_source=m.astype(np.float32))
        return fa, crop

    def analyse_all(self, image_id: str, rgb: np.ndarray) -> list[tuple[FaceAnalysis, np.ndarray | None]]:
        """Every face of the photo, left to right: one (analysis, aligned crop) each.

        The full-range detector proposes faces (on the whole photo, and on tiles of a large one); the
        landmarker then runs on a square region around each, upscaled when small, and confirms it.
        A photo where the detector finds nothing (a tight face crop, such as the LFW images) gets the
        single-face analysis. Faces whose eyes are closer than `min_face_iod` come back with ok=False
        and that reason. Proposals the landmarker cannot fit (a face in full profile, a covered face,
        or no face at all) come back last, left to right, with ok=False and `UNCONFIRMED_PROPOSAL`,
        so the run's skipped.csv shows them and a user can look: nothing a person might call a face
        disappears silently. Appending them keeps the confirmed faces' record numbers. No face: an
        empty list.
        """
        proposals = self.proposals(rgb)
        if not proposals:
            fa, crop = self.analyse(image_id, rgb)
            return [(fa, crop)] if fa.ok else []
        out: list[tuple[FaceAnalysis, np.ndarray | None]] = []
        eyes: list[np.ndarray] = []
        fitted: list[np.ndarray] = []  # the landmark boxes (source px) of every face fitted
        unfitted = []
        for det in proposals:
            landmarks = self._region_landmarks(rgb, det.box)
            if landmarks is None:
                unfitted.append(det)
                continue
            fitted.append(landmark_box(landmarks))
            mid = (landmarks[RIGHT_IRIS_CENTRE, :2] + landmarks[LEFT_IRIS_CENTRE, :2]) / 2
            iod = float(np.linalg.norm(landmarks[LEFT_IRIS_CENTRE, :2] - landmarks[RIGHT_IRIS_CENTRE, :2]))
            if any(np.linalg.norm(mid - e) < 0.5 * iod for e in eyes):
                continue  # the same face found twice
            eyes.append(mid)
            if iod < self.min_face_iod:
                out.append((FaceAnalysis(image_id, ok=False, reason=f"face too small: {iod:.0f} px between the "
                                         f"eyes (faces.min_face_iod={self.min_face_iod:g})"), None))
                continue
            out.append(self._aligned(image_id, rgb, landmarks, None))
        for det in unfitted:
            centre = np.array([(det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2])
            # A tile's partial view of a face fitted elsewhere is that face, not another one.
            if any(b[0] <= centre[0] <= b[2] and b[1] <= centre[1] <= b[3] for b in fitted):
                continue
            fitted.append(np.asarray(det.box, dtype=np.float64))
            x0, y0, x1, y1 = (round(v) for v in det.box)
            out.append((FaceAnalysis(image_id, ok=False, reason=f"{UNCONFIRMED_PROPOSAL} (box {x0},{y0}-{x1},{y1} px, "
                                     f"detector score {det.score:.2f}): a profile, a covered face, or no face"), None))
        return out

    def proposals(self, rgb: np.ndarray) -> list[Any]:
        """The full-range detector's faces in the photo (and its tiles, when large), left to right."""
        tiled = max(rgb.shape[:2]) > self.tile * 5 // 3  # small photos need no tiles
        return sorted(self.detector(tiled).detect(rgb), key=lambda d: ((d.box[0] + d.box[2]) / 2, d.box[1]))

    def _region_landmarks(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
        """Landmarks (478, 3) in source pixels of the face in a square region around `box`, or None."""
        x0, y0, x1, y1 = box
        side = REGION_SCALE * max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        scale = max(1.0, REGION_MIN_SIDE / side)
        m = np.array([[scale, 0, scale * (side / 2 - cx)], [0, scale, scale * (side / 2 - cy)]])
        size = int(round(side * scale))
        region = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        det = self.landmarker.detect(region)
        if det is None:
            return None
        out = det["landmarks"].astype(np.float64)
        out[:, :2] = (out[:, :2] - m[:, 2]) / scale
        out[:, 2] /= scale
        return out.astype(np.float32)

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
        fa = FaceAnalysis(image_id, ok=True, reason=TEMPLATE_LANDMARKS, landmarks=landmarks,
                          blendshapes=np.zeros(52, np.float32), box=landmark_box(landmarks),
                          pose=np.zeros(3, np.float32), crop_from_source=m)
        return fa, np.ascontiguousarray(crop)

    def close(self) -> None:
        pass
