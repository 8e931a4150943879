"""Audit thresholds: how far a target must move, and how little everything else may.

They are a config group of their own (`conf/audit/thresholds/`), apart from the audit stage's
wiring, because they are a scientific decision with its own provenance, not plumbing. Verdicts are
computed from the stored measures after the run, so changing a threshold re-judges a replayed run
without recomputing anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any


@dataclass
class AuditThresholds:
    """Thresholds of the manipulation checks (defaults are the pre-registered ones).

    Attributes:
        max_blendshape_change: largest mean |change| of the 52 blendshapes (expression kept).
        max_outside_change: largest mean |pixel change| (0..1 scale) outside the edit mask.
        max_lpips_outside: largest LPIPS outside the edit mask; None: not checked.
        min_age_change: an age edit must move the judged age this many years in its direction.
        min_p_target_change: a gender edit must raise P(target gender) by this much.
        min_symmetry_change: a symmetry edit must change the asymmetry index by this fraction
            (a reduction for "more", an increase for "less").
        max_age_change_nontarget: largest |age change| in years for edits of other properties.
        max_p_male_change_nontarget: largest |P(male) change| for edits of other properties.
        max_symmetry_change_nontarget: largest |relative change| of the mesh asymmetry index, for
            policies that keep symmetry (`AuditPolicy.also_kept`, e.g. a matched nuisance control).
        max_identity_distance: largest dlib face-descriptor distance between sham and edit (0.6 is
            dlib's same-person threshold); None: not checked. Applies to every property: an edit
            should leave the same person, older or of the other gender.
    """

    max_blendshape_change: float = 0.05
    max_outside_change: float = 0.01
    max_lpips_outside: float | None = None
    min_age_change: float = 3.0
    min_p_target_change: float = 0.1
    min_symmetry_change: float = 0.2
    max_age_change_nontarget: float = 7.0
    max_p_male_change_nontarget: float = 0.15
    max_symmetry_change_nontarget: float = 0.3
    max_identity_distance: float | None = 0.6
    #: Where calibrated values come from (`python -m engine.calibrate` writes it); not a threshold.
    provenance: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "provenance":
                continue
            value = getattr(self, f.name)
            if value is None and f.name in ("max_lpips_outside", "max_identity_distance"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{f.name}={value!r}: expected a finite number")
            if value < 0:
                raise ValueError(f"{f.name}={value!r}: must be >= 0")
            setattr(self, f.name, float(value))
        if self.min_p_target_change > 1 or self.max_p_male_change_nontarget > 1:
            raise ValueError(
                f"probability thresholds must lie in [0, 1], got min_p_target_change={self.min_p_target_change}, "
                f"max_p_male_change_nontarget={self.max_p_male_change_nontarget}"
            )
        if not 0 < self.min_symmetry_change <= 1:
            raise ValueError(f"min_symmetry_change={self.min_symmetry_change!r}: must lie in (0, 1]")
