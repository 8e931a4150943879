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
