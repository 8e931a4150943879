"""Vectorised paired tests on a matrix of differences.

Every function takes ``d`` of shape ``(T, n)``: one row per test, one column per pair, NaN where a pair
is missing (ragged n is handled by masking). All rows are tested in array operations, with no Python loop
over tests. The Wilcoxon signed-rank test reproduces ``scipy.stats.wilcoxon(d, zero_method=...,
correction=False, method="auto")`` row by row, including its choice between the exact null distribution,
an exact sign-flip enumeration, and the normal approximation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special, stats

#: scipy's relative tolerance for "equal" statistics in permutation tests.
_GAMMA = np.finfo(np.float64).eps * 100
#: Largest n for which scipy's method="auto" may use the exact Wilcoxon distribution.
_EXACT_MAX_N = 50
#: Largest n for which scipy enumerates all 2**n sign flips when there are ties or zeros.
_FLIP_MAX_N = 13
#: Cap on elements of one temporary (tests x resamples) block.
_BLOCK = 4_000_000


@dataclass
class PairedTestResult:
    """Per-row results of one paired test (arrays of length T)."""

    statistic: np.ndarray
    p: np.ndarray
    n: np.ndarray
    method: np.ndarray


def as_matrix(d: np.ndarray) -> np.ndarray:
    """Return ``d`` as a float64 (T, n) matrix; a vector is one test."""
    d = np.asarray(d, dtype=np.float64)
    if d.ndim == 1:
        d = d[None, :]
    if d.ndim != 2:
        raise ValueError(f"differences must have shape (tests, pairs), got shape={d.shape}")
    return d


def average_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average ranks of each row of ``x`` (NaN entries are unranked and get NaN).

    Args:
        x: (T, n) values.

    Returns:
        ranks (T, n), tie term ``sum(t**3 - t)`` per row (T,), and whether each row has a tie (T,).
    """
    n_rows, n_cols = x.shape
    order = np.argsort(x, axis=1)  # NaN sorts last; the order within ties does not matter
    xs = np.take_along_axis(x, order, axis=1)
    valid = ~np.isnan(xs)
    starts = np.ones_like(valid)
    starts[:, 1:] = xs[:, 1:] != xs[:, :-1]  # NaN != NaN, so every NaN is its own group
    group = np.cumsum(starts.ravel()) - 1  # column 0 always starts a group, so groups never span rows
    position = np.broadcast_to(np.arange(1, n_cols + 1, dtype=np.float64), (n_rows, n_cols)).ravel()
    size = np.bincount(group)
    mean_position = np.bincount(group, weights=position) / size
    sorted_ranks = mean_position[group].reshape(n_rows, n_cols)
    sorted_ranks[~valid] = np.nan
    ranks = np.empty_like(sorted_ranks)
    np.put_along_axis(ranks, order, sorted_ranks, axis=1)

    first = np.flatnonzero(starts.ravel())
    group_row = first // n_cols
    group_valid = valid.ravel()[first]
    tie = np.where(group_valid, size.astype(np.float64) ** 3 - size, 0.0)
    tie_term = np.bincount(group_row, weights=tie, minlength=n_rows)
    has_ties = np.bincount(group_row, weights=(size > 1) & valid.ravel()[first], minlength=n_rows) > 0
    return ranks, tie_term, has_ties


@lru_cache(maxsize=64)
def _wilcoxon_cdf(n: int) -> tuple[np.ndarray, np.ndarray]:
    """cdf and sf of the exact null distribution of W+ for n untied non-zero pairs."""
    pmf = np.ones(1)
    for k in range(1, n + 1):
        prev, pmf = pmf, np.zeros(k * (k + 1) // 2 + 1)
        pmf[: len(prev)] = prev * 0.5
        pmf[-len(prev) :] += prev * 0.5
    return np.cumsum(pmf), np.cumsum(pmf[::-1])[::-1]


#: Keys at or above this are NaN magnitudes (float64 bits of +inf plus one).
_NAN_KEY = np.uint64(0x7FF0000000000001)
#: Elements per chunk of rows: small enough for the temporaries to stay in cache.
_CHUNK = 1 << 16


def _rank_chunk(d: np.ndarray, zero_method: str) -> dict[str, np.ndarray]:
    """Signed-rank pieces of a few rows, from a single plain sort.

    The bit pattern of a non-negative float64 orders like an unsigned integer, so ``bits << 1 | (d > 0)``
    is a uint64 key whose sort orders by |d| (NaN last) and carries each sign along: no argsort, no
    gathers and no scatter back (W+ does not need the original order).
    """
    magnitude = np.abs(d)
    if zero_method == "wilcox":
        magnitude[d == 0] = np.nan
    keys = (magnitude.view(np.uint64) << np.uint64(1)) | (d > 0).astype(np.uint64)
    keys.sort(axis=1)
    positive = (keys & np.uint64(1)).astype(bool)
    keys >>= np.uint64(1)
    n_cols = keys.shape[1]
    position = np.arange(n_cols)
    count = (keys < _NAN_KEY).sum(axis=1)
    valid = position < count[:, None]
    zeros = valid & (keys == 0)
    starts = np.ones(keys.shape, dtype=bool)
    np.not_equal(keys[:, 1:], keys[:, :-1], out=starts[:, 1:])
    ends = np.ones(keys.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, position, n_cols - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.where(valid, (first + last) * 0.5 + 1.0, 0.0)
    size = (last - first + 1).astype(np.float64)
    counted = starts & valid
    if zero_method == "pratt":  # scipy leaves the zeros out of Pratt's tie correction
        counted &= ~zeros
    return {
        "ranks": ranks,
        "positive": positive,
        "zeros": zeros,
        "count": count.astype(np.float64),
        "tie": np.where(counted, size * size * size - size, 0.0).sum(axis=1),
        "r_plus": (ranks * positive).sum(axis=1),
        "zero_ranks": (ranks * zeros).sum(axis=1),
        "rank_total": ranks.sum(axis=1),
    }


def _signed_rank_parts(d: np.ndarray, zero_method: str, keep_ranks: bool = False) -> dict[str, np.ndarray]:
    """W+, W-, the normal approximation (scipy's conventions) of every row, in cache-sized row chunks.

    With ``keep_ranks`` the sorted ranks and signs are returned too (for the sign-flip enumeration).
    """
    n_rows, n_cols = d.shape
    sums = {k: np.empty(n_rows) for k in ("count", "tie", "r_plus", "zero_ranks", "rank_total")}
    kept: dict[str, list[np.ndarray]] = {"ranks": [], "sign": []}
    step = max(1, _CHUNK // max(n_cols, 1))
    for start in range(0, n_rows, step):
        rows = slice(start, start + step)
        chunk = _rank_chunk(d[rows], zero_method)
        for key in sums:
            sums[key][rows] = chunk[key]
        if keep_ranks:
            kept["ranks"].append(chunk["ranks"])
            kept["sign"].append(
                np.where(chunk["positive"], 1.0, np.where(chunk["zeros"] | (chunk["ranks"] == 0), 0.0, -1.0))
            )
    r_plus, zero_ranks, count = sums["r_plus"], sums["zero_ranks"], sums["count"]
    r_minus = sums["rank_total"] - r_plus - zero_ranks
    if zero_method == "zsplit":
        r_plus = r_plus + zero_ranks / 2
        r_minus = r_minus + zero_ranks / 2
    n_zero = (d == 0).sum(axis=1).astype(np.float64)
    mean = count * (count + 1) * 0.25
    var = count * (count + 1) * (2 * count + 1)
    if zero_method == "pratt":
        mean = mean - n_zero * (n_zero + 1) * 0.25
        var = var - n_zero * (n_zero + 1) * (2 * n_zero + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (r_plus - mean) / np.sqrt((var - sums["tie"] / 2) / 24)
    out = {
        "r_plus": r_plus,
        "r_minus": r_minus,
        "zero_ranks": zero_ranks,
        "count": count,
        "n_zero": n_zero,
        "has_ties": sums["tie"] > 0,
        "z": z,
    }
    if keep_ranks:
        out["r"] = np.concatenate(kept["ranks"]) if kept["ranks"] else np.zeros((0, n_cols))
        out["sign"] = np.concatenate(kept["sign"]) if kept["sign"] else np.zeros((0, n_cols))
    return out


def _exact_wilcoxon_p(r_plus: np.ndarray, count: np.ndarray) -> np.ndarray:
    p = np.empty_like(r_plus)
    for n in np.unique(count).astype(int):
        rows = count == n
        cdf, sf = _wilcoxon_cdf(n)
        lower = cdf[np.ceil(r_plus[rows]).astype(int)]
        upper = sf[np.floor(r_plus[rows]).astype(int)]
        p[rows] = np.clip(2 * np.minimum(lower, upper), 0, 1)
    return p


def _compact(d: np.ndarray) -> np.ndarray:
    """Move the non-missing entries of each row to the front (original order kept), NaN behind."""
    order = np.argsort(np.isnan(d), axis=1, kind="stable")
    return np.take_along_axis(d, order, axis=1)


def _all_sign_flips(n: int) -> np.ndarray:
    """(2**n, n) matrix of every +-1 sign pattern."""
    codes = np.arange(2**n)[:, None] >> np.arange(n)[None, :]
    return np.where(codes & 1, -1.0, 1.0)


def _flip_wilcoxon_p(d: np.ndarray, zero_method: str) -> np.ndarray:
    """Exact sign-flip p of W+ (what scipy's method='auto' does for n <= 13 with ties or zeros)."""
    d = _compact(d)
    width = int((~np.isnan(d)).sum(axis=1).max())
    d = d[:, :width]
    parts = _signed_rank_parts(d, zero_method, keep_ranks=True)
    weight = parts["r"] * (parts["sign"] != 0)  # sorted order: the null distribution ignores the order
    base = np.where(zero_method == "zsplit", parts["zero_ranks"] / 2, 0.0)
    flips = _all_sign_flips(width)
    null = base[:, None] + (weight.sum(axis=1)[:, None] + (weight * parts["sign"]) @ flips.T) / 2
    observed = parts["r_plus"][:, None]
    gamma = np.abs(_GAMMA * observed)
    n_null = flips.shape[0]
    less = (null <= observed + gamma).sum(axis=1) / n_null
    greater = (null >= observed - gamma).sum(axis=1) / n_null
    return np.clip(2 * np.minimum(less, greater), 0, 1)


def wilcoxon_signed_rank(
    d: np.ndarray, zero_method: str = "wilcox", method: str = "auto"
) -> PairedTestResult:
    """Two-sided Wilcoxon signed-rank test of every row, without continuity correction.

    Args:
        d: (T, n) paired differences, NaN where missing.
        zero_method: ``"wilcox"``, ``"pratt"`` or ``"zsplit"``, as in scipy.
        method: ``"auto"`` (scipy's rule: exact distribution for n <= 50 without ties or zeros; exact
            sign-flip enumeration for n <= 13 with them; normal approximation otherwise) or ``"approx"``.

    Returns:
        statistic = min(W+, W-) as scipy reports it, p-values, number of pairs and the method per row.
    """
    if method not in ("auto", "approx"):
        raise ValueError(f"method={method!r} must be 'auto' or 'approx'")
    d = as_matrix(d)
    parts = _signed_rank_parts(d, zero_method)
    n_pairs = (~np.isnan(d)).sum(axis=1)
    p = 2 * special.ndtr(-np.abs(parts["z"]))
    kind = np.full(d.shape[0], "approx", dtype=object)
    if method == "auto":
        small = n_pairs <= _EXACT_MAX_N
        exact = small & ~parts["has_ties"] & (parts["n_zero"] == 0) & (parts["count"] > 0)
        flip = small & ~exact & (n_pairs <= _FLIP_MAX_N) & (n_pairs > 0)
        if exact.any():
            p[exact] = _exact_wilcoxon_p(parts["r_plus"][exact], parts["count"][exact])
            kind[exact] = "exact"
        if flip.any():
            p[flip] = _flip_wilcoxon_p(d[flip], zero_method)
            kind[flip] = "exact-sign-flip"
    statistic = np.minimum(parts["r_plus"], parts["r_minus"])
    return PairedTestResult(statistic=statistic, p=p, n=n_pairs, method=kind)


def signed_rank_sums(d: np.ndarray, zero_method: str = "wilcox") -> tuple[np.ndarray, np.ndarray]:
    """W+ and W- of every row (for the matched-pairs rank-biserial correlation)."""
    parts = _signed_rank_parts(as_matrix(d), zero_method)
    return parts["r_plus"], parts["r_minus"]


def paired_t(d: np.ndarray) -> PairedTestResult:
    """Two-sided one-sample t-test of the differences (= ``scipy.stats.ttest_rel``) for every row."""
    d = as_matrix(d)
    n = (~np.isnan(d)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(d, axis=1) if d.shape[1] else np.full(d.shape[0], np.nan)
        centred = d - mean[:, None]
        sd = np.sqrt(np.nansum(centred**2, axis=1) / (n - 1))
        t = mean / (sd / np.sqrt(n))
        p = 2 * special.stdtr(n - 1, -np.abs(t))
    p = np.where(n >= 2, p, np.nan)
    return PairedTestResult(statistic=t, p=p, n=n, method=np.full(d.shape[0], "t", dtype=object))


def sign_test(d: np.ndarray) -> PairedTestResult:
    """Exact two-sided sign test (zeros dropped) = ``scipy.stats.binomtest(k_pos, n_nonzero)`` per row."""
    d = as_matrix(d)
    positive = (d > 0).sum(axis=1)
    negative = (d < 0).sum(axis=1)
    nonzero = positive + negative
    with np.errstate(invalid="ignore"):
        p = np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(positive, negative), nonzero, 0.5))
    p = np.where(nonzero > 0, p, np.nan)
    return PairedTestResult(
        statistic=positive.astype(np.float64),
        p=p,
        n=nonzero,
        method=np.full(d.shape[0], "exact-binomial", dtype=object),
    )


def _flip_counts(values: np.ndarray, observed: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Per row, how many sign patterns give |sum| >= |observed sum| (up to scipy's tolerance)."""
    threshold = np.abs(observed) * (1 - _GAMMA)
    counts = np.zeros(values.shape[0], dtype=np.int64)
    step = max(1, _BLOCK // max(1, values.shape[0]))
    for start in range(0, flips.shape[0], step):
        null = values @ flips[start : start + step].T
        counts += (np.abs(null) >= threshold[:, None]).sum(axis=1)
    return counts


def permutation_test(d: np.ndarray, n_permutations: int = 10000, seed: int = 0) -> PairedTestResult:
    """Two-sided sign-flip permutation test of the mean difference for every row.

    Rows with ``2**n <= n_permutations`` are enumerated exactly (p = share of all patterns at least as
    extreme). The others share one seeded Monte-Carlo set of sign patterns and get the conservative
    ``(1 + hits) / (1 + n_permutations)``.
    """
    d = as_matrix(d)
    n = (~np.isnan(d)).sum(axis=1)
    filled = np.nan_to_num(d)  # a missing pair adds 0 to the sum whatever its sign
    observed = filled.sum(axis=1)
    p = np.full(d.shape[0], np.nan)
    kind = np.full(d.shape[0], "monte-carlo", dtype=object)
    exact = (n > 0) & (2.0**n <= n_permutations)
    if exact.any():
        compact = np.nan_to_num(_compact(d[exact]))
        width = int(n[exact].max())
        flips = _all_sign_flips(width)
        p[exact] = _flip_counts(compact[:, :width], observed[exact], flips) / flips.shape[0]
        kind[exact] = "exact-sign-flip"
    mc = (n > 0) & ~exact
    if mc.any():
        rng = np.random.default_rng([seed, 0x5EED])
        flips = np.where(rng.random((n_permutations, d.shape[1])) < 0.5, -1.0, 1.0)
        rows = np.flatnonzero(mc)
        step = max(1, _BLOCK // n_permutations)
        for start in range(0, rows.size, step):
            chunk = rows[start : start + step]
            hits = _flip_counts(filled[chunk], observed[chunk], flips)
            p[chunk] = (1 + hits) / (1 + n_permutations)
    mean = np.where(n > 0, observed / np.maximum(n, 1), np.nan)
    return PairedTestResult(statistic=mean, p=p, n=n, method=kind)


def run_paired_test(
    name: str, d: np.ndarray, zero_method: str = "wilcox", n_permutations: int = 10000, seed: int = 0
) -> PairedTestResult:
    """Dispatch one of ``wilcoxon``, ``t``, ``sign``, ``permutation`` by name."""
    if name == "wilcoxon":
        return wilcoxon_signed_rank(d, zero_method=zero_method)
    if name == "t":
        return paired_t(d)
    if name == "sign":
        return sign_test(d)
    if name == "permutation":
        return permutation_test(d, n_permutations=n_permutations, seed=seed)
    raise ValueError(f"test={name!r} is not one of ['wilcoxon', 't', 'sign', 'permutation']")
