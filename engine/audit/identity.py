"""Identity judge for the edit audit: is the edited face still the same person?

dlib's face recognition ResNet (`dlib_face_recognition_resnet_model_v1`, 128-d descriptors), parsed
from dlib's own file into a batched torch network (`engine.audit.dlib_resnet`), reads 150 px chips
cut the way `dlib.get_face_chip` cuts them (5-point alignment, padding 0.25), which
`engine.audit.chips` reproduces bit for bit from the MediaPipe mesh's five points. Two photos of one
person lie within about 0.6 of each other (dlib's documented threshold, 99.38 % on LFW pairs);
`AuditThresholds.max_identity_distance` uses that as the default bound for an edit. dlib itself is
only the tests' oracle (`facecf[identity]`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from engine.audit.chips import extract_face_chips, face_chip_geometry, five_points
from engine.types import Judge, JudgedPair, JudgeView

log = logging.getLogger(__name__)

ASSET = "dlib_face_recognition"
CHIP_SIZE = 150
CHIP_PADDING = 0.25
#: dlib's same-person threshold on the Euclidean distance of two descriptors.
SAME_PERSON_DISTANCE = 0.6


def face_chips(images: torch.Tensor, landmarks: np.ndarray) -> torch.Tensor:
    """`(N, 3, 150, 150)` float chips with uint8 values, as `dlib.get_face_chip(img, shape, 150, 0.25)`.

    Args:
        images: (N, 3, H, W) float RGB in [0, 1].
        landmarks: (N, 478, 3) MediaPipe mesh in pixels of `images`.
    """
    hw = (int(images.shape[-2]), int(images.shape[-1]))
    geometry = face_chip_geometry(five_points(landmarks), CHIP_SIZE, hw, padding=CHIP_PADDING)
    return extract_face_chips(images, geometry)


def identity_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Euclidean distance of two `(N, 128)` descriptor arrays (NaN where either is NaN)."""
    return np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1)


class IdentityJudge(Judge):
    """128-d dlib face descriptors on chips cut at the alignment landmarks.

    Reading `identity` (N, 128); column `identity_distance` between reference and edit.

    Args:
        device: where the network runs (the runner's device).
        batch_size: chips per forward pass.
    """

    name = "identity"
    aligned = True

    def __init__(self, device: torch.device | str = "cpu", batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self._device = torch.device(device)
        self._net: Any = None

    @property
    def net(self) -> Any:
        if self._net is None:
            from engine.audit.dlib_resnet import load_dlib_face_resnet

            self._net = load_dlib_face_resnet(device=self._device)
            log.info("judge=%s device=%s", ASSET, self._device)
        return self._net

    def fingerprint(self) -> dict[str, Any]:
        from engine.assets import get_asset

        return {"judge": self.name, "model": get_asset(ASSET).sha256}

    def descriptors(self, images: torch.Tensor, landmarks: np.ndarray) -> np.ndarray:
        """`(N, 128)` float64 descriptors; NaN rows where the landmarks are not finite (no face).

        Args:
            images: (N, 3, H, W) uint8 or float RGB in [0, 1].
            landmarks: (N, 478, 3) MediaPipe mesh in pixels of `images`.
        """
        landmarks = np.asarray(landmarks, dtype=np.float64)
        out = np.full((len(images), 128), np.nan)
        found = np.flatnonzero(np.isfinite(landmarks[..., :2]).all(axis=(1, 2)))
        if len(found) == 0:
            return out
        index = torch.as_tensor(found, device=images.device)
        chosen = images.index_select(0, index)
        chosen = chosen.float().div(255.0) if chosen.dtype == torch.uint8 else chosen.float()
        chips = face_chips(chosen, landmarks[found]).to(self._device)
        with torch.inference_mode():
            got = [self.net(chips[i : i + self.batch_size]) for i in range(0, len(chips), self.batch_size)]
        out[found] = torch.cat(got).double().cpu().numpy()
        return out

    def read(self, view: JudgeView) -> dict[str, np.ndarray]:
        return {"identity": self.descriptors(view.images, view.align)}

    def compare(self, pair: JudgedPair) -> dict[str, np.ndarray]:
        return {"identity_distance": identity_distance(pair.edit.readings["identity"], pair.ref.readings["identity"])}
