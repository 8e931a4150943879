"""Per-face contrasts read back from a finished job's folder: what the study's tables, its gallery,
the difference-in-differences and the docs' generated tables all compute from measurements.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps


def edit_of(job: Path) -> dict[str, Any]:
    """What the job edited (stats.json "edit"), and its experiment name."""
    summary = json.loads((job / "stats.json").read_text())
    edit = dict(summary.get("edit", {}))
    # Without a stamp, the sweep's folder layout names it: <experiment>/<overrides>/seed=<n>.
    fallback = job.parts[-3] if len(job.parts) >= 3 else job.name
    edit["experiment"] = summary.get("stamp", {}).get("config", {}).get("experiment_name", fallback)
    return edit


def largest_strength(measurements: pd.DataFrame) -> float:
    return float(measurements.loc[measurements["condition"] == "edit", "strength"].max())


def wide(measurements: pd.DataFrame, classifier: str, condition: str, strength: float | None = None) -> pd.DataFrame:
    """(faces x outputs) values of one classifier in one condition (for edits, at `strength`)."""
    m = measurements[(measurements["classifier"] == classifier) & (measurements["condition"] == condition)]
    if strength is not None:
        m = m[np.isclose(m["strength"].astype(float), strength)]
    return m.pivot_table(index="image_id", columns="output", values="value", aggfunc="first")


def top_class_deltas(measurements: pd.DataFrame, classifier: str, strength: float) -> pd.DataFrame:
    """Per face: the sham's top class, its activation at sham and edit, and whether the label flipped."""
    p_sham = wide(measurements, classifier, "sham")
    p_edit = wide(measurements, classifier, "edit", strength)
    faces = p_sham.index.intersection(p_edit.index)
    p_sham, p_edit = p_sham.loc[faces], p_edit.loc[faces, p_sham.columns]
    top = p_sham.to_numpy().argmax(axis=1)
    rows = np.arange(len(faces))
    return pd.DataFrame({
        "image_id": faces, "top_class": p_sham.columns.to_numpy()[top],
        "sham": p_sham.to_numpy()[rows, top], "edit": p_edit.to_numpy()[rows, top],
        "flipped": p_edit.to_numpy().argmax(axis=1) != top,
    }).assign(delta=lambda d: d["edit"] - d["sham"])


def wilcoxon_p(x: np.ndarray | pd.Series, alternative: str) -> float:
    """Wilcoxon signed-rank p of paired differences, zeros dropped; NaN when nothing is left to test."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x) & (x != 0)]
    return float(sps.wilcoxon(x, alternative=alternative).pvalue) if len(x) else float("nan")
