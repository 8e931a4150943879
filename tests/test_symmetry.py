"""Tests of the symmetry editor (mirrored-average shape, mirrored texture, both) and the identity placebo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import redetect
from symmetric_faces import SIZE, frontal_batch, gradient_image, make_batch, synthetic_face

from editors.placebo import PlaceboEditor
from editors.symmetry import SymmetryEditor
from editors.symmetry.mirror import (
    eye_openings,
    inner_face_weight,
    inter_ocular_distance,
    midline_distance,
    mirror_map,
    mirror_visibility,
    mirrored_partners,
    symmetric_target,
    symmetry_index,
    symmetry_plane,
)
from editors.warp import apply_backward_map, identity_coords, warp_images
from engine.faces import face_masks
from engine.faces.mesh import landmark_group
from engine.types import FaceBatch


@pytest.fixture(scope="module")
def batch(real_faces) -> FaceBatch:
    """Six real faces aligned by the pipeline: astronaut, Grace Hopper (sharp photos), four upscaled LFW faces."""
    faces = real_faces(6, SIZE)
    return make_batch(faces.images, faces.landmarks)


# --- geometry -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("yaw", [0.0, 25.0, -35.0])
def test_symmetric_face_has_zero_index_at_any_yaw(yaw: float) -> None:
    face = synthetic_face(yaw)
    assert symmetry_index(face).item() < 1e-5
    if yaw:  # a 2-D midline alone would call the turned face asymmetric
        assert symmetry_index(face[..., :2]).item() > 0.02
    centre, normal = symmetry_plane(face)
    assert abs(abs(normal[0, 0].item()) - math.cos(math.radians(yaw))) < 1e-4


def test_strength_one_symmetrises_an_asymmetric_turned_face_and_keeps_its_pose() -> None:
    face = synthetic_face(20.0, asymmetry=4.0)
    before = symmetry_index(face).item()
    assert before > 0.01
    target = symmetric_target(face, 1.0)
    assert symmetry_index(target).item() < 1e-5
    assert symmetry_index(symmetric_target(face, 0.25)).item() == pytest.approx(0.75 * before, rel=1e-3)
    # The nose tip stays put up to the small midline shift: the head is not turned to the front.
    assert (target[0, 4, :2] - face[0, 4, :2]).norm() < 1.0


def test_irises_follow_their_eyes() -> None:
    face = synthetic_face(10.0, asymmetry=3.0)
    target = symmetric_target(face, 1.0)
    for eye, iris in (("right_eye", "right_iris"), ("left_eye", "left_iris")):
        eye_shift = (target - face)[0, list(landmark_group(eye))].mean(dim=0)
        iris_shift = (target - face)[0, list(landmark_group(iris))]
        assert torch.allclose(iris_shift, eye_shift.expand_as(iris_shift), atol=1e-4)


def test_partners_of_partners_are_the_landmarks() -> None:
    face = synthetic_face(15.0, asymmetry=2.0)
    twice = mirrored_partners(mirrored_partners(face))
    assert torch.allclose(twice, face, atol=1e-3)


# --- editor on real faces -----------------------------------------------------------------------------


def test_strength_zero_is_the_sham(batch: FaceBatch) -> None:
    editor = SymmetryEditor(measure_image=False)
    sham = editor.sham(batch, seed=3)
    zero = editor.edit(batch, 0.0, seed=3)
    # The pipeline at 0 changes nothing (to 1e-5), so the sham is the input itself.
    assert torch.equal(sham.images, batch.images) and (zero.images - batch.images).abs().max() < 1e-5
    assert torch.equal(sham.landmarks, batch.landmarks) and torch.equal(zero.landmarks, batch.landmarks)
    assert sham.mask.sum() == 0 and zero.mask.sum() == 0
    for meta in zero.metadata:
        assert meta["symmetry_index_after"] == pytest.approx(meta["symmetry_index_before"])
        assert meta["max_landmark_shift_px"] == 0


def test_strength_one_cuts_the_symmetry_index_by_at_least_80_percent(batch: FaceBatch) -> None:
    result = SymmetryEditor(measure_image=False).edit(batch, 1.0, seed=0)
    before = np.array([m["symmetry_index_before"] for m in result.metadata])
    after = np.array([m["symmetry_index_after"] for m in result.metadata])
    assert (before > 0.005).all()
    assert (after <= 0.2 * before).all(), (before, after)
    # The mean landmark-to-partner gap falls exactly as 1 - strength (the index also divides by the
    # inter-ocular distance, which the edit changes slightly).
    half = SymmetryEditor(measure_image=False).edit(batch, 0.5, seed=0)
    gap_ratio = (
        np.array([m["symmetry_index_after"] for m in half.metadata])
        * inter_ocular_distance(half.landmarks).numpy()
        / (before * inter_ocular_distance(batch.landmarks).numpy())
    )
    np.testing.assert_allclose(gap_ratio, 0.5, rtol=1e-3)
    assert result.images.shape == batch.images.shape and result.landmarks.shape == batch.landmarks.shape
    assert result.images.min() >= 0 and result.images.max() <= 1


def test_redetected_landmarks_follow_the_warp(batch: FaceBatch) -> None:
    """The real landmarker on the edited images: it moves with the edit, though less than asked.

    MediaPipe's landmarks lean on a learned face prior, so they track only part of a sub-pixel to
    few-pixel shape change; the symmetry index of re-detected landmarks falls far less than the
    target's (printed with `-s`).
    """
    result = SymmetryEditor(measure_image=False).edit(batch, 1.0, seed=0)
    redetected = torch.from_numpy(redetect(result.images)).float()
    wanted = (result.landmarks - batch.landmarks)[:, :468, :2]
    moved = (redetected - batch.landmarks)[:, :468, :2]
    slope = (wanted * moved).sum(dim=(1, 2)) / (wanted * wanted).sum(dim=(1, 2))
    before, after = symmetry_index(batch.landmarks), symmetry_index(redetected)
    print(f"\nre-detected slope per face {slope.numpy().round(2)}")
    print(f"symmetry index before {before.numpy().round(4)} after (re-detected) {after.numpy().round(4)}")
    print(f"mean reduction of the re-detected index: {100 * (1 - after.mean() / before.mean()):.1f}%")
    assert slope.mean() > 0.2


def test_mask_covers_every_changed_pixel(batch: FaceBatch) -> None:
    result = SymmetryEditor(measure_image=False).edit(batch, 1.0, seed=0)
    changed = (result.images - batch.images).abs().amax(dim=1, keepdim=True) > 1e-5
    assert changed.any()
    assert not (changed & (result.mask == 0)).any()
    assert 0.05 < result.mask.mean() < 0.95


def test_batch_equals_one_by_one_and_seed_does_not_matter(batch: FaceBatch) -> None:
    editor = SymmetryEditor(measure_image=False)
    part = batch.select([0, 2, 4])
    full = editor.edit(part, 0.7, seed=0)
    assert torch.equal(full.images, editor.edit(part, 0.7, seed=123).images)
    for i in range(len(part)):
        single = editor.edit(part.select([i]), 0.7, seed=0)
        assert torch.equal(single.images, full.images[i : i + 1])
        assert torch.equal(single.landmarks, full.landmarks[i : i + 1])
        assert single.metadata[0]["symmetry_index_after"] == pytest.approx(
            full.metadata[i]["symmetry_index_after"]
        )


def test_edit_equals_warp_images_on_the_target(batch: FaceBatch) -> None:
    result = SymmetryEditor(measure_image=False).edit(batch, 1.0, seed=0)
    expected = warp_images(batch.images, batch.landmarks, symmetric_target(batch.landmarks, 1.0)).clamp(0, 1)
    assert torch.equal(result.images, expected)


@pytest.mark.parametrize("strength", [-0.1, 1.01, float("nan")])
def test_bad_strength_raises_naming_the_value(batch: FaceBatch, strength: float) -> None:
    with pytest.raises(ValueError, match=f"strength={strength}"):
        SymmetryEditor().edit(batch, strength, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "mirror"}, "mode='mirror'"),
        ({"source_side": "both"}, "source_side='both'"),
        ({"seam_width": 0.0}, "seam_width=0.0"),
        ({"top_limit": -1.0}, "top_limit=-1.0"),
        ({"detail_scale": 2.0}, "detail_scale=2.0"),
        ({"mirror_share": 0.0}, "mirror_share=0.0"),
        ({"mirror_share": 0.7}, "mirror_share=0.7"),
        ({"mask_dilation_px": -1}, "mask_dilation_px=-1"),
    ],
)
def test_bad_arguments_raise_naming_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SymmetryEditor(**kwargs)


def test_property_direction_and_fingerprint() -> None:
    editor = SymmetryEditor(mode="both", source_side="left")
    assert editor.property == "symmetry" and editor.direction == "more"
    fingerprint = editor.fingerprint()
    assert fingerprint["mode"] == "both" and fingerprint["source_side"] == "left"
    assert fingerprint["detail_scale"] == 0.02 and SymmetryEditor().fingerprint()["mode"] == "shape"


# --- texture mirroring ----------------------------------------------------------------------------------


def test_mirror_map_of_a_frontal_symmetric_face_is_the_left_right_flip() -> None:
    face = synthetic_face(0.0)
    coords = mirror_map(face, (SIZE, SIZE))
    start = identity_coords(1, (SIZE, SIZE))
    inside = face_masks(face, (SIZE, SIZE))[0, 0] > 0.99
    flipped_x = SIZE - start[0, ..., 0]  # the face's midline is x = 128
    assert (coords[0, ..., 0] - flipped_x)[inside].abs().max() < 1e-2
    assert (coords[0, ..., 1] - start[0, ..., 1])[inside].abs().max() < 1e-2
    assert torch.equal(
        coords[0][~(face_masks(face, (SIZE, SIZE))[0, 0] > 0)],
        start[0][~(face_masks(face, (SIZE, SIZE))[0, 0] > 0)],
    )
    # Everything is visible, and the signed midline distance is + on the subject's left (image right).
    assert mirror_visibility(coords, face)[0, 0][inside].min() == 1.0
    side = midline_distance(coords, face)[0, 0]
    iod = inter_ocular_distance(face).item()
    expected = (start[0, ..., 0] - SIZE / 2) / iod
    assert (side - expected)[inside].abs().max() < 1e-3


@pytest.mark.parametrize("yaw", [20.0, -30.0])
def test_mirror_map_follows_a_turned_head(yaw: float) -> None:
    """Feature lands on feature: the mirror of each landmark's pixel is its partner's, not the flip."""
    face = synthetic_face(yaw)
    coords = mirror_map(face, (SIZE, SIZE))
    centres = torch.stack([face[0, 468, :2], face[0, 473, :2], face[0, 61, :2], face[0, 291, :2]])
    partners = torch.stack([face[0, 473, :2], face[0, 468, :2], face[0, 291, :2], face[0, 61, :2]])
    sampled = apply_backward_map(coords.permute(0, 3, 1, 2), centres[None, None]).squeeze(2)[0].T
    assert (sampled - partners).norm(dim=-1).max() < 0.5


def test_copying_the_left_half_puts_its_mirror_image_on_the_right_half() -> None:
    batch = frontal_batch(gradient_image())
    editor = SymmetryEditor(mode="texture", source_side="left")
    result = editor.edit(batch, 1.0, seed=0)
    flipped = batch.images.flip(-1)  # the mirror image of this symmetric face
    start = identity_coords(1, (SIZE, SIZE))[0]
    right_half = start[..., 0] < SIZE / 2  # the subject's right is on the image's left
    assert torch.equal(result.images[0][:, ~right_half], batch.images[0][:, ~right_half])
    coords = mirror_map(batch.landmarks, (SIZE, SIZE))
    face_weight = inner_face_weight(batch.face_mask, batch.landmarks, editor.face_feather)
    weight = editor.texture_weight(
        batch.landmarks, coords, mirror_visibility(coords, batch.landmarks), face_weight
    )
    full = weight[0, 0] == 1
    assert full.sum() > 2000 and (full & ~right_half).sum() == 0
    assert (result.images[0][:, full] - flipped[0][:, full]).abs().max() < 2e-3
    # Beside the midline the copy fades in over the seam band: no jump in the red ramp (slope 1/256 per px).
    row = result.images[0, 0, int(batch.landmarks[0, 1, 1])]
    near_midline = slice(int(SIZE / 2 - 0.4 * 76), int(SIZE / 2 + 0.4 * 76))
    assert (row[near_midline][1:] - row[near_midline][:-1]).abs().max() < 0.01


def test_average_texture_evens_out_the_shading_and_keeps_the_eyes() -> None:
    batch = frontal_batch(gradient_image())
    # The synthetic mesh is exact; a registering flow would only lock the blue waves onto each other.
    result = SymmetryEditor(mode="texture", register_max_shift=None).edit(batch, 1.0, seed=0)
    meta = result.metadata[0]
    # Not 0: the kept eyes, the forehead top and the fades at the oval keep their asymmetry.
    assert meta["image_asymmetry_after"] < 0.2 * meta["image_asymmetry_before"]
    eyes = eye_openings(batch.landmarks, (SIZE, SIZE), 0.06)[0, 0] == 1
    assert eyes.sum() > 50
    assert torch.equal(result.images[0][:, eyes], batch.images[0][:, eyes])
    # The red ramp (x) becomes flat across the cheeks: the average of x and its mirror image.
    cheeks_y = int(batch.landmarks[0, 1, 1])
    red = result.images[0, 0, cheeks_y, 90:166]
    assert (red - 0.5).abs().max() < 0.02


def test_mirror_share_blends_that_much_of_the_mirror_image() -> None:
    """A share of 0.25 moves every pixel half as far as the full average (0.5) does."""
    batch = frontal_batch(gradient_image())
    full = SymmetryEditor(mode="texture", detail_scale=None).edit(batch, 1.0, seed=0).images - batch.images
    half = SymmetryEditor(mode="texture", detail_scale=None, mirror_share=0.25).edit(batch, 1.0, seed=0)
    assert full.abs().max() > 0.1
    torch.testing.assert_close(half.images - batch.images, 0.5 * full, atol=1e-5, rtol=0)
    # The asymmetry left is (1 - 2 * share) of the original where the blend is complete.
    meta = half.metadata[0]
    assert meta["image_asymmetry_after"] == pytest.approx(0.5 * meta["image_asymmetry_before"], rel=0.25)


@pytest.mark.parametrize("mode", ["texture", "both"])
def test_texture_modes_sham_mask_and_batch_equals_one_by_one(batch: FaceBatch, mode: str) -> None:
    editor = SymmetryEditor(mode=mode, source_side="average", measure_image=mode == "texture")
    part = batch.select([0, 2])
    sham = editor.sham(part, seed=1)
    assert (sham.images - part.images).abs().max() < 1e-5
    assert sham.mask.sum() == 0
    full = editor.edit(part, 0.8, seed=0)
    changed = (full.images - part.images).abs().amax(dim=1, keepdim=True) > 1e-5
    assert changed.any() and not (changed & (full.mask == 0)).any()
    if mode == "texture":  # the mirror blend stays inside the face oval
        assert not (changed & (part.face_mask < 0.5)).any()
    for i in range(len(part)):
        single = editor.edit(part.select([i]), 0.8, seed=0)
        assert torch.equal(single.images, full.images[i : i + 1])
        for key, value in full.metadata[i].items():
            assert single.metadata[0][key] == (pytest.approx(value) if isinstance(value, float) else value)


def test_texture_reduces_image_asymmetry_on_real_faces(batch: FaceBatch) -> None:
    batch = batch.select([0, 1, 3])  # astronaut, Grace Hopper, an LFW face turned about 15 degrees
    texture = SymmetryEditor(mode="texture", register_max_shift=None).edit(batch, 1.0, seed=0)
    registered = SymmetryEditor(mode="texture", register_max_shift=0.08).edit(batch, 1.0, seed=0)
    # Unregistered, the blend is symmetric through the same mesh map the measure uses, so nearly all of
    # the measured asymmetry goes (registered, the mirror image follows the real features instead).
    both = SymmetryEditor(mode="both", detail_scale=None, register_max_shift=None).edit(batch, 1.0, seed=0)
    for meta in texture.metadata:  # the landmarks (shape) are kept
        assert meta["symmetry_index_after"] == meta["symmetry_index_before"]
    before = np.array([m["image_asymmetry_before"] for m in texture.metadata])
    after = np.array([m["image_asymmetry_after"] for m in texture.metadata])
    after_both = np.array([m["image_asymmetry_after"] for m in both.metadata])
    print(
        f"\nimage asymmetry before {before.round(4)}\ntexture {after.round(4)}\nboth, all detail {after_both.round(4)}"
    )
    assert (after < 0.8 * before).all() and after.mean() < 0.6 * before.mean()
    # Registered to the real features, the blend no longer follows the measure's own mesh map, so the
    # measure sees less of the fall (measured: 0.37, 0.78 and 0.59 of before), but it still falls.
    after_registered = np.array([m["image_asymmetry_after"] for m in registered.metadata])
    assert (after_registered < 0.9 * before).all() and after_registered.mean() < 0.7 * before.mean()
    # On the turned LFW face the near half is not mirrored (its partner is foreshortened), so less falls.
    assert (after_both[:2] < 0.25 * before[:2]).all() and after_both[2] < 0.5 * before[2]
    assert all(m["symmetry_index_after"] < 1e-4 for m in both.metadata)


# --- identity placebo -----------------------------------------------------------------------------------


def test_identity_editor_changes_nothing(batch: FaceBatch) -> None:
    editor = PlaceboEditor()
    result = editor.edit(batch, 1.0, seed=0)
    assert editor.property == "none"
    assert torch.equal(result.images, batch.images)
    assert result.images.data_ptr() != batch.images.data_ptr()
    assert result.mask.shape == (len(batch), 1, SIZE, SIZE) and result.mask.sum() == 0
    assert torch.equal(editor.sham(batch).images, result.images)
    with pytest.raises(ValueError, match="strength=2"):
        editor.edit(batch, 2, seed=0)


def test_nearly_closed_eyes_keep_only_their_slits_and_the_blend_has_no_seam() -> None:
    """Lids almost shut (squinting, blurry faces): the kept eye openings stay within the feather of the
    lid loops. A half-ellipse faded by its first-order distance ran out as a band across the whole face,
    and the mirror blend showed a hard line along it."""
    from editors.symmetry.mirror import polygon_distance

    batch = frontal_batch(gradient_image())
    landmarks = batch.landmarks.clone()
    for eye in ("right_eye", "left_eye"):
        loop = list(landmark_group(eye))
        centre_y = landmarks[0, loop, 1].mean()
        landmarks[0, loop, 1] = centre_y + 0.05 * (landmarks[0, loop, 1] - centre_y)  # lids 1/20 as far apart
    iod = float(inter_ocular_distance(landmarks)[0])
    eyes = eye_openings(landmarks, (SIZE, SIZE), 0.06)[0, 0]
    pixels = identity_coords(1, (SIZE, SIZE))[0].double()
    distance = torch.stack([polygon_distance(pixels, landmarks[0, list(landmark_group(e)), :2].double())
                            for e in ("right_eye", "left_eye")]).amin(dim=0)
    assert eyes[distance > 0.06 * iod].max() == 0  # nothing beyond the feather: no band between or beside the eyes
    assert eyes[distance < 0.5].min() > 0.9
    # Beside the slits, on the eye line, the mirror blend reaches the skin (the band kept it out).
    squinting = FaceBatch(**{**batch.__dict__, "landmarks": landmarks})
    edited = SymmetryEditor(mode="texture").edit(squinting, 1.0, seed=0).images[0]
    eye_line = int(landmarks[0, list(landmark_group("right_eye")), 1].mean())
    from_midline = (torch.arange(SIZE) + 0.5 - float(landmarks[0, 168, 0])).abs()  # 168: between the brows
    beside = (distance[eye_line] > 0.1 * iod) & (from_midline > 0.15 * iod) & (from_midline < 1.0 * iod)
    moved = (edited[:, eye_line] - batch.images[0][:, eye_line]).abs().amax(dim=0)
    assert beside.sum() > 20 and (moved[beside] > 0.01).float().mean() > 0.8
    # The exact distance on a square: 0 inside, the gap to the nearest edge outside.
    square = torch.tensor([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]], dtype=torch.float64)
    probe = torch.tensor([[5.0, 5.0], [13.0, 5.0], [13.0, 14.0], [-2.0, 5.0]], dtype=torch.float64)
    assert polygon_distance(probe, square).tolist() == pytest.approx([0.0, 3.0, 5.0, 2.0])
