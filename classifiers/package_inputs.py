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

fer 25.10.3 (`fer/fer.py`, `FER.detect_emotions` with the face rectangles given):

1. 8-bit grey of the BGR frame (`cv2.cvtColor`), padded by 40 px on every side with the mean of its
   bottom two rows (`FER.pad`);
2. the box as fer's MTCNN path makes it, `(int(x1), int(y1), int(x2) - int(x1), int(y2) - int(y1))`,
   squared on its longer side (`FER.tosquare`, shifting by `diff // 2`), grown by the offsets (10 px
   per side by default), moved by the padding, its top-left clamped at 0, and cut;
3. `cv2.resize` to 64 x 64 (`INTER_LINEAR`: no smoothing when shrinking), then `/ 255`, `- 0.5`, `* 2`.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image

from engine.pipeline.steps import to_uint8


def _uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) uint8 or float [0, 1] -> (N, H, W, 3) uint8 (floats rounded as the engine stores them)."""
    if images.dtype != torch.uint8:
        return to_uint8(images)
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


FER_PADDING = 40


def fer_inputs(images: torch.Tensor, boxes: torch.Tensor, size: int = 64,
               offsets: tuple[int, int] = (10, 10)) -> torch.Tensor:
    """(N, size, size) float32 in [-1, 1], fer's own steps (module docstring)."""
    out = np.zeros((len(images), size, size), np.float32)
    for i, (rgb, box) in enumerate(zip(_uint8_hwc(images), boxes.detach().cpu().numpy().astype(float))):
        gray = cv2.cvtColor(np.ascontiguousarray(rgb[..., ::-1]), cv2.COLOR_BGR2GRAY)
        mean = cv2.mean(gray[gray.shape[0] - 2:, :])[0]
        padded = cv2.copyMakeBorder(gray, FER_PADDING, FER_PADDING, FER_PADDING, FER_PADDING,
                                    borderType=cv2.BORDER_CONSTANT, value=[mean, mean, mean])
        x, y = int(box[0]), int(box[1])
        w, h = int(box[2]) - x, int(box[3]) - y
        if h > w:
            x, w = x - (h - w) // 2, h
        elif w > h:
            y, h = y - (w - h) // 2, w
        x1, x2 = x - offsets[0] + FER_PADDING, x + w + offsets[0] + FER_PADDING
        y1, y2 = y - offsets[1] + FER_PADDING, y + h + offsets[1] + FER_PADDING
        face = padded[max(0, y1):y2, max(0, x1):x2]
        if face.size == 0:  # the package skips such a face; the engine needs a row
            face = padded
        small = cv2.resize(face, (size, size)).astype(np.float32)
        out[i] = (small / 255.0 - 0.5) * 2.0
    return torch.from_numpy(out).to(images.device)
