"""Helpers shared by the tests (import as `from helpers import ...`; pytest puts tests/ on the path)."""

from __future__ import annotations

import numpy as np
import torch


def face_batch(crops, landmarks, ids=None):
    from engine.faces import face_masks
    from engine.faces.align import landmark_box
    from engine.types import FaceBatch

    lms = torch.from_numpy(np.asarray(landmarks, dtype=np.float32))
    images = torch.from_numpy(np.asarray(crops)).permute(0, 3, 1, 2).float() / 255
    n = len(images)
    return FaceBatch(
        ids=list(ids) if ids is not None else [f"face{i}" for i in range(n)],
        images=images,
        landmarks=lms,
        blendshapes=torch.zeros(n, 52),
        boxes=torch.from_numpy(np.stack([landmark_box(lm) for lm in np.asarray(landmarks)])),
        face_mask=face_masks(lms, tuple(images.shape[-2:])),
        pose=torch.zeros(n, 3),
    )




def redetect(images) -> np.ndarray:
    """The analysis's landmarker on `(N, 3, H, W)` float [0, 1] images: `(N, 478, 3)`, NaN rows where no face."""
    from engine.audit.landmarks import FaceDetectionJudge
    from engine.types import JudgeView

    judge = FaceDetectionJudge()
    try:
        u8 = (images.clamp(0, 1) * 255).round().to(dtype=torch.uint8)
        return judge.read(JudgeView(u8, {}, np.full((len(u8), 478, 3), np.nan)))["landmarks"].astype(np.float64)
    finally:
        judge.close()


def load_script(name: str):
    """The module `scripts/<name>.py` (scripts are not a package), registered under `name`: dataclasses
    resolve their module while the class is made."""
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def occluding_policy():
    """An occluding policy (electrodes, masks) whose target is "every requested site drawn"."""
    from engine.types import AuditPolicy, ReportedTarget

    target = ReportedTarget(lambda m: m["drawn"] >= m["requested"], "sites_missing")
    return AuditPolicy("cover", None, target, occluding=True)


def warp_kink_outside(coords: torch.Tensor, target: torch.Tensor) -> float:
    """Largest second difference, along x, of a backward map's displacement outside the face outline of
    `target (N, 478, 2|3)`: a piecewise-affine warp kinks at every triangle edge there, a smoothed one not."""
    from editors.skin import polygon_masks
    from editors.warp import anchor_ring, identity_coords

    size = tuple(coords.shape[1:3])
    outer = polygon_masks(anchor_ring(target[..., :2], 1.0), size)[:, 0] == 0
    d = (coords - identity_coords(coords.shape[0], size, coords.device)).norm(dim=-1)
    second = (d[:, :, 2:] - 2 * d[:, :, 1:-1] + d[:, :, :-2]).abs()
    return second[outer[:, :, 1:-1]].amax().item()
