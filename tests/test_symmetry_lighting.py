"""Lighting versus the face: the detail asymmetry judge, and the symmetry edit that keeps the lighting.

A face lit from one side is asymmetric in its pixels although the face is not; these tests hold that
the detail facet (`image_asymmetry(..., lighting_scale)`) sees the face's own asymmetry and not such
a ramp, and that `SymmetryEditor(lighting_scale=...)` averages the face's detail while the photo's
lighting stays.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from symmetric_faces import SIZE, frontal_batch

from editors.symmetry import SymmetryEditor
from editors.symmetry.editor import DETAIL_SYMMETRY_DELTAS, SYMMETRY_DELTAS
from editors.symmetry.measures import LIGHTING_SCALE, ImageAsymmetryJudge, image_asymmetry
from engine.types import JudgedPair, JudgeView

#: The synthetic face's midline is x = 128 and its inter-ocular distance about 76 px.
MIDLINE = SIZE / 2


def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    return xs - MIDLINE, ys


def lit_face(light: float = 0.3, detail: float = 0.0) -> torch.Tensor:
    """(1, 3, H, W): a mirror-symmetric fine pattern, plus a left-to-right lighting ramp of `light`
    (coarse: it spans the face) and an asymmetric pattern of amplitude `detail` (waves of about 30 px)."""
    x, y = _grid()
    symmetric = 0.1 * torch.cos(x / 3.0) * torch.cos(y / 4.0)
    ramp = light * x / SIZE
    odd = detail * torch.sin(x / 5.0) * torch.cos(y / 6.0)
    return (0.5 + symmetric + ramp + odd).clamp(0, 1).expand(3, -1, -1)[None].clone()


def test_detail_asymmetry_ignores_the_lighting_and_sees_the_face() -> None:
    landmarks = frontal_batch(lit_face()).landmarks
    lit = lit_face(light=0.3)
    total = image_asymmetry(lit, landmarks)[0]
    detail = image_asymmetry(lit, landmarks, LIGHTING_SCALE)[0]
    # A symmetric face under one-sided light: asymmetric pixels, symmetric detail.
    assert total > 0.03 and detail < 0.15 * total
    # Without the ramp the total is small, so the ramp above was what the total saw.
    assert image_asymmetry(lit_face(light=0.0), landmarks)[0] < 0.2 * total
    # Asymmetric fine detail is seen by both facets, about equally.
    uneven = lit_face(light=0.0, detail=0.1)
    both = image_asymmetry(uneven, landmarks)[0], image_asymmetry(uneven, landmarks, LIGHTING_SCALE)[0]
    assert both[1] > 0.03 and both[1] == pytest.approx(both[0], rel=0.3)
    nan_row = torch.full_like(landmarks, float("nan"))
    assert np.isnan(image_asymmetry(lit, nan_row, LIGHTING_SCALE)).all()


def test_judge_reads_and_compares_both_facets() -> None:
    landmarks = frontal_batch(lit_face()).landmarks.numpy()
    judge = ImageAsymmetryJudge()

    def view(image: torch.Tensor) -> JudgeView:
        u8 = (image * 255).round().to(torch.uint8)
        return JudgeView(u8, {"landmarks": landmarks}, landmarks)

    ref, edit = view(lit_face(light=0.3, detail=0.1)), view(lit_face(light=0.0, detail=0.1))
    ref.readings.update(judge.read(ref))
    edit.readings.update(judge.read(edit))
    out = judge.compare(JudgedPair(ref, edit, torch.zeros(1, 1, SIZE, SIZE)))
    assert set(out) == {f"{r}{s}" for r in ("image_asymmetry", "image_asymmetry_detail") for s in ("_ref", "_edit")} | {
        "delta_image_asymmetry_rel", "delta_image_asymmetry_detail_rel"}
    # Taking the light away removes much of the pixel asymmetry and little of the face's.
    assert out["delta_image_asymmetry_rel"][0] < -0.3
    assert abs(out["delta_image_asymmetry_detail_rel"][0]) < 0.15
    expected = out["image_asymmetry_detail_edit"] / out["image_asymmetry_detail_ref"] - 1
    np.testing.assert_allclose(out["delta_image_asymmetry_detail_rel"], expected)
    assert judge.fingerprint()["lighting_scale"] == LIGHTING_SCALE
    with pytest.raises(ValueError, match="lighting_scale"):
        ImageAsymmetryJudge(lighting_scale=0.0)


def _cheek_light(image: torch.Tensor) -> float:
    """Mean brightness of the image-right cheek minus the image-left one (the ramp's share there)."""
    rows = slice(140, 170)
    return float(image[0, :, rows, 160:185].mean() - image[0, :, rows, 71:96].mean())


def test_lighting_kept_averages_the_detail_and_keeps_the_light() -> None:
    batch = frontal_batch(lit_face(light=0.3, detail=0.1))
    landmarks = batch.landmarks
    # The synthetic mesh is exact, and a flow would only lock the periodic waves onto each other.
    plain = {"mode": "texture", "register_max_shift": None}
    evened = SymmetryEditor(**plain).edit(batch, 1.0, seed=0).images
    kept = SymmetryEditor(**plain, lighting_scale=LIGHTING_SCALE).edit(batch, 1.0, seed=0).images
    before = _cheek_light(batch.images)
    assert before > 0.07
    # The default evens out the light between the cheeks; the lighting-kept edit leaves most of it.
    assert abs(_cheek_light(evened)) < 0.2 * before
    assert _cheek_light(kept) > 0.8 * before
    # Both remove most of the face's own (detail) asymmetry.
    detail_before = image_asymmetry(batch.images, landmarks, LIGHTING_SCALE)[0]
    for edited in (evened, kept):
        assert image_asymmetry(edited, landmarks, LIGHTING_SCALE)[0] < 0.5 * detail_before


def test_lighting_kept_edit_is_judged_on_the_detail_facet() -> None:
    assert SymmetryEditor(mode="texture").audit_policy().target.deltas == SYMMETRY_DELTAS
    kept = SymmetryEditor(mode="texture", lighting_scale=0.3).audit_policy().target
    assert kept.deltas == DETAIL_SYMMETRY_DELTAS and kept.sign == -1
    # The shape warp and a copied half do not use the band: their pixel facet stays the whole image.
    assert SymmetryEditor(mode="shape", lighting_scale=0.3).audit_policy().target.deltas == SYMMETRY_DELTAS
    assert SymmetryEditor(mode="texture", source_side="left", lighting_scale=0.3).audit_policy().target.deltas \
        == SYMMETRY_DELTAS
    for bad in (0.01, 0.02, 3.0):  # not above detail_scale (0.02), or beyond 2 IODs
        with pytest.raises(ValueError, match="lighting_scale"):
            SymmetryEditor(mode="texture", lighting_scale=bad)
    SymmetryEditor(mode="texture", detail_scale=None, lighting_scale=0.01)  # no detail band: any scale above 0
