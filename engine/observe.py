"""Observational mode, the source study's own analysis: is output independent of a property given the label?

No image is edited. The originals are classified, and for each classifier x output x property the
engine tests `output ⟂ property | label` (OLS with HC3 errors, and a permutation test within label
strata) through the same correction and report path as the paired analysis.

Properties and labels come from the dataset (manifest columns such as age, gender, semg, label). For
a demonstration on unlabelled data, `observe.annotate=true` adds the judge's estimated age and
p(male) as properties, and `observe.label=consensus` uses the classifiers' majority top-1 as the
label. Both are clearly marked as a demonstration in the report: estimated properties and
model-derived labels are not ground truth.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from engine.types import ConfigError

log = logging.getLogger(__name__)

JUDGE_PROPERTIES = ("est_age", "est_p_male")


@dataclass
class ObserveConfig:
    """Settings of observational mode.

    Args:
        enabled: run the observational analysis instead of the paired counterfactual one.
        properties: metadata columns to test (numeric: slope; otherwise categorical).
        label: a metadata/label column to condition on ("label" = the dataset's expression label), or
            "consensus" for the classifiers' majority top-1 (a demonstration only).
        annotate: add the age/gender judge's estimates as properties est_age and est_p_male.
    """

    enabled: bool = False
    properties: list[str] = field(default_factory=list)
    label: str = "label"
    annotate: bool = False

    def __post_init__(self) -> None:
        if self.enabled and not self.properties:
            raise ValueError("observe.properties is empty: name the metadata columns to test, e.g. [age, gender]")
        unknown = [p for p in self.properties if p in JUDGE_PROPERTIES and not self.annotate]
        if unknown:
            raise ValueError(f"observe.properties {unknown} are judge estimates: set observe.annotate=true")


class JudgeAnnotator:
    """Audit hook of the observational mode: judged age and p(male) of every analysed original.

    These estimated properties stand in for annotations in a demonstration (`observe.annotate`).
    """

    def __init__(self) -> None:
        from engine.audit.age_gender import AgeGenderEstimator

        self._estimator = AgeGenderEstimator()

    def fingerprint(self) -> dict[str, Any]:
        return {"judge": "age_v1+gender_v1", "v": 1}

    def observe(self, chunk: Any) -> list[dict[str, Any]]:
        original = chunk.conditions[0]
        lms = np.stack([chunk.images[i].analysis.landmarks for i in chunk.fresh])
        out = self._estimator.estimate(original.images.float().div(255.0).cpu(), lms)
        return [{"image_id": r.image_id, "est_age": float(a), "est_p_male": float(m)}
                for r, a, m in zip(chunk.fresh_records, out["est_age"], out["est_p_male"])]


def annotation_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image_id", *JUDGE_PROPERTIES])


def consensus_labels(measurements: pd.DataFrame) -> pd.Series:
    """Majority top-1 across emotion classifiers per image (ties: alphabetical, for determinism)."""
    from engine.types import CANONICAL_EMOTIONS

    tops = measurements[measurements["top1"].isin(CANONICAL_EMOTIONS)].drop_duplicates(["image_id", "classifier"])
    if tops.empty:
        raise ConfigError("observe.label=consensus needs at least one emotion classifier")
    counts = tops.groupby(["image_id", "top1"]).size().rename("votes").reset_index()
    counts = counts.sort_values(["image_id", "votes", "top1"], ascending=[True, False, True])
    return counts.drop_duplicates("image_id").set_index("image_id")["top1"]


def observational_frame(measurements: pd.DataFrame, obs: ObserveConfig, judged: pd.DataFrame | None) -> pd.DataFrame:
    """One row per image x classifier x output with value, label and property columns."""
    df = measurements[measurements["condition"] == "original"].copy()
    if judged is not None and not judged.empty:
        df = df.merge(judged, on="image_id", how="left")
    if obs.label == "consensus":
        df["label"] = df["image_id"].map(consensus_labels(df))
    elif obs.label != "label":
        if obs.label not in df:
            raise ConfigError(f"observe.label={obs.label}: no such column; columns: {', '.join(df.columns)}")
        df["label"] = df[obs.label]
    missing = [p for p in obs.properties if p not in df]
    if missing:
        meta = [c for c in df.columns if c not in ("image_id", "condition", "strength", "classifier", "output",
                                                   "value", "top1", "editor", "property")]
        raise ConfigError(f"observe.properties: {missing} not in the dataset; available columns: {', '.join(meta)}")
    if df["label"].isna().all():
        raise ConfigError("observe.label: the dataset has no labels; use observe.label=consensus or a label column")
    return df
