"""Facial symmetry editor: warp the face toward the mirrored average of its own shape.

The symmetry plane is fitted per face in 3-D (landmark x, y and depth z) to the midline landmarks and
the midpoints of all left/right mirror pairs, so a turned head is symmetrised about its own turned
midline rather than about the image's vertical. With 2-D landmarks the same fit gives a midline. Each
landmark's target is `p + strength / 2 * (R(p_partner) - p)`, where `R` reflects across that plane; at
strength 1 the shape is exactly the mirrored average, and the symmetry index falls as `1 - strength`.
The irises only follow their eyes: gaze is not part of facial shape.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from editors.mesh import landmark_group, mirror_index
from editors.warp import apply_backward_map, backward_map, moved_region
from engine.types import Editor, EditResult, FaceBatch

SYMMETRY_MODES: tuple[str, ...] = ("shape",)
NUM_MESH_POINTS = 468  # landmarks before the iris points


def _mirror(device: torch.device) -> torch.Tensor:
    return torch.tensor(mirror_index(), device=device)


def symmetry_plane(landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit the facial symmetry plane (3-D) or midline (2-D) of each face.

    Args:
        landmarks: `(N, 478, D)` with D = 3 (x, y, depth) or 2.

    Returns:
        `(centre, normal)`, each `(N, D)`: a point on the plane/line and its unit normal. The fit is a
        least-squares plane through the midpoints of the 468 mesh landmarks' mirror pairs (midline
        landmarks are their own midpoints).
    """
    mirror = _mirror(landmarks.device)[:NUM_MESH_POINTS]
    # Irises are left out: they follow gaze, which the symmetric target does not mirror.
    midpoints = (landmarks[:, :NUM_MESH_POINTS] + landmarks[:, mirror]) / 2
    centre = midpoints.mean(dim=1)
    # The normal is the direction of least spread of the midpoints; float64 keeps the SVD stable.
    _, _, vh = torch.linalg.svd((midpoints - centre[:, None]).double(), full_matrices=False)
    normal = vh[:, -1].to(landmarks.dtype)
    return centre, normal


def reflect(points: torch.Tensor, centre: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """Reflect `(N, P, D)` points across the planes `(centre, normal)` of `symmetry_plane`."""
    distance = ((points - centre[:, None]) * normal[:, None]).sum(dim=-1, keepdim=True)
    return points - 2 * distance * normal[:, None]


def inter_ocular_distance(landmarks: torch.Tensor) -> torch.Tensor:
    """`(N,)` distance between the centres of the two eye openings, in the image plane."""
    right = landmarks[:, list(landmark_group("right_eye")), :2].mean(dim=1)
    left = landmarks[:, list(landmark_group("left_eye")), :2].mean(dim=1)
    return (left - right).norm(dim=-1)


def mirrored_partners(landmarks: torch.Tensor) -> torch.Tensor:
    """Each landmark's mirror partner reflected across the face's own symmetry plane, `(N, 478, D)`."""
    centre, normal = symmetry_plane(landmarks)
    mirror = _mirror(landmarks.device)
    return reflect(landmarks[:, mirror], centre, normal)


def symmetry_index(landmarks: torch.Tensor) -> torch.Tensor:
    """`(N,)` asymmetry: mean image-plane distance between landmarks and their reflected partners / IOD.

    Taken over the 468 mesh landmarks; the irises are left out because their position is gaze, not
    shape. 0 for a perfectly symmetric shape (at any head pose, given 3-D landmarks).
    """
    partners = mirrored_partners(landmarks)
    gap = (landmarks[:, :NUM_MESH_POINTS, :2] - partners[:, :NUM_MESH_POINTS, :2]).norm(dim=-1).mean(dim=1)
    return gap / inter_ocular_distance(landmarks)


def symmetric_target(landmarks: torch.Tensor, strength: float) -> torch.Tensor:
    """Landmarks moved `strength` of the way to the mirrored-average shape, `(N, 478, D)`.

    Each iris moves rigidly with its eye opening (by the eye loop's mean shift), so gaze is unchanged.
    """
    partners = mirrored_partners(landmarks)
    target = landmarks + (strength / 2) * (partners - landmarks)
    for eye, iris in (("right_eye", "right_iris"), ("left_eye", "left_iris")):
        eye_idx, iris_idx = list(landmark_group(eye)), list(landmark_group(iris))
        eye_shift = (target[:, eye_idx] - landmarks[:, eye_idx]).mean(dim=1, keepdim=True)
        target[:, iris_idx] = landmarks[:, iris_idx] + eye_shift
    return target


class SymmetryEditor(Editor):
    """Makes faces more symmetric by a landmark-driven mesh warp.

    Args:
        mode: "shape" (warp to the mirrored-average shape). Texture mirroring and the opposite
            direction (unilateral droop) are further modes to come.
        mask_dilation_px: how far the returned edit mask extends beyond the moved pixels.
    """

    property: ClassVar[str] = "symmetry"

    def __init__(self, mode: str = "shape", mask_dilation_px: int = 3) -> None:
        if mode not in SYMMETRY_MODES:
            raise ValueError(f"SymmetryEditor mode={mode!r} is not supported; choose one of {SYMMETRY_MODES}")
        if mask_dilation_px < 0:
            raise ValueError(f"SymmetryEditor mask_dilation_px={mask_dilation_px} must be >= 0")
        self.mode = mode
        self.mask_dilation_px = int(mask_dilation_px)

    def edit(self, batch: FaceBatch, strength: float, seed: int) -> EditResult:
        """Warp every face `strength` of the way to its mirrored-average shape (0 is the sham).

        The edit is deterministic and uses no randomness, so `seed` does not change the output.
        """
        strength = self._check_strength(strength)
        landmarks = batch.landmarks.to(batch.images.device, torch.float32)
        target = self._target_landmarks(landmarks, strength)
        coords = backward_map(landmarks, target, batch.size)
        images = apply_backward_map(batch.images, coords).clamp(0.0, 1.0)
        mask = moved_region(coords, dilation_px=self.mask_dilation_px)
        return EditResult(
            images=images,
            mask=mask,
            metadata=self._metadata(landmarks, target, strength),
            landmarks=target,
        )

    def _target_landmarks(self, landmarks: torch.Tensor, strength: float) -> torch.Tensor:
        return symmetric_target(landmarks, strength)

    @staticmethod
    def _check_strength(strength: float) -> float:
        value = float(strength)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"SymmetryEditor strength={strength!r} must be in [0, 1]")
        return value

    def _metadata(self, before: torch.Tensor, after: torch.Tensor, strength: float) -> list[dict[str, Any]]:
        index_before = symmetry_index(before).tolist()
        index_after = symmetry_index(after).tolist()
        shift = (after[..., :2] - before[..., :2]).norm(dim=-1)
        return [
            {
                "editor": self.name,
                "mode": self.mode,
                "strength": strength,
                "symmetry_index_before": index_before[i],
                "symmetry_index_after": index_after[i],
                "mean_landmark_shift_px": float(shift[i].mean()),
                "max_landmark_shift_px": float(shift[i].max()),
            }
            for i in range(before.shape[0])
        ]
