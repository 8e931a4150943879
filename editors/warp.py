"""Batched piecewise-affine mesh warp in torch: move image content from source to target landmarks.

The warp is a backward map: for every target pixel, the source position it samples from. It is built
on the images' device by rasterising the TARGET triangulation (every triangle enumerates the pixel
centres in its bounding box; barycentric coordinates decide who owns a pixel), and applied with
`torch.nn.functional.grid_sample`. Where target triangles overlap, because the 2-D projection of the
3-D face folds at the cheeks and nose wings, the nearest triangle wins (a z-buffer on landmark depth),
so the visible surface is the one that moves.

With the default face-mesh topology, a ring of fixed anchor points around the face oval closes the
mesh: between the oval and the ring the displacement fades to zero, and outside the ring the image
stays put. Coordinates follow `editors.mesh`: pixel `(i, j)` has its centre at `(j + 0.5, i + 0.5)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from editors.filters import max_filter
from editors.mesh import NUM_LANDMARKS, face_triangles, landmark_group

#: Default size of the anchor ring, as a multiple of the face oval's distance from its centroid.
DEFAULT_RING_SCALE = 1.35
#: Most pixel blocks rasterised at once; bounds memory, never changes results.
BLOCKS_PER_CHUNK = 100_000
_BLOCK = 4  # side of the pixel blocks a triangle's bounding box is cut into
_BARYCENTRIC_SLACK = 1e-4  # tolerance so pixels on shared edges are never left uncovered
_DEPTH_STEPS_PER_PIXEL = 64.0
_TRIANGLE_BITS = 16


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


@dataclass
class _TrianglePlanes:
    """Per (image, triangle) tables, flattened to `N * T` rows.

    Barycentric and depth planes are in a local frame per triangle: `(u, v)` = pixel offset from the
    first column/row of its bounding box, so plane constants stay small and float32 keeps the inside
    test tight. Shift planes are in image pixel coordinates. A last all-zero row stands for "no
    triangle", so lookups never need masking.
    """

    bary_depth: torch.Tensor  # (N*T, 4, 3): l_a, l_b, l_c, depth as p0*u + p1*v + p2
    shift: torch.Tensor  # (N*T + 1, 2, 3): source minus target, as p0*x + p1*y + p2
    origin: torch.Tensor  # (N*T,) long: flat index of the bounding box's first pixel in a padded frame
    box_w: torch.Tensor  # (N*T,) long
    box_h: torch.Tensor  # (N*T,) long (0 when degenerate or off-frame)


def _triangle_planes(
    src: torch.Tensor, dst: torch.Tensor, tris: torch.Tensor, height: int, width: int
) -> _TrianglePlanes:
    corners = dst[:, tris, :2]  # (N, T, 3, 2)
    n_img, n_tri = corners.shape[:2]
    lo, hi = corners.amin(dim=2), corners.amax(dim=2)
    # Candidate pixels: centres j + 0.5 within the bounding box, clipped to the frame.
    col0 = torch.ceil(lo[..., 0] - 0.5).clamp(0, width).long()
    col1 = torch.floor(hi[..., 0] - 0.5).clamp(-1, width - 1).long()
    row0 = torch.ceil(lo[..., 1] - 0.5).clamp(0, height).long()
    row1 = torch.floor(hi[..., 1] - 0.5).clamp(-1, height - 1).long()

    origin = torch.stack([col0, row0], dim=-1).to(corners.dtype) + 0.5
    a, b, c = (corners - origin[:, :, None, :]).unbind(dim=2)
    v0, v1 = b - a, c - a
    det = v0[..., 0] * v1[..., 1] - v0[..., 1] * v1[..., 0]
    ok = det.abs() > 1e-6
    inv = torch.where(ok, 1.0 / torch.where(ok, det, torch.ones_like(det)), torch.zeros_like(det))
    plane_b = torch.stack([v1[..., 1], -v1[..., 0], a[..., 1] * v1[..., 0] - a[..., 0] * v1[..., 1]], -1)
    plane_c = torch.stack([-v0[..., 1], v0[..., 0], a[..., 0] * v0[..., 1] - a[..., 1] * v0[..., 0]], -1)
    plane_b, plane_c = plane_b * inv[..., None], plane_c * inv[..., None]
    plane_a = -plane_b - plane_c
    plane_a[..., 2] += 1.0
    bary = torch.stack([plane_a, plane_b, plane_c], dim=-2)  # (N, T, 3, 3)
    depth = dst[..., 2] if dst.shape[-1] == 3 else torch.zeros_like(dst[..., 0])
    depth = depth - depth.amin(dim=1, keepdim=True)
    depth_plane = (depth[:, tris, None] * bary).sum(dim=2, keepdim=True)  # (N, T, 1, 3)
    # Interpolate the displacement, not the position, so zero displacement is exactly the identity.
    shift = src[:, tris, :2] - corners  # (N, T, 3, 2)
    shift_local = (shift.unsqueeze(-1) * bary.unsqueeze(-2)).sum(dim=2)  # (N, T, 2, 3)
    shift_global = torch.cat(
        [
            shift_local[..., :2],
            shift_local[..., 2:] - (shift_local[..., :2] * origin[:, :, None, :]).sum(-1, True),
        ],
        dim=-1,
    )
    shift_global = torch.cat([shift_global.reshape(-1, 2, 3), shift_global.new_zeros(1, 2, 3)])
    padded_width = width + _BLOCK
    image_start = torch.arange(n_img, device=dst.device)[:, None] * (height + _BLOCK) * padded_width
    return _TrianglePlanes(
        bary_depth=torch.cat([bary, depth_plane], dim=2).reshape(-1, 4, 3),
        shift=shift_global,
        origin=(image_start + row0 * padded_width + col0).reshape(-1),
        box_w=(col1 - col0 + 1).clamp(min=0).reshape(-1),
        box_h=torch.where(ok, (row1 - row0 + 1).clamp(min=0), torch.zeros_like(row0)).reshape(-1),
    )


def _rasterise(tables: _TrianglePlanes, n_img: int, height: int, width: int) -> torch.Tensor:
    """Row `image * T + triangle` of the target triangle owning each pixel centre, `(N*H*W,)`; -1 if none.

    Each triangle's bounding box is cut into `_BLOCK` x `_BLOCK` pixel blocks; a block gathers its
    triangle's planes once and tests its pixels with one small GEMM. Pixels are addressed in a frame
    padded by `_BLOCK` on the right and bottom, so blocks running past the bounding box need no checks.
    Overlaps (folds of the projected 3-D mesh) go to the nearest surface, ties to the lower index.
    """
    n_rows = tables.box_w.numel()
    n_tri = n_rows // n_img
    if n_tri >= 2**_TRIANGLE_BITS:
        raise ValueError(f"too many triangles: {n_tri} >= {2**_TRIANGLE_BITS}")
    device = tables.bary_depth.device
    padded_height, padded_width = height + _BLOCK, width + _BLOCK
    empty = torch.iinfo(torch.long).max
    owner_key = torch.full((n_img * padded_height * padded_width,), empty, device=device)
    blocks_x = torch.div(tables.box_w + _BLOCK - 1, _BLOCK, rounding_mode="floor")
    blocks = blocks_x * torch.div(tables.box_h + _BLOCK - 1, _BLOCK, rounding_mode="floor")
    block_offsets = torch.cumsum(blocks, 0) - blocks
    per_image = blocks.view(n_img, n_tri).sum(dim=1).tolist()
    step = torch.arange(_BLOCK * _BLOCK, device=device)
    step_u, step_v = step % _BLOCK, torch.div(step, _BLOCK, rounding_mode="floor")
    offsets_uv = torch.stack([step_u, step_v]).float()  # (2, B*B)
    pixel_step = step_v * padded_width + step_u
    triangle_of_row = torch.arange(n_rows, device=device) % n_tri
    start = 0
    while start < n_img:  # chunks of whole images, so results do not depend on the batch
        stop, total = start + 1, per_image[start]
        while stop < n_img and total + per_image[stop] <= BLOCKS_PER_CHUNK:
            total += per_image[stop]
            stop += 1
        rows = torch.arange(start * n_tri, stop * n_tri, device=device)
        item = torch.repeat_interleave(rows, blocks[rows], output_size=total)
        local = torch.arange(total, device=device) - (block_offsets[item] - block_offsets[rows[0]])
        per_row = blocks_x.index_select(0, item)
        block_v = torch.div(local, per_row, rounding_mode="floor")
        block_u = local - block_v * per_row
        u0, v0 = (block_u * _BLOCK).float(), (block_v * _BLOCK).float()
        p = tables.bary_depth.index_select(0, item)  # (K, 4, 3)
        corner = p[..., 0] * u0[:, None] + p[..., 1] * v0[:, None] + p[..., 2]  # (K, 4) at the block corner
        values = torch.addmm(corner.reshape(-1, 1), p[..., :2].reshape(-1, 2), offsets_uv).view(
            -1, 4, _BLOCK**2
        )
        inside = (values[:, 0] >= -_BARYCENTRIC_SLACK) & (values[:, 1] >= -_BARYCENTRIC_SLACK)
        inside &= values[:, 2] >= -_BARYCENTRIC_SLACK
        depth_q = torch.round(values[:, 3] * _DEPTH_STEPS_PER_PIXEL).clamp_(0, 2**40).long()
        key = (depth_q << _TRIANGLE_BITS) + triangle_of_row.index_select(0, item)[:, None]
        key = torch.where(inside, key, torch.full_like(key, empty))
        corner_pixel = (
            tables.origin.index_select(0, item) + block_v * (_BLOCK * padded_width) + block_u * _BLOCK
        )
        owner_key.scatter_reduce_(
            0, (corner_pixel[:, None] + pixel_step).view(-1), key.view(-1), reduce="amin"
        )
        start = stop
    owner_key = owner_key.view(n_img, padded_height, padded_width)[:, :height, :width]
    triangle = owner_key & (2**_TRIANGLE_BITS - 1)
    row = triangle + torch.arange(n_img, device=device)[:, None, None] * n_tri
    return torch.where(owner_key == empty, torch.full_like(row, n_rows), row).reshape(-1)


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
    src, dst, tris = _mesh(src_landmarks.float(), dst_landmarks.float(), triangles, ring_scale)
    height, width = size
    n_img = src.shape[0]
    tables = _triangle_planes(src, dst, tris, height, width)
    owner = _rasterise(tables, n_img, height, width)  # "no triangle" is the zero-shift row
    coords = identity_coords(n_img, (height, width), src.device).view(-1, 2)
    p = tables.shift.index_select(0, owner)  # (N*H*W, 2, 3)
    shift = p[..., 0] * coords[:, :1] + p[..., 1] * coords[:, 1:] + p[..., 2]
    return (coords + shift).view(n_img, height, width, 2)


def apply_backward_map(
    images: torch.Tensor, coords: torch.Tensor, *, mode: str = "bilinear", padding_mode: str = "border"
) -> torch.Tensor:
    """Sample `images (N, C, H, W)` at `coords (N, H', W', 2)` pixel positions with `grid_sample`."""
    if images.ndim != 4 or coords.ndim != 4 or coords.shape[0] != images.shape[0] or coords.shape[-1] != 2:
        raise ValueError(f"images shape={tuple(images.shape)} / coords shape={tuple(coords.shape)} mismatch")
    height, width = images.shape[-2:]
    scale = torch.tensor([2.0 / width, 2.0 / height], device=coords.device, dtype=coords.dtype)
    grid = (coords * scale - 1.0).to(images.dtype)
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
    coords = backward_map(
        src_landmarks.to(images.device),
        dst_landmarks.to(images.device),
        tuple(images.shape[-2:]),
        triangles=triangles,
        ring_scale=ring_scale,
    )
    return apply_backward_map(images, coords, mode=mode, padding_mode=padding_mode)


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
