"""Audit hooks: what the audit stage of the pipeline does with a computed chunk."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.audit import AuditedCondition, AuditStage
from engine.audit.landmarks import FaceDetectionJudge
from engine.pipeline.pipeline import Chunk


def _analysis_detections(chunk: Chunk) -> dict[str, dict[str, np.ndarray]] | None:
    """The analysis's re-detection of the crops, as the landmark judge's readings, when every face has one.

    The analysis runs the same landmarker on the very crop (its `reason` is empty when it found the
    face there, rather than moving landmarks over from the source photo).
    """
    analyses = [chunk.images[i].analysis for i in chunk.fresh]
    if any(a is None or a.reason for a in analyses):
        return None
    return {FaceDetectionJudge.name: {
        "found": np.ones(len(analyses), dtype=bool),
        "landmarks": np.stack([a.landmarks for a in analyses]).astype(np.float32),  # type: ignore[union-attr]
        "blendshapes": np.stack([a.blendshapes for a in analyses]).astype(np.float32),  # type: ignore[union-attr]
    }}


class EditAudit:
    """The manipulation checks: every judge on the sham and each edit of the chunk's faces."""

    def __init__(self, stage: AuditStage) -> None:
        self.stage = stage

    def fingerprint(self) -> Any:
        return self.stage.fingerprint()

    def observe(self, chunk: Chunk) -> list[dict[str, Any]]:
        original = chunk.conditions[0]

        def audited(name: str) -> list[AuditedCondition]:
            return [AuditedCondition(c.strength, c.images, c.hashes, c.mask, c.metadata,  # type: ignore[arg-type]
                                     _analysis_detections(chunk) if c.hashes == original.hashes else None)
                    for c in chunk.conditions if c.name == name]

        (sham,) = audited("sham")
        return self.stage.observe(sham, audited("edit"), [r.image_id for r in chunk.fresh_records])
