"""End-to-end behaviour of ``analyse``: known effects, placebos, artefact rows, exclusions, tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from synthetic import synthetic_measurements

from engine.stats import StatsConfig, StatsResult, analyse

OUTPUTS = ("anger", "happiness", "neutral")
FAST = dict(n_bootstrap=300, n_permutations=999)


@pytest.fixture(scope="module")
def planted() -> pd.DataFrame:
    return synthetic_measurements(
        n_images=40,
        outputs=OUTPUTS,
        strengths=(0.5, 1.0),
        shift={("clf_a", "happiness"): 0.2},
        artefact_shift=0.05,
        seed=3,
    )


@pytest.fixture(scope="module")
def result(planted) -> StatsResult:
    return analyse(planted, StatsConfig(**FAST))


def _placebo(identical: bool) -> pd.DataFrame:
    df = synthetic_measurements(
        n_images=30,
        classifiers=("clf_a",),
        outputs=OUTPUTS[:2],
        strengths=(1.0,),
        artefact_shift=0.05,
        seed=5,
    )
    sham = df[df["condition"] == "sham"]
    edit = sham.assign(condition="edit", strength=1.0)
    if not identical:
        edit = edit.assign(value=edit["value"] + np.random.default_rng(0).normal(0, 1e-6, len(edit)))
    return pd.concat([df[df["condition"] != "edit"], edit], ignore_index=True)


@pytest.mark.parametrize(
    "field,value",
    [
        ("alpha", 1.5),
        ("reference", "edit"),
        ("tests", ("wilcoxon", "z")),
        ("primary", "sign"),
        ("zero_method", "drop"),
        ("correction", "sidak"),
        ("family", "output"),
        ("n_permutations", 10),
        ("ci", "normal"),
        ("ci_level", 0.0),
        ("power", 1),
        ("subgroup_by", ""),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    kwargs = {field: value}
    if field == "primary":
        kwargs["tests"] = ("wilcoxon", "t")
    with pytest.raises(ValueError, match=f"StatsConfig.{field}"):
        StatsConfig(**kwargs)


def test_known_effect_is_found_and_nothing_else(result):
    tests = result.tests
    planted = (tests["classifier"] == "clf_a") & (tests["output"] == "happiness")
    assert tests.loc[planted, "reject"].all(), "every test kind finds the planted shift at both strengths"
    assert not tests.loc[~planted, "reject"].any(), "the sham absorbs the processing artefact"
    for strength in (0.5, 1.0):
        row = tests[planted & (tests["strength"] == strength) & (tests["test"] == "wilcoxon")].iloc[0]
        assert abs(row["mean_diff"] - 0.2 * strength) < 0.03  # interval coverage: see test_stats_size
        assert row["mean_ci_low"] < row["mean_diff"] < row["mean_ci_high"]
        assert row["median_ci_low"] <= row["median_diff"] <= row["median_ci_high"]
        assert row["rank_biserial"] > 0.9 and row["cohen_dz"] > 1
    assert len(tests) == 2 * 3 * 2 * 4  # classifiers x outputs x strengths x tests
    assert set(tests["family"].str.split("|").str[0]) == {
        f"edit:{t}" for t in ("wilcoxon", "t", "sign", "permutation")
    }


def test_wilcoxon_rows_equal_direct_scipy(planted, result):
    df = planted
    row = result.tests[(result.tests["test"] == "wilcoxon")].iloc[4]
    pick = (df["classifier"] == row["classifier"]) & (df["output"] == row["output"])
    edit = df[pick & (df["strength"] == row["strength"])].set_index("image_id")["value"]
    sham = df[pick & (df["condition"] == "sham")].set_index("image_id")["value"]
    ref = stats.wilcoxon(edit - sham.reindex(edit.index), correction=False)
    assert abs(row["p_raw"] - ref.pvalue) < 1e-10 and row["statistic"] == ref.statistic


def test_artefact_rows_appear_with_their_own_family(result):
    art = result.artefact
    assert len(art) == 2 * 3 * 4
    assert set(art["contrast"]) == {"artefact"} and set(art["reference"]) == {"original"}
    assert (art["strength"] == 0).all()
    assert set(art["family"].str.split("|").str[0]) == {
        f"artefact:{t}" for t in ("wilcoxon", "t", "sign", "permutation")
    }
    assert art.loc[art["test"] == "wilcoxon", "reject"].all(), "the planted artefact (0.05) is detected"
    assert np.allclose(art["mean_diff"], 0.05, atol=0.03)


def test_headline_counts_primary_rejections(result):
    head = result.headline.set_index(["scope", "property", "classifier"])
    overall = head.loc[("overall", "*", "*")]
    assert (overall["k"], overall["n"]) == (2, 12)
    assert overall["text"] == "2 of 12 emotion-output shifts significant (16.67 %), holm across all 12 as one family"
    assert head.loc[("classifier", "*", "clf_b"), "k"] == 0
    assert head.loc[("property", "age", "*"), "n"] == 12
    assert head.loc[("classifier", "*", "clf_a"), "family"] == "holm within each classifier_property family"


def test_overall_headline_is_one_family_and_score_sets_stay_out(planted):
    """The overall line is corrected anew across every emotion test; a score set gets its own table."""
    from engine.stats import StatsConfig, adjust_pvalues, analyse

    res = analyse(planted, StatsConfig(n_bootstrap=50, n_permutations=200), score_sets=["clf_b"])
    primary = res.tests[res.tests["test"] == "wilcoxon"]
    emotion = primary[primary["classifier"] == "clf_a"]
    overall = res.headline.set_index("scope").loc["overall"]
    expected = int((adjust_pvalues(emotion["p_raw"].to_numpy(), None, "holm") <= 0.05).sum())
    assert (overall["k"], overall["n"]) == (expected, len(emotion))
    assert set(res.headline["classifier"]) <= {"*", "clf_a"}, "a score set never enters the headline"
    scores = res.score_shifts.set_index(["scope", "classifier"])
    assert scores.loc[("classifier", "clf_b"), "n"] == len(primary) - len(emotion)
    assert "score shifts" in scores.loc[("classifier", "clf_b"), "text"]


def test_overall_count_differs_from_a_sum_of_separately_corrected_families():
    """Two families of one p-value each: each alone passes Holm, together (m=2) only one does."""
    import pandas as pd

    from engine.stats.headline import headline_table

    tests = pd.DataFrame({"test": "wilcoxon", "classifier": ["a", "b"], "property": "age",
                          "p_raw": [0.03, 0.04], "reject": [True, True]})
    head = headline_table(tests, "wilcoxon").set_index(["scope", "classifier"])
    assert head.loc[("overall", "*"), "k"] == 0  # holm at m=2: 0.06 and 0.06
    assert head.loc[("classifier", "a"), "k"] == 1 and head.loc[("classifier", "b"), "k"] == 1


def test_dose_response_labels_power_and_meta(result):
    dose = result.dose_response.set_index(["classifier", "output"])
    happy = dose.loc[("clf_a", "happiness")]
    assert (
        happy["slope_ci_low"] < 0.2 < happy["slope_ci_high"]
        and happy["slope_reject"]
        and happy["trend_reject"]
    )
    assert happy["levels"] == "0,0.5,1" and happy["trend_test"] == "page_L"
    assert not dose.drop(("clf_a", "happiness"))["slope_reject"].any()

    labels = result.labels
    assert set(labels["test"]) == {"mcnemar", "stuart_maxwell"}
    assert set(labels["contrast"]) == {"edit", "artefact"}
    assert labels["flip_rate"].between(0, 1).all() and labels["p_adj"].notna().all()

    power = result.power.set_index(["classifier", "output", "strength"])
    assert power.loc[("clf_a", "happiness", 1.0), "n_needed"] <= 10
    assert power.loc[("clf_a", "happiness", 1.0), "power_at_pilot_n"] == 1.0
    assert (power.drop(("clf_a", "happiness"))["n_needed"].fillna(np.inf) > 40).all()
    assert np.allclose(power["alpha_per_test"], 0.05 / 6)  # Holm worst case: family of 6 per classifier

    meta = result.meta
    assert meta["alpha"] == 0.05 and meta["correction"] == "holm" and meta["n_images"] == 40
    assert meta["tests"] == ["wilcoxon", "t", "sign", "permutation"]


def test_json_and_frames_round_trip(result):
    payload = json.loads(result.to_json())
    assert set(payload) == set(StatsResult.TABLES) | {"meta"}
    assert len(payload["tests"]) == len(result.tests)
    frames = result.to_frames()
    assert set(frames) == set(StatsResult.TABLES) | {"meta"}
    assert frames["meta"].set_index("key").loc["correction", "value"] == '"holm"'


def test_reference_original_carries_the_artefact(planted):
    res = analyse(planted, StatsConfig(reference="original", tests=("wilcoxon",), **FAST))
    assert res.tests["reject"].all(), "edit - original includes the 0.05 processing artefact everywhere"
    assert set(res.tests["reference"]) == {"original"}


@pytest.mark.parametrize("identical", [True, False])
def test_placebo_identity_edit_is_never_significant(identical):
    res = analyse(_placebo(identical), StatsConfig(**FAST))
    assert not res.tests["reject"].any()
    assert not res.labels.loc[res.labels["contrast"] == "edit", "reject"].any()
    assert res.headline.iloc[0]["k"] == 0
    if identical:  # nothing to test: not counted in the headline's n nor in the correction's m
        assert res.tests["degenerate"].all() and res.tests["p_raw"].isna().all()
        assert res.tests["method"].str.startswith("not testable").all()
        overall = res.headline[res.headline["scope"] == "overall"].iloc[0]
        assert overall["n"] == 0 and overall["not_testable"] > 0
        assert (res.labels.loc[res.labels["contrast"] == "edit", "flip_rate"] == 0).all()
    assert res.artefact.loc[res.artefact["test"] == "t", "reject"].all(), "the artefact is still reported"


def test_invalid_edits_are_counted_and_optionally_dropped():
    df = synthetic_measurements(
        n_images=20, classifiers=("clf_a",), outputs=OUTPUTS[:2], strengths=(1.0,), seed=2
    )
    bad = df["image_id"].isin([f"img{i:04d}" for i in range(5)])
    df["valid"] = np.where(df["condition"] == "edit", ~bad, np.nan)
    df.loc[df["condition"] != "edit", "valid"] = None
    cfg = dict(tests=("wilcoxon",), **FAST)
    kept = analyse(df, StatsConfig(**cfg))
    dropped = analyse(df, StatsConfig(exclude_invalid_edits=True, **cfg))
    edit_row = lambda r: r.excluded[r.excluded["condition"] == "edit"].iloc[0]  # noqa: E731
    assert (edit_row(kept)["n_invalid"], edit_row(kept)["n_dropped"]) == (5, 0)
    assert (edit_row(dropped)["n_invalid"], edit_row(dropped)["n_dropped"]) == (5, 5)
    assert set(kept.tests["n"]) == {20} and set(dropped.tests["n"]) == {15}
    # Dropping edits unbalances the dose design: the slope then comes from statsmodels MixedLM.
    assert set(kept.dose_response["slope_model"]) == {"REML closed form (balanced)"}
    assert set(dropped.dose_response["slope_model"]) == {"statsmodels MixedLM (REML)"}


def test_ragged_pairs_and_editor_independent_originals():
    df = synthetic_measurements(
        n_images=25,
        classifiers=("clf_a",),
        outputs=OUTPUTS[:2],
        strengths=(1.0,),
        properties={"warp": "age", "tex": "gender"},
        seed=4,
    )
    original = df[(df["condition"] == "original") & (df["editor"] == "warp")].assign(editor="", property="")
    df = pd.concat([df[df["condition"] != "original"], original], ignore_index=True)
    drop = (df["condition"] == "edit") & df["image_id"].isin(["img0001", "img0002"]) & (df["editor"] == "tex")
    res = analyse(df[~drop], StatsConfig(tests=("wilcoxon",), **FAST))
    n = res.tests.set_index("property")["n"]
    assert set(n["age"]) == {25} and set(n["gender"]) == {23}
    assert set(res.artefact["property"]) == {"age", "gender"}


def test_subgroup_interaction_and_nested_subjects():
    df = synthetic_measurements(
        n_images=48,
        classifiers=("clf_a",),
        outputs=OUTPUTS[:2],
        strengths=(1.0,),
        seed=6,
        subjects_per_image=2,
    )
    female = (df["est_gender"] == "female") & (df["condition"] == "edit") & (df["output"] == "anger")
    df.loc[female, "value"] += 0.15
    res = analyse(df, StatsConfig(subgroup_by="est_gender", tests=("wilcoxon",), **FAST))
    sub = res.subgroups.drop_duplicates("output").set_index("output")
    assert sub.loc["anger", "reject"] and not sub.loc["happiness", "reject"]
    assert res.subgroups["exploratory"].all()
    assert set(res.dose_response["random_effects"]) == {"subject + image"}
    with pytest.raises(ValueError, match="subgroup_by='shoe_size'"):
        analyse(df, StatsConfig(subgroup_by="shoe_size", tests=("wilcoxon",), **FAST))


def test_bad_measurements_fail_loudly(planted):
    with pytest.raises(ValueError, match="lack columns"):
        analyse(planted.drop(columns=["top1"]))
    with pytest.raises(ValueError, match="condition has values"):
        analyse(planted.assign(condition=planted["condition"].replace("sham", "placebo")))
    with pytest.raises(ValueError, match="duplicated"):
        analyse(pd.concat([planted, planted.head(3)]))
    with pytest.raises(ValueError, match="StatsConfig.reference='sham'"):
        analyse(planted[planted["condition"] != "sham"])


def test_outputs_that_cannot_move_do_not_dilute_the_correction():
    """A degenerate row (all differences zero) used to count in m with p = 1 (issue 11, statistics)."""
    from engine.stats.corrections import adjust_pvalues

    p = np.array([0.01, 0.02, np.nan, np.nan, np.nan])
    adjusted = adjust_pvalues(p, np.zeros(5, dtype=int), "bonferroni")
    np.testing.assert_allclose(adjusted[:2], [0.02, 0.04])  # m = 2, not 5
    assert np.isnan(adjusted[2:]).all()
