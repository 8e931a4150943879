"""Tests of the face-mesh topology data and the batched piecewise-affine warp."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from editors.symmetry import symmetric_target
from editors.warp import (
    DEFAULT_RING_SCALE,
    anchor_ring,
    apply_backward_map,
    backward_map,
    identity_coords,
    moved_region,
    sample_coords,
    warp_images,
    warp_masks,
)
from engine.faces.mesh import (
    IRIS_CENTRES,
    canonical_vertices,
    face_triangles,
    landmark_group,
    landmark_groups,
    mirror_index,
    visible_vertices,
)

SIZE = 256
MESH_VERTICES = list(range(468)) + list(IRIS_CENTRES)


@pytest.fixture(scope="module")
def faces(real_faces) -> tuple[torch.Tensor, torch.Tensor]:
    """Six real faces aligned by the pipeline: astronaut, Grace Hopper (sharp photos), four upscaled LFW faces."""
    batch = real_faces(6, SIZE)
    return batch.images, batch.landmarks


def smooth_field(landmarks: torch.Tensor, amplitude: float, seed: int) -> torch.Tensor:
    """Landmarks plus a smooth random displacement (a few cycles across the image)."""
    phase = torch.rand(landmarks.shape[0], 4, generator=torch.Generator().manual_seed(seed)) * 2 * np.pi
    x, y = landmarks[..., 0] / SIZE, landmarks[..., 1] / SIZE
    dx = amplitude * torch.sin(5 * y + phase[:, :1]) * torch.cos(3 * x + phase[:, 1:2])
    dy = amplitude * torch.cos(4 * x + phase[:, 2:3]) * torch.sin(5 * y + phase[:, 3:4])
    return torch.cat([landmarks[..., :2] + torch.stack([dx, dy], dim=-1), landmarks[..., 2:]], dim=-1)


def landmark_errors(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance between where the map sends each target landmark and its source; in-frame flags."""
    coords = backward_map(src, dst, (SIZE, SIZE))
    errors = (sample_coords(coords, dst[..., :2]) - src[..., :2]).norm(dim=-1)
    in_frame = ((dst[..., :2] > 1) & (dst[..., :2] < SIZE - 1)).all(dim=-1)
    return errors, in_frame


# --- mesh data --------------------------------------------------------------------------------------


def test_mirror_pairs_are_an_involution_that_mirrors_the_canonical_face() -> None:
    mirror = mirror_index()
    assert mirror.shape == (478,)
    np.testing.assert_array_equal(mirror[mirror], np.arange(478))
    canon = canonical_vertices()
    np.testing.assert_allclose(canon[mirror[:468]] * [-1, 1, 1], canon, atol=1e-4)
    assert mirror[IRIS_CENTRES[0]] == IRIS_CENTRES[1]
    assert set(mirror[list(landmark_group("right_iris"))]) == set(landmark_group("left_iris"))
    assert set(mirror[list(landmark_group("left_eye"))]) == set(landmark_group("right_eye"))
    midline = landmark_group("midline")
    assert len(midline) == 28 and {1, 4, 152, 10} <= set(midline)


def test_triangulation_is_a_disc_bounded_by_the_face_oval() -> None:
    tris = face_triangles()
    edges: dict[tuple[int, int], int] = {}
    for tri in tris.tolist():
        for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
            key = (min(a, b), max(a, b))
            edges[key] = edges.get(key, 0) + 1
    vertices = np.unique(tris)
    assert len(vertices) == 470 and set(IRIS_CENTRES) <= set(vertices.tolist())
    assert max(edges.values()) == 2
    boundary = {v for e, n in edges.items() if n == 1 for v in e}
    assert boundary == set(landmark_group("face_oval"))
    assert len(vertices) - len(edges) + len(tris) == 1  # Euler characteristic of a disc


def test_landmark_groups_are_named_and_in_range() -> None:
    groups = landmark_groups()
    for name in (
        "face_oval",
        "left_eye",
        "right_eye",
        "left_eyebrow",
        "right_eyebrow",
        "lips",
        "nose",
        "midline",
    ):
        assert groups[name] and max(groups[name]) < 478
    with pytest.raises(ValueError, match="jaw"):
        landmark_group("jaw")


# --- warp ---------------------------------------------------------------------------------------------


def test_zero_displacement_reproduces_the_images(faces) -> None:
    images, landmarks = faces
    coords = backward_map(landmarks, landmarks, (SIZE, SIZE))
    assert torch.equal(coords, identity_coords(len(images), (SIZE, SIZE)))
    warped = warp_images(images, landmarks, landmarks)
    assert (warped - images).abs().max() < 1e-5
    assert moved_region(coords).sum() == 0


def test_backward_map_sends_target_landmarks_to_their_sources_on_sharp_faces(faces) -> None:
    _, landmarks = faces
    sharp = landmarks[:2]  # astronaut, Grace Hopper
    for target in (symmetric_target(sharp, 1.0), smooth_field(sharp, 3.0, seed=1)):
        errors, in_frame = landmark_errors(sharp, target)
        checked = errors[:, MESH_VERTICES][in_frame[:, MESH_VERTICES]]
        assert checked.numel() > 900
        assert checked.max() < 0.5, f"max landmark error {checked.max():.3f} px"


def test_backward_map_landmark_accuracy_on_all_faces(faces) -> None:
    """Blurry and turned faces too: visible landmarks; hidden ones show the surface in front of them."""
    _, landmarks = faces
    for target in (symmetric_target(landmarks, 1.0), smooth_field(landmarks, 3.0, seed=2)):
        errors, in_frame = landmark_errors(landmarks, target)
        visible = in_frame & visible_vertices(landmarks) & visible_vertices(target)
        assert visible.sum() > 0.85 * in_frame.sum()
        assert errors[visible].quantile(0.99) < 0.25
        assert errors[visible].median() < 0.05


def test_map_is_exact_on_a_custom_triangulation() -> None:
    # A 5x5 grid of vertices on pixel centres; an affine displacement must be reproduced exactly.
    grid = torch.stack(torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="xy"), dim=-1).reshape(
        -1, 2
    )
    dst = (grid * 12 + 4.5)[None]  # vertices on pixel centres 4.5 ... 52.5
    tris = [[r * 5 + c, r * 5 + c + 1, r * 5 + c + 5] for r in range(4) for c in range(4)]
    tris += [[r * 5 + c + 1, r * 5 + c + 6, r * 5 + c + 5] for r in range(4) for c in range(4)]
    affine = torch.tensor([[1.05, 0.02], [-0.03, 0.97]])
    src = dst @ affine.T + torch.tensor([1.3, -0.7])
    coords = backward_map(src, dst, (64, 64), triangles=np.array(tris))
    centres = identity_coords(1, (64, 64))
    inside = ((centres >= 4.5) & (centres <= 52.5)).all(dim=-1)
    expected = centres @ affine.T + torch.tensor([1.3, -0.7])
    assert torch.allclose(coords[inside], expected[inside], atol=1e-3)
    assert torch.equal(coords[~inside], centres[~inside])  # outside the mesh nothing moves
    at_vertices = coords[0, dst[0, :, 1].long(), dst[0, :, 0].long()]
    assert torch.allclose(at_vertices, src[0], atol=1e-3)


def test_nearest_surface_wins_where_triangles_overlap() -> None:
    # Two triangles over the same pixels; the one closer to the camera (smaller z) decides.
    tri = torch.tensor([[4.0, 4.0], [28.0, 4.0], [4.0, 28.0]])
    dst = torch.cat([tri, tri])[None]
    src = torch.cat([tri + torch.tensor([2.0, 0.0]), tri + torch.tensor([0.0, 3.0])])[None]
    tris = np.array([[0, 1, 2], [3, 4, 5]])
    for near, shift in ((0, [2.0, 0.0]), (3, [0.0, 3.0])):
        depth = torch.full((1, 6, 1), 5.0)
        depth[0, near : near + 3] = 1.0
        coords = backward_map(
            torch.cat([src, depth], -1), torch.cat([dst, depth], -1), (32, 32), triangles=tris
        )
        assert torch.allclose(coords[0, 10, 10] - torch.tensor([10.5, 10.5]), torch.tensor(shift), atol=1e-4)


def test_batch_equals_one_by_one_and_is_deterministic(faces) -> None:
    images, landmarks = faces[0][[0, 2, 4]], faces[1][[0, 2, 4]]
    target = smooth_field(landmarks, 3.0, seed=3)
    batch = warp_images(images, landmarks, target)
    assert torch.equal(batch, warp_images(images, landmarks, target))
    for i in range(len(images)):
        single = warp_images(images[i : i + 1], landmarks[i : i + 1], target[i : i + 1])
        assert torch.equal(single, batch[i : i + 1])


def test_outside_the_anchor_ring_nothing_moves(faces) -> None:
    images, landmarks = faces
    target = smooth_field(landmarks, 4.0, seed=4)
    coords = backward_map(landmarks, target, (SIZE, SIZE))
    ring = anchor_ring(landmarks)[..., :2]
    centre = ring.mean(dim=1)
    radius = (ring - centre[:, None]).norm(dim=-1).amax(dim=1)
    centres = identity_coords(len(images), (SIZE, SIZE))
    far = (centres - centre[:, None, None]).norm(dim=-1) > radius[:, None, None] + 1
    assert far.any()
    assert torch.equal(coords[far], centres[far])
    assert moved_region(coords, dilation_px=0)[:, 0][far].sum() == 0
    assert moved_region(coords).sum() > 0


def test_warp_masks_and_2d_landmarks(faces) -> None:
    images, landmarks = faces
    target = smooth_field(landmarks, 3.0, seed=5)
    masks = (images[:, :1] > 0.5).float()
    warped = warp_masks(masks, landmarks[..., :2], target[..., :2])
    assert warped.shape == masks.shape and warped.min() >= 0 and warped.max() <= 1
    assert (warp_masks(masks, landmarks, landmarks) - masks).abs().max() < 1e-5
    coords = backward_map(landmarks, target, (SIZE, SIZE))
    assert torch.equal(
        warp_masks(masks, landmarks, target, coords=coords),
        apply_backward_map(masks, coords, padding_mode="zeros").clamp(0, 1),
    )


def test_landmarks_outside_the_frame_are_fine(faces) -> None:
    images, landmarks = faces
    shifted = landmarks.clone()
    shifted[..., 1] += 0.6 * SIZE  # push the chin far below the frame
    out = warp_images(images, landmarks, shifted)
    assert torch.isfinite(out).all() and out.shape == images.shape


def test_bad_inputs_raise_value_errors(faces) -> None:
    images, landmarks = faces
    with pytest.raises(ValueError, match="shape"):
        backward_map(landmarks, landmarks[:, :100], (SIZE, SIZE))
    with pytest.raises(ValueError, match="P=100"):
        backward_map(landmarks[:, :100], landmarks[:, :100], (SIZE, SIZE))
    with pytest.raises(ValueError, match="ring_scale=0.9"):
        backward_map(landmarks, landmarks, (SIZE, SIZE), ring_scale=0.9)
    with pytest.raises(ValueError, match="triangles"):
        backward_map(landmarks, landmarks, (SIZE, SIZE), triangles=np.array([[0, 1, 999]]))


def reference_backward_map(
    src: np.ndarray, dst: np.ndarray, triangles: np.ndarray, size: tuple[int, int]
) -> np.ndarray:
    """The backward map by its definition, one triangle at a time, in float64 (slow, obviously right).

    A pixel centre `(j + 0.5, i + 0.5)` is inside a triangle when its three barycentric coordinates
    are >= -1e-4 (pixels on shared edges are never left uncovered). Of the triangles it is inside,
    the nearest wins: the smallest `round(64 * depth)` (depth relative to the nearest landmark), ties
    to the lower triangle index. It samples its source at the pixel plus the barycentric mix of the
    corners' displacements; a pixel in no triangle samples itself.
    """
    height, width = size
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    coords = np.stack([xs, ys], axis=-1)
    out = coords.copy()
    best = np.full((height, width), np.inf)
    depth = dst[:, 2] - dst[:, 2].min() if dst.shape[1] == 3 else np.zeros(len(dst))
    for a, b, c in triangles:
        pa, pb, pc = dst[a, :2], dst[b, :2], dst[c, :2]
        det = (pb[0] - pa[0]) * (pc[1] - pa[1]) - (pb[1] - pa[1]) * (pc[0] - pa[0])
        rel = coords - pa
        l_b = (rel[..., 0] * (pc[1] - pa[1]) - rel[..., 1] * (pc[0] - pa[0])) / det
        l_c = (rel[..., 1] * (pb[0] - pa[0]) - rel[..., 0] * (pb[1] - pa[1])) / det
        l_a = 1.0 - l_b - l_c
        inside = (l_a >= -1e-4) & (l_b >= -1e-4) & (l_c >= -1e-4)
        key = np.round(64 * (l_a * depth[a] + l_b * depth[b] + l_c * depth[c]))
        wins = inside & (key < best)  # triangles in index order: a tie keeps the lower index
        best[wins] = key[wins]
        shift = sum(w[..., None] * (src[k, :2] - dst[k, :2]) for w, k in ((l_a, a), (l_b, b), (l_c, c)))
        out[wins] = coords[wins] + shift[wins]
    return out


def grid_mesh(rng, nx: int, ny: int, x_range, y_range, jitter: float) -> tuple[np.ndarray, np.ndarray]:
    """A jittered `nx` x `ny` grid of points and its triangles (two per cell): well-shaped triangles."""
    xs, ys = np.linspace(*x_range, nx), np.linspace(*y_range, ny)
    points = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2) + rng.uniform(
        -jitter, jitter, (nx * ny, 2)
    )
    cells = [(r * nx + c, r * nx + c + 1, (r + 1) * nx + c + 1) for r in range(ny - 1) for c in range(nx - 1)]
    return points, np.array([t for a, b, d in cells for t in ((a, b, a + nx), (b, d, a + nx))])


def compare_with_reference(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray, size) -> torch.Tensor:
    """Max |backward_map - reference| (float32 inputs for both); returns the reference map."""
    src, dst = src.astype(np.float32), dst.astype(np.float32)
    expected = torch.from_numpy(
        reference_backward_map(src.astype(np.float64), dst.astype(np.float64), triangles, size)
    )
    got = backward_map(torch.from_numpy(src[None]), torch.from_numpy(dst[None]), size, triangles=triangles)[0]
    assert (got.double() - expected).abs().max() < 1e-5
    return expected


def test_backward_map_equals_the_reference_rasterisation_with_overlaps_and_depths() -> None:
    rng = np.random.default_rng(0)
    size = (40, 56)
    # Sheet A runs past the top and left edges of the frame; sheet B overlaps it in front (its depth
    # grows faster, so the two surfaces cross near its right edge); two triangles share an edge
    # through pixel centres, behind both.
    points_a, tris_a = grid_mesh(rng, 6, 5, (-4, 46), (-4, 34), 2.0)
    points_b, tris_b = grid_mesh(rng, 4, 4, (14, 46), (6, 34), 1.5)
    square = np.array([[8.5, 6.5], [30.5, 6.5], [8.5, 30.5], [30.5, 30.5]])
    dst = np.concatenate(
        [
            np.c_[points_a, 3 + 0.04 * points_a[:, 0]],
            np.c_[points_b, 1 + 0.08 * points_b[:, 0]],
            np.c_[square, [9] * 4],
        ]
    )
    tris = np.concatenate(
        [tris_a, tris_b + len(points_a), np.array([[0, 1, 2], [1, 3, 2]]) + len(points_a) + 16]
    )
    x, y = dst[:, 0] / 56, dst[:, 1] / 40
    src = dst + np.c_[3 * np.sin(3 * y + 1), 3 * np.cos(2 * x), np.zeros(len(dst))]
    src[len(points_a) : len(points_a) + 16, :2] += [4.0, -3.0]  # sheet B moves its own way
    expected = compare_with_reference(src, dst, tris, size)
    moved = (expected - identity_coords(1, size)[0].double()).abs().amax(dim=-1) > 0
    assert 0.5 < moved.float().mean() < 0.9  # outside the mesh nothing moves
    # Without depth, sheet A (lower triangle indices) would win the overlap instead of sheet B.
    flat = np.c_[dst[:, :2], np.zeros(len(dst))]
    flat_map = torch.from_numpy(
        reference_backward_map(src.astype(np.float32), flat.astype(np.float32), tris, size)
    )
    assert (flat_map - expected).abs().max() > 1.0


def test_large_displacements_and_folds_equal_the_reference_rasterisation() -> None:
    rng = np.random.default_rng(1)
    size = (64, 64)
    points, tris = grid_mesh(rng, 7, 7, (2, 62), (2, 62), 1.5)
    depth = -10 * np.exp(-((np.linalg.norm(points - 32, axis=1) / 20) ** 2))  # a bump towards the camera
    points[24] += [13.0, 6.0]  # push two interior vertices past their neighbours: the target folds
    points[17] += [-9.0, 11.0]
    dst = np.c_[points, depth]
    x, y = dst[:, 0] / 64, dst[:, 1] / 64
    src = (
        dst
        + np.c_[6 * np.sin(4 * y + 0.3) * np.cos(3 * x), 6 * np.cos(4 * x) * np.sin(3 * y + 1), np.zeros(49)]
    )
    expected = compare_with_reference(src, dst, tris, size)
    # The identity map (no warp) would miss by pixels, not by 1e-5.
    assert (expected - identity_coords(1, size)[0].double()).abs().max() > 5.0


def test_face_mesh_with_anchor_ring_equals_the_reference_rasterisation(faces) -> None:
    from editors.warp import _mesh

    _, landmarks = faces
    src = landmarks[1:2].clone()  # Grace Hopper
    src[..., :3] *= 64 / SIZE  # on a 64 px frame
    dst = smooth_field(src, 4.0, seed=8)
    src_all, dst_all, tris = _mesh(src.float(), dst.float(), None, DEFAULT_RING_SCALE)
    expected = compare_with_reference(src_all[0].numpy(), dst_all[0].numpy(), tris.numpy(), (64, 64))
    assert (expected - identity_coords(1, (64, 64))[0].double()).abs().max() > 3.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(faces) -> None:
    images, landmarks = faces
    target = symmetric_target(landmarks, 1.0)
    cpu = warp_images(images, landmarks, target)
    gpu = warp_images(images.cuda(), landmarks.cuda(), target.cuda())
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max() < 1e-3


@pytest.mark.parametrize("ry, rx", [(0, 0), (1, 3), (5, 5), (20, 7), (33, 64)])
def test_max_filter_equals_max_pool(ry, rx):
    from editors.filters import max_filter

    gen = torch.Generator().manual_seed(ry * 100 + rx)
    x = (torch.rand(2, 3, 50, 70, generator=gen) > 0.97).float() * torch.rand(2, 3, 50, 70, generator=gen)
    want = (
        torch.nn.functional.max_pool2d(x, (2 * ry + 1, 2 * rx + 1), stride=1, padding=(ry, rx))
        if max(ry, rx) <= min(x.shape[-2:]) // 2
        else None
    )
    got = max_filter(x, ry, rx)
    assert got.shape == x.shape
    if want is not None:
        assert torch.equal(got, want)
    else:  # max_pool2d refuses padding beyond half the kernel: check one pixel by hand
        assert got[0, 0, 10, 10] == x[0, 0, max(0, 10 - ry) : 11 + ry, max(0, 10 - rx) : 11 + rx].max()


@pytest.mark.parametrize("radius", [1, 4, 25])
@pytest.mark.parametrize("count_padding", [True, False])
def test_box_mean_equals_avg_pool(radius, count_padding):
    from editors.filters import box_mean_1d

    x = torch.rand(2, 3, 60, 80, generator=torch.Generator().manual_seed(radius))
    for dim, kernel, pad in ((-1, (1, 2 * radius + 1), (0, radius)), (-2, (2 * radius + 1, 1), (radius, 0))):
        want = torch.nn.functional.avg_pool2d(
            x, kernel, stride=1, padding=pad, count_include_pad=count_padding
        )
        torch.testing.assert_close(box_mean_1d(x, radius, dim, count_padding), want, atol=1e-6, rtol=0)
