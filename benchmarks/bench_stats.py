"""Throughput of the vectorised statistics against a per-test scipy loop.

2,000 tests x 1,000 paired images: Wilcoxon, t, sign and Holm, plus a 1,000-resample BCa bootstrap of the
mean, median and d_z for every test. Prints the speed-up over a Python loop of ``scipy.stats.wilcoxon``
(target >= 10x) with the largest p-value difference, and the bootstrap time per test.

Run: ``python benchmarks/bench_stats.py [--tests 2000 --pairs 1000 --resamples 1000] [--check]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy import stats

from engine.stats import (
    adjust_pvalues,
    bootstrap_intervals,
    paired_t,
    permutation_test,
    sign_test,
    wilcoxon_signed_rank,
)


def _timed(fn, *args, repeats: int = 3, **kwargs):
    """Result and best-of-``repeats`` wall time after one untimed warm-up call (the machine may be
    shared); both sides of every ratio are timed by this one function, in the same process and threads."""
    fn(*args, **kwargs)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--scipy-bootstrap-tests", type=int, default=10)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    effect = rng.normal(0, 0.05, (args.tests, 1))
    # Probabilities-like differences, rounded to 1e-3 so that ties and zeros occur as in real scores.
    d = np.round(rng.normal(0, 0.1, (args.tests, args.pairs)) + effect, 3)
    print(f"data: {args.tests} tests x {args.pairs} pairs, {np.mean(d == 0):.2%} zero differences")

    wil, t_wil = _timed(wilcoxon_signed_rank, d)
    tt, t_t = _timed(paired_t, d)
    sg, t_sign = _timed(sign_test, d)
    family = np.repeat(np.arange(args.tests // 20 + 1), 20)[: args.tests]
    _, t_holm = _timed(adjust_pvalues, wil.p, family, "holm")
    vector_total = t_wil + t_t + t_sign + t_holm
    print(
        f"vectorised: wilcoxon {t_wil:.3f}s  t {t_t:.3f}s  sign {t_sign:.3f}s  holm {t_holm:.4f}s  "
        f"total {vector_total:.3f}s"
    )

    ref, t_loop = _timed(lambda: np.array([stats.wilcoxon(row, correction=False).pvalue for row in d]))
    print(f"scipy.stats.wilcoxon loop: {t_loop:.3f}s ({1e3 * t_loop / args.tests:.2f} ms/test)")
    print(
        f"speed-up wilcoxon alone: {t_loop / t_wil:.1f}x; wilcoxon+t+sign+holm vs the wilcoxon loop alone: "
        f"{t_loop / vector_total:.1f}x"
    )
    print(f"max |p - scipy p| (wilcoxon): {np.max(np.abs(wil.p - ref)):.3e}")
    missed = [f"wilcoxon speed-up {t_loop / t_wil:.1f}x < 10x"] if t_loop / t_wil < 10 else []
    if np.max(np.abs(wil.p - ref)) > 1e-9:
        missed.append(f"wilcoxon p differs from scipy by {np.max(np.abs(wil.p - ref)):.1e} > 1e-9")

    t_ref, t_loop_t = _timed(lambda: np.array([stats.ttest_1samp(row, 0.0).pvalue for row in d[:200]]))
    t_loop_t *= args.tests / 200
    print(
        f"max |p - scipy p| (t, 200 tests): {np.max(np.abs(tt.p[:200] - t_ref)):.3e}; "
        f"t speed-up vs loop: {t_loop_t / t_t:.1f}x"
    )

    ci, t_boot = _timed(bootstrap_intervals, d, args.resamples, 0.95, "bca", 0, repeats=1)
    print(
        f"BCa bootstrap (mean, median, d_z; {args.resamples} resamples): {t_boot:.3f}s total, "
        f"{1e3 * t_boot / args.tests:.3f} ms/test"
    )
    k = args.scipy_bootstrap_tests
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about BCa on medians with tied resamples
        for row in d[:k]:
            stats.bootstrap((row,), np.median, n_resamples=args.resamples, method="bca", rng=0)
    t_sb = (time.perf_counter() - start) / k
    print(
        f"scipy.stats.bootstrap BCa median alone: {1e3 * t_sb:.1f} ms/test -> "
        f"{t_sb / (t_boot / args.tests):.0f}x slower per test than all three vectorised intervals"
    )

    perm, t_perm = _timed(permutation_test, d[:200], 10000, 0, repeats=1)
    print(f"permutation test, 10,000 sign flips: {1e3 * t_perm / 200:.2f} ms/test (200 tests)")
    assert np.isfinite(ci["median_ci_low"]).all() and np.isfinite(perm.p).all() and np.isfinite(sg.p).all()
    print("timing: one untimed warm-up call, then the best of 3 (bootstrap and permutations: 1), same threads")
    for line in missed:
        print(f"MISSED {line}")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
