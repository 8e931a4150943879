"""The edit audit (manipulation checks): did an edit change its property, and only that property?

* `stage`: the pipeline stage that runs every judge on the sham and each edit of a chunk;
* the judges, behind `engine.types.Judge`: `landmarks` (re-detected landmarks, blendshapes,
  symmetry), `age_gender`, `identity` (dlib descriptors on a torch port of dlib's network),
  `pixels` (change outside the mask, SSIM and LPIPS in and out);
* `verdicts`: the checks and reasons, decided in one place from the editor's `AuditPolicy`;
* `thresholds`: the `AuditThresholds`, a config group of their own.
"""

from engine.audit.stage import AuditedCondition, AuditOptions, AuditStage
from engine.audit.thresholds import AuditThresholds
from engine.audit.verdicts import REASONS, verdicts

__all__ = ["REASONS", "AuditOptions", "AuditStage", "AuditThresholds", "AuditedCondition", "verdicts"]
