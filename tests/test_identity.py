"""The identity judge (dlib face descriptors, dlib's network run in torch) on real faces."""

from __future__ import annotations

import numpy as np
import pytest

from engine.audit.identity import IdentityJudge, face_chips, identity_distance


@pytest.fixture(scope="module")
def faces(real_faces):
    """The astronaut, Grace Hopper, and the astronaut mirrored (the same person), aligned by the pipeline."""
    import torch

    from engine.faces import FaceAnalyzer

    two = real_faces(2)
    mirrored = np.ascontiguousarray((two.images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)[:, ::-1])
    analyzer = FaceAnalyzer()
    fa, crop = analyzer.analyse("mirrored", mirrored)  # re-analysed, so its mesh is its own
    analyzer.close()
    images = torch.cat([two.images, torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255])
    return images, np.concatenate([two.landmarks.numpy(), fa.landmarks[None]])


def test_same_person_near_and_different_people_far(faces):
    images, lms = faces
    d = IdentityJudge().descriptors(images, lms)
    assert d.shape == (3, 128) and np.isfinite(d).all()
    assert identity_distance(d[0], d[2]) < 0.3 < 0.6 < identity_distance(d[0], d[1])


def test_missing_face_gives_nan_and_uint8_equals_float(faces):
    import torch

    images, lms = faces
    lms = lms.copy()
    lms[1] = np.nan
    judge = IdentityJudge()
    d = judge.descriptors(images[:2], lms[:2])
    assert np.isfinite(d[0]).all() and np.isnan(d[1]).all()
    u8 = (images[:2] * 255).round().to(torch.uint8)
    np.testing.assert_array_equal(judge.descriptors(u8, lms[:2])[0], d[0])
    chips = face_chips(images[:1], lms[:1])
    assert chips.shape == (1, 3, 150, 150) and float(chips.max()) <= 255 and float(chips.min()) >= 0


def test_equals_dlib_on_the_judges_own_chips(faces):
    """The judge's descriptors against dlib's `compute_face_descriptor` on the same chips (oracle)."""
    dlib = pytest.importorskip("dlib", reason="dlib (facecf[identity]) is the oracle; pip install -e '.[identity]'")
    from engine.assets import asset_path

    images, lms = faces
    ours = IdentityJudge().descriptors(images, lms)
    chips = face_chips(images, lms).round().clamp(0, 255).byte().permute(0, 2, 3, 1).contiguous().numpy()
    model = dlib.face_recognition_model_v1(str(asset_path("dlib_face_recognition")))
    theirs = np.asarray([np.asarray(v) for v in model.compute_face_descriptor(list(chips))])
    assert np.abs(ours - theirs).max() < 1e-4
