"""Gender editor: sham, determinism, batching, mask, target validation, proportions table, config."""

from __future__ import annotations

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


@pytest.mark.parametrize("target", ["female", "male"])
def test_batch_equals_one_by_one(batch, target):
    editor = GenderEditor(target=target)
    together = editor.edit(batch, 1.0, seed=1)
    alone = [editor.edit(batch.select([i]), 1.0, seed=1) for i in range(len(batch))]
    singles = torch.cat([r.images for r in alone])
    assert float((together.images - singles).abs().max()) < 1e-4
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
    """Toward female (opt-in), hair fills a band around the face oval; the face inside the oval is untouched."""
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
    # The band is repainted with hair (the scalp's colour): a clear change, not a faint tint.
    assert ((female.images - bare.images).abs().mean(1, keepdim=True) * band).sum((1, 2, 3)).div(
        band.sum((1, 2, 3))
    ).min() > 0.05
    # Inside the oval only the hair's soft contact shadow reaches the face's rim.
    inside = (female.images - bare.images).abs().mul(centre).sum((1, 2, 3)) / (3 * centre.sum((1, 2, 3)))
    assert float(inside.max()) < 0.003
    male = GenderEditor(target="male", long_hair=1.0).edit(batch, 1.0, seed=0)
    assert torch.equal(male.mask, GenderEditor(target="male", long_hair=0.0).edit(batch, 1.0, seed=0).mask)
