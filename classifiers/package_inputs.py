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
2. the box, as the Haar cascade `FER()` uses by default would give it (`haar_like_boxes`, then fer's
   MTCNN path's `(int(x1), int(y1), int(x2) - int(x1), int(y2) - int(y1))`; the cascade's own box is
   whole pixels already), squared on its longer side (`FER.tosquare`, shifting by `diff // 2`), grown by the offsets (10 px
   per side by default), moved by the padding, its top-left clamped at 0, and cut;
3. `cv2.resize` to 64 x 64 (`INTER_LINEAR`: no smoothing when shrinking), then `/ 255`, `- 0.5`, `* 2`.

facex 1.1.0 (`facex/core.py`, `EmotionClassifier.predict`; `facex/utils.py`):

1. 8-bit grey of the BGR frame (`cv2.cvtColor`);
2. the Haar cascade's box `(x, y, w, h)` (whole pixels, square, inside the frame) cut as
   `gray[y:y+h, x:x+w]`. The engine gives the square its Haar imitation makes (`box_scale`, `box_shift`,
   see `classifiers.facex`), rounded to whole pixels and clamped to the frame;
3. `skimage.transform.resize(face, (200, 200, 3))`: to float in [0, 1], Gaussian anti-aliasing when
   shrinking, bilinear, the one grey channel spread over three; no `/ 255` (the maximum is <= 1).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image

from engine.pipeline.steps import to_uint8

FIDELITIES = ("package", "engine")

#: fer's `FER()` and facex both find faces with OpenCV's `haarcascade_frontalface_default`. Its boxes
#: against the engine's landmark box, on the 93 aligned LFW/portrait demo faces: square, side 1.00x the
#: landmark box's longer side (median; IQR 0.96-1.06), centre 0.08 of that side higher (the cascade
#: frames brows to chin, the landmarks forehead to chin). `haar_like_boxes` imitates them.
HAAR_BOX_SCALE = 1.0
HAAR_BOX_SHIFT = -0.08


def check_fidelity(owner: str, fidelity: str) -> str:
    """The `fidelity` argument of a zoo classifier, or a ValueError naming the allowed values."""
    if fidelity not in FIDELITIES:
        raise ValueError(f"{owner}.fidelity={fidelity!r}: allowed: {', '.join(FIDELITIES)}")
    return fidelity


def check_box_shift(owner: str, box_shift: float) -> float:
    """A vertical shift of the crop centre, in units of the face box's longer side."""
    if isinstance(box_shift, bool) or not isinstance(box_shift, (int, float)) or abs(box_shift) > 0.5:
        raise ValueError(f"{owner}.box_shift must be a number in [-0.5, 0.5], got {box_shift!r}")
    return float(box_shift)


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


def haar_like_boxes(boxes: torch.Tensor, box_scale: float, box_shift: float) -> torch.Tensor:
    """(N, 4) float squares around the face boxes: side = longer side x `box_scale`, centre moved down by
    `box_shift` x that longer side (negative: up). The engine's stand-in for a Haar cascade's boxes."""
    boxes = boxes.detach().float()
    longer = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    centre[:, 1] += longer * box_shift
    half = (longer * box_scale / 2)[:, None]
    return torch.cat([centre - half, centre + half], dim=1)


def facex_inputs(images: torch.Tensor, boxes: torch.Tensor, size: int = 200) -> torch.Tensor:
    """(N, size, size, 3) float32 in [0, 1], facex's own steps (module docstring) on whole-pixel boxes."""
    from skimage.transform import resize

    out = np.zeros((len(images), size, size, 3), np.float32)
    for i, (rgb, box) in enumerate(zip(_uint8_hwc(images), boxes.detach().cpu().numpy().astype(float))):
        gray = cv2.cvtColor(np.ascontiguousarray(rgb[..., ::-1]), cv2.COLOR_BGR2GRAY)
        x, y = max(0, int(round(box[0]))), max(0, int(round(box[1])))
        w, h = int(round(box[2] - box[0])), int(round(box[3] - box[1]))
        face = gray[y:y + h, x:x + w]
        if face.size == 0:  # a degenerate box: nothing to cut (the cascade never gives one)
            face = gray
        out[i] = resize(face, (size, size, 3))
    return torch.from_numpy(out).to(images.device)


def fer_package_inputs(images: torch.Tensor, boxes: torch.Tensor, box_shift: float = HAAR_BOX_SHIFT,
                       size: int = 64) -> torch.Tensor:
    """(N, size, size): fer's own steps (`fer_inputs`) on the box `FER()`'s default detector, a Haar
    cascade, would give (`haar_like_boxes`), as both fer models' `fidelity: package` route feeds them."""
    return fer_inputs(images, haar_like_boxes(boxes, HAAR_BOX_SCALE, box_shift), size)
