"""Edit audit: thresholds, measures, verdicts from editors' policies, and the stage that runs the judges."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from engine.audit import AuditStage, AuditThresholds, verdicts
from engine.audit.measures import mean_abs_change, outside_mask_change, symmetry_index
from engine.cache import WorkCache
from engine.types import AuditPolicy, Judge, JudgedPair, JudgeView, ReportedTarget, TargetCheck

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


class _FramingLandmarker:
    """A landmarker stub whose blendshapes say which framing read an image: its mean grey level, plus 1
    with the margin. Images darker than 0.5 are found only with the margin."""

    min_detection_confidence = 0.5

    def __init__(self) -> None:
        self.calls: list[tuple[float, bool | None]] = []

    def detect_crop(self, rgb: np.ndarray, margin: bool | None = None) -> dict | None:
        grey = float(rgb.mean()) / 255.0
        self.calls.append((round(grey, 2), margin))
        use = margin is True or (margin is None and grey < 0.5)
        if margin is False and grey < 0.5:
            return None
        return {"landmarks": np.zeros((478, 3), np.float32), "margin": use,
                "blendshapes": np.full(52, grey + (1.0 if use else 0.0), np.float32)}


def test_expression_is_compared_in_one_framing():
    """A pair where only one image needed the margin: the other is read again with it."""
    from engine.audit.landmarks import FaceDetectionJudge

    lm = _FramingLandmarker()
    judge = FaceDetectionJudge(lm)
    # Faces: 0 both plain, 1 the edit needs the margin, 2 the reference does, 3 both do.
    ref_grey, edit_grey = [0.6, 0.6, 0.4, 0.4], [0.7, 0.3, 0.8, 0.2]

    def view(greys):
        images = torch.stack([torch.full((3, 8, 8), round(g * 255)) for g in greys]).to(torch.uint8)
        v = JudgeView(images, {}, np.zeros((4, 478, 3)))
        v.readings.update(judge.read(v))
        return v

    ref, edit = view(ref_grey), view(edit_grey)
    np.testing.assert_array_equal(ref.readings["margin"], [False, False, True, True])
    lm.calls.clear()
    out = judge.compare(JudgedPair(ref, edit, torch.ones(4, 1, 8, 8)))
    # Only faces 1 and 2 are read again, each on the side that was read plain, with the margin.
    assert lm.calls == [(0.6, True), (0.8, True)]
    np.testing.assert_allclose(out["blendshape_change"], [0.1, 0.3, 0.4, 0.2], atol=2e-3)
    np.testing.assert_array_equal(out["face_margin"], [False, True, True, True])
    assert out["face_found"].all() and out["face_found_ref"].all()


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


class _TemplateDetector(Judge):
    """A detection judge without MediaPipe: the batch's known landmarks, by image brightness order."""

    name = "landmarks"
    reads = 0

    def __init__(self, landmarks: np.ndarray) -> None:
        self._landmarks = landmarks

    def read(self, view: JudgeView) -> dict[str, np.ndarray]:
        type(self).reads += len(view.images)
        n = len(view.images)
        return {"found": np.ones(n, bool), "landmarks": self._landmarks[:n],
                "blendshapes": np.zeros((n, 52), np.float32)}

    def compare(self, pair: JudgedPair) -> dict[str, np.ndarray]:
        return {"face_found": pair.edit.readings["found"]}


class _Brightness(Judge):
    """An aligned judge: mean brightness, and the alignment it was given (to check it is the reference's)."""

    name = "brightness"
    aligned = True

    def read(self, view: JudgeView) -> dict[str, np.ndarray]:
        return {"brightness": view.images.float().mean((1, 2, 3)).numpy(), "align_x": view.align[:, 0, 0].copy()}

    def compare(self, pair: JudgedPair) -> dict[str, np.ndarray]:
        ref, edit = pair.ref.readings, pair.edit.readings
        return {"brightness_ref": ref["brightness"], "brightness_edit": edit["brightness"],
                "delta_brightness": edit["brightness"] - ref["brightness"], "align_same": ref["align_x"] == edit["align_x"]}


def test_stage_reads_once_aligns_on_the_reference_and_names_columns(tiny_face_batch, tmp_path):
    from engine.audit import AuditedCondition

    batch = tiny_face_batch
    ref = (batch.images * 255).round().to(torch.uint8)
    edit = (ref.float() * 0.8).round().to(torch.uint8)
    lms = batch.landmarks.numpy()
    mask = torch.zeros(len(ref), 1, *ref.shape[-2:])
    policy = AuditPolicy("brightness", "less", TargetCheck(("delta_brightness",), "min_age_change", -1))
    stage = AuditStage([_TemplateDetector(lms), _Brightness()], policy, AuditThresholds(), WorkCache(tmp_path))
    sham = AuditedCondition(0.0, ref, [f"r{i}" for i in range(4)], mask, [{}] * 4)
    edits = [AuditedCondition(s, edit, [f"e{i}" for i in range(4)], mask, [{"k": s}] * 4) for s in (0.5, 1.0)]
    rows = stage.observe(sham, edits, batch.ids)
    assert _TemplateDetector.reads == 8  # sham and edit once each, however many strengths
    stage.observe(sham, edits, batch.ids)
    assert _TemplateDetector.reads == 8  # the second time every reading comes from the cache
    table = stage.table(rows)
    assert list(table.columns[:7]) == ["image_id", "strength", "face_found", "brightness_ref", "brightness_edit",
                                       "delta_brightness", "align_same"]
    assert table["align_same"].all() and (table["edit_k"] == table["strength"]).all()
    assert table["valid"].all() and (table["delta_brightness"] < -10).all()


class _LandmarkSpread(Judge):
    """Reads only what the landmark judge before it read (like the mesh symmetry judge)."""

    name = "spread"

    def read(self, view: JudgeView) -> dict[str, np.ndarray]:
        return {"spread": np.nanstd(view.readings["landmarks"][..., 0], axis=1)}

    def compare(self, pair: JudgedPair) -> dict[str, np.ndarray]:
        return {"spread_edit": pair.edit.readings["spread"]}


def test_readings_built_on_another_judges_are_not_reused_when_that_judge_changes(tiny_face_batch, tmp_path):
    """A reading computed from the landmarks of one landmark judge is stale under another one."""
    from engine.audit import AuditedCondition

    batch = tiny_face_batch
    ref = (batch.images * 255).round().to(torch.uint8)
    mask = torch.zeros(len(ref), 1, *ref.shape[-2:])
    lms = batch.landmarks.numpy()
    cache = WorkCache(tmp_path)
    policy = AuditPolicy("none", None, None, expression_kept=False)

    def spread(landmarks: np.ndarray, version: int) -> np.ndarray:
        detector = _TemplateDetector(landmarks)
        detector.version = version  # in its fingerprint: a new landmark judge
        stage = AuditStage([detector, _LandmarkSpread()], policy, AuditThresholds(), cache)
        sham = AuditedCondition(0.0, ref, [f"r{i}" for i in range(4)], mask, [{}] * 4)
        edit = AuditedCondition(1.0, ref, [f"r{i}" for i in range(4)], mask, [{}] * 4)
        return stage.table(stage.observe(sham, [edit], batch.ids))["spread_edit"].to_numpy()

    first = spread(lms, 1)
    np.testing.assert_allclose(spread(lms, 1), first)
    wider = lms.copy()
    wider[..., 0] *= 2.0
    np.testing.assert_allclose(spread(wider, 2), 2 * first, rtol=1e-5)


def test_real_judges_on_a_placebo_and_a_leaking_edit(real_faces, tmp_path):
    """The audit's own judges (MediaPipe, age/gender, identity, LPIPS, SSIM) on the astronaut."""
    from engine.audit import AuditedCondition, AuditOptions

    face = real_faces(1, 256)
    image = (face.images * 255).round().to(torch.uint8)
    leak = image.clone()
    leak[..., :40, :] = (leak[..., :40, :].int() + 70).clamp(0, 255).to(torch.uint8)  # brightens the top band
    mask = torch.zeros(1, 1, 256, 256)
    mask[..., 150:, :] = 1.0  # the edit may act on the lower part only
    judges = AuditOptions().judges(torch.device("cpu"))
    stage = AuditStage(judges, AuditPolicy("none"), AuditThresholds(), WorkCache(tmp_path))
    sham = AuditedCondition(0.0, image, ["ref"], mask, [{}])
    rows = stage.observe(sham, [AuditedCondition(1.0, image, ["ref"], mask, [{}]),
                                AuditedCondition(0.5, leak, ["leak"], mask, [{}])], face.ids)
    out = stage.table(rows)
    assert out["reasons"].tolist()[0] == "" and out["outside_change"][0] == 0.0
    assert out["identity_distance"][0] == pytest.approx(0.0, abs=1e-9) and out["delta_est_age"][0] == 0.0
    assert "leak_outside_mask" in out["reasons"][1]
    assert out["lpips_out"][1] > 0.05 > out["lpips_out"][0] and out["ssim_out"][1] < 0.99 <= out["ssim_out"][0]
    assert out["lpips_in"][1] < out["lpips_out"][1]
    stage.close()


# --- occluding policies (electrodes, masks): judged by the checks that apply to a covered face ------------

OCCLUDING = AuditPolicy("cover", None, ReportedTarget(lambda m: m["drawn"] >= m["requested"], "sites_missing"),
                        occluding=True)


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


class _CoverBlindDetector(_TemplateDetector):
    """Finds the face unless its top-left corner is covered (black), like a landmarker under electrodes."""

    def read(self, view: JudgeView) -> dict[str, np.ndarray]:
        out = super().read(view)
        found = view.images[:, :, :4, :4].amax((1, 2, 3)).numpy() > 0
        out["found"] = found
        out["landmarks"] = np.where(found[:, None, None], out["landmarks"], np.nan).astype(np.float32)
        out["blendshapes"] = np.where(found[:, None], out["blendshapes"], np.nan)
        return out


class _MeshSpread(Judge):
    """A judge of the re-detected mesh (not aligned), as the symmetry judge is: x spread of the landmarks."""

    name = "mesh_spread"

    def read(self, view: JudgeView) -> dict[str, np.ndarray]:
        return {"spread": np.std(view.readings["landmarks"][..., 0], axis=1)}

    def compare(self, pair: JudgedPair) -> dict[str, np.ndarray]:
        return {"spread_ref": pair.ref.readings["spread"], "spread_edit": pair.edit.readings["spread"]}


def test_stage_reads_an_occluded_edit_on_the_reference_landmarks(tiny_face_batch, tmp_path):
    from engine.audit import AuditedCondition

    batch = tiny_face_batch
    ref = (batch.images * 255).round().clamp(1, 255).to(torch.uint8)
    covered = ref.clone()
    covered[:, :, :8, :8] = 0  # the cover: the landmarker no longer finds the face
    mask = torch.zeros(len(ref), 1, *ref.shape[-2:])
    mask[:, :, :8, :8] = 1.0
    lms = batch.landmarks.numpy().astype(np.float32)
    cache = WorkCache(tmp_path)
    meta = [{"drawn": 5, "requested": 5}] * 4

    def audit(policy: AuditPolicy) -> pd.DataFrame:
        stage = AuditStage([_CoverBlindDetector(lms), _Brightness(), _MeshSpread()], policy, AuditThresholds(), cache)
        sham = AuditedCondition(0.0, ref, [f"r{i}" for i in range(4)], mask, [{}] * 4)
        edit = AuditedCondition(1.0, covered, [f"c{i}" for i in range(4)], mask, meta)
        return stage.table(stage.observe(sham, [edit], batch.ids)), stage.fingerprint()

    occluded, fp = audit(OCCLUDING)
    assert not occluded["face_found"].any()  # not re-found under the cover ...
    assert occluded["valid"].all() and occluded["reasons"].eq("").all()  # ... and still a valid edit
    # every judge read the edit on the reference's landmarks: aligned ones as always, the mesh judge too
    assert occluded["align_same"].all() and np.isfinite(occluded["delta_brightness"]).all()
    np.testing.assert_allclose(occluded["spread_edit"], occluded["spread_ref"])
    # the same pixels under a policy that is not occluding: the mesh judge finds no face (not a stale cache hit)
    plain, plain_fp = audit(AuditPolicy("cover", None, OCCLUDING.target))
    assert np.isnan(plain["spread_edit"]).all() and plain["reasons"].str.contains("face_not_found").all()
    assert fp != plain_fp  # the rows of the two ways of reading are cached apart


def test_identity_of_an_occluded_face_is_measured_on_the_reference_landmarks(real_faces, tmp_path):
    """The dlib identity judge on the astronaut under opaque pads, cut on the sham's landmarks."""
    from engine.audit import AuditedCondition
    from engine.audit.identity import IdentityJudge
    from engine.audit.landmarks import FaceDetectionJudge

    face = real_faces(1, 256)
    image = (face.images * 255).round().to(torch.uint8)
    covered = image.clone()
    mask = torch.zeros(1, 1, 256, 256)
    for y, x in ((70, 100), (70, 140), (150, 80), (150, 170), (190, 125)):  # five 14-px pads
        covered[..., y - 7 : y + 7, x - 7 : x + 7] = 235
        mask[..., y - 7 : y + 7, x - 7 : x + 7] = 1.0
    judges = [FaceDetectionJudge(), IdentityJudge()]
    stage = AuditStage(judges, OCCLUDING, AuditThresholds(), WorkCache(tmp_path))
    rows = stage.observe(AuditedCondition(0.0, image, ["ref"], mask, [{}]),
                         [AuditedCondition(1.0, covered, ["cov"], mask, [{"drawn": 5, "requested": 5}])], face.ids)
    out = stage.table(rows)
    stage.close()
    distance = out["identity_distance"][0]
    assert 0.02 < distance < 0.6  # measured (not NaN, not the reference itself), the same person
    assert out["valid"][0] and out["landmarks_of_edit"][0] == "reference"
