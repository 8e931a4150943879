"""Gender editor: sham, determinism, batching, mask, target validation, proportions table, config."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from editors.gender import GenderEditor
from editors.gender.shape import PROPORTIONS_PATH, SHAPE_FEATURES, female_ratios, load_proportions

CONF = Path(__file__).resolve().parents[1] / "conf" / "editor" / "gender.yaml"


@pytest.fixture(scope="module")
def batch():
    """Astronaut, Grace Hopper and two blurry LFW faces, aligned (at 192 px, for speed) as the engine does."""
    from engine.data import DemoDataset
    from engine.faces import FaceAnalyzer
    from engine.pipeline import make_face_batch

    torch.set_num_threads(2)
    analyzer = FaceAnalyzer(crop_size=192)
    recs, analyses, crops = [], [], []
    for rec in DemoDataset(limit=4, photos=False):
        analysis, crop = analyzer.analyse(rec.image_id, rec.load())
        assert analysis.ok, rec.image_id
        recs.append(rec)
        analyses.append(analysis)
        crops.append(crop)
    analyzer.close()
    return make_face_batch(recs, analyses, crops, torch.device("cpu"))


def _u8(images: torch.Tensor) -> np.ndarray:
    return images.clamp(0, 1).mul(255).round().to(torch.uint8).numpy()


@pytest.mark.parametrize("target", ["female", "male"])
def test_strength_zero_is_the_sham_and_returns_the_input(batch, target):
    editor = GenderEditor(target=target)
    sham = editor.sham(batch, seed=3)
    zero = editor.edit(batch, 0.0, seed=3)
    # The pipeline at 0 gives back the input once quantised, so the sham is the input itself.
    np.testing.assert_array_equal(_u8(zero.images), _u8(batch.images))
    assert float((zero.images - batch.images).abs().max()) < 1e-4
    assert torch.equal(sham.images, batch.images) and torch.equal(sham.landmarks, batch.landmarks)


def test_deterministic_given_seed_and_seed_moves_only_the_grain(batch):
    editor = GenderEditor(target="male")
    a = editor.edit(batch, 1.0, seed=7).images
    b = editor.edit(batch, 1.0, seed=7).images
    c = editor.edit(batch, 1.0, seed=8).images
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # A different seed redraws stubble grain only: a small change, not a different edit.
    assert float((a - c).abs().mean()) < 0.01


@pytest.mark.parametrize("target,long_hair", [("female", 0.0), ("male", 0.0), ("female", 1.0)])
def test_batch_equals_one_by_one(batch, target, long_hair):
    editor = GenderEditor(target=target, long_hair=long_hair)
    together = editor.edit(batch, 1.0, seed=1)
    alone = [editor.edit(batch.select([i]), 1.0, seed=1) for i in range(len(batch))]
    singles = torch.cat([r.images for r in alone])
    # Bit for bit, with the hair too (its segmenter and colour run per face): the cache keys edits by face.
    assert torch.equal(together.images, singles)
    assert torch.equal(together.mask, torch.cat([r.mask for r in alone]))
    assert torch.allclose(together.landmarks, torch.cat([r.landmarks for r in alone]))


@pytest.mark.parametrize("target,strength", [("female", 1.0), ("male", 0.5)])
def test_mask_contains_every_changed_pixel(batch, target, strength):
    result = GenderEditor(target=target).edit(batch, strength, seed=0)
    changed = (result.images - batch.images).abs().amax(dim=1, keepdim=True) > 1e-6
    assert changed.any()
    assert not (changed & (result.mask <= 0)).any()
    assert result.mask.shape == (len(batch), 1, *batch.size)
    # The mask is the face and its surroundings (toward female with the long hair framing it), not the
    # whole frame.
    assert 0.2 < float(result.mask.mean()) < (0.96 if target == "female" else 0.9)
    assert float(result.mask.amin(dim=(1, 2, 3)).max()) == 0.0


def test_edits_go_the_intended_way(batch):
    """Without any judge: male darkens the beard region and widens the jaw; female narrows it."""
    from editors.gender import texture as gt
    from editors.gender.shape import face_frame

    male = GenderEditor(target="male").edit(batch, 1.0, seed=0)
    female = GenderEditor(target="female").edit(batch, 1.0, seed=0)

    def beard_luma(images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        _, _, _, iod = face_frame(landmarks)
        beard = gt.region_masks(landmarks, batch.size, iod, torch.zeros_like(iod)).beard
        return gt.masked_mean(gt.luminance(images), beard).view(-1)

    before = beard_luma(batch.images, batch.landmarks)
    assert (beard_luma(male.images, male.landmarks) < before - 0.01).all()
    assert (beard_luma(female.images, female.landmarks) > before).all()

    def jaw(lm: torch.Tensor) -> torch.Tensor:
        return (lm[:, 172, :2] - lm[:, 397, :2]).norm(dim=-1)

    assert (jaw(male.landmarks) > jaw(batch.landmarks)).all()
    assert (jaw(female.landmarks) < jaw(batch.landmarks)).all()
    assert [m["target"] for m in female.metadata] == ["female"] * len(batch)


def test_target_and_knob_validation(batch):
    with pytest.raises(ValueError, match="target"):
        GenderEditor(target="auto")
    with pytest.raises(ValueError, match="stubble"):
        GenderEditor(stubble=2.0)
    with pytest.raises(ValueError, match="strength"):
        GenderEditor().edit(batch, 1.5, seed=0)
    assert GenderEditor(target="male").direction == "male"
    editor = GenderEditor(target="opposite")
    with pytest.raises(ValueError, match="metadata"):
        editor.edit(batch, 1.0, seed=0)  # the demo set has no gender metadata: never guessed
    sub = batch.select([0, 2])
    sub.metadata = [{"gender": "F"}, {"gender": "male"}]
    assert editor.face_targets(sub) == ["male", "female"]
    result = editor.edit(sub, 1.0, seed=0)
    assert [m["target"] for m in result.metadata] == ["male", "female"]


def test_proportions_table_loads_with_sources(tmp_path):
    table = load_proportions()
    assert set(SHAPE_FEATURES) <= set(table)
    for prop in table.values():
        assert len(prop.source) > 20, prop.feature
    ratios = female_ratios(table)
    # Published direction of the differences, per inter-ocular distance.
    for narrower in ("jaw_width", "face_width", "nose_width", "lower_face_height", "nose_height"):
        assert 0.85 < ratios[narrower] < 1.0, narrower
    assert ratios["lip_fullness"] > 1.0 and ratios["brow_height"] > 0
    bad = tmp_path / "bad.csv"
    text = PROPORTIONS_PATH.read_text(encoding="utf-8")
    bad.write_text(text.replace(f'"{table["nose_width"].source}"', '""', 1), encoding="utf-8")
    with pytest.raises(ValueError, match="has no source"):
        load_proportions(bad)


def test_config_names_every_knob():
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF)
    params = set(inspect.signature(GenderEditor.__init__).parameters) - {"self"}
    assert cfg._target_ == "editors.gender.GenderEditor"
    assert params == set(cfg) - {"_target_"}
    from hydra.utils import instantiate

    editor = instantiate(OmegaConf.to_container(cfg))
    assert isinstance(editor, GenderEditor) and editor.property == "gender"


def test_long_hair_frames_the_face_toward_female_only(batch):
    """Toward female (opt-in), hair frames the face oval; the face inside the oval is untouched."""
    from editors.gender.hair import hair_region
    from editors.gender.texture import region_masks

    female = GenderEditor(target="female", long_hair=1.0).edit(batch, 1.0, seed=0)
    bare = GenderEditor(target="female", long_hair=0.0).edit(batch, 1.0, seed=0)
    region = hair_region(female.landmarks, batch.size, torch.zeros(len(batch)))
    band = (region > 0.8).float()
    iod = (female.landmarks[:, 468, :2] - female.landmarks[:, 473, :2]).norm(dim=-1)
    oval = region_masks(female.landmarks, batch.size, iod, torch.zeros(len(batch))).oval
    centre = (oval > 0.99).float()

    def mean(img: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return (img.mean(1, keepdim=True) * m).sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp(min=1)

    assert (band.mean((1, 2, 3)) > 0.05).all()  # a real frame, not a few pixels
    assert float((band * (oval > 0.5)).sum()) == 0.0  # the landmarker's face oval stays clear of hair
    # The band is repainted with hair (the photo's own hair colour): a clear change, not a faint tint.
    assert ((female.images - bare.images).abs().mean(1, keepdim=True) * band).sum((1, 2, 3)).div(
        band.sum((1, 2, 3))
    ).min() > 0.05
    # Inside the oval only the hair's soft contact shadow reaches the face's rim.
    inside = (female.images - bare.images).abs().mul(centre).sum((1, 2, 3)) / (3 * centre.sum((1, 2, 3)))
    assert float(inside.max()) < 0.003
    male = GenderEditor(target="male", long_hair=1.0).edit(batch, 1.0, seed=0)
    assert torch.equal(male.mask, GenderEditor(target="male", long_hair=0.0).edit(batch, 1.0, seed=0).mask)


def _frame_point(landmarks: torch.Tensor, u: float, v: torch.Tensor) -> torch.Tensor:
    """Pixel `(N, 2)` at face-frame coordinates (u, v `(N,)`) in IOD (u toward image right, v down the face)."""
    from editors.pose import face_frame

    centre, ex, ey, iod = face_frame(landmarks.float())
    return centre + (u * ex + v[:, None] * ey) * iod[:, None]


def test_long_hair_hangs_from_the_crown_and_leaves_the_forehead_clear(batch):
    """The hair is a shell over the crown that falls in curtains beside the face, not a fringe or a helmet.

    The faces are shrunk into the middle of the canvas so that the whole head fits.
    """
    from editors.gender.hair import SKULL, STANDOFF_TOP, hair_region

    h, w = batch.size
    lm = batch.landmarks.float().clone()
    lm[..., :2] = (lm[..., :2] - torch.tensor([w / 2, h / 2])) * 0.45 + torch.tensor([w / 2, h / 2])
    region = hair_region(lm, batch.size, torch.zeros(len(batch)))

    def cover_at(u: float, v_of: torch.Tensor) -> torch.Tensor:
        p = _frame_point(lm, u, v_of)
        x, y = p[:, 0].round().long().clamp(0, w - 1), p[:, 1].round().long().clamp(0, h - 1)
        return region[torch.arange(len(batch)), 0, y, x]

    from editors.gender.hair import _frame_v

    v_top = _frame_v(lm, 10).view(-1)
    v_chin = _frame_v(lm, 152).view(-1)
    assert (cover_at(0.0, v_top + 0.1) < 0.02).all()  # the forehead: no fringe
    assert (cover_at(0.0, v_top * SKULL + 0.1) < 0.05).all()  # the crown itself keeps the photo's own hair
    assert (cover_at(0.0, v_top * SKULL - STANDOFF_TOP / 2) > 0.3).all()  # hair lies over the crown
    # Beside the face the curtains run unbroken from the temples to below the jaw.
    from editors.gender.hair import _oval_halfwidth

    for side in (-1.0, 1.0):
        half = _oval_halfwidth(lm, torch.full((len(batch), 1, 1, 1), side)).view(-1)
        for t in torch.linspace(0.0, 1.0, 6):
            v_at = v_top * 0.5 * (1 - t) + (v_chin + 0.4) * t
            u_at = side * (half + 0.25)
            for i in range(len(batch)):
                assert float(cover_at(float(u_at[i]), v_at)[i]) > 0.5, (side, float(t), i)
    assert (cover_at(0.0, v_chin + 0.5) < 0.05).all()  # the neck stays clear


def test_long_hair_fades_out_on_turned_faces(batch):
    """A face in profile gets no hair curtain (it would fall over the near cheek)."""
    from editors.pose import yaw_degrees

    turned = batch.landmarks.clone()
    # The nose tip beyond one cheek extreme, as in a profile: a face turned past 40 degrees.
    turned[:, 1, :2] = turned[:, 234, :2] - 0.3 * (turned[:, 454, :2] - turned[:, 234, :2])
    assert (yaw_degrees(turned) > 40).all()
    assert (yaw_degrees(batch.landmarks[:2]) < 20).all()  # astronaut and Grace Hopper face the camera
    profile = dataclasses.replace(batch, landmarks=turned)
    with_hair = GenderEditor(target="female", long_hair=1.0).edit(profile, 1.0, seed=0)
    without = GenderEditor(target="female", long_hair=0.0).edit(profile, 1.0, seed=0)
    assert torch.equal(with_hair.images, without.images)


def test_own_hair_colour_is_the_median_of_the_hair_outside_the_face_and_greys_with_the_photo():
    """Blonde hair stays blonde (a median, not the darkest pixels); hair over the forehead is not sampled;
    with no hair the fallback is brown-black, grey in a grey photo."""
    from editors.gender.hair import FALLBACK_COLOUR, own_hair_colour
    from engine.faces.align import CropSpec
    from engine.faces.template import template_landmarks

    size = 160  # a small face low in the frame, so the head's top lies inside it
    lm = torch.from_numpy(template_landmarks(CropSpec(size=size, eye_distance=0.15, eye_height=0.5)))[None]
    skin = torch.tensor([0.8, 0.6, 0.5]).view(1, 3, 1, 1)
    image = skin.expand(1, 3, size, size).clone()
    hair = torch.zeros(1, 1, size, size)
    top = int(lm[0, 10, 1])
    blonde = torch.tensor([0.85, 0.7, 0.4])
    # Blonde hair above the head with a dark shadow line through it, and a dark "fringe" the segmenter
    # calls hair on the forehead just above the oval (it must not be sampled).
    image[:, :, : top - 20, :] = blonde.view(1, 3, 1, 1)
    image[:, :, : top - 20 : 6, :] = 0.1
    hair[:, :, : top - 20, :] = 1.0
    image[:, :, top - 6 : top, 70:90] = 0.05
    hair[:, :, top - 6 : top, 70:90] = 1.0
    colour = own_hair_colour(image, hair, lm, skin).view(3)
    assert torch.allclose(colour, blonde, atol=1e-6), colour
    bald = own_hair_colour(skin.expand(1, 3, size, size).clone(), torch.zeros_like(hair), lm, skin)
    assert torch.allclose(bald.view(3), torch.tensor(FALLBACK_COLOUR), atol=1e-6)
    grey_skin = torch.full((1, 3, 1, 1), 0.7)
    grey = own_hair_colour(grey_skin.expand(1, 3, size, size).clone(), torch.zeros_like(hair), lm, grey_skin)
    grey = grey.view(3)
    assert float(grey.max() - grey.min()) < 1e-6 and float(grey[0]) < 0.15


def test_no_hair_to_draw_runs_no_segmenter_and_changes_no_pixel(batch):
    """Male targets and the sham draw no hair: the selfie segmenter is not even loaded, and the output is
    the same as with long hair off."""
    for target, strength in (("male", 1.0), ("female", 0.0)):
        editor = GenderEditor(target=target, long_hair=1.0)
        out = editor.edit(batch, strength, seed=0)
        assert editor._segmenter is None
        assert torch.equal(out.images, GenderEditor(target=target).edit(batch, strength, seed=0).images)


def test_children_get_no_beard_or_make_up_and_the_rest_of_the_edit_is_kept(batch):
    """Beard shadow and cosmetics are adult traits: a face whose metadata marks a child gets the edit
    without them (exactly the edit with those knobs at 0), a face without such metadata gets them all."""
    from editors.gender.targets import adult_cue_faces, is_child

    assert is_child({"age_group": "Child"}) and is_child({"age": 9}) and is_child({"age": "15.5"})
    assert not is_child({"age": 16}) and not is_child({}) and not is_child({"age": "unknown"})
    child = dataclasses.replace(batch, metadata=[{**m, "age_group": "child"} for m in batch.metadata])
    assert adult_cue_faces(child, "auto") == [False] * len(batch) and adult_cue_faces(child, "on") == [True] * len(batch)
    assert adult_cue_faces(batch, "auto") == [True] * len(batch) and adult_cue_faces(batch, "off") == [False] * len(batch)
    for target, without in (("male", {"stubble": 0.0}),
                            ("female", {"lash_darkening": 0.0, "eyeshadow": 0.0, "lip_darkening": 0.0,
                                        "lip_redness": 0.0})):
        editor = GenderEditor(target=target)
        as_child = editor.edit(child, 1.0, seed=1)
        assert torch.equal(as_child.images, GenderEditor(target=target, **without).edit(batch, 1.0, seed=1).images)
        assert torch.equal(as_child.images, GenderEditor(target=target, adult_cues="off").edit(batch, 1.0, seed=1).images)
        adult = editor.edit(batch, 1.0, seed=1)
        assert not torch.equal(adult.images, as_child.images)  # the adult cues are drawn where no metadata says child
        assert [m["adult_cues"] for m in as_child.metadata] == [False] * len(batch)
        assert [m["adult_cues"] for m in adult.metadata] == [True] * len(batch)
    with pytest.raises(ValueError, match="adult_cues"):
        GenderEditor(adult_cues="maybe")


def test_stubble_and_brows_take_the_persons_own_hair_colour():
    """Beard shadow darkens toward the brows' hair colour, not a fixed blue-grey cast, and the filled-in
    brow tone follows the brows' darkest pixels, so light brows get a light-brown fill, not near-black."""
    from editors.gender import texture as gt

    skin = torch.tensor([0.9, 0.68, 0.52]).view(1, 3, 1, 1)  # fair, warm skin
    brown = torch.tensor([0.45, 0.28, 0.12]).view(1, 3, 1, 1)  # brown hair: far darker in blue than in red
    weights = gt.hair_tint(brown, skin)
    # Unit darkening in luminance, and blue darkens most, red least: a warm brown shadow.
    assert float((weights * torch.tensor(gt.LUMA).view(1, 3, 1, 1)).sum()) == pytest.approx(1.0, abs=1e-5)
    assert weights[0, 2] > weights[0, 1] > weights[0, 0]
    darkened = skin * (1.0 - 0.25 * weights)
    assert (darkened[0, 0] / darkened[0, 2]) > (skin[0, 0] / skin[0, 2])  # warmer, not greyer
    # A grey photo: every channel darkens alike (no cast at all).
    grey = torch.full((1, 3, 1, 1), 0.6)
    torch.testing.assert_close(gt.hair_tint(grey * 0.5, grey), torch.ones(1, 3, 1, 1))

    # Two brows of the same shape: the hair colour is their darkest quarter of pixels, whatever the skin
    # showing between the hairs, so a light brow reads light and a dark brow dark.
    images = skin.expand(2, 3, 16, 16).clone()
    brows = torch.zeros(2, 1, 16, 16)
    brows[:, :, 6:10, 2:14] = 1.0
    hairs = torch.zeros(16, 16, dtype=torch.bool)
    hairs[6:10, 2:14:2] = True  # every other column is a hair
    images[0][:, hairs] = torch.tensor([0.75, 0.55, 0.35]).view(3, 1)  # light (blonde) brow hair
    images[1][:, hairs] = torch.tensor([0.25, 0.17, 0.10]).view(3, 1)  # dark brow hair
    colours = gt.hair_colour(images, brows).view(2, 3)
    torch.testing.assert_close(colours[0], torch.tensor([0.75, 0.55, 0.35]))
    torch.testing.assert_close(colours[1], torch.tensor([0.25, 0.17, 0.10]))
    # No brow inside the crop: the brow region's mean, never an error.
    torch.testing.assert_close(gt.hair_colour(images, torch.zeros_like(brows) + 0.4).view(2, 3),
                               images.mean(dim=(-2, -1)))
