"""Difference-in-differences of a property edit against its matched nuisance control, per classifier.

For each face, output and classifier: (property edit - its sham) - (nuisance edit - its sham), at the
largest strength of both jobs, on the faces both analysed. A property effect is claimed only where
this paired difference is significant: an edit as large that changes no property does not explain
it. Tested with the two-sided Wilcoxon signed-rank test per output, Holm within the classifier (one
family per property x classifier, as in the headline's per-classifier lines); the sham's top-class
contrast gets the same treatment with the one-sided p in the published direction (lower).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.report.contrasts import edit_of, largest_strength, wide, wilcoxon_p
from engine.stats import adjust_pvalues
from engine.stats.effects import bootstrap_intervals

DID_COLUMNS = ["control_experiment", "control_valid_share", "did_k", "did_n", "did_percent", "top_class_did_median",
               "top_class_did_ci_low", "top_class_did_ci_high", "did_p_two_sided", "did_p_lower_one_sided"]


def _diffs(m: pd.DataFrame, classifier: str) -> pd.DataFrame:
    """(faces x outputs) edit - sham at the job's largest strength."""
    sham = wide(m, classifier, "sham")
    edit = wide(m, classifier, "edit", largest_strength(m[m["classifier"] == classifier]))
    faces = sham.index.intersection(edit.index)
    return edit.loc[faces, sham.columns] - sham.loc[faces]


def did_row(prop: pd.DataFrame, control: pd.DataFrame, classifier: str, alpha: float = 0.05,
            seed: int = 0) -> dict[str, Any]:
    """The DiD columns of one classifier, from the two jobs' measurements."""
    dp, dc = _diffs(prop, classifier), _diffs(control, classifier)
    faces = dp.index.intersection(dc.index)
    outputs = [o for o in dp.columns if o in dc.columns]
    did = dp.loc[faces, outputs] - dc.loc[faces, outputs]
    p = np.array([wilcoxon_p(did[o], "two-sided") for o in outputs])
    testable = np.isfinite(p)
    k = int((adjust_pvalues(p, None, "holm")[testable] <= alpha).sum())
    n = int(testable.sum())
    # The property job's sham decides the top class; the control's change of that class is subtracted.
    sham = wide(prop, classifier, "sham").loc[faces, outputs]
    top = sham.to_numpy().argmax(axis=1)
    contrast = did.to_numpy()[np.arange(len(faces)), top]
    ci = bootstrap_intervals(contrast[None, :], 2000, 0.95, "percentile", seed, ("median",))
    return {"did_k": k, "did_n": n, "did_percent": 100.0 * k / n if n else float("nan"),
            "top_class_did_median": float(np.median(contrast)) if len(contrast) else float("nan"),
            "top_class_did_ci_low": float(ci["median_ci_low"][0]), "top_class_did_ci_high": float(ci["median_ci_high"][0]),
            "did_p_two_sided": wilcoxon_p(contrast, "two-sided"), "did_p_lower_one_sided": wilcoxon_p(contrast, "less")}


def controls_by_target(jobs: list[Path]) -> dict[tuple[str, str | None], Path]:
    """Control jobs by the (property, direction) they control for."""
    out = {}
    for job in jobs:
        target = edit_of(job).get("control_of")
        if target:
            out[(str(target[0]), None if target[1] is None else str(target[1]))] = job
    return out


def valid_share(job: Path) -> float:
    audit = job / "audit.csv"
    if not audit.exists():
        return float("nan")
    valid = pd.read_csv(audit, usecols=lambda c: c == "valid")
    return float(valid["valid"].mean()) if "valid" in valid else float("nan")
