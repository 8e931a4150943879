"""The symmetry editors' audit judges: image-space asymmetry and mouth-corner droop.

Landmarks alone miss the shading and texture facet of symmetry (a mirrored texture keeps the mesh),
so the symmetry editors add this judge to the audit through their `AuditPolicy`. Much of a photo's
pixel asymmetry is its lighting (a face lit from one side), not the face, so the judge also reads
the asymmetry of the face's detail alone, with the shading coarser than `LIGHTING_SCALE` taken out.
The asymmetry editor also adds `MouthCornerJudge`: the droop of one mouth corner, which is what a
person sees first.
"""

from __future__ import annotations

import numpy as np
import torch

from editors.symmetry.mirror import image_asymmetry as weighted_asymmetry
from editors.symmetry.mirror import (
    inner_face_weight,
    inter_ocular_distance,
    mirror_map,
    mirror_visibility,
    smooth_within,
)
from engine.audit.measures import relative_change
from engine.faces import face_masks
from engine.faces.mesh import landmark_group
from engine.types import Judge, JudgedPair, JudgeView

#: Shading coarser than this (a Gaussian's sigma, in inter-ocular distances) counts as the photo's
#: lighting, not the face: a quarter of the eye distance keeps the features, folds and skin marks.
LIGHTING_SCALE = 0.25


def image_asymmetry(images: torch.Tensor, landmarks: np.ndarray | torch.Tensor,
                    lighting_scale: float | None = None) -> np.ndarray:
    """(N,) mean |image − its mesh-mirror image| inside the face, where the mirror partner is visible.

    The mirror image follows the (re-detected) mesh, so head pose does not count as asymmetry; the
    measure sees shading and texture asymmetry that landmarks cannot. NaN where no landmarks.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        landmarks: (N, 478, 3) in pixels of those images (NaN rows: face not found).
        lighting_scale: if given, the face's local mean over this scale (sigma, IODs; taken over the
            face alone) is subtracted first, so the one-sided lighting of a photo does not count.
    """
    return image_asymmetries(images, landmarks, (lighting_scale,))[0]


def image_asymmetries(images: torch.Tensor, landmarks: np.ndarray | torch.Tensor,
                      lighting_scales: tuple[float | None, ...]) -> list[np.ndarray]:
    """`image_asymmetry` at each of `lighting_scales`, from one face mask and one mirror map."""
    lm = torch.as_tensor(np.asarray(landmarks), dtype=torch.float32, device=images.device)
    outs = [np.full(len(lm), np.nan) for _ in lighting_scales]
    ok = torch.isfinite(lm).flatten(1).all(dim=1)
    if not bool(ok.any()):
        return outs
    idx = torch.nonzero(ok).flatten()
    imgs, pts = images[idx].float(), lm[idx]
    size = (int(imgs.shape[-2]), int(imgs.shape[-1]))
    face = face_masks(pts, size)
    coords = mirror_map(pts, size)
    weight = inner_face_weight(face, pts, 0.2) * mirror_visibility(coords, pts)
    rows = idx.cpu().numpy()
    for out, scale in zip(outs, lighting_scales, strict=True):
        seen = imgs if scale is None else imgs - smooth_within(imgs, face, scale * inter_ocular_distance(pts))
        out[rows] = weighted_asymmetry(seen, coords, weight).cpu().numpy()
    return outs


class ImageAsymmetryJudge(Judge):
    """Readings `image_asymmetry` (all of it) and `image_asymmetry_detail` (the face's detail, lighting
    coarser than `lighting_scale` IODs taken out; see `image_asymmetry`).

    Columns `<reading>_ref`, `<reading>_edit` and `delta_<reading>_rel` (relative to the reference):
    `delta_image_asymmetry_rel` and `delta_image_asymmetry_detail_rel`. Where the two differ, an edit
    changed the lighting's asymmetry more than the face's.

    Args:
        lighting_scale: see `image_asymmetry`.
    """

    name = "image_asymmetry"

    def __init__(self, lighting_scale: float = LIGHTING_SCALE) -> None:
        if not 0.0 < float(lighting_scale) <= 2.0:
            raise ValueError(f"ImageAsymmetryJudge lighting_scale={lighting_scale!r} must be in (0, 2] IODs")
        self.lighting_scale = float(lighting_scale)

    def read(self, view: JudgeView) -> dict[str, np.ndarray]:
        images, landmarks = view.images.float().div(255.0), view.readings["landmarks"]
        whole, detail = image_asymmetries(images, landmarks, (None, self.lighting_scale))
        return {"image_asymmetry": whole, "image_asymmetry_detail": detail}

    def compare(self, pair: JudgedPair) -> dict[str, np.ndarray]:
        out = {}
        for reading in ("image_asymmetry", "image_asymmetry_detail"):
            ref, edit = pair.ref.readings[reading], pair.edit.readings[reading]
            out.update({f"{reading}_ref": ref, f"{reading}_edit": edit, f"delta_{reading}_rel": relative_change(ref, edit)})
        return out


#: The subject's sides (MediaPipe's landmark names: the subject's left is on the image's right).
SIDES = ("left", "right")
#: MediaPipe mouth corners by the SUBJECT's side (the subject's left is on the image's right).
MOUTH_CORNER_LANDMARKS = {"left": 291, "right": 61}


def mouth_corner_height(landmarks: np.ndarray, side: str, frame: np.ndarray) -> np.ndarray:
    """(N,) how far the `side` mouth corner sits below the other one, in IODs of `frame`'s face.

    "Below" is along the face's own down axis, perpendicular to the line through the eye centres of
    `frame` (N, 478, 3), and the unit is `frame`'s image-plane inter-ocular distance, so a reference
    and its edit are measured on one ruler and head roll does not count. NaN where either has no face.
    """
    lm, fr = np.asarray(landmarks, dtype=np.float64), np.asarray(frame, dtype=np.float64)
    right_eye = fr[:, list(landmark_group("right_eye")), :2].mean(axis=1)
    left_eye = fr[:, list(landmark_group("left_eye")), :2].mean(axis=1)
    across = left_eye - right_eye
    iod = np.linalg.norm(across, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # The eye line's normal pointing down the face (image y grows downward).
        down = np.stack([across[:, 1], -across[:, 0]], axis=-1) / iod[:, None]
        down *= np.where(down[:, 1:] < 0, -1.0, 1.0)
        other = "right" if side == "left" else "left"
        gap = lm[:, MOUTH_CORNER_LANDMARKS[side], :2] - lm[:, MOUTH_CORNER_LANDMARKS[other], :2]
        return (gap * down).sum(axis=-1) / iod


def lower_mouth_side(landmarks: np.ndarray) -> list[str]:
    """Per face, the subject's side whose mouth corner already sits lower ("left" on a tie).

    The `side="auto"` rule of the asymmetry editor, shared with `MouthCornerJudge` so the judge scores
    the side the editor drooped: a droop on the other side would first make such a face MORE symmetric.
    """
    height = mouth_corner_height(landmarks, "left", landmarks)
    return ["right" if h < 0 else "left" for h in height.tolist()]


class MouthCornerJudge(Judge):
    """The droop of one mouth corner, read from the re-detected MediaPipe landmarks.

    Column `mouth_corner_drop`: how much further the `side` mouth corner sits below the other corner in
    the edit than in the reference, in inter-ocular distances, positive when that side droops (both
    measured on the reference's eye line and IOD; see `mouth_corner_height`).

    Args:
        side: the SUBJECT's drooping side, "left" or "right", or "auto": per face the side
            `lower_mouth_side` picks on the reference, as the editor does (the editor's input landmarks
            are the reference's: its sham is its input).
    """

    name = "mouth_corner"

    def __init__(self, side: str = "left") -> None:
        if side not in ("left", "right", "auto"):
            raise ValueError(f"MouthCornerJudge side={side!r}: allowed: left, right, auto")
        self.side = side

    def compare(self, pair: JudgedPair) -> dict[str, np.ndarray]:
        ref, edit = pair.ref.readings["landmarks"], pair.edit.readings["landmarks"]
        sides = lower_mouth_side(ref) if self.side == "auto" else [self.side] * len(ref)
        left = np.array([side == "left" for side in sides])
        drop = {side: mouth_corner_height(edit, side, ref) - mouth_corner_height(ref, side, ref) for side in SIDES}
        return {"mouth_corner_drop": np.where(left, drop["left"], drop["right"])}
