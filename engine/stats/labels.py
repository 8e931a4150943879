"""Changes of the predicted (top-1) label: flip rate, McNemar per emotion, Stuart-Maxwell overall."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from statsmodels.stats.contingency_tables import SquareTable
from statsmodels.stats.proportion import proportion_confint

from .pairing import reference_rows

GROUP = ["editor", "property", "classifier", "strength"]
COLUMNS = [
    "contrast",
    "editor",
    "property",
    "classifier",
    "strength",
    "reference",
    "test",
    "emotion",
    "n",
    "n_discordant",
    "n_reference",
    "n_comparison",
    "flip_rate",
    "flip_ci_low",
    "flip_ci_high",
    "statistic",
    "df",
    "p_raw",
]


def label_pairs(df: pd.DataFrame, reference: str, contrast: str) -> pd.DataFrame:
    """One row per editor x property x classifier x strength x image with both top-1 labels."""
    condition = "sham" if contrast == "artefact" else "edit"
    if contrast == "artefact":
        reference = "original"
    comp = df[df["condition"] == condition].dropna(subset=["top1"])
    comp = comp.drop_duplicates(GROUP + ["image_id"])[GROUP + ["image_id", "top1"]]
    ref = reference_rows(df, reference).dropna(subset=["top1"])
    ref = ref.drop_duplicates(["editor", "property", "classifier", "image_id"])
    ref = ref[["editor", "property", "classifier", "image_id", "top1"]].rename(columns={"top1": "top1_ref"})
    pairs = comp.merge(ref, on=["editor", "property", "classifier", "image_id"])
    pairs["top1"] = pairs["top1"].astype(str)
    pairs["top1_ref"] = pairs["top1_ref"].astype(str)
    return pairs


def mcnemar_exact(lost: np.ndarray, gained: np.ndarray) -> np.ndarray:
    """Exact two-sided McNemar p for arrays of discordant counts (= statsmodels ``mcnemar(exact=True)``).

    p is 1 when no pair is discordant.
    """
    lost, gained = np.asarray(lost), np.asarray(gained)
    return np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(lost, gained), lost + gained, 0.5))


def stuart_maxwell(reference: np.ndarray, comparison: np.ndarray) -> tuple[float, int, float]:
    """Stuart-Maxwell test of marginal homogeneity through statsmodels ``SquareTable``.

    Only discordant pairs carry information, so categories without any are dropped (they would make
    the covariance singular without changing the statistic). When the discordant pairs split into
    disconnected groups of categories, each group is tested with ``SquareTable`` and the chi-square
    statistics and degrees of freedom are added (the generalised-inverse form of the test).

    Returns:
        statistic, degrees of freedom, p-value (0, 0, 1.0 when no label changed).
    """
    categories, codes = np.unique(np.concatenate([reference, comparison]), return_inverse=True)
    k = categories.size
    table = np.zeros((k, k))
    np.add.at(table, (codes[: reference.size], codes[reference.size :]), 1)
    off = table - np.diag(np.diag(table))
    involved = (off.sum(axis=0) + off.sum(axis=1)) > 0
    if involved.sum() < 2:
        return 0.0, 0, 1.0
    table = table[np.ix_(involved, involved)]
    off = off[np.ix_(involved, involved)]
    n_comp, component = connected_components(coo_matrix(off + off.T), directed=False)
    statistic, dof = 0.0, 0
    for c in range(n_comp):
        members = component == c
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = SquareTable(table[np.ix_(members, members)], shift_zeros=False).homogeneity(
                "stuart_maxwell"
            )
        statistic += float(result.statistic)
        dof += int(result.df)
    return statistic, dof, float(stats.chi2.sf(statistic, dof))


def label_tests(df: pd.DataFrame, reference: str, contrast: str, ci_level: float) -> pd.DataFrame:
    """Flip rates with Wilson intervals, McNemar per emotion and Stuart-Maxwell per classifier x strength."""
    pairs = label_pairs(df, reference, contrast)
    if pairs.empty:
        return pd.DataFrame(columns=COLUMNS)
    ref_name = "original" if contrast == "artefact" else reference
    pairs["flip"] = pairs["top1"] != pairs["top1_ref"]
    groups = pairs.groupby(GROUP, sort=True)

    # McNemar: for each emotion e, the 2x2 table of "top-1 is e" before and after, for all groups at once.
    long = pd.concat(
        [
            pairs[GROUP + ["top1", "top1_ref"]].assign(emotion=pairs["top1"]),
            pairs[GROUP + ["top1", "top1_ref"]].assign(emotion=pairs["top1_ref"]),
        ]
    ).drop_duplicates()  # the emotions that occur in a group, on either side
    emotions = long[GROUP + ["emotion"]].drop_duplicates()
    per = pairs.merge(emotions, on=GROUP)
    per["was"] = per["top1_ref"] == per["emotion"]
    per["now"] = per["top1"] == per["emotion"]
    per["lost"] = per["was"] & ~per["now"]
    per["gained"] = ~per["was"] & per["now"]
    mc = (
        per.groupby(GROUP + ["emotion"], sort=True)
        .agg(
            n=("image_id", "size"),
            lost=("lost", "sum"),
            gained=("gained", "sum"),
            n_reference=("was", "sum"),
            n_comparison=("now", "sum"),
        )
        .reset_index()
    )
    discordant = mc["lost"] + mc["gained"]
    mc["n_discordant"] = discordant
    mc["statistic"] = np.minimum(mc["lost"], mc["gained"]).astype(float)
    mc["p_raw"] = mcnemar_exact(mc["lost"].to_numpy(), mc["gained"].to_numpy())
    mc["df"] = np.nan
    mc["test"] = "mcnemar"
    mc["flip_rate"] = discordant / mc["n"]
    lo, hi = proportion_confint(discordant, mc["n"], alpha=1 - ci_level, method="wilson")
    mc["flip_ci_low"], mc["flip_ci_high"] = lo, hi

    rows = []
    for key, group in groups:
        stat, dof, p = stuart_maxwell(group["top1_ref"].to_numpy(), group["top1"].to_numpy())
        n, flips = len(group), int(group["flip"].sum())
        rows.append(
            dict(
                zip(GROUP, key),
                emotion="*",
                n=n,
                n_discordant=flips,
                n_reference=np.nan,
                n_comparison=np.nan,
                statistic=stat,
                df=float(dof),
                p_raw=p,
                test="stuart_maxwell",
                flip_rate=flips / n,
            )
        )
    sm = pd.DataFrame(rows)
    lo, hi = proportion_confint(sm["n_discordant"], sm["n"], alpha=1 - ci_level, method="wilson")
    sm["flip_ci_low"], sm["flip_ci_high"] = lo, hi
    out = pd.concat([sm, mc], ignore_index=True)
    out["contrast"] = contrast
    out["reference"] = ref_name
    return out[COLUMNS]
