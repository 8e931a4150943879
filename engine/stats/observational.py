"""Observational mode: is a classifier output independent of a property given the expression label?

For each classifier x output x property two tests run:

* ``ols_hc3``: ``value ~ property + C(label)`` by the statsmodels formula API with HC3 errors; a numeric
  property is tested by its slope, a categorical one by a Wald chi-square over its dummies.
* ``permutation``: the property is permuted within label strata (seeded, ``n_permutations`` times). The
  statistic is studentised for a numeric property: the |t| of its slope in ``value ~ property + C(label)``
  with HC3 errors (the raw slope's permutation test is not valid when only the output's variance
  depends on the property); for a categorical one, the within-stratum between-level sum of squares of y. All outputs are
  scored against the same permutations with one sparse/dense matrix product per chunk.

Both go through the same family correction and headline path as the paired analysis.
"""

from __future__ import annotations

import time
import warnings
import zlib

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import sparse

from .config import StatsConfig, StatsResult
from .corrections import correct_frame
from .headline import headline_table

REQUIRED = ("image_id", "classifier", "output", "value", "label")
COLUMNS = [
    "contrast",
    "classifier",
    "output",
    "property",
    "test",
    "kind",
    "n",
    "statistic",
    "df",
    "estimate",
    "se",
    "ci_low",
    "ci_high",
    "p_raw",
    "p_adj",
    "reject",
    "family",
    "correction",
]
_BLOCK = 4_000_000


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _per_image(df: pd.DataFrame, column: str) -> pd.Series:
    values = df.dropna(subset=[column]).groupby("image_id")[column]
    if (values.nunique() > 1).any():
        raise ValueError(f"observational: column {column!r} differs between rows of the same image")
    return values.first()


def _ols_row(data: pd.DataFrame, prop: str, numeric: bool, level: float) -> dict:
    term = f'Q("{prop}")' if numeric else f'C(Q("{prop}"))'
    labels = data["label"].nunique()
    formula = f"value ~ {term}" + (" + C(label)" if labels > 1 else "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.ols(formula, data=data).fit(cov_type="HC3")
        names = [n for n in fit.params.index if n.startswith(term)]
        if numeric:
            ci = fit.conf_int(alpha=1 - level).loc[names[0]]
            return {
                "statistic": float(fit.tvalues[names[0]]),
                "df": 1.0,
                "estimate": float(fit.params[names[0]]),
                "se": float(fit.bse[names[0]]),
                "ci_low": float(ci.iloc[0]),
                "ci_high": float(ci.iloc[1]),
                "p_raw": float(fit.pvalues[names[0]]),
            }
        constraint = np.zeros((len(names), len(fit.params)))
        for row, name in enumerate(names):
            constraint[row, fit.params.index.get_loc(name)] = 1.0
        wald = fit.wald_test(constraint, use_f=False, scalar=True)
    return {
        "statistic": float(wald.statistic),
        "df": float(len(names)),
        "estimate": np.nan,
        "se": np.nan,
        "ci_low": np.nan,
        "ci_high": np.nan,
        "p_raw": float(wald.pvalue),
    }


def within_strata_permutations(
    strata: np.ndarray, n_permutations: int, rng: np.random.Generator
) -> np.ndarray:
    """(B, n) index arrays, each a random permutation that only swaps items of the same stratum."""
    n = strata.size
    codes = pd.factorize(strata)[0]
    base = np.argsort(codes, kind="stable")  # slots grouped by stratum
    keys = rng.random((n_permutations, n)) + codes[base][None, :]  # integer part keeps each stratum's block
    shuffled = base[np.argsort(keys, axis=1)]
    perm = np.empty_like(shuffled)
    perm[:, base] = shuffled
    return perm


def permutation_pvalues(
    y: np.ndarray, prop: np.ndarray, strata: np.ndarray, numeric: bool, n_permutations: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Observed statistic and Monte-Carlo p of every column of ``y`` (n, Q) against one property.

    Returns:
        statistic (Q,), p (Q,) with p = (1 + hits) / (1 + B).
    """
    rng = np.random.default_rng(seed)
    strata_codes = pd.factorize(strata)[0]
    y = y - pd.DataFrame(y).groupby(strata_codes).transform("mean").to_numpy()  # centre within strata
    if numeric:
        x = prop.astype(np.float64)
        x = x - pd.Series(x).groupby(strata_codes).transform("mean").to_numpy()
        inv_size = 1.0 / np.bincount(strata_codes)[strata_codes]  # the strata dummies' leverage
        observed = _hc3_t(x[None, :], y, inv_size)[0]
    else:
        cells = pd.factorize(pd.Series(strata_codes).astype(str) + "|" + pd.Series(prop).astype(str))[0]
        cell_sizes = np.bincount(cells)
        n_cells = cell_sizes.size
        observed = (_cell_sums(cells, y, n_cells) ** 2 / cell_sizes[:, None]).sum(axis=0)
    hits = np.zeros(y.shape[1], dtype=np.int64)
    step = max(1, _BLOCK // (y.shape[0] * max(1, y.shape[1])))
    threshold = observed * (1 - 1e-12)
    for start in range(0, n_permutations, step):
        perm = within_strata_permutations(strata_codes, min(step, n_permutations - start), rng)
        if numeric:
            null = _hc3_t(x[perm], y, inv_size)  # (b, Q)
        else:
            b = perm.shape[0]
            rows = (np.arange(b)[:, None] * n_cells + cells[perm]).ravel()
            member = sparse.csr_matrix(
                (np.ones(rows.size), (rows, np.tile(np.arange(y.shape[0]), b))),
                shape=(b * n_cells, y.shape[0]),
            )
            sums = (member @ y).reshape(b, n_cells, y.shape[1])
            null = (sums**2 / cell_sizes[None, :, None]).sum(axis=1)
        hits += (null >= threshold[None, :]).sum(axis=0)
    return observed, (1 + hits) / (1 + n_permutations)


def _hc3_t(x: np.ndarray, y: np.ndarray, inv_size: np.ndarray) -> np.ndarray:
    """|t| of the slope of ``y ~ x + C(stratum)`` with HC3 errors, for every row of `x` (B, n) and
    column of `y` (n, Q), both centred within strata (so the strata intercepts are already out).

    The permutation test uses this studentised statistic, not the raw slope: when only the output's
    variance depends on the property, the raw slope's permutation distribution is too narrow (it
    rejected 14.6 % of true nulls), while the HC3 t is asymptotically pivotal.
    """
    xx = np.einsum("bn,bn->b", x, x)[:, None]  # (B, 1)
    slope = (x @ y) / xx  # (B, Q)
    resid = y[None, :, :] - slope[:, None, :] * x[:, :, None]  # (B, n, Q)
    leverage = inv_size[None, :] + x**2 / xx  # (B, n)
    weight = (x / (1.0 - np.minimum(leverage, 1 - 1e-12))) ** 2  # (B, n)
    var = np.einsum("bn,bnq->bq", weight, resid**2) / xx**2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(slope) / np.sqrt(var)


def _cell_sums(cells: np.ndarray, y: np.ndarray, n_cells: int) -> np.ndarray:
    return np.stack(
        [np.bincount(cells, weights=y[:, q], minlength=n_cells) for q in range(y.shape[1])], axis=1
    )


def observational(df: pd.DataFrame, properties: list[str], cfg: StatsConfig | None = None) -> StatsResult:
    """Conditional-independence tests of classifier outputs and properties given the label.

    Args:
        df: One row per image x classifier x output with ``value``, ``label`` and the property columns
            (numeric: tested by slope; otherwise categorical).
        properties: Property columns to test.
        cfg: Settings (alpha, correction, family, n_permutations, seed, ci_level); the headline uses
            ``permutation`` when ``cfg.primary == "permutation"`` and ``ols_hc3`` otherwise.

    Returns:
        StatsResult with ``tests``, ``headline`` and ``meta`` filled.
    """
    cfg = cfg or StatsConfig()
    start = time.perf_counter()
    if isinstance(properties, str) or not properties:
        raise ValueError(f"observational: properties={properties!r} must be a non-empty list of column names")
    missing = [c for c in (*REQUIRED, *properties) if c not in df.columns]
    if missing:
        raise ValueError(f"observational: df lacks columns {missing}")
    df = df.dropna(subset=["value", "label"]).copy()
    for col in ("image_id", "classifier", "output"):
        df[col] = df[col].astype(str)
    label = _per_image(df, "label")
    rows = []
    for prop in properties:
        values = _per_image(df, prop)
        numeric = _is_numeric(df[prop])
        kind = "numeric" if numeric else "categorical"
        images = values.index.intersection(label.index)
        if values.nunique() < 2:
            raise ValueError(f"observational: property {prop!r} has fewer than 2 distinct values")
        data = df[df["image_id"].isin(images)]
        wide = data.pivot_table(
            index="image_id", columns=["classifier", "output"], values="value", aggfunc="first"
        )
        seed = int(zlib.crc32(prop.encode())) ^ cfg.seed
        missing = wide.isna().to_numpy()
        patterns = pd.Series([missing[:, j].tobytes() for j in range(missing.shape[1])])
        for _, columns in patterns.groupby(patterns, sort=False).groups.items():
            columns = np.asarray(columns)
            keep = ~missing[:, columns[0]]
            sub = wide.iloc[keep, columns]
            stat, p = permutation_pvalues(
                sub.to_numpy(),
                values.reindex(sub.index).to_numpy(),
                label.reindex(sub.index).to_numpy(),
                numeric,
                cfg.n_permutations,
                seed,
            )
            for j, (classifier, output) in enumerate(sub.columns):
                rows.append(
                    {
                        "classifier": classifier,
                        "output": output,
                        "property": prop,
                        "test": "permutation",
                        "kind": kind,
                        "n": len(sub),
                        "statistic": stat[j],
                        "df": np.nan,
                        "p_raw": p[j],
                    }
                )
        for (classifier, output), unit in data.groupby(["classifier", "output"], sort=True):
            unit = unit.assign(**{prop: unit["image_id"].map(values)})
            rows.append(
                {
                    "classifier": classifier,
                    "output": output,
                    "property": prop,
                    "test": "ols_hc3",
                    "kind": kind,
                    "n": len(unit),
                    **_ols_row(unit, prop, numeric, cfg.ci_level),
                }
            )
    tests = pd.DataFrame(rows).assign(contrast="observational")
    for col in ("estimate", "se", "ci_low", "ci_high"):
        if col not in tests:
            tests[col] = np.nan
    tests = correct_frame(tests, cfg.family, cfg.correction, cfg.alpha)[COLUMNS]
    tests = tests.sort_values(["property", "classifier", "output", "test"], kind="stable").reset_index(
        drop=True
    )
    primary = "permutation" if cfg.primary == "permutation" else "ols_hc3"
    meta = {
        "mode": "observational",
        "alpha": cfg.alpha,
        "family": cfg.family,
        "correction": cfg.correction,
        "primary": primary,
        "properties": list(properties),
        "n_images": int(label.size),
        "n_permutations": cfg.n_permutations,
        "seed": cfg.seed,
        "ols": "value ~ property + C(label), HC3; categorical property: Wald chi-square over its dummies",
        "permutation": "property permuted within label strata; p = (1 + hits) / (1 + B)",
        "seconds": round(time.perf_counter() - start, 3),
    }
    headline = headline_table(tests, primary, cfg.correction, cfg.alpha, cfg.family, noun="output associations")
    return StatsResult(tests=tests, headline=headline, meta=meta)
