"""Identity judge for the edit audit: is the edited face still the same person?

dlib's face recognition ResNet (`dlib_face_recognition_resnet_model_v1`, 128-d descriptors) reads
150 px chips cut the way `dlib.get_face_chip` cuts them (5-point alignment, padding 0.25), which
`engine.judges` reproduces bit for bit from the MediaPipe mesh's five points. Two photos of one
person lie within about 0.6 of each other (dlib's documented threshold, 99.38 % on LFW pairs);
`AuditConfig.max_identity_distance` uses that as the default bound for an edit.

dlib is the optional extra `facecf[identity]` (`dlib-bin` wheels); without it the audit runs with no
identity check, and says so.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from engine.assets import asset_path
from engine.judges import extract_face_chips, face_chip_geometry, five_points

log = logging.getLogger(__name__)

ASSET = "dlib_face_recognition"
CHIP_SIZE = 150
CHIP_PADDING = 0.25
#: dlib's same-person threshold on the Euclidean distance of two descriptors.
SAME_PERSON_DISTANCE = 0.6


def dlib_available() -> bool:
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    return True


class IdentityJudge:
    """128-d dlib face descriptors of faces located by MediaPipe meshes."""

    def __init__(self) -> None:
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            try:
                import dlib
            except ImportError:
                raise ImportError(
                    "the identity check needs dlib: pip install -e '.[identity]' (or audit.identity=false)"
                ) from None
            self._model = dlib.face_recognition_model_v1(str(asset_path(ASSET)))
            log.info("judge=%s dlib=%s", ASSET, dlib.__version__)
        return self._model

    @staticmethod
    def chips(images: torch.Tensor, landmarks: np.ndarray) -> np.ndarray:
        """`(N, 150, 150, 3)` uint8 chips as `dlib.get_face_chip(img, shape, 150, 0.25)` cuts them."""
        points5 = five_points(landmarks)
        hw = (int(images.shape[-2]), int(images.shape[-1]))
        chips = extract_face_chips(images, face_chip_geometry(points5, CHIP_SIZE, hw, padding=CHIP_PADDING))
        return chips.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()

    def descriptors(self, images: torch.Tensor, landmarks: np.ndarray) -> np.ndarray:
        """`(N, 128)` float64 descriptors; NaN rows where the landmarks are not finite (no face).

        Args:
            images: (N, 3, H, W) float RGB in [0, 1].
            landmarks: (N, 478, 3) MediaPipe mesh in pixels of `images`.
        """
        landmarks = np.asarray(landmarks, dtype=np.float64)
        out = np.full((len(images), 128), np.nan)
        found = np.flatnonzero(np.isfinite(landmarks[..., :2]).all(axis=(1, 2)))
        if len(found):
            index = torch.as_tensor(found, device=images.device)
            chips = self.chips(images.index_select(0, index), landmarks[found])
            got = self.model.compute_face_descriptor(list(chips))
            out[found] = np.asarray([np.asarray(d) for d in got], dtype=np.float64)
        return out


def identity_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Euclidean distance of two `(N, 128)` descriptor arrays (NaN where either is NaN)."""
    return np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1)
