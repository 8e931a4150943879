"""Inputs built the way a classifier's own package builds them (`fidelity: package`).

The engine's own route (`classifiers.preprocess.Preprocessing`) crops a square around the face box,
resizes in float and converts to grey unrounded. A package may do each step differently, and those
differences move outputs (issue 14 measured up to 0.40 for fer's resize alone). This module repeats a
package's steps with the same libraries, one face at a time on the CPU: fidelity first, then speed.

PyEmotion 1.0.0 (`PyEmotion/main.py`, `DetectFace.predict_emotion` and `_predict`):

1. the frame, which it takes to be BGR as OpenCV reads it, goes to 8-bit grey
   (`cv.cvtColor(frame, cv.COLOR_BGR2GRAY)`): the engine's RGB crop is turned to BGR first, so the
   grey is the same as for the photo read by OpenCV;
2. the face box is cut as it is, `gray[y1:y2, x1:x2]` with `int(round(coordinate))` (no margin, not
   square). Python slicing would wrap a negative coordinate round to the far edge; the engine clamps
   it at 0 instead (MTCNN rarely gives one; the engine's landmark boxes never leave the crop);
3. `transforms.ToPILImage()`, `Resize((48, 48))` (PIL bilinear, stretching the box to a square, 8-bit
   result), `ToTensor()`, `Normalize([0.5], [0.5])`.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image


def _uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) uint8 or float [0, 1] -> (N, H, W, 3) uint8 (floats rounded as the engine stores them)."""
    if images.dtype != torch.uint8:
        images = images.float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def pyemotion_inputs(images: torch.Tensor, boxes: torch.Tensor, size: int = 48) -> torch.Tensor:
    """(N, 1, size, size) float in [-1, 1], PyEmotion's own steps (module docstring)."""
    out = np.zeros((len(images), 1, size, size), np.float32)
    for i, (rgb, box) in enumerate(zip(_uint8_hwc(images), boxes.detach().cpu().numpy().astype(float))):
        gray = cv2.cvtColor(np.ascontiguousarray(rgb[..., ::-1]), cv2.COLOR_BGR2GRAY)
        x1, y1, x2, y2 = (max(0, int(round(v))) for v in box)
        face = gray[y1:y2, x1:x2]
        if face.size == 0:  # a degenerate box: nothing to cut (the package would raise)
            face = gray
        small = np.asarray(Image.fromarray(face).resize((size, size), Image.Resampling.BILINEAR), np.float32)
        out[i, 0] = (small / 255.0 - 0.5) / 0.5
    return torch.from_numpy(out).to(images.device)
