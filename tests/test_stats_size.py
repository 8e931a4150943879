"""Size and power by simulation: thousands of seeded experiments at once, thanks to vectorisation.

Continuous tests must reject at about alpha under a true null ([0.035, 0.065] over >= 2,000 experiments).
Discrete tests (sign, McNemar, exact small-n Wilcoxon, exact sign-flip permutation) cannot reach alpha
exactly: they must stay at or below alpha plus simulation noise, and their actual size is printed
(``pytest -s``) rather than bounded from below.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.stats import (
    adjust_pvalues,
    bootstrap_intervals,
    paired_t,
    permutation_test,
    sign_test,
    wilcoxon_signed_rank,
)
from engine.stats.labels import mcnemar_exact

ALPHA = 0.05
EXPERIMENTS = 4000
# Upper bound for discrete tests: alpha plus 2.5 binomial standard errors of the simulated rate.
NOISE = 2.5 * np.sqrt(ALPHA * (1 - ALPHA) / EXPERIMENTS)


def _null_diffs(seed: int, n: int, experiments: int = EXPERIMENTS) -> np.ndarray:
    """Symmetric, zero-centred paired differences: a mix of normal and heavier-tailed (t3) rows."""
    rng = np.random.default_rng(seed)
    normal = rng.normal(0.0, 1.0, (experiments // 2, n))
    heavy = rng.standard_t(3, (experiments - experiments // 2, n))
    return np.vstack([normal, heavy])


def _rate(p: np.ndarray) -> float:
    return float(np.mean(p <= ALPHA))


@pytest.mark.parametrize("name", ["wilcoxon", "t", "permutation"])
def test_continuous_tests_have_nominal_size(name):
    d = _null_diffs(1, 60)  # n > 50: the Wilcoxon test uses the normal approximation
    if name == "wilcoxon":
        result = wilcoxon_signed_rank(d)
        assert set(result.method) == {"approx"}
    elif name == "t":
        result = paired_t(d)
    else:
        result = permutation_test(d, n_permutations=999, seed=2)
        assert set(result.method) == {"monte-carlo"}
    size = _rate(result.p)
    print(f"size {name} (n=60, {EXPERIMENTS} null experiments): {size:.4f}")
    assert 0.035 <= size <= 0.065


def test_discrete_tests_do_not_exceed_alpha():
    sizes = {}
    d = _null_diffs(3, 30)
    sizes["sign n=30"] = _rate(sign_test(d).p)
    small = _null_diffs(4, 10)
    exact = wilcoxon_signed_rank(small)
    assert set(exact.method) == {"exact"}
    sizes["wilcoxon exact n=10"] = _rate(exact.p)
    flips = permutation_test(small, n_permutations=10000)
    assert set(flips.method) == {"exact-sign-flip"}
    sizes["permutation exact n=10"] = _rate(flips.p)
    tied = np.round(_null_diffs(5, 12))  # ties and zeros at n <= 13: exact sign-flip Wilcoxon
    flip_wilcoxon = wilcoxon_signed_rank(tied[:1000])
    assert set(flip_wilcoxon.method) <= {"exact-sign-flip"}
    sizes["wilcoxon sign-flip n=12 (ties)"] = _rate(flip_wilcoxon.p)
    # McNemar under the null: each of n=40 pairs changes "top-1 is e" with 10 % probability, either way.
    rng = np.random.default_rng(6)
    change = rng.random((EXPERIMENTS, 40)) < 0.10
    direction = rng.random((EXPERIMENTS, 40)) < 0.5
    sizes["mcnemar n=40"] = _rate(mcnemar_exact((change & direction).sum(1), (change & ~direction).sum(1)))
    for name, size in sizes.items():
        print(f"size {name}: {size:.4f} (bound {ALPHA + NOISE:.4f})")
    assert all(size <= ALPHA + NOISE for size in sizes.values()), sizes


def test_holm_controls_fwer_and_bh_controls_fdr():
    rng = np.random.default_rng(7)
    experiments, m = 2000, 10
    # Holm: all 10 hypotheses null; FWER = P(any rejection).
    p_null = wilcoxon_signed_rank(rng.normal(0, 1, (experiments * m, 60))).p
    family = np.repeat(np.arange(experiments), m)
    holm = adjust_pvalues(p_null, family, "holm").reshape(experiments, m)
    fwer = float(np.mean((holm <= ALPHA).any(axis=1)))
    # BH: 20 hypotheses, 5 with d_z = 0.5; FDR = E[false rejections / max(rejections, 1)].
    m, true = 20, 5
    shift = np.zeros(m)
    shift[:true] = 0.5
    d = rng.normal(0, 1, (experiments, m, 60)) + shift[None, :, None]
    p = paired_t(d.reshape(-1, 60)).p
    bh = adjust_pvalues(p, np.repeat(np.arange(experiments), m), "fdr_bh").reshape(experiments, m) <= ALPHA
    fdr = float(np.mean(bh[:, true:].sum(axis=1) / np.maximum(bh.sum(axis=1), 1)))
    print(f"Holm FWER (10 nulls): {fwer:.4f}; BH FDR (15 nulls + 5 effects): {fdr:.4f}")
    bound = ALPHA + 2.5 * np.sqrt(ALPHA * (1 - ALPHA) / experiments)
    assert fwer <= bound
    assert fdr <= bound
    assert bh[:, :true].mean() > 0.5  # and BH still finds the real effects


def test_power_for_dz_half_at_n_fifty():
    rng = np.random.default_rng(8)
    d = rng.normal(0.5, 1.0, (2000, 50))  # d_z = 0.5
    power = {"wilcoxon": _rate(wilcoxon_signed_rank(d).p), "t": _rate(paired_t(d).p)}
    print(f"power at d_z=0.5, n=50: {power}")
    assert power["wilcoxon"] >= 0.80 and power["t"] >= 0.80


@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_bootstrap_interval_coverage(method):
    rng = np.random.default_rng(9)
    d = rng.normal(0.3, 1.0, (2000, 40))
    ci = bootstrap_intervals(d, 500, 0.95, method, seed=1)
    coverage = {
        "mean": np.mean((ci["mean_ci_low"] < 0.3) & (0.3 < ci["mean_ci_high"])),
        "median": np.mean((ci["median_ci_low"] < 0.3) & (0.3 < ci["median_ci_high"])),
        "dz": np.mean((ci["dz_ci_low"] < 0.3) & (0.3 < ci["dz_ci_high"])),
    }
    print(f"{method} 95 % interval coverage at n=40 over 2000 experiments: {coverage}")
    assert all(0.91 <= c <= 0.98 for c in coverage.values()), coverage
