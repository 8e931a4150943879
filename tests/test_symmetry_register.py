"""Registering the mirror image by optical flow before the symmetry blend (`editors.symmetry.register`).

The mesh mirror map is only as right as the mesh: where it is a few pixels off, blending the face with
its mirror image draws every edge twice. These tests hold that the flow finds such an offset, stays
within its cap, and that a registered blend leaves an already symmetric face nearly as it was where an
unregistered one ghosts it.
"""

from __future__ import annotations

import torch
from symmetric_faces import SIZE, make_batch, synthetic_face

from editors.skin import gaussian_blur
from editors.symmetry import SymmetryEditor
from editors.symmetry.mirror import inter_ocular_distance
from editors.symmetry.register import registered_coords, registration_flow
from editors.warp import apply_backward_map
from engine.faces.mesh import landmark_group


def _texture(seed: int = 0) -> torch.Tensor:
    """(1, 3, H, W) blobs of a few pixels, not periodic (a flow has one right answer on it)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 1, SIZE, SIZE, generator=g)
    blobs = gaussian_blur(noise, 2.5)
    blobs = (blobs - blobs.mean()) / blobs.std()
    return (0.5 + 0.12 * blobs).clamp(0, 1).expand(1, 3, SIZE, SIZE).clone()


def _shift(images: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """`images` moved by (dx, dy) pixels (bilinear, edges repeated)."""
    coords = registered_coords(torch.tensor([-dx, -dy]).expand(1, SIZE, SIZE, 2).clone())
    return apply_backward_map(images, coords)


def test_flow_finds_a_small_offset_and_its_map_undoes_it() -> None:
    face = _texture()
    moved = _shift(face, 3.0, -2.0)
    weight = torch.zeros(1, 1, SIZE, SIZE)
    weight[..., 64:192, 64:192] = 1.0
    iod = torch.tensor([76.0])
    flow = registration_flow(face, moved, weight, iod, max_shift=0.1)
    inner = flow[0, 80:176, 80:176].reshape(-1, 2)
    assert torch.allclose(inner.median(dim=0).values, torch.tensor([3.0, -2.0]), atol=0.3)
    assert (flow[0][weight[0, 0] == 0] == 0).all()  # nothing outside the blend
    registered = apply_backward_map(moved, registered_coords(flow))
    before = (moved - face)[..., 80:176, 80:176].abs().mean()
    after = (registered - face)[..., 80:176, 80:176].abs().mean()
    assert after < 0.25 * before


def test_flow_is_capped_at_max_shift() -> None:
    face = _texture(1)
    moved = _shift(face, 6.0, 0.0)
    weight = torch.ones(1, 1, SIZE, SIZE)
    flow = registration_flow(face, moved, weight, torch.tensor([76.0]), max_shift=0.02)
    length = flow.norm(dim=-1)
    assert length.max() <= 0.02 * 76 + 1e-4
    assert length[0, 80:176, 80:176].median() > 0.9 * 0.02 * 76  # it wanted to go further


def _symmetric_face_with_misplaced_mesh() -> tuple[torch.Tensor, torch.Tensor]:
    """A mirror-symmetric texture about the synthetic face's midline, with the subject's left half of the
    mesh drawn 4 px too far out: the mesh mirror map lands 4 px off the mirrored features there."""
    half = _texture(2)
    image = torch.where(torch.arange(SIZE) < SIZE // 2, half, half.flip(-1))
    landmarks = synthetic_face(0.0)
    left = list(landmark_group("left_side"))
    landmarks[0, left, 0] += 4.0
    return image, landmarks


def test_registered_blend_leaves_a_symmetric_face_nearly_unchanged_where_the_mesh_is_off() -> None:
    image, landmarks = _symmetric_face_with_misplaced_mesh()
    batch = make_batch(image, landmarks)
    plain = SymmetryEditor(mode="texture", register_max_shift=None).edit(batch, 1.0, seed=0)
    registered = SymmetryEditor(mode="texture", register_max_shift=0.08).edit(batch, 1.0, seed=0)
    inside = batch.face_mask > 0.5
    ghost = (plain.images - image).abs()[inside.expand_as(image)].mean()
    kept = (registered.images - image).abs()[inside.expand_as(image)].mean()
    assert ghost > 0.01  # a 4 px double image of blobs this size is a real change
    assert kept < 0.1 * ghost  # measured: about 0.04 of it
    # The landmarks (the shape) are untouched either way.
    assert torch.equal(registered.landmarks, plain.landmarks)


def test_registration_keeps_the_sham_and_batch_equals_one_by_one() -> None:
    image, landmarks = _symmetric_face_with_misplaced_mesh()
    other = _texture(3)
    batch = make_batch(torch.cat([image, other]), torch.cat([landmarks, synthetic_face(0.0)]))
    editor = SymmetryEditor(mode="texture", register_max_shift=0.08)
    assert torch.equal(editor.edit(batch, 0.0, seed=0).images, batch.images)
    both = editor.edit(batch, 1.0, seed=0).images
    for i in range(2):
        assert torch.equal(editor.edit(batch.select([i]), 1.0, seed=0).images, both[i : i + 1])
    assert float(inter_ocular_distance(landmarks)[0]) > 60  # the cap (0.08 IOD) is about 5 px here
