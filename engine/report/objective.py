"""A run's score for a hyper-parameter search (Hydra's Optuna sweeper minimises what the task returns).

`objective.name=min_strength_for_flips` asks for the smallest edit strength at which at least
`flip_rate` of the faces change their top-1 label (sham against edit, on the run's emotion
classifiers, averaged over them) while at least `valid_share` of the edits pass their manipulation
checks. A run meeting both scores its strength (lower is better); a run missing either scores
1 + its shortfalls, worse than any run that meets them, and still graded so the search can climb.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

OBJECTIVES = ("min_strength_for_flips",)


@dataclass(frozen=True)
class Objective:
    name: str = "min_strength_for_flips"
    flip_rate: float = 0.2
    valid_share: float = 0.85

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ValueError(f"objective.name={self.name!r}: allowed: {OBJECTIVES}")


def flip_rate(measurements: pd.DataFrame, strength: float) -> float:
    """Share of faces whose top-1 label differs between sham and edit, averaged over emotion classifiers."""
    m = measurements[measurements["top1"].notna()]
    rates = []
    for _, g in m.groupby("classifier"):
        sham = g[g["condition"] == "sham"].groupby("image_id")["top1"].first()
        edit = g[(g["condition"] == "edit") & np.isclose(g["strength"].astype(float), strength)]
        edit = edit.groupby("image_id")["top1"].first()
        faces = sham.index.intersection(edit.index)
        if len(faces):
            rates.append(float((sham[faces] != edit[faces]).mean()))
    return float(np.mean(rates)) if rates else 0.0


def score(out: Path, objective: Objective) -> dict[str, float]:
    """The run's measures and its score, from its output folder (written to objective.json too)."""
    m = pd.read_parquet(out / "measurements.parquet")
    strength = float(m.loc[m["condition"] == "edit", "strength"].max())
    audit = out / "audit.csv"
    valid = float(pd.read_csv(audit)["valid"].mean()) if audit.exists() else float("nan")
    flips = flip_rate(m, strength)
    shortfall = max(0.0, objective.flip_rate - flips) + (max(0.0, objective.valid_share - valid)
                                                          if np.isfinite(valid) else 1.0)
    value = strength if shortfall == 0 else 1.0 + shortfall
    result = {"strength": strength, "flip_rate": flips, "valid_share": valid, "score": value}
    (out / "objective.json").write_text(json.dumps({"objective": objective.__dict__, **result}, indent=2))
    return result
