"""Observational mode: conditional independence of outputs and properties given the label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from engine.stats import StatsConfig, observational
from engine.stats.observational import within_strata_permutations

LABELS = np.array(["anger", "happiness", "neutral"])


def _dataset(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Age drives clf_a/happiness; sEMG is confounded with the label but drives nothing given the label."""
    rng = np.random.default_rng(seed)
    label = LABELS[rng.integers(0, 3, n)]
    age = rng.uniform(18, 80, n)
    # sEMG worn mostly on 'happiness' images: a marginal association that the label explains away.
    semg = np.where(rng.random(n) < np.where(label == "happiness", 0.8, 0.2), "yes", "no")
    gender = np.where(rng.random(n) < 0.5, "f", "m")
    label_effect = {"anger": 0.0, "happiness": 1.0, "neutral": 0.4}
    rows = []
    for classifier in ("clf_a", "clf_b"):
        for output in ("happiness", "neutral"):
            value = np.vectorize(label_effect.get)(label) * (output == "happiness") + rng.normal(0, 0.3, n)
            if (classifier, output) == ("clf_a", "happiness"):
                value = value + 0.01 * (age - 50)
            rows.append(
                pd.DataFrame(
                    {
                        "image_id": [f"i{i}" for i in range(n)],
                        "classifier": classifier,
                        "output": output,
                        "value": value,
                        "label": label,
                        "age": age,
                        "semg": semg,
                        "gender": gender,
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def result():
    return observational(_dataset(), ["age", "semg", "gender"], StatsConfig(n_permutations=2000, seed=1))


def test_planted_dependence_is_detected_by_both_tests(result):
    tests = result.tests.set_index(["property", "classifier", "output", "test"])
    for test in ("ols_hc3", "permutation"):
        assert tests.loc[("age", "clf_a", "happiness", test), "reject"]
    row = tests.loc[("age", "clf_a", "happiness", "ols_hc3")]
    assert row["ci_low"] < 0.01 < row["ci_high"] and row["kind"] == "numeric"


def test_label_confounded_independence_is_not_flagged(result):
    tests = result.tests
    planted = (
        (tests["property"] == "age") & (tests["classifier"] == "clf_a") & (tests["output"] == "happiness")
    )
    assert not tests.loc[~planted, "reject"].any()
    # Without conditioning on the label, sEMG would look strongly associated with happiness scores.
    df = _dataset()
    unit = df[(df["classifier"] == "clf_b") & (df["output"] == "happiness")]
    assert smf.ols("value ~ C(semg)", unit).fit(cov_type="HC3").pvalues.iloc[1] < 1e-6


def test_ols_rows_equal_direct_statsmodels_calls(result):
    df = _dataset()
    unit = df[(df["classifier"] == "clf_b") & (df["output"] == "neutral")]
    tests = result.tests.set_index(["property", "classifier", "output", "test"])
    numeric = smf.ols('value ~ Q("age") + C(label)', unit).fit(cov_type="HC3")
    assert (
        abs(tests.loc[("age", "clf_b", "neutral", "ols_hc3"), "p_raw"] - numeric.pvalues['Q("age")']) < 1e-10
    )
    categorical = smf.ols('value ~ C(Q("semg")) + C(label)', unit).fit(cov_type="HC3")
    wald = categorical.wald_test('C(Q("semg"))[T.yes] = 0', use_f=False, scalar=True)
    assert abs(tests.loc[("semg", "clf_b", "neutral", "ols_hc3"), "p_raw"] - wald.pvalue) < 1e-10


def test_headline_families_and_meta(result):
    tests = result.tests
    assert len(tests) == 3 * 2 * 2 * 2  # properties x classifiers x outputs x tests
    assert set(tests["family"]) >= {"observational:ols_hc3|clf_a|age", "observational:permutation|clf_b|semg"}
    overall = result.headline.iloc[0]
    assert (overall["k"], overall["n"], overall["test"]) == (1, 12, "ols_hc3")
    assert result.meta["mode"] == "observational"


def test_permutations_stay_within_strata_and_are_seeded():
    strata = np.array(list("aabbbcab"))
    perms = within_strata_permutations(strata, 200, np.random.default_rng(0))
    assert (strata[perms] == strata[None, :]).all()
    assert all(sorted(p) == list(range(strata.size)) for p in perms)
    assert len({tuple(p) for p in perms}) > 20
    again = within_strata_permutations(strata, 200, np.random.default_rng(0))
    np.testing.assert_array_equal(perms, again)


def test_bad_input_fails_loudly():
    df = _dataset(60)
    with pytest.raises(ValueError, match="lacks columns"):
        observational(df, ["height"])
    with pytest.raises(ValueError, match="fewer than 2 distinct"):
        observational(df.assign(age=1.0), ["age"])


@pytest.mark.parametrize("numeric", [True, False])
def test_within_strata_permutation_test_has_nominal_size(numeric):
    from engine.stats.observational import permutation_pvalues

    rng = np.random.default_rng(3)
    n, outputs = 90, 2000
    strata = LABELS[rng.integers(0, 3, n)]
    prop = rng.uniform(0, 1, n) if numeric else np.where(rng.random(n) < 0.4, "yes", "no")
    y = rng.normal(0, 1, (n, outputs)) + (strata == "happiness")[:, None]  # label effect, no property effect
    _, p = permutation_pvalues(y, prop, strata, numeric, n_permutations=499, seed=4)
    size = float(np.mean(p <= 0.05))
    print(
        f"size of the within-label permutation test ({'numeric' if numeric else 'categorical'}): {size:.4f}"
    )
    assert 0.035 <= size <= 0.065


def test_the_permutation_statistic_is_the_hc3_t_of_statsmodels():
    import statsmodels.formula.api as smf

    from engine.stats.observational import permutation_pvalues

    rng = np.random.default_rng(3)
    n = 60
    label = rng.choice(["a", "b", "c"], n)
    x = rng.normal(size=n)
    y = 0.3 * x + (label == "b") + rng.normal(size=n)
    stat, _ = permutation_pvalues(y[:, None], x, label, True, 99, 0)
    fit = smf.ols("y ~ x + C(label)", pd.DataFrame({"y": y, "x": x, "label": label})).fit(cov_type="HC3")
    assert stat[0] == pytest.approx(abs(fit.tvalues["x"]), rel=1e-9)


def test_permutation_test_holds_its_level_when_only_the_variance_depends_on_the_property():
    """The raw slope rejected 14.6 % of true nulls when only the output's variance depends on the
    property (issue 11, statistics); the studentised (HC3 t) statistic holds the level."""
    from engine.stats.observational import permutation_pvalues

    rng = np.random.default_rng(7)
    n, reps = 80, 300
    label = np.repeat(["a", "b"], n // 2)
    codes = pd.factorize(label)[0]
    studentised = raw = 0
    for r in range(reps):
        x = rng.normal(size=n)
        y = rng.normal(size=n) * (0.2 + np.abs(x))  # no shift in mean; variance grows with |x|
        _, p = permutation_pvalues(y[:, None], x, label, True, 199, r)
        studentised += p[0] <= 0.05
        # the old statistic on the same permutations: |sum (x - stratum mean) y|
        xc = x - pd.Series(x).groupby(codes).transform("mean").to_numpy()
        perm = within_strata_permutations(codes, 199, np.random.default_rng(r))
        raw += (1 + (np.abs(xc[perm] @ y) >= abs(xc @ y) * (1 - 1e-12)).sum()) / 200 <= 0.05
    assert studentised / reps <= 0.075, studentised / reps
    assert raw / reps >= 0.15, "the setting must be one where the raw slope fails"
