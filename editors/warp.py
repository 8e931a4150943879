"""Batched piecewise-affine mesh warp in torch: move image content from source to target landmarks.

The warp is a backward map: for every target pixel, the source position it samples from. It is built
on the images' device by rasterising the TARGET triangulation (`editors.raster`: per triangle and
pixel row, the run of pixel centres whose barycentric coordinates are all >= -1e-4, so that pixels on
shared edges are never left uncovered), and applied with `torch.nn.functional.grid_sample`. Where
target triangles overlap, because the 2-D projection of the 3-D face folds at the cheeks and nose
wings, the nearest triangle wins (a z-buffer on landmark depth), so the visible surface is the one
that moves. Each pixel then evaluates its triangle's affine shift plane once: the source position is
the pixel centre plus `p0 x + p1 y + p2`, in float32, rounding for rounding as the block rasteriser
this replaces (so maps are bit for bit the same). `warp_images` builds the map a few images at a
time and samples each part while it is still in cache.

With the default face-mesh topology, a ring of fixed anchor points around the face oval closes the
mesh: between the oval and the ring the displacement fades to zero, and outside the ring the image
stays put. Coordinates follow `engine.faces.mesh`: pixel `(i, j)` has its centre at `(j + 0.5, i + 0.5)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from editors.filters import max_filter
from editors.raster import Planes, owner_chunks, scratch, tested_extent
from engine.faces.mesh import NUM_LANDMARKS, face_triangles, landmark_group

#: Default size of the anchor ring, as a multiple of the face oval's distance from its centroid.
DEFAULT_RING_SCALE = 1.35
# Sizes of the work units (whole images / whole rows); they bound memory and never change results.
#: Pixels painted at once by the rasteriser.
PIXELS_PER_CHUNK = 1 << 20
#: Pixels mapped and sampled (`grid_sample`) at once by `warp_images`.
PIXELS_PER_STEP = 1 << 19
#: Pixels whose shift planes are gathered and evaluated at once.
PIXELS_PER_BLOCK = 1 << 18


@lru_cache(maxsize=1)
def _ring_topology() -> tuple[np.ndarray, np.ndarray]:
    """Oval loop indices and the triangles of the face mesh plus the band out to the anchor ring."""
    oval = np.asarray(landmark_group("face_oval"), dtype=np.int64)
    ring = NUM_LANDMARKS + np.arange(len(oval))
    nxt = np.roll(np.arange(len(oval)), -1)
    band = np.concatenate(
        [np.stack([oval, oval[nxt], ring], axis=1), np.stack([oval[nxt], ring[nxt], ring], axis=1)]
    )
    return oval, np.concatenate([face_triangles(), band])


def anchor_ring(landmarks: torch.Tensor, ring_scale: float = DEFAULT_RING_SCALE) -> torch.Tensor:
    """Anchor points `(N, 36, D)`: the face oval scaled by `ring_scale` about its centroid.

    Depth (if any) is copied from the oval so the band sits behind the face in the z-buffer.
    """
    oval, _ = _ring_topology()
    points = landmarks[:, torch.as_tensor(oval, device=landmarks.device)]
    centre = points[..., :2].mean(dim=1, keepdim=True)
    ring_xy = centre + (points[..., :2] - centre) * ring_scale
    return torch.cat([ring_xy, points[..., 2:]], dim=-1)


def _check_landmarks(src: torch.Tensor, dst: torch.Tensor) -> None:
    if src.shape != dst.shape or src.ndim != 3 or src.shape[-1] not in (2, 3):
        raise ValueError(
            f"src_landmarks shape={tuple(src.shape)} and dst_landmarks shape={tuple(dst.shape)} "
            "must be equal and (N, P, 2|3)"
        )


def _mesh(
    src: torch.Tensor, dst: torch.Tensor, triangles: torch.Tensor | np.ndarray | None, ring_scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source points, target points and triangles, with the anchor ring added for the face mesh."""
    _check_landmarks(src, dst)
    if triangles is not None:
        if isinstance(triangles, torch.Tensor):
            tris = triangles.to(src.device, torch.long)
        else:
            tris = torch.tensor(np.asarray(triangles), dtype=torch.long, device=src.device)
        if tris.ndim != 2 or tris.shape[1] != 3 or int(tris.max()) >= src.shape[1] or int(tris.min()) < 0:
            raise ValueError(f"triangles shape={tuple(tris.shape)} must be (T, 3) indices < {src.shape[1]}")
        return src, dst, tris
    if src.shape[1] != NUM_LANDMARKS:
        raise ValueError(f"landmarks have P={src.shape[1]} points; the face mesh needs {NUM_LANDMARKS}")
    if ring_scale <= 1.0:
        raise ValueError(f"ring_scale={ring_scale} must be > 1 so the anchor ring surrounds the face")
    ring = anchor_ring(src, ring_scale)
    _, tris = _ring_topology()
    # The same anchors on both sides: the band's outer edge and everything beyond it do not move.
    ring_dst = torch.cat([ring[..., :2], anchor_ring(dst, ring_scale)[..., 2:]], dim=-1)
    return (
        torch.cat([src, ring], dim=1),
        torch.cat([dst, ring_dst], dim=1),
        torch.as_tensor(tris, dtype=torch.long, device=src.device),
    )


def _triangle_planes(
    src: torch.Tensor, dst: torch.Tensor, tris: torch.Tensor, height: int, width: int
) -> tuple[Planes, torch.Tensor]:
    """Per (image, triangle) planes, flattened to `N * T` rows, and the shift planes `(N * T, 3, 2)`.

    Barycentric and depth planes are in a local frame per triangle: `(u, v)` = pixel offset from the
    first column/row of its bounding box, so plane constants stay small and float32 keeps the inside
    test tight. Shift planes (source minus target, `x` and `y`, as `p0*x + p1*y + p2`) are in image
    pixel coordinates.
    """
    # Vertex coordinates as (N, T) tensors: x, y (and z) of corners a, b, c. Each operation below is
    # one rounding, in the order of the reference formulas given in the comments.
    dst_c, src_c = dst.permute(2, 0, 1), src.permute(2, 0, 1)  # (D, N, P)
    (ax, ay), (bx, by), (cx, cy) = ((dst_c[0][:, k], dst_c[1][:, k]) for k in tris.t())
    # Candidate pixels: centres j + 0.5 within the bounding box, clipped to the frame.
    col0 = torch.ceil(torch.minimum(torch.minimum(ax, bx), cx) - 0.5).clamp(0, width).long()
    col1 = torch.floor(torch.maximum(torch.maximum(ax, bx), cx) - 0.5).clamp(-1, width - 1).long()
    row0 = torch.ceil(torch.minimum(torch.minimum(ay, by), cy) - 0.5).clamp(0, height).long()
    row1 = torch.floor(torch.maximum(torch.maximum(ay, by), cy) - 0.5).clamp(-1, height - 1).long()

    ox, oy = col0.to(dst.dtype) + 0.5, row0.to(dst.dtype) + 0.5
    lax, lay, lbx, lby, lcx, lcy = ax - ox, ay - oy, bx - ox, by - oy, cx - ox, cy - oy  # local frame
    v0x, v0y, v1x, v1y = lbx - lax, lby - lay, lcx - lax, lcy - lay  # v0 = b - a, v1 = c - a
    det = v0x * v1y - v0y * v1x
    ok = det.abs() > 1e-6
    inv = torch.where(ok, 1.0 / torch.where(ok, det, torch.ones_like(det)), torch.zeros_like(det))
    # plane_b = (v1y, -v1x, ay v1x - ax v1y) / det, plane_c = (-v0y, v0x, ax v0y - ay v0x) / det,
    # plane_a = -plane_b - plane_c + (0, 0, 1): barycentric coordinates as p0*u + p1*v + p2.
    plane_b = (v1y * inv, -v1x * inv, (lay * v1x - lax * v1y) * inv)
    plane_c = (-v0y * inv, v0x * inv, (lax * v0y - lay * v0x) * inv)
    plane_a = tuple(-pb - pc for pb, pc in zip(plane_b, plane_c))
    plane_a = (plane_a[0], plane_a[1], plane_a[2] + 1.0)
    bary = (plane_a, plane_b, plane_c)
    if dst.shape[-1] == 3:
        depth = dst_c[2] - dst_c[2].amin(dim=1, keepdim=True)
        depth = tuple(depth[:, k] for k in tris.t())
    else:
        depth = (torch.zeros_like(ax),) * 3
    # The depth plane: sum over corners (in order) of depth * barycentric plane.
    depth_plane = tuple(
        depth[0] * bary[0][k] + depth[1] * bary[1][k] + depth[2] * bary[2][k] for k in range(3)
    )
    # Interpolate the displacement, not the position, so zero displacement is exactly the identity.
    shift = [[src_c[i][:, tris[:, v]] - dst_c[i][:, tris[:, v]] for i in range(2)] for v in range(3)]
    shift_local = [
        [shift[0][i] * bary[0][k] + shift[1][i] * bary[1][k] + shift[2][i] * bary[2][k] for k in range(3)]
        for i in range(2)
    ]
    # In image coordinates: the constant term moves by the origin (x then y).
    shift_global = [(sl[0], sl[1], sl[2] - (sl[0] * ox + sl[1] * oy)) for sl in shift_local]
    planes = Planes(
        bary_depth=torch.stack([*plane_a, *plane_b, *plane_c, *depth_plane], dim=-1).view(-1, 4, 3),
        col0=col0.reshape(-1),
        row0=row0.reshape(-1),
        box_w=(col1 - col0 + 1).clamp(min=0).reshape(-1),
        box_h=torch.where(ok, (row1 - row0 + 1).clamp(min=0), torch.zeros_like(row0)).reshape(-1),
    )
    shift_rows = [shift_global[i][k] for k in range(3) for i in range(2)]  # (p0x, p0y, p1x, ...)
    return planes, torch.stack(shift_rows, dim=-1).view(-1, 3, 2)


def _map_chunks(
    src_landmarks: torch.Tensor,
    dst_landmarks: torch.Tensor,
    size: tuple[int, int],
    triangles: torch.Tensor | np.ndarray | None,
    ring_scale: float,
    out: torch.Tensor | None = None,
    grid: bool = False,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """The backward map by chunks of whole images: `(first, stop, coords (stop - first, H, W, 2))`.

    `coords` is `out[first:stop]` when `out` is given, else a buffer that the next chunk reuses.
    With `grid`, the coordinates come as `grid_sample` coordinates (`_to_grid`), block by block.
    """
    src, dst, tris = _mesh(src_landmarks.float(), dst_landmarks.float(), triangles, ring_scale)
    height, width = size
    n_img, n_tri, device = src.shape[0], tris.shape[0], src.device
    planes, shift = _triangle_planes(src, dst, tris, height, width)
    centres = identity_coords(1, (height, width), device)
    xs = centres[:, :1, :, :1].expand(1, 1, width, 2).contiguous()  # x in both channels, per column
    ys = centres[:, :, :1, 1:]  # y, per row
    per_chunk = max(1, min(n_img, PIXELS_PER_CHUNK // max(1, height * width)))
    step = max(1, min(per_chunk, PIXELS_PER_STEP // max(1, height * width)))
    rows = max(1, min(height, PIXELS_PER_BLOCK // max(1, step * width)))
    gathered = scratch("plane", step * rows * width, torch.float64, device)  # one shift plane
    buffer = None if out is not None else scratch("coords", step * height * width * 2, torch.float32, device)
    # Per image, the rectangle its triangles may cover: elsewhere the map is the pixel centre.
    span_w, span_h = tested_extent(planes, height, width)
    live = (span_h > 0).view(n_img, n_tri)
    big = max(height, width)
    boxes = torch.stack(
        [
            torch.where(live, planes.row0.view(n_img, n_tri), big).amin(dim=1),
            torch.where(live, (planes.row0 + span_h).view(n_img, n_tri), 0).amax(dim=1),
            torch.where(live, planes.col0.view(n_img, n_tri), big).amin(dim=1),
            torch.where(live, (planes.col0 + span_w).view(n_img, n_tri), 0).amax(dim=1),
        ],
        dim=1,
    ).tolist()
    scale = _grid_scale(centres, size)
    outside = _to_grid(centres[0], size, scale=scale) if grid else centres[0]  # pixels no triangle covers
    for chunk in owner_chunks(planes, n_img, n_tri, height, width, per_chunk):
        n = chunk.stop - chunk.first
        # Shift planes as (x, y) pairs, each pair one float64; rows below `offset`: no triangle.
        table = shift.new_zeros(3, chunk.offset + n * n_tri, 2)
        table[:, chunk.offset :] = shift[chunk.first * n_tri : chunk.stop * n_tri].transpose(0, 1)
        table = table.view(torch.float64).view(3, -1)
        index = chunk.index.view(n, height, width + 1)
        for first in range(chunk.first, chunk.stop, step):  # a few images at a time
            stop = min(chunk.stop, first + step)
            coords = out[first:stop] if out is not None else buffer[: (stop - first) * height * width * 2]
            coords = coords.view(stop - first, height, width, 2)
            # The rectangle the images' triangles may cover, in blocks of rows that stay in cache.
            row0, row1, col0, col1 = (
                f(box[k] for box in boxes[first:stop]) for k, f in zip(range(4), (min, max, min, max))
            )
            _fill_outside(coords, outside, row0, row1, col0, col1)
            local = slice(first - chunk.first, stop - chunk.first)
            for row in range(row0, row1, rows):
                end = min(row1, row + rows)
                pixels = index[local, row:end, col0:col1].reshape(-1)
                # The reference arithmetic: centre + ((p0 * x + p1 * y) + p2), one rounding each; each
                # plane is gathered (as (x, y) pairs, one float64 each) right before it is used.
                block = coords[:, row:end, col0:col1]
                plane = gathered[: pixels.numel()]
                p = plane.view(torch.float32).view(stop - first, end - row, -1, 2)
                torch.index_select(table[0], 0, pixels, out=plane)
                torch.mul(p, xs[:, :, col0:col1], out=block)
                torch.index_select(table[1], 0, pixels, out=plane)
                block.add_(p.mul_(ys[:, row:end]))
                torch.index_select(table[2], 0, pixels, out=plane)
                block.add_(p).add_(centres[:, row:end, col0:col1])
                if grid:
                    _to_grid(block, size, out=block, scale=scale[col0:col1])
            yield first, stop, coords


def _fill_outside(
    coords: torch.Tensor, value: torch.Tensor, row0: int, row1: int, col0: int, col1: int
) -> None:
    """`coords (n, H, W, 2)` = `value (H, W, 2)` outside rows `row0:row1` x columns `col0:col1`."""
    if row1 <= row0 or col1 <= col0:
        coords.copy_(value.expand_as(coords))
        return
    for rows, cols in ((slice(0, row0), slice(None)), (slice(row1, None), slice(None))):
        if value[rows].numel():
            coords[:, rows, cols] = value[rows, cols]
    for cols in (slice(0, col0), slice(col1, None)):
        if value[row0:row1, cols].numel():
            coords[:, row0:row1, cols] = value[row0:row1, cols]


def _to_grid(
    coords: torch.Tensor,
    size: tuple[int, int],
    out: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """`coords * (2 / W, 2 / H) - 1`: pixel positions as `grid_sample` coordinates (float32 arithmetic).

    `scale`: `_grid_scale(coords, size)` if already at hand.
    """
    height, width = size
    scale = _grid_scale(coords, size) if scale is None else scale
    if height & (height - 1) == 0 and width & (width - 1) == 0:
        # Scales are powers of two, so the product is exact and one fused operation rounds the same.
        return torch.addcmul(scale.new_full((), -1.0), coords, scale, out=out)
    return torch.mul(coords, scale, out=out).sub_(1.0)


def _grid_scale(coords: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`(2 / W, 2 / H)` repeated along a row of `coords`, so that products stream over whole rows."""
    height, width = size
    scale = torch.tensor([2.0 / width, 2.0 / height], device=coords.device, dtype=coords.dtype)
    return scale.expand(coords.shape[-2], 2).contiguous()


def backward_map(
    src_landmarks: torch.Tensor,
    dst_landmarks: torch.Tensor,
    size: tuple[int, int],
    *,
    triangles: torch.Tensor | np.ndarray | None = None,
    ring_scale: float = DEFAULT_RING_SCALE,
) -> torch.Tensor:
    """Backward map of the piecewise-affine warp taking `src_landmarks` onto `dst_landmarks`.

    Args:
        src_landmarks: `(N, P, 2|3)` pixel positions in the input image (z, if given, is depth).
        dst_landmarks: `(N, P, 2|3)` where those points should end up.
        size: output `(H, W)`.
        triangles: `(T, 3)` indices into the P points; None uses the 478-point face mesh closed by an
            anchor ring (then P must be 478). Custom triangulations bring their own fixed anchors.
        ring_scale: anchor ring size relative to the face oval (face mesh only).

    Returns:
        `(N, H, W, 2)` float32 source pixel coordinates `(x, y)` for every output pixel; pixels outside
        the mesh map to themselves, and zero displacement gives exactly the pixel centres.
    """
    height, width = size
    out = torch.empty(src_landmarks.shape[0], height, width, 2, device=src_landmarks.device)
    for _ in _map_chunks(src_landmarks, dst_landmarks, size, triangles, ring_scale, out=out):
        pass
    return out


def apply_backward_map(
    images: torch.Tensor, coords: torch.Tensor, *, mode: str = "bilinear", padding_mode: str = "border"
) -> torch.Tensor:
    """Sample `images (N, C, H, W)` at `coords (N, H', W', 2)` pixel positions with `grid_sample`."""
    if images.ndim != 4 or coords.ndim != 4 or coords.shape[0] != images.shape[0] or coords.shape[-1] != 2:
        raise ValueError(f"images shape={tuple(images.shape)} / coords shape={tuple(coords.shape)} mismatch")
    grid = _to_grid(coords, tuple(images.shape[-2:])).to(images.dtype)
    return F.grid_sample(images, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def warp_images(
    images: torch.Tensor,
    src_landmarks: torch.Tensor,
    dst_landmarks: torch.Tensor,
    *,
    triangles: torch.Tensor | np.ndarray | None = None,
    ring_scale: float = DEFAULT_RING_SCALE,
    mode: str = "bilinear",
    padding_mode: str = "border",
) -> torch.Tensor:
    """Warp `images (N, C, H, W)` so the content at `src_landmarks` moves to `dst_landmarks`.

    See `backward_map` for the arguments; `mode` and `padding_mode` go to `grid_sample`.
    """
    if images.ndim != 4 or src_landmarks.shape[0] != images.shape[0]:
        raise ValueError(
            f"images shape={tuple(images.shape)} must be (N, C, H, W) with N = {src_landmarks.shape[0]} faces"
        )
    size = tuple(images.shape[-2:])
    src_landmarks, dst_landmarks = src_landmarks.to(images.device), dst_landmarks.to(images.device)
    # The arithmetic of `apply_backward_map(images, backward_map(...))`, chunk by chunk.
    chunks = _map_chunks(src_landmarks, dst_landmarks, size, triangles, ring_scale, grid=True)
    out = None
    for first, stop, grid in chunks:
        warped = F.grid_sample(
            images[first:stop],
            grid.to(images.dtype),
            mode=mode,
            padding_mode=padding_mode,
            align_corners=False,
        )
        if out is None:
            out = warped.new_empty((images.shape[0], *warped.shape[1:]))
        out[first:stop] = warped
    return out if out is not None else images.new_empty(images.shape)


def warp_masks(
    masks: torch.Tensor,
    src_landmarks: torch.Tensor,
    dst_landmarks: torch.Tensor,
    *,
    coords: torch.Tensor | None = None,
    **mesh_kwargs,
) -> torch.Tensor:
    """Warp `(N, 1, H, W)` masks like `warp_images` (zero outside the frame), clamped to [0, 1].

    Pass `coords` from `backward_map` to reuse a map already built for the images.
    """
    if coords is None:
        coords = backward_map(src_landmarks, dst_landmarks, tuple(masks.shape[-2:]), **mesh_kwargs)
    return apply_backward_map(masks, coords, padding_mode="zeros").clamp(0.0, 1.0)


def identity_coords(n_images: int, size: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """`(N, H, W, 2)` pixel centres: the backward map of no warp."""
    height, width = size
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32) + 0.5,
        torch.arange(width, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    return torch.stack([xs, ys], dim=-1).expand(n_images, height, width, 2).clone()


def moved_region(coords: torch.Tensor, *, threshold_px: float = 0.0, dilation_px: int = 2) -> torch.Tensor:
    """`(N, 1, H, W)` mask of pixels the map moves by more than `threshold_px`, dilated by `dilation_px`.

    The default counts any movement: even a tiny shift changes a pixel on a sharp edge.
    """
    shift = (coords - identity_coords(coords.shape[0], tuple(coords.shape[1:3]), coords.device)).norm(dim=-1)
    mask = (shift > threshold_px).float().unsqueeze(1)
    if dilation_px > 0:
        mask = max_filter(mask, dilation_px, dilation_px)
    return mask


def sample_coords(coords: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Evaluate a backward map at `points (N, P, 2)` pixel positions (bilinear): where they sample from."""
    maps = coords.permute(0, 3, 1, 2)
    return apply_backward_map(maps, points[:, None, :, :2].to(coords.dtype)).squeeze(2).permute(0, 2, 1)
