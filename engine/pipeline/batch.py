"""Face batches: aligned crops and their analyses stacked into the `FaceBatch` editors work on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from engine.data import ImageRecord
from engine.faces import face_masks
from engine.types import FaceAnalysis, FaceBatch


def make_face_batch(records: Sequence[ImageRecord], analyses: Sequence[FaceAnalysis], crops: Sequence[np.ndarray],
                    device: torch.device | str = "cpu") -> FaceBatch:
    """Stack aligned crops (H, W, 3) uint8 and their analyses into a `FaceBatch` on `device`."""
    images = torch.from_numpy(np.stack(crops)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    landmarks = torch.from_numpy(np.stack([a.landmarks for a in analyses])).to(device)
    return FaceBatch(
        ids=[r.image_id for r in records],
        images=images,
        landmarks=landmarks,
        blendshapes=torch.from_numpy(np.stack([a.blendshapes for a in analyses])).to(device),
        boxes=torch.from_numpy(np.stack([a.box for a in analyses])).to(device),
        face_mask=face_masks(landmarks, images.shape[-2:]),
        pose=torch.from_numpy(np.stack([a.pose for a in analyses])).to(device),
        metadata=[dict(r.metadata) for r in records],
    )


def analyse_faces(records: Sequence[ImageRecord], analyzer: Any, device: torch.device | str = "cpu",
                  count: int | None = None) -> FaceBatch:
    """The faces of `records` as the pipeline sees them: analysed by `analyzer`, aligned, batched.

    For notebooks, scripts, benchmarks and tests that want real aligned faces without running an
    experiment. Images without a face are left out; `count` stops after that many faces.

    Raises:
        ValueError: when fewer than `count` faces were found.
    """
    kept: list[tuple[ImageRecord, FaceAnalysis, np.ndarray]] = []
    for rec in records:
        fa, crop = analyzer.analyse(rec.image_id, rec.load())
        if fa.ok and crop is not None:
            kept.append((rec, fa, crop))
        if count is not None and len(kept) == count:
            break
    if count is not None and len(kept) < count:
        raise ValueError(f"only {len(kept)} faces found in {len(records)} records, wanted count={count}")
    return make_face_batch([k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept], device)
