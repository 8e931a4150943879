"""Offline age editor: sham, determinism, batching, mask, validation and the direction of the change."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import warp_kink_outside

from editors.age import AgeEditor
from editors.age.tone import region_masks
from editors.pose import face_widths
from editors.skin import gaussian_blur, luminance
from engine.data import DemoDataset
from engine.faces import FaceAnalyzer
from engine.pipeline import make_face_batch
from engine.types import FaceBatch

CROP = 192  # small crops keep the test fast; the editor sizes everything by the face width


@pytest.fixture(scope="module")
def faces() -> FaceBatch:
    """The astronaut (sharp, colour) and two blurry grey LFW faces, cut like the engine cuts them."""
    wanted = {"astronaut", "lfw_000", "lfw_003"}
    analyzer = FaceAnalyzer(crop_size=CROP)
    records, analyses, crops = [], [], []
    for rec in DemoDataset(n_lfw=4, photos=False).records:
        if rec.image_id not in wanted:
            continue
        fa, crop = analyzer.analyse(rec.image_id, rec.load())
        assert fa.ok, rec.image_id
        records.append(rec)
        analyses.append(fa)
        crops.append(crop)
    analyzer.close()
    return make_face_batch(records, analyses, crops, torch.device("cpu"))


@pytest.fixture(scope="module")
def older() -> AgeEditor:
    return AgeEditor(direction="older")


def test_strength_zero_is_the_sham_and_equals_the_input(faces, older):
    from engine.pipeline.steps import to_uint8

    for editor in (older, AgeEditor(direction="younger")):
        sham = editor.sham(faces, seed=3)
        zero = editor.edit(faces, 0.0, seed=3)
        # The whole pipeline at 0 gives back the input once quantised, so the sham is the input itself.
        assert (to_uint8(zero.images) == to_uint8(faces.images)).all()
        assert torch.equal(sham.images, faces.images) and (zero.images - faces.images).abs().max() < 0.1 / 255
        assert sham.landmarks is not None and torch.allclose(sham.landmarks, faces.landmarks)


def test_deterministic_given_seed(faces, older):
    a = older.edit(faces, 1.0, seed=5).images
    b = older.edit(faces, 1.0, seed=5).images
    c = older.edit(faces, 1.0, seed=6).images
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3  # the seed drives the fold variation, pores and spots


@pytest.mark.parametrize("direction", ["older", "younger"])
def test_batch_equals_one_by_one(faces, direction):
    editor = AgeEditor(direction=direction)
    batch = editor.edit(faces, 0.8, seed=1)
    single = [editor.edit(faces.select([i]), 0.8, seed=1) for i in range(len(faces))]
    stacked = torch.cat([s.images for s in single])
    # exactly: no batched reduction or blur may make a face's edit depend on its batch (cache, goldens)
    assert torch.equal(batch.images, stacked)
    assert torch.allclose(batch.landmarks, torch.cat([s.landmarks for s in single]), atol=1e-4)
    assert batch.metadata == [s.metadata[0] for s in single]


@pytest.mark.parametrize("direction", ["older", "younger"])
def test_mask_contains_every_changed_pixel(faces, direction):
    editor = AgeEditor(direction=direction)
    res = editor.edit(faces, 1.0, seed=0)
    changed = (res.images - faces.images).abs().amax(dim=1, keepdim=True) > 0.5 / 255
    assert changed.any()
    assert not (changed & (res.mask <= 0)).any()
    assert res.mask.shape == (len(faces), 1, CROP, CROP)
    assert not editor.sham(faces).mask.any()  # the sham is the input: it changes nothing anywhere


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="direction='sideways'"):
        AgeEditor(direction="sideways")
    with pytest.raises(ValueError, match="folds key='chin'"):
        AgeEditor(folds={"chin": 1.0})
    with pytest.raises(ValueError, match="sag_parts.jowls"):
        AgeEditor(sag_parts={"jowls": -1.0})
    with pytest.raises(ValueError, match="hair_mask"):
        AgeEditor(hair_mask="wig")


def test_strength_out_of_range_is_refused(faces, older):
    with pytest.raises(ValueError, match="strength=1.5"):
        older.edit(faces, 1.5, seed=0)


def _skin_detail_energy(images: torch.Tensor, batch: FaceBatch) -> torch.Tensor:
    width = face_widths(batch.landmarks)
    skin = region_masks(batch.landmarks, batch.size, width, torch.ones(len(batch)))["skin"]
    lum = luminance(images)
    detail = lum - gaussian_blur(lum, 0.02 * width)
    return (detail**2 * skin).flatten(1).sum(1) / skin.flatten(1).sum(1)


def test_younger_smooths_the_skin(faces):
    editor = AgeEditor(direction="younger")
    sham = editor.sham(faces).images
    young = editor.edit(faces, 1.0, seed=0).images
    ratio = _skin_detail_energy(young, faces) / _skin_detail_energy(sham, faces)
    assert ratio[0] < 0.85, ratio  # the sharp portrait loses its freckles and pores (edges stay)
    assert (ratio < 0.95).all(), ratio  # blurry, upscaled faces have little to lose, but lose some


def test_older_darkens_the_folds_and_reports_what_it_did(faces, older):
    res = older.edit(faces, 1.0, seed=0)
    sham = older.sham(faces)
    # Below the eyes and along the nasolabial folds the skin is shaded darker than in the sham.
    lm = res.landmarks
    points = lm[:, [119, 348, 206, 426], :2].round().long()
    rows = torch.arange(len(faces))[:, None]
    lum_edit = luminance(res.images)[rows, 0, points[..., 1], points[..., 0]]
    lum_sham = luminance(sham.images)[rows, 0, points[..., 1], points[..., 0]]
    assert (lum_edit.mean(1) < lum_sham.mean(1)).all()
    for meta in res.metadata:
        assert meta["direction"] == "older" and meta["strength"] == 1.0
        assert meta["sag_max_px"] > 0.5 and meta["mean_abs_change"] > 0
        assert {"photo_detail_px", "shading_blur_px", "fold_depth", "hair_fraction"} <= set(meta)
    # Grey photos stay grey: no colour is introduced into the LFW faces.
    grey = np.array([i for i, f in enumerate(faces.ids) if f.startswith("lfw")])
    spread = res.images[grey].amax(dim=1) - res.images[grey].amin(dim=1)
    assert spread.max() <= 2.0 / 255


def test_hair_mask_stays_off_the_face_and_below_the_mouth(faces):
    from editors.hair import PersonSegmenter, hair_masks

    width = face_widths(faces.landmarks)
    person = PersonSegmenter()(faces.images)
    skin_colour = torch.full((len(faces), 3), 0.3)
    hair = hair_masks(faces.images, faces.landmarks, person, width, skin_colour)
    assert hair.shape == (len(faces), 1, CROP, CROP)
    rows = torch.arange(CROP).view(1, 1, -1, 1) + 0.5
    below_brows = rows > faces.landmarks[:, [105, 334], 1].mean(dim=1).view(-1, 1, 1, 1) + 0.02 * CROP
    assert hair[(faces.face_mask > 0.99) & below_brows].max() < 0.05  # fringes may cover the forehead
    mouth_row = int(faces.landmarks[0, [61, 291], 1].mean()) + int(0.1 * width[0])
    assert hair[0, 0, mouth_row:].max() < 0.05
    assert hair[0].mean() > 0.02  # the astronaut has plenty of hair


def test_gaussian_blur_of_a_face_does_not_depend_on_the_other_sigmas_of_its_batch():
    from editors.skin import gaussian_blur

    x = torch.rand(3, 2, 64, 64, generator=torch.Generator().manual_seed(0))
    sigmas = torch.tensor([4.0, 1.3, 0.02])  # three kernel lengths, one an identity tap
    together = gaussian_blur(x, sigmas)
    for i in range(3):
        assert torch.equal(together[i], gaussian_blur(x[i : i + 1], sigmas[i : i + 1])[0])
    assert torch.equal(together[2], x[2])


def test_the_sag_warp_is_smooth_beyond_the_inner_face_and_exact_at_zero(faces):
    """No straight edges where the jowls push the jawline out: the warp's displacement varies smoothly
    outside the inner face (its second difference stays small), and zero displacement stays zero."""
    from editors.outer_warp import smooth_outer_warp
    from editors.warp import backward_map, identity_coords

    editor = AgeEditor()
    landmarks = faces.landmarks.float()
    target = editor._target_landmarks(landmarks, 1.0)
    width = torch.full((len(faces),), float(faces.size[1]) * 0.5)
    raw = backward_map(landmarks, target, faces.size)
    smooth = smooth_outer_warp(raw, target, width)
    ident = identity_coords(len(faces), faces.size)

    assert warp_kink_outside(smooth, target) < 0.5 * warp_kink_outside(raw, target)
    zero = smooth_outer_warp(ident.clone(), landmarks, width)
    assert torch.equal(zero, ident)


def test_broad_hollows_fade_with_the_yaw_read_from_the_landmarks(faces):
    """The frontal-template hollows keep full depth on a frontal face and fade out on a turned one
    (the astronaut's mesh turned about its vertical axis in 3-D)."""
    import math

    from editors.age.geometry import frontal_weight

    lm = faces.landmarks[:1].float()
    centre = lm[0].mean(dim=0)

    def turned(deg: float) -> torch.Tensor:
        a = math.radians(deg)
        rel = lm - centre
        x = rel[..., 0] * math.cos(a) + rel[..., 2] * math.sin(a)
        z = -rel[..., 0] * math.sin(a) + rel[..., 2] * math.cos(a)
        return torch.stack([x, rel[..., 1], z], dim=-1) + centre

    weights = [float(frontal_weight(turned(d))[0]) for d in (0, 10, 25, 30, 50)]
    assert weights[0] == 1.0 and weights[1] > 0.9
    assert weights[1] >= weights[2] >= weights[3] >= weights[4]
    assert weights[3] < 0.5 and weights[4] == 0.0
    assert float(frontal_weight(turned(-35))[0]) < 0.3  # either way


def test_buccal_hollows_shade_a_broad_soft_shadow_not_a_blotch(real_faces):
    """Grace Hopper (frontal, not smiling), cheek hollows alone: a wide, gentle darkening.

    The compact well of editor version 7 darkened its upper wall to 0.57 of the skin's luminance on 9 %
    of the face, a spot that read as a bruise on sharp faces; version 8 reaches 0.72 at its darkest
    and shades 34 % of the face a little.
    """
    from editors.age.creases import FOLD_GROUPS

    faces = real_faces(2, CROP)
    hopper = faces.select([1])
    assert hopper.ids == ["grace_hopper"]
    only_hollows = AgeEditor(folds={g: float(g == "cheek_hollows") for g in FOLD_GROUPS}, sag=0.0, texture=0.0,
                             yellowing=0.0, desaturation=0.0, dulling=0.0, mottling=0.0, spot_density=0.0,
                             feature_fading=0.0)
    edit = only_hollows.edit(hopper, 1.0, 0).images
    ratio = (luminance(edit) / luminance(hopper.images).clamp(min=1e-3))[0, 0]
    inside = hopper.face_mask[0, 0] > 0.5
    assert float(ratio[inside].min()) > 0.65  # no deep spot
    shaded = float((ratio[inside] < 0.97).float().mean())
    assert 0.2 < shaded < 0.6, shaded  # a broad shadow, not the whole face


def test_growth_lengthens_the_lower_face_about_the_ear_line_and_is_off_by_default(faces):
    """Cardioidal strain: the crown stays, the chin moves down by about 2k of its distance from the
    centre, the cheeks out by about k; negative k shrinks; growth=0 leaves the landmarks to the sag."""
    from editors.age.shape import GROWTH_CENTRE_IOD, growth_displacements

    lm = faces.landmarks.float()
    k = torch.full((len(faces),), 0.06)
    moved = growth_displacements(lm, k)
    assert moved.shape == lm.shape and torch.equal(moved[..., 2], torch.zeros_like(moved[..., 2]))
    iod = (lm[:, 473, :2] - lm[:, 468, :2]).norm(dim=-1)
    down = torch.stack([-(lm[:, 473, 1] - lm[:, 468, 1]), lm[:, 473, 0] - lm[:, 468, 0]], -1) / iod[:, None]
    centre = (lm[:, 468, :2] + lm[:, 473, :2]) / 2 + GROWTH_CENTRE_IOD * iod[:, None] * down
    chin = lm[:, 152, :2] - centre
    chin_down = (moved[:, 152, :2] * down).sum(-1)
    assert torch.allclose(chin_down / (chin * down).sum(-1), torch.full_like(chin_down, 0.12), atol=0.02)
    # The forehead top moves far less than the chin (it lies almost straight above the centre).
    assert (moved[:, 10, :2].norm(dim=-1) < 0.1 * moved[:, 152, :2].norm(dim=-1)).all()
    # The cheek extremes (beside the centre) move outward, by about k of their distance.
    for idx in (234, 454):
        rel = lm[:, idx, :2] - centre
        out = (moved[:, idx, :2] * rel).sum(-1) / rel.norm(dim=-1) ** 2
        assert ((out > 0.04) & (out < 0.09)).all(), out
    assert torch.allclose(growth_displacements(lm, -k), -moved)
    default = AgeEditor()
    assert default.growth == 0.0
    assert torch.equal(default._target_landmarks(lm, 1.0), AgeEditor(growth=0.0)._target_landmarks(lm, 1.0))
    grown = AgeEditor(growth=0.06)._target_landmarks(lm, 1.0) - default._target_landmarks(lm, 1.0)
    assert torch.allclose(grown, moved, atol=1e-4)
    with pytest.raises(ValueError, match="growth"):
        AgeEditor(growth=-0.1)


def test_the_lips_thin_evenly_without_folding_the_mesh_over_the_mouth_line(faces, older):
    """The red lip shrinks toward the inner contour: its points move by their depth share, so none
    crosses the inner contour (the old spread moved them as far as the outer contour, folding the mesh
    over the mouth line: a pale streak between the lips of photo_bus#0)."""
    from editors.age.shape import lip_band, lip_depth
    from engine.faces.mesh import face_triangles, landmark_group

    inner, outer, band = set(landmark_group("lips_inner")), set(landmark_group("lips_outer")), set(lip_band())
    assert len(band) == 40 and not band & (inner | outer)
    assert {42, 183, 272, 407} <= band  # upper-lip points a frontal polygon test puts inside the mouth
    lm = faces.landmarks.float()
    depth = lip_depth(lm[..., :2])
    assert (depth[:, sorted(inner)] == 0).all() and (depth[:, sorted(outer)] == 1).all()
    assert (depth[:, [1, 152, 234]] == 1).all()  # skin: nose tip, chin, cheek
    assert ((depth[:, sorted(band)] > 0) & (depth[:, sorted(band)] < 1)).all()

    target = older._target_landmarks(lm, 1.0)
    tri = torch.tensor(np.asarray(face_triangles()))  # a copy: the mesh data are read-only
    # The triangles of the red lip and the mouth opening (skin triangles outside the lip can flip on the
    # degenerate landmarks of a 25-pixel LFW mouth, where a skin point sits on the lip edge).
    lips = torch.tensor([bool({int(v) for v in t} & (inner | band)) for t in tri])

    def area(points: torch.Tensor) -> torch.Tensor:
        a, b, c = (points[:, tri[:, k], :2] for k in range(3))
        return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])

    before, after = area(lm), area(target)
    folded = (torch.sign(before) != torch.sign(after)) & (before.abs() > 1.0) & lips
    assert not folded.any(), [tri[t].tolist() for t in torch.nonzero(folded)[:, 1]]
    # ... and the lips do thin: the upper lip at the midline (outer 0, inner 13) loses about 0.4 of it.
    thickness = (lm[:, 0, :2] - lm[:, 13, :2]).norm(dim=-1)
    thinned = (target[:, 0, :2] - target[:, 13, :2]).norm(dim=-1)
    assert ((thinned / thickness > 0.5) & (thinned / thickness < 0.75)).all(), thinned / thickness
