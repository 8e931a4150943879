"""Turned faces: an edit reaches the nose and lips that stand out beyond the face oval.

On a profile (photo_table#4) the face oval runs along the cheek, behind the nose and lips, and so does
the warp's anchor ring made from it. The age and gender editors kept their edits inside that ring, so
the edit stopped in a hard line across the upper lip; the asymmetry and gender warps also sliced the
nose and lips where the mesh ends. These tests hold the parts of the fix: the face's own hull, the
allowed regions that hold it and every pixel their warp moves.
"""

from __future__ import annotations

import torch
from symmetric_faces import SIZE, synthetic_face

from editors.age.geometry import allowed_region
from editors.gender import GenderEditor
from editors.outer_warp import landmark_hull, smooth_outer_warp
from editors.pose import face_widths
from editors.skin import polygon_masks
from editors.warp import DEFAULT_RING_SCALE, anchor_ring, backward_map, moved_region

NOSE_TIP, UPPER_LIP = 1, 0


def _inside(mask: torch.Tensor, point: torch.Tensor) -> bool:
    x, y = point[:2].round().long().tolist()
    return bool(mask[0, 0, y, x] > 0)


def test_the_hull_holds_every_landmark_and_a_turned_nose_beyond_the_ring() -> None:
    turned = synthetic_face(60.0)
    frontal = synthetic_face(0.0)
    hulls = landmark_hull(torch.cat([turned, frontal]))
    assert hulls.shape[0] == 2 and hulls.shape[2] == 2
    for k, face in enumerate((turned, frontal)):
        hull = polygon_masks(hulls[k : k + 1], (SIZE, SIZE))
        ring = polygon_masks(anchor_ring(face[..., :2], DEFAULT_RING_SCALE), (SIZE, SIZE))
        # The polygon masks are cell-rasterised: judge the points a little inside their faces' outline.
        centre = face[0, :, :2].mean(dim=0)
        points = centre + 0.97 * (face[0, :, :2] - centre)
        assert all(_inside(hull, p) for p in points)
        if k == 0:  # turned: the nose tip and upper lip lie beyond the ring, inside the hull
            assert not _inside(ring, points[NOSE_TIP]) and _inside(hull, points[NOSE_TIP])
        else:  # frontal: the ring already holds the whole face
            assert all(_inside(ring, p) for p in points)


def test_gender_and_age_edits_may_reach_the_hull_and_every_pixel_their_warp_moves() -> None:
    face = synthetic_face(60.0)
    target = face.clone()
    target[:, :, 0] += 3.0  # a warp that moves the whole face, nose and lips included
    coords = smooth_outer_warp(backward_map(face, target, (SIZE, SIZE)), target, face_widths(target))
    moved = moved_region(coords)
    hull = torch.maximum(*(polygon_masks(landmark_hull(p), (SIZE, SIZE)) for p in (face, target))) > 0

    gender = GenderEditor(target="female").allowed_region(face, target, (SIZE, SIZE), coords)
    age = allowed_region(face, target, coords, (SIZE, SIZE), torch.zeros(1, 1, SIZE, SIZE))
    for allowed in (gender, age):
        assert allowed.shape == (1, 1, SIZE, SIZE)
        assert bool((allowed[moved > 0] > 0).all())
        assert bool((allowed[hull] > 0).all())
    # Without the warp's reach the gender mask is the outlines alone (rings and hulls), and smaller.
    outlines = GenderEditor(target="female").allowed_region(face, target, (SIZE, SIZE))
    assert outlines.sum() < gender.sum()
