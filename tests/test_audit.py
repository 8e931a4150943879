"""Edit audit: thresholds, symmetry index, expression and outside-mask measures, verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from engine.audit import (
    AuditConfig,
    audit_edits,
    blendshape_change,
    outside_mask_change,
    symmetry_index,
    verdicts,
)


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


def test_config_validation_names_the_field():
    assert (
        AuditConfig().min_age_change == 3.0 and AuditConfig(max_lpips_outside=None).max_lpips_outside is None
    )
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
            AuditConfig(**bad)


def test_symmetry_index_is_pose_invariant_and_grows_with_asymmetry():
    rng = np.random.default_rng(0)
    face, pairs, mid = _symmetric_face(rng)
    posed = np.stack([_random_pose(face, rng) for _ in range(4)])
    idx = symmetry_index(torch.from_numpy(posed), pairs, mid)
    assert idx.shape == (4,) and np.all(idx < 1e-9)

    # Move the left half's points: the index grows with the size of the change, in any pose.
    bumps = [0.0, 2.0, 4.0, 8.0]
    asym = []
    for b in bumps:
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

    with_nan = np.stack([face, np.full_like(face, np.nan)])
    out = symmetry_index(with_nan, pairs, mid)
    assert out[0] < 1e-9 and np.isnan(out[1])
    with pytest.raises(ValueError, match="out of range"):
        symmetry_index(face[None], pairs + 1000, mid)


def test_blendshape_and_outside_change():
    a = np.zeros((3, 52))
    b = a.copy()
    b[1, :26] = 0.2
    b[2] = np.nan
    np.testing.assert_allclose(blendshape_change(a, torch.from_numpy(b)), [0.0, 0.1, np.nan])
    with pytest.raises(ValueError, match="blendshapes"):
        blendshape_change(a, a[:, :10])

    ref = torch.full((3, 3, 8, 8), 0.5)
    mask = torch.zeros(3, 1, 8, 8)
    mask[:, :, :, :4] = 1.0
    mask[:, :, :, 4] = 0.3  # soft rim: counts as inside
    edit = ref.clone()
    edit[0, :, :, :5] = 0.9  # changes only inside (and on the rim)
    edit[1, 0, :, 6:] = 0.8  # red +0.3 on 2 of the 3 outside columns: mean 0.1 * 2/3
    mask[2] = 1.0  # nothing outside
    change = outside_mask_change(ref, edit, mask)
    np.testing.assert_allclose(change, [0.0, 0.1 * 2 / 3, np.nan], atol=1e-6)
    with pytest.raises(ValueError, match="mask"):
        outside_mask_change(ref, edit, mask[:, :, :4])


def _age_table() -> pd.DataFrame:
    """Seven age edits, one per verdict case (direction: older)."""
    return pd.DataFrame(
        {
            "image_id": [f"im{i}" for i in range(7)],
            "est_age_ref": [30.0] * 7,
            "est_age_edit": [35.0, 31.0, 35.0, 35.0, 35.0, np.nan, 25.0],
            "p_male_ref": [0.2] * 7,
            "p_male_edit": [0.22, 0.2, 0.5, 0.2, 0.2, 0.2, 0.2],
            "blendshape_change": [0.01, 0.01, 0.01, 0.2, 0.01, 0.01, 0.01],
            "outside_change": [0.001, 0.001, 0.001, 0.001, 0.05, 0.001, 0.001],
        }
    )


def test_age_verdicts_one_reason_each():
    out = verdicts(_age_table(), "age", "older", AuditConfig())
    assert out["reasons"].tolist() == [
        "",
        "target_not_moved",
        "nontarget_moved",
        "expression_moved",
        "leak_outside_mask",
        "face_not_found",
        "target_not_moved",
    ]
    assert out["valid"].tolist() == [True] + [False] * 6
    np.testing.assert_allclose(out["delta_age"], [5, 1, 5, 5, 5, np.nan, -5])
    # Without a direction either way counts; "younger" turns the verdicts round.
    either = verdicts(_age_table(), "age", None, AuditConfig())
    assert either.loc[6, "reasons"] == "" and either.loc[0, "reasons"] == ""
    younger = verdicts(_age_table(), "age", "younger", AuditConfig())
    assert younger.loc[0, "reasons"] == "target_not_moved" and younger.loc[6, "valid"]
    # Looser thresholds, and several reasons at once.
    loose = verdicts(_age_table(), "age", "older", AuditConfig(min_age_change=0.5, max_outside_change=0.1))
    assert loose.loc[1, "valid"] and loose.loc[4, "valid"]
    table = _age_table()
    table.loc[0, ["p_male_edit", "blendshape_change"]] = [0.9, 0.3]
    assert (
        verdicts(table, "age", "older", AuditConfig()).loc[0, "reasons"] == "nontarget_moved;expression_moved"
    )


def test_gender_symmetry_and_placebo_verdicts_with_checks_column_names():
    # engine/checks.py names the columns age_ref/age_edit and symmetry_ref/symmetry_edit.
    gender = pd.DataFrame(
        {
            "age_ref": [40.0, 40.0, 40.0],
            "age_edit": [41.0, 41.0, 50.0],
            "p_male_ref": [0.6, 0.6, 0.6],
            "p_male_edit": [0.3, 0.8, 0.3],
            "face_found": [True, True, True],
        }
    )
    assert verdicts(gender, "gender", "female", AuditConfig())["reasons"].tolist() == [
        "",
        "target_not_moved",
        "nontarget_moved",
    ]
    sym = pd.DataFrame(
        {"symmetry_ref": [0.1, 0.1, 0.1], "symmetry_edit": [0.04, 0.08, 0.2], "face_found": [1, 1, 0]}
    )
    out = verdicts(sym, "symmetry", "more", AuditConfig(min_symmetry_change=0.5))
    assert out["reasons"].tolist() == ["", "target_not_moved", "target_not_moved;face_not_found"]
    np.testing.assert_allclose(out["delta_symmetry_rel"], [-0.6, -0.2, 1.0])
    assert verdicts(sym, "symmetry", "less", AuditConfig())["reasons"].tolist()[2] == "face_not_found"
    # A placebo edit has no target; it must keep age and gender.
    assert verdicts(gender, "none", None, AuditConfig())["reasons"].tolist() == ["nontarget_moved"] * 3
    still = gender.assign(p_male_edit=[0.65, 0.5, 0.6], age_edit=[41.0, 32.5, 46.0])
    assert verdicts(still, "none", None, AuditConfig())["valid"].tolist() == [True, False, True]
    with pytest.raises(ValueError, match="direction"):
        verdicts(gender, "gender", "older", AuditConfig())
    # No judge for the edited property: every edit is flagged, the run does not crash.
    unmeasured = verdicts(gender.assign(age_edit=40.0, p_male_edit=0.6), "symmetry", "more", AuditConfig())
    assert unmeasured["reasons"].tolist() == ["target_not_measured"] * 3 and not unmeasured["valid"].any()


def test_audit_edits_builds_the_table():
    rng = np.random.default_rng(1)
    shapes = rng.uniform(0, 1, (3, 52))
    moved = shapes.copy()
    moved[2] += 0.1
    ref = {
        "image_id": ["a", "b", "c"],
        "age": np.array([20.0, 30, 40]),
        "p_male": torch.tensor([0.1, 0.5, 0.9]),
    }
    ref |= {"blendshapes": shapes, "symmetry_index": np.array([0.2, 0.2, 0.2])}
    edit = {"age": np.array([20.5, 30, 40]), "p_male": np.array([0.1, 0.5, 0.9]), "blendshapes": moved}
    edit |= {"symmetry_index": np.array([0.05, 0.2, 0.05]), "lpips_in": np.array([0.1, 0.1, 0.1])}
    edit |= {"lpips_out": np.array([0.0, 0.0, 0.2]), "outside_change": np.zeros(3)}
    out = audit_edits("symmetry", "more", ref, edit, AuditConfig(max_lpips_outside=0.1))
    expected_cols = {
        "image_id",
        "est_age_ref",
        "est_age_edit",
        "p_male_ref",
        "p_male_edit",
        "blendshape_change",
    }
    expected_cols |= {
        "symmetry_index_ref",
        "symmetry_index_edit",
        "lpips_in",
        "lpips_out",
        "valid",
        "reasons",
    }
    assert expected_cols <= set(out.columns)
    assert out["image_id"].tolist() == ["a", "b", "c"]
    assert out["reasons"].tolist() == ["", "target_not_moved", "expression_moved;leak_outside_mask"]
    np.testing.assert_allclose(out["blendshape_change"], [0, 0, 0.1], atol=1e-12)
    with pytest.raises(ValueError, match="one row per image"):
        audit_edits("none", None, {"age": np.zeros(2)}, {"age": np.zeros(3)})


def test_real_judges_on_an_identity_and_a_leaking_edit():
    """The measures of engine.judges/engine.perceptual flow into verdicts (astronaut, 2 edits)."""
    from engine.assets import AssetError, asset_path

    try:
        for name in ("age_v1", "gender_v1", "lpips_alexnet"):
            asset_path(name, offline=True)
    except AssetError as exc:
        pytest.skip(f"asset not cached: {exc}")
    skdata = pytest.importorskip("skimage.data")
    from engine.judges import AgeGenderEstimator
    from engine.perceptual import LPIPS, ssim_in_out

    image = torch.from_numpy(skdata.astronaut().copy()).permute(2, 0, 1)[None].float() / 255
    image = image[..., 40:296, 100:356]  # a 256 px crop around the face
    points = np.array([[255, 104], [237, 105], [195, 101], [212, 103], [224, 135]], float) - [100, 40]
    mask = torch.zeros(1, 1, 256, 256)
    mask[..., 150:, :] = 1.0  # the edit may act on the lower part only
    leak = image.clone()
    leak[..., :40, :] = (leak[..., :40, :] + 0.3).clamp(0, 1)  # ...but brightens the top band
    refs, edits = torch.cat([image, image]), torch.cat([image, leak])
    masks = torch.cat([mask, mask])
    judge = AgeGenderEstimator(threads=1)
    ref_m = judge.estimate_points(refs, np.stack([points, points]))
    edit_m = judge.estimate_points(edits, np.stack([points, points]))
    lp_in, lp_out = LPIPS("alex").in_out(refs, edits, masks)
    ss_in, ss_out = ssim_in_out(refs, edits, masks)
    edit_m |= {"lpips_in": lp_in, "lpips_out": lp_out, "ssim_in": ss_in, "ssim_out": ss_out}
    edit_m["outside_change"] = outside_mask_change(refs, edits, masks)
    out = audit_edits("none", None, ref_m, edit_m)
    assert out["reasons"].tolist()[0] == "" and out["outside_change"][0] == 0.0
    assert "leak_outside_mask" in out["reasons"][1]
    assert (
        out["lpips_out"][1] > 0.05 > out["lpips_out"][0] and out["ssim_out"][1] < 0.99 <= out["ssim_out"][0]
    )
    assert out["lpips_in"][1] < out["lpips_out"][1]


def test_identity_distance_check():
    table = _age_table().iloc[:1].copy()
    table = pd.concat([table] * 3, ignore_index=True)
    table["identity_distance"] = [0.3, 0.75, np.nan]
    out = verdicts(table, "age", "older", AuditConfig())
    assert out["reasons"].tolist() == ["", "identity_changed", ""]  # NaN: no verdict from this judge
    assert out["check_identity"].tolist() == [True, False, True]
    assert verdicts(table, "age", "older", AuditConfig(max_identity_distance=0.8))["valid"].all()
    unchecked = verdicts(table, "age", "older", AuditConfig(max_identity_distance=None))
    assert unchecked["valid"].all() and "check_identity" not in unchecked
