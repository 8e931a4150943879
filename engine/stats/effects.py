"""Effect sizes of paired differences and their bootstrap confidence intervals, for many tests at once.

The bootstrap works on each row's sorted differences. Rows with the same number of pairs share one seeded
(B, n) matrix of multinomial resample counts ``W``: a resample's mean is a matrix product, and its median
sits at positions that depend on ``W`` alone (the data are sorted), so medians are a gather. Resampling
positions of the sorted row is as valid a bootstrap as resampling the original order, because every
resample is an i.i.d. uniform draw of the row's values either way.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from .paired import as_matrix, signed_rank_sums

STATISTICS = ("mean", "median", "dz")


def effect_sizes(d: np.ndarray, zero_method: str = "wilcox") -> dict[str, np.ndarray]:
    """Point estimates per row: n, mean and median difference, Cohen's d_z, matched-pairs rank-biserial."""
    d = as_matrix(d)
    n = (~np.isnan(d)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        has = n > 0
        mean = np.full(d.shape[0], np.nan)
        median = np.full(d.shape[0], np.nan)
        mean[has] = np.nanmean(d[has], axis=1)
        median[has] = np.nanmedian(d[has], axis=1)
        sd = np.sqrt(np.nansum((d - mean[:, None]) ** 2, axis=1) / (n - 1))
        dz = np.where(n >= 2, mean / sd, np.nan)
        r_plus, r_minus = signed_rank_sums(d, zero_method)
        rank_biserial = (r_plus - r_minus) / (r_plus + r_minus)
    return {
        "n": n,
        "mean": mean,
        "median": median,
        "sd": sd,
        "dz": dz,
        "n_nonzero": ((d != 0) & ~np.isnan(d)).sum(axis=1),
        "rank_biserial": rank_biserial,
    }


def _median_positions(counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted positions of the lower and upper middle element of each resample described by counts."""
    cumulative = np.cumsum(counts, axis=1)
    lower_rank, upper_rank = (n + 1) // 2, n // 2 + 1
    lower = (cumulative < lower_rank).sum(axis=1)
    upper = (cumulative < upper_rank).sum(axis=1)
    return lower, upper


def _jackknife_median_positions(n: int) -> tuple[np.ndarray, np.ndarray]:
    """For each left-out position i of a sorted row, the positions of the middle pair of the rest."""
    m = n - 1
    left_out = np.arange(n)
    lower_rank, upper_rank = (m + 1) // 2, m // 2 + 1  # 1-based ranks among the n - 1 kept values

    def position(rank: int) -> np.ndarray:
        return np.where(rank - 1 < left_out, rank - 1, rank)

    return position(lower_rank), position(upper_rank)


def _resample_plan(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Everything about the (B, n) resample counts that does not depend on the data."""
    n = counts.shape[1]
    lower, upper = _median_positions(counts, n)
    jk_lower, jk_upper = _jackknife_median_positions(n)
    return {
        "w": np.ascontiguousarray(counts.T, dtype=np.float64),
        "lower": lower,
        "upper": upper,
        "jk_lower": jk_lower,
        "jk_upper": jk_upper,
    }


def _boot_and_jackknife(x: np.ndarray, plan: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, ...]]:
    """Bootstrap replicates and jackknife values of each statistic for sorted rows ``x`` (Tg, n)."""
    n = x.shape[1]
    centre = x.mean(axis=1, keepdims=True)
    xc = x - centre  # centring keeps the sum-of-squares variance numerically stable
    w = plan["w"]
    boot_shift = xc @ w / n
    boot_ss = (xc**2) @ w
    with np.errstate(invalid="ignore", divide="ignore"):
        boot_var = (boot_ss - n * boot_shift**2) / (n - 1)
        boot_dz = (centre + boot_shift) / np.sqrt(boot_var)
    boot_median = (x[:, plan["lower"]] + x[:, plan["upper"]]) / 2

    total, total_sq = xc.sum(axis=1, keepdims=True), (xc**2).sum(axis=1, keepdims=True)
    jk_shift = (total - xc) / (n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        jk_var = (total_sq - xc**2 - (n - 1) * jk_shift**2) / (n - 2)
        jk_dz = (centre + jk_shift) / np.sqrt(jk_var)
    jk_median = (x[:, plan["jk_lower"]] + x[:, plan["jk_upper"]]) / 2

    with np.errstate(invalid="ignore", divide="ignore"):
        observed_dz = centre[:, 0] / np.sqrt((xc**2).sum(axis=1) / (n - 1))
    mid_lo, mid_hi = (n + 1) // 2 - 1, n // 2
    return {
        "mean": (centre[:, 0] + 0.0, centre + boot_shift, centre + jk_shift),
        "median": ((x[:, mid_lo] + x[:, mid_hi]) / 2, boot_median, jk_median),
        "dz": (observed_dz, boot_dz, jk_dz),
    }


def _row_quantiles(sorted_boot: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Linear-interpolation quantile of each sorted row at its own probability ``q`` (like np.quantile)."""
    n_boot = sorted_boot.shape[1]
    position = np.clip(q, 0, 1) * (n_boot - 1)
    below = np.floor(position).astype(int)
    above = np.minimum(below + 1, n_boot - 1)
    frac = position - below
    rows = np.arange(sorted_boot.shape[0])
    return sorted_boot[rows, below] * (1 - frac) + sorted_boot[rows, above] * frac


def _interval(
    observed: np.ndarray, boot: np.ndarray, jackknife: np.ndarray, level: float, method: str
) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - level) / 2
    q_lo = np.full(observed.shape, tail)
    q_hi = np.full(observed.shape, 1 - tail)
    if method == "bca":
        below = (boot < observed[:, None]).sum(axis=1)
        at_or_below = (boot <= observed[:, None]).sum(axis=1)
        share = (below + at_or_below) / (2.0 * boot.shape[1])
        z0 = special.ndtri(share)
        spread = jackknife.mean(axis=1, keepdims=True) - jackknife
        numerator = (spread**3).sum(axis=1)
        denominator = 6.0 * (spread**2).sum(axis=1) ** 1.5
        with np.errstate(invalid="ignore", divide="ignore"):
            accel = np.where(denominator > 0, numerator / denominator, 0.0)
            z_lo, z_hi = special.ndtri(tail), special.ndtri(1 - tail)
            bca_lo = special.ndtr(z0 + (z0 + z_lo) / (1 - accel * (z0 + z_lo)))
            bca_hi = special.ndtr(z0 + (z0 + z_hi) / (1 - accel * (z0 + z_hi)))
        # A bootstrap distribution entirely on one side of the estimate gives z0 = +-inf; fall back.
        usable = np.isfinite(z0) & np.isfinite(bca_lo) & np.isfinite(bca_hi)
        q_lo = np.where(usable, bca_lo, q_lo)
        q_hi = np.where(usable, bca_hi, q_hi)
    sorted_boot = np.sort(boot, axis=1)  # NaN replicates sort last
    low, high = _row_quantiles(sorted_boot, q_lo), _row_quantiles(sorted_boot, q_hi)
    invalid = np.isnan(boot).any(axis=1) | np.isnan(observed)
    return np.where(invalid, np.nan, low), np.where(invalid, np.nan, high)


def bootstrap_intervals(
    d: np.ndarray,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    method: str = "bca",
    seed: int = 0,
    statistics: tuple[str, ...] = STATISTICS,
) -> dict[str, np.ndarray]:
    """Bootstrap confidence intervals of the mean, median and d_z of every row.

    Args:
        d: (T, n) differences, NaN where missing.
        n_bootstrap: Resamples per row.
        level: Confidence level.
        method: ``"bca"`` or ``"percentile"``.
        seed: Seed; rows with the same number of pairs share the resample counts drawn for that n.
        statistics: Which of ``mean``, ``median``, ``dz`` to return.

    Returns:
        ``{stat}_ci_low`` and ``{stat}_ci_high`` arrays of length T (NaN for rows with < 3 pairs).
    """
    if method not in ("bca", "percentile"):
        raise ValueError(f"ci={method!r} is not one of ['bca', 'percentile']")
    d = as_matrix(d)
    n_rows = d.shape[0]
    out = {f"{s}_ci_{side}": np.full(n_rows, np.nan) for s in statistics for side in ("low", "high")}
    sorted_d = np.sort(d, axis=1)  # NaN last, so each row's values are its first n entries
    n_valid = (~np.isnan(d)).sum(axis=1)
    for n in np.unique(n_valid[n_valid >= 3]):
        counts = np.random.default_rng([seed, int(n)]).multinomial(n, np.full(n, 1.0 / n), size=n_bootstrap)
        rows = np.flatnonzero(n_valid == n)
        plan = _resample_plan(counts)
        # Blocks of rows: large blocks keep the matrix products efficient; ~32 MB per temporary caps memory.
        chunk = max(1, 4_000_000 // max(n_bootstrap, int(n)))
        for start in range(0, rows.size, chunk):
            block = rows[start : start + chunk]
            parts = _boot_and_jackknife(sorted_d[block, :n], plan)
            for stat in statistics:
                low, high = _interval(*parts[stat], level=level, method=method)
                out[f"{stat}_ci_low"][block] = low
                out[f"{stat}_ci_high"][block] = high
    return out


def median_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval for the median of `values` (NaNs dropped), from order statistics.

    The interval runs from the j-th to the (n + 1 - j)-th smallest value, with j the largest rank for
    which the number of values below the median, Binomial(n, 1/2), stays inside it with probability at
    least `level`; it is exact and needs no resampling (so no seed). NaN when n is too small for the level
    (n < 6 at 95 %).
    """
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    x = np.sort(x[~np.isnan(x)])
    n = len(x)
    if n == 0:
        return float("nan"), float("nan")
    # P(X_(j) <= median <= X_(n+1-j)) = 1 - 2 P(B <= j - 1), B ~ Binomial(n, 1/2).
    ranks = np.arange(1, n // 2 + 1)
    covered = 1 - 2 * stats.binom.cdf(ranks - 1, n, 0.5)
    ok = ranks[covered >= level]
    if not len(ok):
        return float("nan"), float("nan")
    j = int(ok.max())
    return float(x[j - 1]), float(x[n - j])
