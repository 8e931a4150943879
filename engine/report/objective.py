"""A run's score for a hyper-parameter search (Hydra's Optuna sweeper minimises what the task returns).

Two objectives:

* `min_strength_for_flips` asks for the smallest edit strength at which at least `flip_rate` of the
  faces change their top-1 label (sham against edit, on the run's emotion classifiers, averaged over
  them) while at least `valid_share` of the edits pass their manipulation checks. A run meeting both
  scores its strength (lower is better); a run missing either scores 1 + its shortfalls, worse than
  any run that meets them, and still graded so the search can climb.
* `max_valid_share` tunes an editor's knobs: the largest share of edits that pass every manipulation
  check, among settings whose median effects still reach `effects` (for example
  "delta_est_age >= 8"). A run meeting them scores 1 - its valid share; one missing them scores
  1 + its relative shortfall. Editors are tuned on the demo set's tuning half only (`dataset.split`
  must be `tuning`), so that acceptance, reported on the evaluation half, is measured on faces that
  played no part in choosing the defaults.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from engine.audit.verdicts import reason_counts

OBJECTIVES = ("min_strength_for_flips", "max_valid_share")
#: The score of a search trial whose drawn values a component refuses (for example an editor knob out
#: of its own bounds): worse than any run, so the search moves away, and the sweep goes on. The
#: objective itself and every value the search does not draw are checked before the sweep starts.
REFUSED_TRIAL_SCORE = 10.0
#: "column >= bound" or "column <= bound": a median effect a tuned editor must keep.
_EFFECT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=)\s*(-?[0-9.]+(?:e-?[0-9]+)?)\s*$")


@dataclass(frozen=True)
class Effect:
    """A bound on the median of an audit column: the edit must still change its property this much."""

    column: str
    op: str
    bound: float

    @classmethod
    def parse(cls, text: str) -> Effect:
        m = _EFFECT.match(text)
        if not m:
            raise ValueError(f"objective effect {text!r}: write 'column >= number' or 'column <= number'")
        return cls(m.group(1), m.group(2), float(m.group(3)))

    def shortfall(self, median: float) -> float:
        """How far the median misses the bound, relative to the bound (0 when met; 1 when unmeasured)."""
        if not np.isfinite(median):
            return 1.0
        miss = self.bound - median if self.op == ">=" else median - self.bound
        return max(0.0, miss) / max(abs(self.bound), 1e-12)


@dataclass(frozen=True)
class Objective:
    name: str = "min_strength_for_flips"
    flip_rate: float = 0.2
    valid_share: float = 0.85
    effects: tuple[str, ...] = field(default_factory=tuple)  # max_valid_share: median effects to keep

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ValueError(f"objective.name={self.name!r}: allowed: {OBJECTIVES}")
        object.__setattr__(self, "effects", tuple(self.effects or ()))
        if self.name == "max_valid_share" and not self.bounds():  # a typo fails here, before the run
            raise ValueError("objective.name=max_valid_share needs objective.effects, e.g. ['delta_est_age >= 8']: "
                             "without them the search would find that no edit at all passes every check")

    def bounds(self) -> list[Effect]:
        """`effects`, parsed."""
        return [Effect.parse(e) for e in self.effects]

    def check_run(self, split: str | None) -> None:
        """Refuse, before any work, a tuning run that is not on the tuning half of the demo set."""
        if self.name == "max_valid_share" and split != "tuning":
            raise ValueError(f"objective.name=max_valid_share tunes an editor: run it on dataset.split=tuning "
                             f"(got {split!r}); acceptance is reported on the evaluation half")


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


def _valid_share_score(out: Path, objective: Objective) -> dict[str, float]:
    audit = pd.read_csv(out / "audit.csv")
    strength = float(audit["strength"].astype(float).max())
    audit = audit[np.isclose(audit["strength"].astype(float), strength)]
    valid = float(audit["valid"].astype(bool).mean()) if len(audit) else 0.0
    result: dict[str, float] = {"strength": strength, "faces": float(len(audit)), "valid_share": valid}
    shortfall = 0.0
    for effect in objective.bounds():
        values = audit[effect.column].astype(float) if effect.column in audit else pd.Series(dtype=float)
        median = float(np.nanmedian(values)) if values.notna().any() else float("nan")
        result[f"median_{effect.column}"] = median
        shortfall += effect.shortfall(median)
    reasons = reason_counts(audit["reasons"])
    result.update({f"reason_{r}": float(c) for r, c in sorted(reasons.items())})
    result["score"] = 1.0 - valid if shortfall == 0 else 1.0 + shortfall
    return result


def score(out: Path, objective: Objective, overrides: Sequence[str] = (), experiment: str | None = None
          ) -> dict[str, float]:
    """The run's measures and its score, from its output folder (written to objective.json too, with
    the run's `experiment` name and command-line `overrides`: a search's trial parameters)."""
    if objective.name == "max_valid_share":
        result = _valid_share_score(out, objective)
    else:
        m = pd.read_parquet(out / "measurements.parquet")
        strength = float(m.loc[m["condition"] == "edit", "strength"].max())
        audit = out / "audit.csv"
        valid = float(pd.read_csv(audit)["valid"].mean()) if audit.exists() else float("nan")
        flips = flip_rate(m, strength)
        shortfall = max(0.0, objective.flip_rate - flips) + (max(0.0, objective.valid_share - valid)
                                                              if np.isfinite(valid) else 1.0)
        value = strength if shortfall == 0 else 1.0 + shortfall
        result = {"strength": strength, "flip_rate": flips, "valid_share": valid, "score": value}
    record = {k: list(v) if isinstance(v, tuple) else v for k, v in objective.__dict__.items()}
    text = json.dumps({"objective": record, **result, "experiment": experiment, "overrides": list(overrides)},
                      indent=2)
    (out / "objective.json").write_text(text)
    return result
