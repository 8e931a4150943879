"""Audit hooks: what the audit stage of the pipeline does with a computed chunk."""

from __future__ import annotations

from typing import Any

from engine.audit import AuditedCondition, AuditStage
from engine.pipeline.pipeline import Chunk


class EditAudit:
    """The manipulation checks: every judge on the sham and each edit of the chunk's faces."""

    def __init__(self, stage: AuditStage) -> None:
        self.stage = stage

    def fingerprint(self) -> Any:
        return self.stage.fingerprint()

    def observe(self, chunk: Chunk) -> list[dict[str, Any]]:
        def audited(name: str) -> list[AuditedCondition]:
            return [AuditedCondition(c.strength, c.images, c.hashes, c.mask, c.metadata)  # type: ignore[arg-type]
                    for c in chunk.conditions if c.name == name]

        (sham,) = audited("sham")
        return self.stage.observe(sham, audited("edit"), [r.image_id for r in chunk.fresh_records])
