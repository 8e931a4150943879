"""Judges on re-detected landmarks: is the face still found, did the expression stay, how symmetric is it.

`FaceDetectionJudge` runs the analysis's own landmarker again on every sham and edit (the crops are
already aligned, so no second alignment). Its readings, "found", "landmarks" and "blendshapes", are
what the judges after it read. `SymmetryJudge` measures how far each re-detected mesh is from mirror
symmetry, with the mesh's own mirror pairs.
"""

from __future__ import annotations

import numpy as np

from engine.audit.measures import mean_abs_change, relative_change, symmetry_index
from engine.faces.landmarker import CROP_MARGIN, FaceLandmarker
from engine.faces.mesh import NUM_LANDMARKS, landmark_group, mirror_pairs
from engine.types import Judge, JudgedPair, JudgeView

N_BLENDSHAPES = 52


def mesh_asymmetry(landmarks: np.ndarray, use_depth: bool = True) -> np.ndarray:
    """(N,) mirror-fit asymmetry index of 478-point meshes with the mesh's own mirror pairs (NaN rows: no face)."""
    return symmetry_index(landmarks, mirror_pairs(), np.asarray(landmark_group("midline")), use_depth)


class FaceDetectionJudge(Judge):
    """Re-detected landmarks and blendshapes of every image.

    Readings: `found` (N,) bool, `margin` (N,) bool (found only on the crop framed with
    `CROP_MARGIN`, see `FaceLandmarker.detect_crop`), `landmarks` (N, 478, 3), `blendshapes` (N, 52),
    NaN where no face. Columns: `face_found` (the edit's face was found again), `face_found_ref` (the
    reference's was found: without it no judge can align on it), `face_margin` (either needed the
    margin) and `blendshape_change` (mean |change| of the 52 blendshapes between reference and edit,
    both read in the same framing: the expression check).

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
                "min_conf": self.landmarker.min_detection_confidence, "crop_margin": CROP_MARGIN}

    def read(self, view: JudgeView) -> dict[str, np.ndarray]:
        rgb = view.images.permute(0, 2, 3, 1).cpu().numpy()
        n = len(rgb)
        found, margin = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        landmarks = np.full((n, NUM_LANDMARKS, 3), np.nan, np.float32)
        blendshapes = np.full((n, N_BLENDSHAPES), np.nan, np.float32)
        for i, image in enumerate(rgb):
            det = self.landmarker.detect_crop(image)
            if det is not None:
                found[i], margin[i] = True, det["margin"]
                landmarks[i], blendshapes[i] = det["landmarks"], det["blendshapes"]
        return {"found": found, "margin": margin, "landmarks": landmarks, "blendshapes": blendshapes}

    def compare(self, pair: JudgedPair) -> dict[str, np.ndarray]:
        ref, edit = pair.ref.readings, pair.edit.readings
        ref_bs, edit_bs = ref["blendshapes"].copy(), edit["blendshapes"].copy()
        # The margin alone moves the blendshapes by about the expression threshold, so where only
        # one of the two needed it, the other is read again with the margin too.
        mixed = np.flatnonzero(ref["found"] & edit["found"] & (ref["margin"] != edit["margin"]))
        for i in mixed:
            view, bs = (pair.edit, edit_bs) if ref["margin"][i] else (pair.ref, ref_bs)
            det = self.landmarker.detect_crop(view.images[i].permute(1, 2, 0).cpu().numpy(), margin=True)
            bs[i] = det["blendshapes"] if det is not None else np.nan
        return {
            "face_found": edit["found"].astype(bool),
            "face_found_ref": ref["found"].astype(bool),
            "face_margin": (ref["margin"] | edit["margin"]).astype(bool),
            "blendshape_change": mean_abs_change(edit_bs, ref_bs),
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
        return {"symmetry_index_ref": ref, "symmetry_index_edit": edit,
                "delta_symmetry_index_rel": relative_change(ref, edit)}
