"""Soft face-oval masks from landmarks: where a face edit may act, feathered into its surroundings."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from engine.faces.mesh import landmark_group

#: The face oval of the 478-point mesh as an ordered loop (MediaPipe's FACE_OVAL connections).
FACE_OVAL: list[int] = list(landmark_group("face_oval"))


def face_masks(landmarks: torch.Tensor, size: tuple[int, int], feather: float = 0.04) -> torch.Tensor:
    """Soft face-oval masks (N, 1, H, W) from landmarks (N, 478, >=2).

    Rasterised with cv2 per face (C code, not a Python pixel loop) and feathered by `feather` x the
    face width, so edits blend into the surroundings instead of ending at a hard edge.
    """
    h, w = size
    lms = landmarks[..., :2].detach().float().cpu().numpy()
    out = np.zeros((len(lms), 1, h, w), dtype=np.float32)
    for i, lm in enumerate(lms):
        poly = np.round(lm[FACE_OVAL] * 4).astype(np.int32)  # 2 bits of sub-pixel precision
        m = np.zeros((h, w), dtype=np.uint8)
        cv2.fillPoly(m, [poly], 255, lineType=cv2.LINE_AA, shift=2)
        width = float(np.ptp(lm[:, 0]))
        k = max(1, int(round(feather * width)))
        m = cv2.GaussianBlur(m, (2 * k + 1, 2 * k + 1), k / 2) if k > 1 else m
        out[i, 0] = m / 255.0
    return torch.from_numpy(out).to(landmarks.device)
