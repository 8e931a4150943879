"""Where an aligned crop reaches beyond its photo (tight crops such as LFW's), what fills it."""

from __future__ import annotations

import numpy as np
import pytest

from engine.faces.align import CropSpec, align_face, warp_to_crop


def _photo() -> np.ndarray:
    """A 40 px photo with a vertical stripe at its left edge (replicate padding smears it sideways)."""
    rng = np.random.default_rng(0)
    photo = rng.integers(90, 160, size=(40, 40, 3), dtype=np.uint8)
    photo[:, :3] = (250, 20, 20)
    return photo


def _zoom(size: int = 96) -> np.ndarray:
    """Crop-from-photo matrix: the 40 px photo scaled 1.2x into the middle of a larger crop."""
    return np.float32([[1.2, 0, size / 2 - 24], [0, 1.2, size / 2 - 24]])


def test_fade_keeps_the_photo_and_fills_beyond_it_without_streaks():
    photo, m = _photo(), _zoom()
    replicate = warp_to_crop(photo, m, 96, "replicate")
    fade = warp_to_crop(photo, m, 96, "fade")
    inner = (slice(30, 66), slice(30, 66))  # well inside the photo (which covers 24..72)
    np.testing.assert_array_equal(fade[inner], replicate[inner])
    # Replicate repeats the red edge column across the whole left margin; fade does not.
    assert (replicate[48, :20, 0] > 240).all()
    assert fade[48, :5, 0].mean() < 200
    # Far from the photo the fill is the photo's median colour, flat.
    corner = fade[:4, :4].reshape(-1, 3).astype(float)
    median = np.median(photo.reshape(-1, 3), axis=0)
    assert np.abs(corner - median).max() <= 25 and corner.std(axis=0).max() < 4
    # No hard seam at the photo's edge: neighbouring columns across it differ little.
    assert np.abs(np.diff(fade[40:56, 14:27].astype(float), axis=1)).max() < 40  # the photo starts at 24


def test_a_crop_inside_the_photo_is_the_same_either_way_and_the_option_is_checked():
    photo = np.random.default_rng(1).integers(0, 255, size=(200, 200, 3), dtype=np.uint8)
    m = np.float32([[0.5, 0, -10], [0, 0.5, -10]])  # the crop sees photo pixels 20..148 only
    np.testing.assert_array_equal(warp_to_crop(photo, m, 64, "fade"), warp_to_crop(photo, m, 64, "replicate"))
    with pytest.raises(ValueError, match="padding"):
        CropSpec(padding="mirror")


def test_the_analyzer_cuts_with_its_padding_and_keys_its_cache_by_it():
    from engine.faces.analyzer import FaceAnalyzer
    from engine.faces.template import template_landmarks

    # Eyes half a 64 px photo apart: aligned to 0.28 of a 128 px crop, the photo covers only 72 px of it.
    landmarks = template_landmarks(CropSpec(size=64, eye_distance=0.5))
    photo = np.asarray(np.kron(_photo()[:32, :32], np.ones((2, 2, 1))), dtype=np.uint8)
    crops = {p: align_face(photo, landmarks, CropSpec(size=128, padding=p))[0] for p in ("replicate", "fade")}
    assert not np.array_equal(crops["replicate"], crops["fade"])
    replicate, fade = FaceAnalyzer(padding="replicate"), FaceAnalyzer(padding="fade")
    assert "padding" not in replicate.fingerprint() and fade.fingerprint()["padding"] == "fade"
