"""The headline: "k of n emotion-output shifts significant", with the family each count was corrected in.

One "output shift" is one classifier x output x edit strength test of the primary test. Scopes:

* **overall**: every emotion output of the run as **one** family, corrected anew here with the
  configured method (Holm by default) across all of them, whatever `stats.family` says: a sum of
  rejections from families corrected separately would not be a count any single correction holds.
* **property**, **classifier**, **property x classifier**: the tests' own `reject`, corrected within
  the configured family (`classifier_property` by default); their text names that family.

Only emotion outputs count. A classifier whose outputs are not class evidence (`output_kind:
scores`, e.g. MediaPipe blendshapes) is a score set: its shifts go to a table of their own
(`score_table`), never into the headline. Rows whose differences are all exactly zero are not
testable: they count in neither n nor m (see `analyse.paired_table`).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd

from .corrections import adjust_pvalues

HEADLINE_COLUMNS = ["scope", "property", "classifier", "test", "k", "n", "not_testable", "percent", "family",
                    "text"]
#: What a test of differences that are all exactly zero says: there is nothing to test.
NOT_TESTABLE = "not testable: all differences zero"
SCOPES = (("overall", []), ("property", ["property"]), ("classifier", ["classifier"]),
          ("property_classifier", ["property", "classifier"]))


def _row(scope: str, labels: dict, primary: str, k: int, n: int, untestable: int, family: str, noun: str) -> dict:
    text = f"{k} of {n} {noun} significant ({100.0 * k / n:.2f} %), {family}" if n else f"no testable {noun}"
    if untestable:
        text += f"; {untestable} {NOT_TESTABLE}"
    return {"scope": scope, "property": labels.get("property", "*"), "classifier": labels.get("classifier", "*"),
            "test": primary, "k": k, "n": n, "not_testable": untestable,
            "percent": 100.0 * k / n if n else float("nan"), "family": family, "text": text}


def _table(rows: pd.DataFrame, primary: str, correction: str, alpha: float, family: str, noun: str) -> pd.DataFrame:
    if rows.empty:
        return pd.DataFrame(columns=HEADLINE_COLUMNS)
    out = []
    for scope, keys in SCOPES:
        groups = rows.groupby(keys, sort=True) if keys else [((), rows)]
        for key, group in groups:
            key = key if isinstance(key, tuple) else (key,)
            testable = group["p_raw"].notna()
            n, untestable = int(testable.sum()), int((~testable).sum())
            if scope == "overall":
                p_adj = adjust_pvalues(group["p_raw"].to_numpy(dtype=float), None, correction)
                k = int(np.sum(p_adj[testable.to_numpy()] <= alpha))
                named = f"{correction} across all {n} as one family"
            else:
                k = int(group.loc[testable, "reject"].astype(bool).sum())
                named = f"{correction} within each {family} family"
            out.append(_row(scope, dict(zip(keys, key)), primary, k, n, untestable, named, noun))
    return pd.DataFrame(out, columns=HEADLINE_COLUMNS)


def headline_table(tests: pd.DataFrame, primary: str, correction: str = "holm", alpha: float = 0.05,
                   family: str = "classifier_property", score_sets: Collection[str] = (),
                   noun: str = "emotion-output shifts") -> pd.DataFrame:
    """The headline rows of the emotion outputs (classifiers not in `score_sets`), primary test only."""
    rows = tests[tests["test"] == primary] if len(tests) else tests
    if rows is None or rows.empty:
        return pd.DataFrame(columns=HEADLINE_COLUMNS)
    return _table(rows[~rows["classifier"].isin(list(score_sets))], primary, correction, alpha, family, noun)


def score_table(tests: pd.DataFrame, primary: str, correction: str = "holm", alpha: float = 0.05,
                family: str = "classifier_property", score_sets: Collection[str] = ()) -> pd.DataFrame:
    """The same counts for the score sets (not emotions: not in the headline), per classifier."""
    rows = tests[(tests["test"] == primary) & tests["classifier"].isin(list(score_sets))] if len(tests) else tests
    if rows is None or rows.empty:
        return pd.DataFrame(columns=HEADLINE_COLUMNS)
    table = _table(rows, primary, correction, alpha, family, "score shifts")
    return table[table["scope"] != "overall"].reset_index(drop=True)
