"""Exploratory subgroup analysis: does the edit effect depend on an image metadata column?

In a paired design the condition x metadata interaction is the dependence of the paired difference on the
metadata, so each test fits ``diff ~ 1 + metadata`` (dummies for a categorical column, a slope for a
numeric one) with HC3 robust errors and a Wald chi-square test of the metadata terms. All tests are
fitted at once with batched normal equations (each test masks its own missing pairs).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .corrections import correct_frame
from .pairing import TEST_KEYS, PairedBlock

#: Levels seen in fewer images than this are left out: they would have leverage near 1 under HC3.
MIN_LEVEL_IMAGES = 3


def batched_hc3(
    design: np.ndarray, y: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OLS with HC3 covariance for many responses sharing one design but with their own masks.

    Args:
        design: (n, p) design matrix.
        y: (T, n) responses (values under a False mask are ignored).
        mask: (T, n) which observations each fit uses.

    Returns:
        coefficients (T, p), HC3 covariance (T, p, p), and whether each fit is estimable (T,).
    """
    w = mask.astype(np.float64)
    y = np.where(mask, y, 0.0)
    xtx = np.einsum("tn,np,nq->tpq", w, design, design)
    p = design.shape[1]
    estimable = (np.linalg.matrix_rank(xtx) == p) & (w.sum(axis=1) > p)
    xtx[~estimable] = np.eye(p)
    inv = np.linalg.inv(xtx)
    coef = np.einsum("tpq,nq,tn->tp", inv, design, w * y)
    resid = (y - coef @ design.T) * w
    leverage = np.einsum("np,tpq,nq->tn", design, inv, design) * w
    near_one = (leverage > 1 - 1e-10).any(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = np.where(mask, resid**2 / (1 - leverage) ** 2, 0.0)
    meat = np.einsum("tn,np,nq->tpq", weight, design, design)
    cov = inv @ meat @ inv
    return coef, cov, estimable & ~near_one


def _design(meta: pd.Series) -> tuple[np.ndarray, list[str], str, np.ndarray]:
    """Design matrix over the block's images, term names, kind, and which images have usable metadata."""
    if pd.api.types.is_numeric_dtype(meta) and not pd.api.types.is_bool_dtype(meta):
        x = meta.to_numpy(dtype=np.float64)
        usable = ~np.isnan(x)
        return np.column_stack([np.ones_like(x), np.nan_to_num(x)]), ["slope"], "numeric", usable
    labels = meta.astype(object).where(meta.notna())
    counts = labels.value_counts()
    levels = sorted(counts[counts >= MIN_LEVEL_IMAGES].index.astype(str))
    labels = labels.astype(str).where(labels.notna())
    usable = labels.isin(levels).to_numpy()
    columns = [np.ones(len(meta))] + [(labels == lv).to_numpy(dtype=np.float64) for lv in levels[1:]]
    return np.column_stack(columns), levels, "categorical", usable


def subgroup_tests(
    block: PairedBlock, meta: pd.Series, column: str, family: str, correction: str, alpha: float
) -> pd.DataFrame:
    """Interaction tests of every paired test with one metadata column.

    Returns:
        One row per test x level (categorical: the level's n and mean difference, and its coefficient
        against the first level; numeric: one ``slope`` row), with the test's Wald statistic, df, raw
        and corrected p repeated on each of its rows. Exploratory: never part of the headline.
    """
    if block.diffs.shape[0] == 0:
        return pd.DataFrame()
    meta = meta.reindex(block.images)
    design, terms, kind, usable = _design(meta)
    n_terms = design.shape[1] - 1
    if n_terms < 1:
        return pd.DataFrame()
    mask = ~np.isnan(block.diffs) & usable[None, :]
    coef, cov, ok = batched_hc3(design, np.nan_to_num(block.diffs), mask)
    b = coef[:, 1:]
    v = cov[:, 1:, 1:]
    v[~ok] = np.eye(n_terms)
    wald = np.einsum("tp,tp->t", b, np.linalg.solve(v, b[..., None])[..., 0])
    wald[~ok] = np.nan
    p_raw = stats.chi2.sf(wald, n_terms)
    tests = block.keys.copy()
    tests["contrast"] = "subgroup"
    tests["test"] = f"hc3_wald:{column}"
    tests["p_raw"] = p_raw
    tests = correct_frame(tests, family, correction, alpha)
    tests["statistic"] = wald
    tests["df"] = n_terms
    tests["subgroup_by"] = column
    tests["kind"] = kind
    tests["n"] = mask.sum(axis=1)

    se = np.sqrt(np.einsum("tpp->tp", cov))
    se[~ok] = np.nan
    coef[~ok] = np.nan
    pieces = []
    if kind == "numeric":
        pieces.append(
            tests.assign(
                level="slope",
                n_level=tests["n"],
                mean_diff_level=np.nan,
                coefficient=coef[:, 1],
                coefficient_se=se[:, 1],
            )
        )
    else:
        for j, level in enumerate(terms):
            in_level = mask & (meta.astype(str).to_numpy() == level)[None, :]
            n_level = in_level.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                level_mean = np.where(in_level, block.diffs, 0.0).sum(axis=1) / n_level
            pieces.append(
                tests.assign(
                    level=level,
                    n_level=n_level,
                    mean_diff_level=level_mean,
                    coefficient=coef[:, j] if j else np.nan,
                    coefficient_se=se[:, j] if j else np.nan,
                )
            )
    out = pd.concat(pieces, ignore_index=True)
    out["exploratory"] = True
    order = TEST_KEYS + [
        "subgroup_by",
        "kind",
        "level",
        "n",
        "n_level",
        "mean_diff_level",
        "coefficient",
        "coefficient_se",
        "statistic",
        "df",
        "p_raw",
        "p_adj",
        "reject",
        "family",
        "correction",
        "exploratory",
    ]
    return out.sort_values(TEST_KEYS + ["level"], kind="stable").reset_index(drop=True)[order]
