"""Audit hooks: what the audit stage of the pipeline does with a computed chunk."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.audit import AuditedCondition, AuditStage
from engine.audit.landmarks import FaceDetectionJudge
from engine.pipeline.pipeline import Chunk


def _analysis_detections(chunk: Chunk) -> dict[str, dict[str, np.ndarray]] | None:
    """The analysis's re-detection of the crops, as the landmark judge's readings, when every face has one.

    The analysis runs the same landmarker on the very crop, the way the judge does
    (`FaceLandmarker.detect_crop`); where it moved landmarks over from the source photo instead
    (`FaceAnalysis.redetected` false), the judge reads the chunk itself.
    """
    analyses = [chunk.images[i].analysis for i in chunk.fresh]
    if any(a is None or not a.redetected for a in analyses):
        return None
    return {FaceDetectionJudge.name: {
        "found": np.ones(len(analyses), dtype=bool),
        "margin": np.array([a.needs_margin for a in analyses]),  # type: ignore[union-attr]
        "landmarks": np.stack([a.landmarks for a in analyses]).astype(np.float32),  # type: ignore[union-attr]
        "blendshapes": np.stack([a.blendshapes for a in analyses]).astype(np.float32),  # type: ignore[union-attr]
    }}


class EditAudit:
    """The manipulation checks: every judge on the sham and each edit of the chunk's faces."""

    def __init__(self, stage: AuditStage) -> None:
        self.stage = stage

    def fingerprint(self) -> Any:
        # "sham_lpips": rows carry the sham's own LPIPS against the original (rows cached before lack it).
        return {"stage": self.stage.fingerprint(), "sham_lpips": 1}

    def observe(self, chunk: Chunk) -> list[dict[str, Any]]:
        original = chunk.conditions[0]

        def audited(name: str) -> list[AuditedCondition]:
            return [AuditedCondition(c.strength, c.images, c.hashes, c.mask, c.metadata,  # type: ignore[arg-type]
                                     _analysis_detections(chunk) if c.hashes == original.hashes else None)
                    for c in chunk.conditions if c.name == name]

        (sham,) = audited("sham")
        rows = self.stage.observe(sham, audited("edit"), [r.image_id for r in chunk.fresh_records])
        if sham.hashes != original.hashes:  # a sham that is not the input: how far the pipeline itself moves it
            artefact = self._sham_lpips(original, sham)
            if artefact is not None:
                per_image = dict(zip([r.image_id for r in chunk.fresh_records], artefact))
                for row in rows:
                    row["lpips_sham_original"] = float(per_image[row["image_id"]])
        return rows

    def _sham_lpips(self, original: Any, sham: AuditedCondition) -> np.ndarray | None:
        """Whole-image LPIPS of each sham against its original (None without an LPIPS judge)."""
        from engine.audit.pixels import PerceptualJudge

        judge = next((j for j in self.stage.judges if isinstance(j, PerceptualJudge) and j.lpips_net), None)
        if judge is None:
            return None
        ones = torch.ones_like(sham.images[:, :1], dtype=torch.float32)
        return judge.lpips_between(original.images, sham.images, ones)
