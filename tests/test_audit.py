"""Edit audit: thresholds, measures and verdicts from editors' policies (the stage: test_audit_stage.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import occluding_policy

from engine.audit import AuditThresholds, verdicts
from engine.audit.measures import mean_abs_change, outside_mask_change, symmetry_index
from engine.types import AuditPolicy, ReportedTarget, TargetCheck

OCCLUDING = occluding_policy()

AGE_OLDER = AuditPolicy("age", "older", TargetCheck(("delta_est_age",), "min_age_change", +1))
SYMMETRY_DELTAS = ("delta_symmetry_index_rel", "delta_image_asymmetry_rel")


def _symmetric_face(rng: np.random.Generator, n_pairs: int = 40, n_mid: int = 10) -> tuple:
    """A random 3D point cloud, mirror-symmetric about x = 0: (points, pairs, midline)."""
    left = rng.uniform([-60, -80, -30], [-5, 80, 30], size=(n_pairs, 3))
    right = left * np.array([-1, 1, 1])
    mid = np.column_stack([np.zeros(n_mid), rng.uniform(-80, 80, n_mid), rng.uniform(-30, 30, n_mid)])
    points = np.concatenate([left, right, mid])
    pairs = np.column_stack([np.arange(n_pairs), np.arange(n_pairs) + n_pairs])
    return points, pairs, np.arange(2 * n_pairs, 2 * n_pairs + n_mid)


def _random_pose(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))  # a proper rotation
    return rng.uniform(0.5, 3) * points @ q.T + rng.uniform(-100, 300, 3)


def test_thresholds_validation_names_the_field():
    assert AuditThresholds().min_age_change == 3.0
    assert AuditThresholds(max_lpips_outside=None).max_lpips_outside is None
    for bad in (
        {"max_blendshape_change": -0.1},
        {"min_age_change": float("nan")},
        {"max_outside_change": "0.01"},
        {"min_p_target_change": True},
        {"max_p_male_change_nontarget": 1.5},
        {"min_symmetry_change": 0.0},
    ):
        field = next(iter(bad))
        with pytest.raises(ValueError, match=field):
            AuditThresholds(**bad)


def test_symmetry_index_is_pose_invariant_and_grows_with_asymmetry():
    rng = np.random.default_rng(0)
    face, pairs, mid = _symmetric_face(rng)
    posed = np.stack([_random_pose(face, rng) for _ in range(4)])
    idx = symmetry_index(torch.from_numpy(posed), pairs, mid)
    assert idx.shape == (4,) and np.all(idx < 1e-9)

    # Move the left half's points: the index grows with the size of the change, in any pose.
    asym = []
    for b in [0.0, 2.0, 4.0, 8.0]:
        moved = face.copy()
        moved[pairs[:, 0], 1] += b
        asym.append(moved)
    scores = symmetry_index(np.stack(asym), pairs, mid)
    assert np.all(np.diff(scores) > 0) and scores[0] < 1e-9
    again = symmetry_index(np.stack([_random_pose(a, rng) for a in asym]), pairs, mid)
    np.testing.assert_allclose(again, scores, rtol=1e-9, atol=1e-12)

    # Head yaw: a turned symmetric face is symmetric in 3D but not in its 2D projection.
    yaw = np.radians(30)
    rot = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    turned = (face @ rot.T)[None]
    assert symmetry_index(turned, pairs, mid)[0] < 1e-9
    assert symmetry_index(turned, pairs, mid, use_depth=False)[0] > 0.01

    out = symmetry_index(np.stack([face, np.full_like(face, np.nan)]), pairs, mid)
    assert out[0] < 1e-9 and np.isnan(out[1])
    with pytest.raises(ValueError, match="out of range"):
        symmetry_index(face[None], pairs + 1000, mid)


def test_blendshape_and_outside_change():
    a = np.zeros((4, 52))
    b = a.copy()
    b[1, :26] = 0.2
    b[2] = np.nan
    b[3, :26] = np.nan  # only half the scores: the mean of those
    b[3, 26:] = 0.4
    np.testing.assert_allclose(mean_abs_change(b, a), [0.0, 0.1, np.nan, 0.4])

    ref = torch.full((3, 3, 8, 8), 0.5)
    mask = torch.zeros(3, 1, 8, 8)
    mask[:, :, :, :4] = 1.0
    mask[:, :, :, 4] = 0.3  # soft rim: counts as inside
    edit = ref.clone()
    edit[0, :, :, :5] = 0.9  # changes only inside (and on the rim)
    edit[1, 0, :, 6:] = 0.8  # red +0.3 on 2 of the 3 outside columns: mean 0.1 * 2/3
    mask[2] = 1.0  # nothing outside
    np.testing.assert_allclose(outside_mask_change(ref, edit, mask), [0.0, 0.1 * 2 / 3, np.nan], atol=1e-6)
    with pytest.raises(ValueError, match="mask"):
        outside_mask_change(ref, edit, mask[:, :, :4])


def _age_table() -> pd.DataFrame:
    """Seven age edits, one per verdict case (direction: older), in the audit's column scheme."""
    ref_age, edit_age = np.full(7, 30.0), np.array([35.0, 31.0, 35.0, 35.0, 35.0, np.nan, 25.0])
    ref_pm, edit_pm = np.full(7, 0.2), np.array([0.22, 0.2, 0.5, 0.2, 0.2, 0.2, 0.2])
    return pd.DataFrame({
        "image_id": [f"im{i}" for i in range(7)],
        "strength": 1.0,
        "est_age_ref": ref_age, "est_age_edit": edit_age, "delta_est_age": edit_age - ref_age,
        "est_p_male_ref": ref_pm, "est_p_male_edit": edit_pm, "delta_est_p_male": edit_pm - ref_pm,
        "blendshape_change": [0.01, 0.01, 0.01, 0.2, 0.01, 0.01, 0.01],
        "outside_change": [0.001, 0.001, 0.001, 0.001, 0.05, 0.001, 0.001],
    })  # fmt: skip


def test_age_verdicts_one_reason_each():
    out = verdicts(_age_table(), AGE_OLDER, AuditThresholds())
    assert out["reasons"].tolist() == [
        "", "target_not_moved", "nontarget_moved", "expression_moved", "leak_outside_mask", "face_not_found",
        "target_not_moved",
    ]  # fmt: skip
    assert out["valid"].tolist() == [True] + [False] * 6
    assert out["check_target"].tolist() == [True, False, True, True, True, False, False]
    # Sign 0: either way counts; -1 ("younger") turns the verdicts round.
    either = AuditPolicy("age", None, TargetCheck(("delta_est_age",), "min_age_change", 0))
    either_out = verdicts(_age_table(), either, AuditThresholds())
    assert either_out.loc[6, "reasons"] == "" and either_out.loc[0, "reasons"] == ""
    younger = AuditPolicy("age", "younger", TargetCheck(("delta_est_age",), "min_age_change", -1))
    younger_out = verdicts(_age_table(), younger, AuditThresholds())
    assert younger_out.loc[0, "reasons"] == "target_not_moved" and younger_out.loc[6, "valid"]
    # Looser thresholds, several reasons at once, and a target that scales with the strength.
    loose = verdicts(_age_table(), AGE_OLDER, AuditThresholds(min_age_change=0.5, max_outside_change=0.1))
    assert loose.loc[1, "valid"] and loose.loc[4, "valid"]
    table = _age_table()
    table.loc[0, ["delta_est_p_male", "blendshape_change"]] = [0.7, 0.3]
    assert verdicts(table, AGE_OLDER, AuditThresholds()).loc[0, "reasons"] == "nontarget_moved;expression_moved"
    half = verdicts(_age_table().assign(strength=0.25), AGE_OLDER, AuditThresholds())
    assert half.loc[1, "valid"]  # +1 year passes at strength 0.25 (0.75 years needed)


def _gender_table() -> pd.DataFrame:
    age_edit, pm_edit = np.array([41.0, 41.0, 50.0]), np.array([0.3, 0.8, 0.3])
    return pd.DataFrame({"strength": 1.0, "delta_est_age": age_edit - 40, "delta_est_p_male": pm_edit - 0.6,
                         "face_found": [True, True, True], "edit_target": ["female", "male", "female"]})


def test_gender_symmetry_and_placebo_verdicts():
    female = AuditPolicy("gender", "female", TargetCheck(("delta_est_p_male",), "min_p_target_change", -1))
    assert verdicts(_gender_table(), female, AuditThresholds())["reasons"].tolist() == [
        "", "target_not_moved", "nontarget_moved"]
    # Per face, from the editor's metadata: the second face was pushed toward male, and got there.
    opposite = AuditPolicy("gender", "opposite", TargetCheck(
        ("delta_est_p_male",), "min_p_target_change", sign_key="target", signs=(("male", 1), ("female", -1))))
    assert verdicts(_gender_table(), opposite, AuditThresholds())["reasons"].tolist() == ["", "", "nontarget_moved"]
    with pytest.raises(ValueError, match="per-face directions"):
        verdicts(_gender_table().assign(edit_target="other"), opposite, AuditThresholds())

    # Symmetry has two facets; the most favourable one counts (NaN facets are skipped).
    sym = pd.DataFrame({"strength": 1.0, "delta_symmetry_index_rel": [-0.6, -0.2, 1.0, np.nan],
                        "delta_image_asymmetry_rel": [-0.1, -0.3, np.nan, np.nan],
                        "face_found": [1, 1, 0, 1]})
    more = AuditPolicy("symmetry", "more", TargetCheck(SYMMETRY_DELTAS, "min_symmetry_change", -1))
    out = verdicts(sym, more, AuditThresholds(min_symmetry_change=0.5))
    assert out["reasons"].tolist() == ["", "target_not_moved", "target_not_moved;face_not_found", "face_not_found"]
    np.testing.assert_allclose(out["delta_target"], [-0.6, -0.3, 1.0, np.nan])
    less = AuditPolicy("symmetry", "less", TargetCheck(SYMMETRY_DELTAS, "min_symmetry_change", +1))
    assert verdicts(sym, less, AuditThresholds())["reasons"].tolist()[2] == "face_not_found"

    # A placebo edit has no target; it must keep age and gender.
    placebo = AuditPolicy("none")
    placebo_out = verdicts(_gender_table(), placebo, AuditThresholds())
    assert placebo_out["reasons"].tolist() == ["nontarget_moved"] * 3 and "check_target" not in placebo_out
    still = _gender_table().assign(delta_est_p_male=[0.05, -0.1, 0.0], delta_est_age=[1.0, -7.5, 6.0])
    assert verdicts(still, placebo, AuditThresholds())["valid"].tolist() == [True, False, True]
    # No judge for the edited property: every edit is flagged, the run does not crash.
    unmeasured = verdicts(_gender_table().assign(delta_est_age=0.0, delta_est_p_male=0.0), more, AuditThresholds())
    assert unmeasured["reasons"].tolist() == ["target_not_measured"] * 3 and not unmeasured["valid"].any()


def test_the_audit_says_which_judge_a_nontarget_failure_moved():
    """`nontarget_readings` names the kept readings that moved; the summaries count them under
    `nontarget_moved`; an occluding policy, whose non-target checks do not apply, names none."""
    from engine.audit.verdicts import reason_labels

    table = _age_table().iloc[:3].copy()
    table["delta_est_age"] = [5.0, 5.0, 5.0]
    table["delta_est_p_male"] = [0.0, 0.5, 0.5]
    female = AuditPolicy("gender", "female", TargetCheck(("delta_est_p_male",), "min_p_target_change", -1))
    gender = table.assign(delta_est_p_male=[-0.3, -0.3, -0.3], delta_est_age=[0.0, 9.0, -9.0])
    out = verdicts(table, AGE_OLDER, AuditThresholds())
    assert out["nontarget_readings"].tolist() == ["", "est_p_male", "est_p_male"]
    g = verdicts(gender, female, AuditThresholds())  # the target's own reading is never a non-target
    assert g["nontarget_readings"].tolist() == ["", "est_age", "est_age"]
    both = verdicts(table.assign(delta_est_age=[9.0, 9.0, 0.0]),
                    AuditPolicy("none"), AuditThresholds())
    assert both["nontarget_readings"].tolist() == ["est_age", "est_age;est_p_male", "est_p_male"]
    assert reason_labels(both) == ["nontarget_moved ×3 (est_age ×2, est_p_male ×2)"]
    assert reason_labels(both.drop(columns="nontarget_readings"), sep=" ") == ["nontarget_moved 3"]
    covered = verdicts(table.assign(edit_drawn=5, edit_requested=5), occluding_policy(), AuditThresholds())
    assert (covered["nontarget_readings"] == "").all()


def test_a_target_the_judge_cannot_show_is_named_so():
    """An 80-year-old made older on a judge that stops at 80, or a face judged female pushed toward
    female, cannot show the target change: `target_beyond_judge`, not `target_not_moved` (still invalid)."""
    from engine.audit.age_gender import AGE_WEIGHTS
    from engine.audit.verdicts import JUDGE_SCALES

    assert JUDGE_SCALES["delta_est_age"][1:] == (AGE_WEIGHTS.min(), AGE_WEIGHTS.max())
    table = _age_table().iloc[:2].copy()
    table["est_age_ref"] = [79.9, 76.0]
    table["delta_est_age"] = [0.1, 1.0]
    out = verdicts(table, AGE_OLDER, AuditThresholds())
    assert out["reasons"].tolist() == ["target_beyond_judge", "target_not_moved"]  # 76 + 5 = 81 > 80
    assert not out["valid"].any() and not out["check_target"].any()
    # At strength 0.25 only 1.25 years are needed: 79.9 + 1.25 is beyond, 76 + 1.25 is not.
    assert verdicts(table.assign(strength=0.25), AGE_OLDER, AuditThresholds())["reasons"].tolist() == [
        "target_beyond_judge", ""]
    young = table.assign(est_age_ref=[3.0, 30.0], delta_est_age=[-1.0, -1.0])
    younger = AuditPolicy("age", "younger", TargetCheck(("delta_est_age",), "min_age_change", -1))
    assert verdicts(young, younger, AuditThresholds())["reasons"].tolist() == ["target_beyond_judge",
                                                                               "target_not_moved"]
    # Gender, per face: toward female from p(male) 0.05 cannot drop 0.1; toward male from 0.05 can rise.
    gender = _gender_table().assign(est_p_male_ref=[0.05, 0.05, 0.9], delta_est_p_male=[0.0, 0.0, -0.01],
                                    delta_est_age=0.0)
    opposite = AuditPolicy("gender", "opposite", TargetCheck(
        ("delta_est_p_male",), "min_p_target_change", sign_key="target", signs=(("male", 1), ("female", -1))))
    assert verdicts(gender, opposite, AuditThresholds())["reasons"].tolist() == [
        "target_beyond_judge", "target_not_moved", "target_not_moved"]
    # A moved target passes whatever the scale says; a missing reference reading cannot rule it out.
    assert verdicts(table.assign(delta_est_age=[5.0, 5.0]), AGE_OLDER, AuditThresholds())["valid"].all()
    no_ref = verdicts(table.drop(columns="est_age_ref"), AGE_OLDER, AuditThresholds())
    assert no_ref["reasons"].tolist() == ["target_not_moved"] * 2


def test_reported_target_and_exempt_expression():
    table = pd.DataFrame({"strength": 1.0, "delta_est_age": 0.0, "delta_est_p_male": 0.0,
                          "blendshape_change": [0.3, 0.01], "edit_drawn": [5, 3], "edit_requested": [5, 5]})
    policy = AuditPolicy("electrodes", None, ReportedTarget(lambda m: m["drawn"] >= m["requested"], "sites_missing"),
                         expression_kept=False)
    out = verdicts(table, policy, AuditThresholds())
    assert out["reasons"].tolist() == ["", "sites_missing"]
    assert out["check_expression"].all() and out["check_target"].tolist() == [True, False]
    kept = verdicts(table, AuditPolicy("electrodes", None, policy.target), AuditThresholds())
    assert kept["reasons"].tolist() == ["expression_moved", "sites_missing"]  # the editor's reason comes last
    both = table.assign(delta_est_age=[9.0, 0.0])
    assert verdicts(both, policy, AuditThresholds())["reasons"][0] == "nontarget_moved"


def test_identity_distance_check():
    table = pd.concat([_age_table().iloc[:1]] * 3, ignore_index=True)
    table["identity_distance"] = [0.3, 0.75, np.nan]
    out = verdicts(table, AGE_OLDER, AuditThresholds())
    assert out["reasons"].tolist() == ["", "identity_changed", ""]  # NaN: no verdict from this judge
    assert out["check_identity"].tolist() == [True, False, True]
    assert verdicts(table, AGE_OLDER, AuditThresholds(max_identity_distance=0.8))["valid"].all()
    unchecked = verdicts(table, AGE_OLDER, AuditThresholds(max_identity_distance=None))
    assert unchecked["valid"].all() and "check_identity" not in unchecked


# --- occluding policies (electrodes, masks): judged by the checks that apply to a covered face ------------


def _covered_table() -> pd.DataFrame:
    """Five covered faces: none re-found under the cover; the judges of the face beneath read the cover."""
    return pd.DataFrame({
        "image_id": [f"im{i}" for i in range(5)], "strength": 1.0,
        "face_found": False, "face_found_ref": [True, True, False, True, True],
        "delta_est_age": [25.0, 25.0, np.nan, 25.0, 25.0], "delta_est_p_male": 0.6, "blendshape_change": 0.3,
        "identity_distance": [0.4, 0.4, np.nan, 0.75, 0.4], "outside_change": [0.0, 0.0, 0.0, 0.0, 0.05],
        "edit_drawn": [5, 4, 5, 5, 5], "edit_requested": 5,
    })  # fmt: skip


def test_occluding_verdicts_apply_only_the_checks_that_apply():
    table = _covered_table()
    out = verdicts(table, OCCLUDING, AuditThresholds())
    # not re-found under the cover is no failure; only a reference not found is
    assert out["reasons"].tolist() == ["", "sites_missing", "face_not_found", "identity_changed", "leak_outside_mask"]
    assert out["valid"].tolist() == [True, False, False, False, False]
    # age, p(male) and expression read the cover: not applied (NA), said so, their readings kept
    assert out["check_nontarget"].isna().all() and out["check_expression"].isna().all()
    assert (out["checks_not_applied"] == "nontarget;expression").all() and (out["landmarks_of_edit"] == "reference").all()
    assert out["delta_est_age"][0] == 25.0 and out["check_identity"].tolist() == [True, True, True, False, True]
    assert out["check_outside"].tolist() == [True, True, True, True, False]
    # the same rows under a policy that is not occluding fail every face on those judges
    plain = verdicts(table, AuditPolicy("cover", None, OCCLUDING.target), AuditThresholds())
    assert all({"face_not_found", "nontarget_moved", "expression_moved"} <= set(r.split(";")) for r in plain["reasons"])
    assert "checks_not_applied" not in plain and plain["check_nontarget"].dtype == bool


@pytest.mark.filterwarnings("error")  # pandas warns before it refuses a string fill of a float column
def test_reason_counts_and_the_report_summary_read_a_table_where_every_edit_passed():
    """An all-valid table has an empty `reasons` column, which pandas reads back as float NaN."""
    from engine.audit.verdicts import reason_counts
    from engine.report.markdown import audit_summary

    mixed = pd.Series(["expression_moved;nontarget_moved", np.nan, "nontarget_moved", ""])
    assert reason_counts(mixed).most_common() == [("nontarget_moved", 2), ("expression_moved", 1)]
    passed = pd.DataFrame({"strength": [1.0, 1.0], "valid": [True, True], "reasons": [np.nan, np.nan],
                           "delta_est_age": [6.0, 8.0]})
    assert passed["reasons"].dtype == float and not reason_counts(passed["reasons"])
    summary = audit_summary(passed)
    assert "| 1 | 2 | 2 | - | 7 |" in summary, summary
