"""``analyse``: every table of the paired counterfactual analysis from the tidy measurements."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

import numpy as np
import pandas as pd
import scipy
import statsmodels

from .config import StatsConfig, StatsResult
from .corrections import correct_frame
from .dose import dose_response
from .effects import bootstrap_intervals, effect_sizes
from .headline import NOT_TESTABLE, headline_table, score_table
from .labels import label_tests
from .paired import run_paired_test
from .pairing import PairedBlock, apply_validity, image_metadata, paired_block, validate_measurements
from .power import MAX_N, POWER_SIMULATIONS, power_analysis
from .subgroups import subgroup_tests

log = logging.getLogger(__name__)

TEST_COLUMNS = [
    "contrast",
    "editor",
    "property",
    "classifier",
    "output",
    "strength",
    "reference",
    "test",
    "n",
    "n_nonzero",
    "statistic",
    "p_raw",
    "method",
    "degenerate",
    "p_adj",
    "reject",
    "family",
    "correction",
    "median_diff",
    "median_ci_low",
    "median_ci_high",
    "mean_diff",
    "mean_ci_low",
    "mean_ci_high",
    "cohen_dz",
    "dz_ci_low",
    "dz_ci_high",
    "rank_biserial",
]

WILCOXON_METHOD = (
    "two-sided, no continuity correction; exact null distribution for n <= 50 without ties or "
    "zeros, exact sign-flip enumeration for n <= 13 with them, normal approximation with tie "
    "(and Pratt zero) correction otherwise (= scipy.stats.wilcoxon method='auto')"
)


def paired_table(block: PairedBlock, cfg: StatsConfig) -> pd.DataFrame:
    """One row per test of the block x test kind, with effect sizes, bootstrap intervals and correction.

    Rows whose differences are all exactly zero are marked ``degenerate``: not testable (``p_raw``
    NaN, method says so), so they count neither in the headline's n nor in the correction's m (a
    placebo's outputs would otherwise dilute every other test of its family).
    """
    if block.diffs.shape[0] == 0:
        return pd.DataFrame(columns=TEST_COLUMNS)
    effects = effect_sizes(block.diffs, cfg.zero_method)
    intervals = bootstrap_intervals(block.diffs, cfg.n_bootstrap, cfg.ci_level, cfg.ci, cfg.seed)
    base = block.keys.copy()
    base["contrast"] = block.contrast
    base["reference"] = block.reference
    base["n"] = effects["n"]
    base["n_nonzero"] = effects["n_nonzero"]
    base["median_diff"], base["mean_diff"] = effects["median"], effects["mean"]
    base["cohen_dz"], base["rank_biserial"] = effects["dz"], effects["rank_biserial"]
    for stat, name in (("median", "median"), ("mean", "mean"), ("dz", "dz")):
        base[f"{name}_ci_low"] = intervals[f"{stat}_ci_low"]
        base[f"{name}_ci_high"] = intervals[f"{stat}_ci_high"]
    degenerate = (effects["n"] > 0) & (effects["n_nonzero"] == 0)
    frames = []
    for test in cfg.tests:
        result = run_paired_test(test, block.diffs, cfg.zero_method, cfg.n_permutations, cfg.seed)
        frame = base.assign(
            test=test,
            statistic=result.statistic,
            p_raw=np.where(degenerate, np.nan, result.p),
            method=np.where(degenerate, NOT_TESTABLE, result.method),
            degenerate=degenerate,
        )
        frames.append(frame)
    table = correct_frame(pd.concat(frames, ignore_index=True), cfg.family, cfg.correction, cfg.alpha)
    return table[TEST_COLUMNS]


def _meta(
    cfg: StatsConfig, df: pd.DataFrame, tests: pd.DataFrame, artefact: pd.DataFrame, seconds: float
) -> dict:
    images = df.groupby("property")["image_id"].nunique()
    return {
        "alpha": cfg.alpha,
        "family": cfg.family,
        "correction": cfg.correction,
        "tests": list(cfg.tests),
        "primary": cfg.primary,
        "reference": cfg.reference,
        "zero_method": cfg.zero_method,
        "n_images": int(df["image_id"].nunique()),
        "n_images_per_property": images.astype(int).to_dict(),
        "n_tests": int(len(tests)),
        "n_artefact_tests": int(len(artefact)),
        "n_families": int(tests["family"].nunique()) if len(tests) else 0,
        "wilcoxon_method": WILCOXON_METHOD,
        "permutation_method": (
            f"sign-flip of the mean difference; exact when 2**n <= {cfg.n_permutations}, "
            f"else {cfg.n_permutations} seeded Monte-Carlo flips with p=(1+hits)/(1+B)"
        ),
        "sign_test": "exact binomial on non-zero differences",
        "effect_ci": f"{cfg.ci} bootstrap, {cfg.n_bootstrap} resamples, level {cfg.ci_level}",
        "label_tests": "flip rate with Wilson interval; exact McNemar per 'top-1 is e'; Stuart-Maxwell "
        "(statsmodels SquareTable) for the overall label distribution",
        "dose_model": "statsmodels MixedLM value ~ strength, REML, random intercept per image "
        "(nested in subject when subjects have several images); sham = strength 0",
        "trend_test": "Page's L across strengths incl. 0, normal approximation, two-sided",
        "power_method": f"resampled pilot differences, {POWER_SIMULATIONS} simulations per n, n <= {MAX_N}",
        "subgroup_by": cfg.subgroup_by,
        "seed": cfg.seed,
        "config": cfg.as_dict(),
        "versions": {
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "scipy": scipy.__version__,
            "statsmodels": statsmodels.__version__,
        },
        "seconds": round(seconds, 3),
    }


def analyse(measurements: pd.DataFrame, cfg: StatsConfig | None = None,
            score_sets: Collection[str] = ()) -> StatsResult:
    """Run the whole paired analysis.

    Args:
        measurements: Tidy table, one row per image x condition x classifier x output (see
            ``pairing.REQUIRED_COLUMNS``); optional ``valid`` (edit rows), ``subject`` and metadata columns.
        cfg: Settings; defaults to ``StatsConfig()``.
        score_sets: classifiers whose outputs are not emotions (``output_kind: scores``): tested like
            the others, but counted in ``score_shifts`` instead of the headline.

    Returns:
        StatsResult with ``tests`` (edit vs reference), ``artefact`` (sham vs original), ``labels``,
        ``headline``, ``dose_response``, ``subgroups``, ``power``, ``excluded`` and ``meta``.
    """
    cfg = cfg or StatsConfig()
    start = time.perf_counter()
    df = validate_measurements(measurements)
    if not (df["condition"] == "edit").any():
        raise ValueError("measurements contain no condition='edit' rows; nothing to test")
    if not (df["condition"] == cfg.reference).any():
        raise ValueError(
            f"StatsConfig.reference={cfg.reference!r} but measurements have no such condition rows"
        )
    df, excluded = apply_validity(df, cfg.exclude_invalid_edits)

    block = paired_block(df, cfg.reference, "edit")
    tests = paired_table(block, cfg)
    has_both = (df["condition"] == "sham").any() and (df["condition"] == "original").any()
    artefact = (
        paired_table(paired_block(df, "original", "artefact"), cfg)
        if has_both
        else pd.DataFrame(columns=TEST_COLUMNS)
    )

    labels = label_tests(df, cfg.reference, "edit", cfg.ci_level)
    if has_both:
        labels = pd.concat(
            [labels, label_tests(df, cfg.reference, "artefact", cfg.ci_level)], ignore_index=True
        )
    labels = correct_frame(labels, cfg.family, cfg.correction, cfg.alpha)

    subgroups = pd.DataFrame()
    if cfg.subgroup_by is not None:
        meta_column = image_metadata(df, cfg.subgroup_by)
        subgroups = subgroup_tests(block, meta_column, cfg.subgroup_by, cfg.family, cfg.correction, cfg.alpha)

    primary_rows = tests["test"] == cfg.primary
    power = (
        power_analysis(
            block.diffs,
            tests[primary_rows].reset_index(drop=True),
            cfg.primary,
            cfg.alpha,
            cfg.correction,
            cfg.power,
            cfg.zero_method,
            cfg.seed,
        )
        if primary_rows.any()
        else pd.DataFrame()
    )

    result = StatsResult(
        tests=tests,
        artefact=artefact,
        labels=labels,
        headline=headline_table(tests, cfg.primary, cfg.correction, cfg.alpha, cfg.family, score_sets),
        score_shifts=score_table(tests, cfg.primary, cfg.correction, cfg.alpha, cfg.family, score_sets),
        dose_response=dose_response(df, cfg.family, cfg.correction, cfg.alpha),
        subgroups=subgroups,
        power=power,
        excluded=excluded,
    )
    result.meta = _meta(cfg, df, tests, artefact, time.perf_counter() - start)
    log.info(
        "stats done tests=%d artefact=%d seconds=%.2f", len(tests), len(artefact), result.meta["seconds"]
    )
    return result
