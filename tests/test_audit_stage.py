"""The audit stage: judges read each image once, readings cached and aligned on the reference, the
expression compared in one framing, occluded edits read on the reference's landmarks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import occluding_policy

from engine.audit import AuditStage, AuditThresholds
from engine.cache import WorkCache
from engine.types import AuditPolicy, Judge, JudgedPair, JudgeView, TargetCheck

OCCLUDING = occluding_policy()


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


class _MeshSpread(Judge):
    """A judge of the re-detected mesh (not aligned), as the symmetry judge is: x spread of the landmarks."""

    name = "mesh_spread"

    def read(self, view: JudgeView) -> dict[str, np.ndarray]:
        return {"spread": np.std(view.readings["landmarks"][..., 0], axis=1)}

    def compare(self, pair: JudgedPair) -> dict[str, np.ndarray]:
        return {"spread_ref": pair.ref.readings["spread"], "spread_edit": pair.edit.readings["spread"]}


def test_readings_built_on_another_judges_are_not_reused_when_that_judge_changes(tiny_face_batch, tmp_path):
    """A reading computed from one landmark judge's landmarks is stale under another one."""
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
        stage = AuditStage([detector, _MeshSpread()], policy, AuditThresholds(), cache)
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


class _CoverBlindDetector(_TemplateDetector):
    """Finds the face unless its top-left corner is covered (black), like a landmarker under electrodes."""

    def read(self, view: JudgeView) -> dict[str, np.ndarray]:
        out = super().read(view)
        found = view.images[:, :, :4, :4].amax((1, 2, 3)).numpy() > 0
        out["found"] = found
        out["landmarks"] = np.where(found[:, None, None], out["landmarks"], np.nan).astype(np.float32)
        out["blendshapes"] = np.where(found[:, None], out["blendshapes"], np.nan)
        return out


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
