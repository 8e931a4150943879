"""Pixel-level judges: did pixels change where the edit was not allowed to act, and how much, perceptually.

Both compare the reference and the edit of one face directly, so they read nothing per image.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.audit.measures import outside_mask_change
from engine.types import Judge, JudgedPair


class OutsideChangeJudge(Judge):
    """`outside_change`: mean |edit − reference| (0..1 scale) where the edit mask is zero."""

    name = "outside_change"

    def compare(self, pair: JudgedPair) -> dict[str, np.ndarray]:
        ref = pair.ref.images.float() / 255.0
        edit = pair.edit.images.float() / 255.0
        return {"outside_change": outside_mask_change(ref, edit, pair.mask.to(ref.device))}


class PerceptualJudge(Judge):
    """SSIM and LPIPS inside and outside the edit mask: `ssim_in`, `ssim_out`, `lpips_in`, `lpips_out`.

    Args:
        lpips_net: LPIPS backbone, "alex" or "vgg"; None measures SSIM only.
        device: where the networks run (the runner's device).
    """

    name = "perceptual"

    def __init__(self, lpips_net: str | None = "alex", device: torch.device | str = "cpu") -> None:
        if lpips_net not in (None, "alex", "vgg"):
            raise ValueError(f"audit.lpips_net={lpips_net!r}: allowed: alex, vgg, null")
        self.lpips_net = lpips_net
        self._device = torch.device(device)
        self._lpips: torch.nn.Module | None = None

    def compare(self, pair: JudgedPair) -> dict[str, np.ndarray]:
        from engine.audit.perceptual import ssim_in_out

        a = pair.ref.images.to(self._device).float().div(255.0)
        b = pair.edit.images.to(self._device).float().div(255.0)
        m = pair.mask.to(self._device).float()
        out: dict[str, np.ndarray] = {}
        s_in, s_out = ssim_in_out(a, b, m)
        out["ssim_in"], out["ssim_out"] = np.asarray(s_in), np.asarray(s_out)
        if self.lpips_net:
            l_in, l_out = self._lpips_in_out(a, b, m)
            out["lpips_in"], out["lpips_out"] = np.asarray(l_in), np.asarray(l_out)
        return out

    def _lpips_in_out(self, a: torch.Tensor, b: torch.Tensor, m: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        from engine.audit.perceptual import LPIPS

        if self._lpips is None:
            self._lpips = LPIPS(net=self.lpips_net).to(self._device)
        # One pair at a time on a CPU (batch-invariant, as fast); batches of 16 on a GPU.
        return self._lpips.in_out(a, b, m, batch_size=1 if a.device.type == "cpu" else 16)

    def lpips_between(self, ref: torch.Tensor, edit: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        """(N,) LPIPS inside `mask` between uint8 image batches (the sham's artefact, for the report)."""
        a, b = (x.to(self._device).float().div(255.0) for x in (ref, edit))
        return np.asarray(self._lpips_in_out(a, b, mask.to(self._device).float())[0])
