"""The matched-magnitude nuisance control (editors/nuisance.py)."""

from __future__ import annotations

import pytest
import torch

from editors.age import AgeEditor
from editors.nuisance import NuisanceEditor
from engine.audit import AuditThresholds
from engine.audit.verdicts import verdicts


def _inside_change(out, images, mask):
    inside = (mask > 0.5).float()
    return ((out - images).abs().mean(1, keepdim=True) * inside).sum(dim=(1, 2, 3)) / inside.sum(dim=(1, 2, 3))


def test_matches_the_property_edits_pixel_change_per_face(tiny_face_batch):
    age = AgeEditor()
    ref = age.edit(tiny_face_batch, 1.0, seed=0)
    nz = NuisanceEditor(matched=age).edit(tiny_face_batch, 1.0, seed=0)
    target = _inside_change(ref.images, tiny_face_batch.images, ref.mask)
    got = _inside_change(nz.images, tiny_face_batch.images, nz.mask)
    assert (target > 0.005).all()
    torch.testing.assert_close(got, target, rtol=0.15, atol=0)  # only clamping at 0 and 1 loses some
    # the editor sums per face in float64 (batch-invariant); this float32 reference agrees to rounding
    assert [m["matched_change"] for m in nz.metadata] == pytest.approx([float(t) for t in target], rel=1e-6)
    half = NuisanceEditor(matched=age).edit(tiny_face_batch, 0.5, seed=0)
    assert (_inside_change(half.images, tiny_face_batch.images, half.mask) < got).all()


def test_changes_no_geometry_and_is_mirror_symmetric(tiny_face_batch):
    exposure = NuisanceEditor().field(tiny_face_batch, seed=0)
    assert set(exposure.unique().tolist()) <= {-1.0, 1.0} and (exposure == exposure[:, :, :1, :1]).all()
    shading = NuisanceEditor(grid=3).field(tiny_face_batch, seed=0)
    torch.testing.assert_close(shading, shading.flip(-1))
    assert shading.mean(dim=(2, 3)).abs().max() < 1e-5
    ed = NuisanceEditor(grid=3)
    out = ed.edit(tiny_face_batch, 1.0, seed=0)
    assert torch.equal(out.landmarks, tiny_face_batch.landmarks)
    assert torch.equal(ed.edit(tiny_face_batch, 0.0, seed=0).images, tiny_face_batch.images.float())
    other = ed.edit(tiny_face_batch, 1.0, seed=1).images
    assert (other - out.images).abs().max() > 1e-3, "the seed draws the field"


def test_names_what_it_controls_and_keeps_every_property():
    ed = NuisanceEditor(matched=AgeEditor(direction="younger"))
    assert ed.control_of() == ("age", "younger") and NuisanceEditor().control_of() is None
    policy = ed.audit_policy()
    assert policy.target is None and policy.property == "none" and "delta_symmetry_index_rel" in policy.also_kept
    import pandas as pd

    rows = pd.DataFrame({"strength": [1.0, 1.0], "face_found": [True, True], "delta_est_age": [1.0, 1.0],
                         "delta_est_p_male": [0.0, 0.0], "delta_symmetry_index_rel": [0.05, 0.9],
                         "blendshape_change": [0.0, 0.0]})
    judged = verdicts(rows, policy, AuditThresholds())
    assert judged["valid"].tolist() == [True, False] and judged.loc[1, "reasons"] == "nontarget_moved"
