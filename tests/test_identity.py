"""The identity judge (dlib face descriptors) on real faces, and the audit's identity option."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.identity import IdentityJudge, dlib_available, identity_distance

pytestmark = pytest.mark.skipif(not dlib_available(), reason="dlib (facecf[identity]) is not installed")


@pytest.fixture(scope="module")
def faces():
    from engine.data import DemoDataset
    from engine.faces import FaceAnalyzer

    analyzer = FaceAnalyzer()
    crops, lms = [], []
    for rec in DemoDataset(n_lfw=0):  # Eileen Collins and Grace Hopper
        fa, crop = analyzer.analyse(rec.image_id, rec.load())
        crops.append(crop)
        lms.append(fa.landmarks)
    # The astronaut mirrored is still the same person; re-analysed so its mesh is its own.
    mirrored = np.ascontiguousarray(crops[0][:, ::-1])
    fa, crop = analyzer.analyse("mirrored", mirrored)
    crops.append(crop)
    lms.append(fa.landmarks)
    analyzer.close()
    images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    return images, np.stack(lms)


def test_same_person_near_and_different_people_far(faces):
    images, lms = faces
    d = IdentityJudge().descriptors(images, lms)
    assert d.shape == (3, 128) and np.isfinite(d).all()
    astronaut_vs_mirror = identity_distance(d[0], d[2])
    astronaut_vs_hopper = identity_distance(d[0], d[1])
    assert astronaut_vs_mirror < 0.3 < 0.6 < astronaut_vs_hopper


def test_missing_face_gives_nan_and_chips_are_dlib_sized(faces):
    images, lms = faces
    lms = lms.copy()
    lms[1] = np.nan
    d = IdentityJudge().descriptors(images[:2], lms[:2])
    assert np.isfinite(d[0]).all() and np.isnan(d[1]).all()
    chips = IdentityJudge.chips(images[:1], lms[:1])
    assert chips.shape == (1, 150, 150, 3) and chips.dtype == np.uint8


def test_audit_identity_option(compose):
    from engine.config import validate
    from engine.types import ConfigError

    with pytest.raises(ConfigError, match="audit.identity"):
        validate(compose("experiment=placebo", "audit.identity=maybe"))
