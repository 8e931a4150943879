"""Configuration and result containers of the statistics engine."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

import pandas as pd

PAIRED_TESTS: tuple[str, ...] = ("wilcoxon", "t", "sign", "permutation")
REFERENCES: tuple[str, ...] = ("sham", "original")
ZERO_METHODS: tuple[str, ...] = ("wilcox", "pratt", "zsplit")
CORRECTIONS: tuple[str, ...] = ("holm", "bonferroni", "fdr_bh", "fdr_by")
FAMILIES: tuple[str, ...] = ("classifier_property", "property", "global")
CI_METHODS: tuple[str, ...] = ("bca", "percentile")


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"StatsConfig.{name}={value!r} is not one of {list(options)}")


def _open_unit(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"StatsConfig.{name}={value!r} must be a number strictly between 0 and 1")


def _positive_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"StatsConfig.{name}={value!r} must be an integer >= {minimum}")


@dataclass
class StatsConfig:
    """Settings of the paired analysis (and of the observational mode).

    Attributes:
        alpha: Family-wise error rate (Holm, Bonferroni) or false discovery rate (BH, BY).
        reference: Condition subtracted from each edit: ``"sham"`` (default) or ``"original"``.
        tests: Paired tests to run; each is corrected in its own families.
        primary: The test behind the headline, the power analysis and the plots.
        zero_method: Zero-difference handling of the Wilcoxon test (as in ``scipy.stats.wilcoxon``).
        correction: Multiple-testing correction.
        family: Which tests are corrected together: one family per classifier x property,
            per property, or one global family. Each test kind and each contrast
            (edit vs artefact) always has its own families.
        n_permutations: Monte-Carlo sign flips of the permutation test; enumerated exactly when
            ``2**n <= n_permutations``.
        n_bootstrap: Bootstrap resamples of the effect-size confidence intervals.
        ci: Bootstrap interval: bias-corrected and accelerated (``"bca"``) or ``"percentile"``.
        ci_level: Confidence level of every interval.
        seed: Seed of every random draw (permutations, bootstrap, power simulation).
        exclude_invalid_edits: Drop edit rows whose ``valid`` column is False (audit failures).
        subgroup_by: Optional metadata column for the exploratory subgroup (interaction) analysis.
        power: Target power of the sample-size simulation.
    """

    alpha: float = 0.05
    reference: str = "sham"
    tests: tuple[str, ...] = PAIRED_TESTS
    primary: str = "wilcoxon"
    zero_method: str = "wilcox"
    correction: str = "holm"
    family: str = "classifier_property"
    n_permutations: int = 10000
    n_bootstrap: int = 1000
    ci: str = "bca"
    ci_level: float = 0.95
    seed: int = 0
    exclude_invalid_edits: bool = False
    subgroup_by: str | None = None
    power: float = 0.8

    def __post_init__(self) -> None:
        _open_unit("alpha", self.alpha)
        _open_unit("ci_level", self.ci_level)
        _open_unit("power", self.power)
        _choice("reference", self.reference, REFERENCES)
        if isinstance(self.tests, str) or not isinstance(self.tests, (tuple, list)) or not self.tests:
            raise ValueError(
                f"StatsConfig.tests={self.tests!r} must be a non-empty list of {list(PAIRED_TESTS)}"
            )
        for test in self.tests:
            _choice("tests", test, PAIRED_TESTS)
        if len(set(self.tests)) != len(self.tests):
            raise ValueError(f"StatsConfig.tests={self.tests!r} lists a test twice")
        self.tests = tuple(self.tests)
        _choice("primary", self.primary, PAIRED_TESTS)
        if self.primary not in self.tests:
            raise ValueError(
                f"StatsConfig.primary={self.primary!r} is not in StatsConfig.tests={self.tests!r}"
            )
        _choice("zero_method", self.zero_method, ZERO_METHODS)
        _choice("correction", self.correction, CORRECTIONS)
        _choice("family", self.family, FAMILIES)
        _choice("ci", self.ci, CI_METHODS)
        _positive_int("n_permutations", self.n_permutations, 100)
        _positive_int("n_bootstrap", self.n_bootstrap, 50)
        _positive_int("seed", self.seed, 0)
        if not isinstance(self.exclude_invalid_edits, bool):
            raise ValueError(
                f"StatsConfig.exclude_invalid_edits={self.exclude_invalid_edits!r} must be a bool"
            )
        if self.subgroup_by is not None and (not isinstance(self.subgroup_by, str) or not self.subgroup_by):
            raise ValueError(f"StatsConfig.subgroup_by={self.subgroup_by!r} must be a column name or None")

    def as_dict(self) -> dict[str, Any]:
        """Plain-data view, for stamping results."""
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class StatsResult:
    """All tables of one analysis. Empty tables keep their meaning (e.g. no subgroup analysis asked)."""

    tests: pd.DataFrame
    artefact: pd.DataFrame = field(default_factory=pd.DataFrame)
    labels: pd.DataFrame = field(default_factory=pd.DataFrame)
    headline: pd.DataFrame = field(default_factory=pd.DataFrame)
    dose_response: pd.DataFrame = field(default_factory=pd.DataFrame)
    subgroups: pd.DataFrame = field(default_factory=pd.DataFrame)
    power: pd.DataFrame = field(default_factory=pd.DataFrame)
    excluded: pd.DataFrame = field(default_factory=pd.DataFrame)
    score_shifts: pd.DataFrame = field(default_factory=pd.DataFrame)
    meta: dict[str, Any] = field(default_factory=dict)

    TABLES = ("tests", "artefact", "labels", "headline", "dose_response", "subgroups", "power", "excluded",
              "score_shifts")

    def to_frames(self) -> dict[str, pd.DataFrame]:
        """Every table by name, plus ``meta`` as a two-column key/value table."""
        frames = {name: getattr(self, name) for name in self.TABLES}
        frames["meta"] = pd.DataFrame(
            {"key": list(self.meta), "value": [json.dumps(_jsonable(v)) for v in self.meta.values()]}
        )
        return frames

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: each table as a list of records (NaN -> null), plus meta."""
        out: dict[str, Any] = {"meta": _jsonable(self.meta)}
        for name in self.TABLES:
            frame = getattr(self, name)
            out[name] = json.loads(frame.to_json(orient="records")) if len(frame.columns) else []
        return out

    def to_json(self, indent: int | None = 1) -> str:
        """The whole result as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)
