"""Property measures that need the face-mesh topology, for the engine's audit (wired by config).

The engine cannot import `editors`; `conf/audit/default.yaml` names `editors.measures.symmetry_index`
as a `_partial_` target, so the independent symmetry check uses the same mirror pairs as the editor
without the engine knowing about the mesh data.
"""

from __future__ import annotations

import numpy as np
import torch

from editors.mesh import landmark_group, mirror_index
from engine.audit import symmetry_index as _mirror_fit_asymmetry


def mirror_pairs() -> np.ndarray:
    """(P, 2) left/right partner landmarks, each pair once."""
    mirror = mirror_index()
    idx = np.arange(len(mirror))
    keep = idx < mirror
    return np.stack([idx[keep], mirror[keep]], axis=1)


def symmetry_index(landmarks: np.ndarray | torch.Tensor, use_depth: bool = True) -> np.ndarray:
    """(N,) asymmetry of re-detected meshes: 0 = mirror-symmetric (see `engine.audit.symmetry_index`)."""
    return _mirror_fit_asymmetry(landmarks, mirror_pairs(), np.asarray(landmark_group("midline")), use_depth)


def image_asymmetry(images: torch.Tensor, landmarks: np.ndarray | torch.Tensor) -> np.ndarray:
    """(N,) mean |image − its mesh-mirror image| inside the face, where the mirror partner is visible.

    The mirror image follows the (re-detected) mesh, so head pose does not count as asymmetry; the
    measure sees shading and texture asymmetry that landmarks cannot. NaN where no landmarks.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        landmarks: (N, 478, 3) in pixels of those images (NaN rows: face not found).
    """
    from editors.symmetry import image_asymmetry as _weighted_asymmetry
    from editors.symmetry import inner_face_weight, mirror_map, mirror_visibility
    from engine.faces import face_masks

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
    out[idx.cpu().numpy()] = _weighted_asymmetry(imgs, coords, weight).cpu().numpy()
    return out
