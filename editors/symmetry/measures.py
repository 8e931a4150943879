"""The audit's image-space symmetry judge: how different a face looks from its own mirror image.

Landmarks alone miss the shading and texture facet of symmetry (a mirrored texture keeps the mesh),
so the symmetry editors add this judge to the audit through their `AuditPolicy`.
"""

from __future__ import annotations

import numpy as np
import torch

from editors.symmetry.mirror import image_asymmetry as weighted_asymmetry
from editors.symmetry.mirror import inner_face_weight, mirror_map, mirror_visibility
from engine.faces import face_masks
from engine.types import Judge, JudgedPair, JudgeView


def image_asymmetry(images: torch.Tensor, landmarks: np.ndarray | torch.Tensor) -> np.ndarray:
    """(N,) mean |image − its mesh-mirror image| inside the face, where the mirror partner is visible.

    The mirror image follows the (re-detected) mesh, so head pose does not count as asymmetry; the
    measure sees shading and texture asymmetry that landmarks cannot. NaN where no landmarks.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        landmarks: (N, 478, 3) in pixels of those images (NaN rows: face not found).
    """
    lm = torch.as_tensor(np.asarray(landmarks), dtype=torch.float32, device=images.device)
    out = np.full(len(lm), np.nan)
    ok = torch.isfinite(lm).flatten(1).all(dim=1)
    if not bool(ok.any()):
        return out
    idx = torch.nonzero(ok).flatten()
    imgs, pts = images[idx].float(), lm[idx]
    size = (int(imgs.shape[-2]), int(imgs.shape[-1]))
    coords = mirror_map(pts, size)
    weight = inner_face_weight(face_masks(pts, size), pts, 0.2) * mirror_visibility(coords, pts)
    out[idx.cpu().numpy()] = weighted_asymmetry(imgs, coords, weight).cpu().numpy()
    return out


class ImageAsymmetryJudge(Judge):
    """Reading `image_asymmetry`; columns `image_asymmetry_ref`, `image_asymmetry_edit` and
    `delta_image_asymmetry_rel` (relative to the reference)."""

    name = "image_asymmetry"

    def read(self, view: JudgeView) -> dict[str, np.ndarray]:
        return {"image_asymmetry": image_asymmetry(view.images.float().div(255.0), view.readings["landmarks"])}

    def compare(self, pair: JudgedPair) -> dict[str, np.ndarray]:
        ref, edit = pair.ref.readings["image_asymmetry"], pair.edit.readings["image_asymmetry"]
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.where(ref > 0, (edit - ref) / np.where(ref > 0, ref, 1.0), np.nan)
        return {"image_asymmetry_ref": ref, "image_asymmetry_edit": edit, "delta_image_asymmetry_rel": rel}
