"""Judges on re-detected landmarks: is the face still found, did the expression stay, how symmetric is it.

`FaceDetectionJudge` runs the analysis's own landmarker again on every sham and edit (the crops are
already aligned, so no second alignment). Its readings, "found", "landmarks" and "blendshapes", are
what the judges after it read. `SymmetryJudge` measures how far each re-detected mesh is from mirror
symmetry, with the mesh's own mirror pairs.
"""

from __future__ import annotations

import numpy as np

from engine.audit.measures import mean_abs_change, symmetry_index
from engine.faces.landmarker import FaceLandmarker
from engine.faces.mesh import NUM_LANDMARKS, landmark_group, mirror_pairs
from engine.types import Judge, JudgedPair, JudgeView

N_BLENDSHAPES = 52


def mesh_asymmetry(landmarks: np.ndarray, use_depth: bool = True) -> np.ndarray:
    """(N,) mirror-fit asymmetry index of 478-point meshes with the mesh's own mirror pairs (NaN rows: no face)."""
    return symmetry_index(landmarks, mirror_pairs(), np.asarray(landmark_group("midline")), use_depth)


class FaceDetectionJudge(Judge):
    """Re-detected landmarks and blendshapes of every image.

    Readings: `found` (N,) bool, `landmarks` (N, 478, 3), `blendshapes` (N, 52), NaN where no face.
    Columns: `face_found` (the edit's face was found again), `face_found_ref` (the reference's was
    found: without it no judge can align on it) and `blendshape_change` (mean |change| of the 52
    blendshapes between reference and edit: the expression check).

    Args:
        landmarker: the analysis's landmarker, shared (one model load per run); None builds one.
    """

    name = "landmarks"

    def __init__(self, landmarker: FaceLandmarker | None = None) -> None:
        self._landmarker = landmarker
        self._owns = landmarker is None

    @property
    def landmarker(self) -> FaceLandmarker:
        if self._landmarker is None:
            self._landmarker = FaceLandmarker()
        return self._landmarker

    def fingerprint(self) -> dict[str, object]:
        from engine.assets import get_asset

        return {"judge": self.name, "model": get_asset("face_landmarker").sha256,
                "min_conf": self.landmarker.min_detection_confidence}

    def read(self, view: JudgeView) -> dict[str, np.ndarray]:
        rgb = view.images.permute(0, 2, 3, 1).cpu().numpy()
        n = len(rgb)
        found = np.zeros(n, dtype=bool)
        landmarks = np.full((n, NUM_LANDMARKS, 3), np.nan, np.float32)
        blendshapes = np.full((n, N_BLENDSHAPES), np.nan, np.float32)
        for i, image in enumerate(rgb):
            det = self.landmarker.detect(image)
            if det is not None:
                found[i], landmarks[i], blendshapes[i] = True, det["landmarks"], det["blendshapes"]
        return {"found": found, "landmarks": landmarks, "blendshapes": blendshapes}

    def compare(self, pair: JudgedPair) -> dict[str, np.ndarray]:
        return {
            "face_found": pair.edit.readings["found"].astype(bool),
            "face_found_ref": pair.ref.readings["found"].astype(bool),
            "blendshape_change": mean_abs_change(pair.edit.readings["blendshapes"], pair.ref.readings["blendshapes"]),
        }

    def close(self) -> None:
        if self._owns and self._landmarker is not None:
            self._landmarker.close()


class SymmetryJudge(Judge):
    """Mirror-fit asymmetry index of each re-detected mesh (0 = mirror-symmetric; see `symmetry_index`).

    Reading `symmetry_index`; columns `symmetry_index_ref`, `symmetry_index_edit` and
    `delta_symmetry_index_rel` (the change relative to the reference: the index has no unit).

    Args:
        use_depth: fit the reflection in 3-D, so head yaw does not count as asymmetry.
    """

    name = "mesh_symmetry"

    def __init__(self, use_depth: bool = True) -> None:
        self.use_depth = use_depth

    def read(self, view: JudgeView) -> dict[str, np.ndarray]:
        return {"symmetry_index": mesh_asymmetry(view.readings["landmarks"], self.use_depth)}

    def compare(self, pair: JudgedPair) -> dict[str, np.ndarray]:
        ref, edit = pair.ref.readings["symmetry_index"], pair.edit.readings["symmetry_index"]
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.where(ref > 0, (edit - ref) / np.where(ref > 0, ref, 1.0), np.nan)
        return {"symmetry_index_ref": ref, "symmetry_index_edit": edit, "delta_symmetry_index_rel": rel}
