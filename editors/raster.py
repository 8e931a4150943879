"""Scanline rasteriser of triangle planes: which triangle owns each pixel centre, in batched torch.

This is the rasteriser of `editors.warp`. Its contract is a reference block rasteriser, reproduced bit
for bit: every triangle's bounding box is cut into `BLOCK` x `BLOCK` pixel blocks; for a pixel at
offset `(du, dv)` in the block whose corner is `(u0, v0)` (local pixel offsets from the box's first
column and row), each plane `p0*u + p1*v + p2` is evaluated in float32 as

    (p0*u0 + p1*v0 + p2) + (p1*dv + p0*du)        # the in-block term with p0*du rounded, then one rounding

A pixel is inside when its three barycentric values are `>= -SLACK` (so pixels on shared edges are
never left uncovered). Where several triangles cover a pixel (the projected mesh folds), the smallest
`round(depth * DEPTH_STEPS_PER_PIXEL)` wins, ties to the lower triangle index. The block grid also
decides which pixels are tested: the box rounded up to whole blocks, clipped to the frame.

How it is fast (no per-pixel plane evaluation, no Python loop over pixels or triangles):

* Along a pixel row a plane is linear in `u`, so the pixels whose float32 test cannot go either way
  (the exact value is further than a proven rounding bound from the threshold) form one run per
  (triangle, row), found from per-triangle edge crossings `u = a + b*v`. Triangles are bucketed by
  height (4, 8, 12, 16, 24, 32, ... rows) so these per-triangle constants broadcast over the rows.
* The rare pixels within the rounding bound of the threshold are tested one by one with the
  reference arithmetic (`_plane_values`) and become runs of one pixel.
* Runs are painted with a difference array and a running sum along each pixel row: a run adds
  `2**bits + owner` over its pixels, so a pixel covered once reads `2**bits + owner` and one covered
  by several runs reads at least `2**(bits + 1)`.
* Pixels covered several times (folds, and pixels within the slack of a shared edge) get the depth
  of every covering triangle with the reference arithmetic and a scatter-min on
  `depth << TRIANGLE_BITS | triangle` keys. Every overlap of two runs holds an end of one of them, so
  the runs with a multiply covered end find all but at most one covering run per pixel; the painted
  sum minus theirs names that last one.

Large work buffers come from `scratch` (kept per thread between calls, on CPU), because first touches
of fresh memory cost about as much as the passes over it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from editors.raster_scan import (  # noqa: F401 - BLOCK, SLACK, scratch, Planes are part of this module's API
    BLOCK,
    DEPTH_STEPS_PER_PIXEL,
    SLACK,
    TRIANGLE_BITS,
    Planes,
    _edge_table,
    _near_pixels,
    _resolve_overlaps,
    _scan_bucket,
    scratch,
)


@dataclass
class Chunk:
    """Owners of the pixels of images `first .. stop - 1`.

    `index.view(n, H, W + 1)[image - first, row, column]` (the last column is not a pixel): `offset +
    (image - first) * T + triangle` for the owning triangle, or a value below `offset` where no
    triangle covers the pixel centre. So a table with `offset` empty rows followed by the chunk's
    triangles is indexed directly.
    """

    first: int
    stop: int
    index: torch.Tensor  # (n * H * (W + 1),) int32 or int64
    offset: int


def tested_extent(planes: Planes, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns and rows of pixels tested per triangle, from `(col0, row0)`: the box rounded up to
    whole blocks, clipped to the frame; no rows for a degenerate or empty box. No other pixel is owned.
    """
    span_w = torch.minimum((planes.box_w.clamp(min=0) + BLOCK - 1) // BLOCK * BLOCK, width - planes.col0)
    span_h = torch.minimum((planes.box_h.clamp(min=0) + BLOCK - 1) // BLOCK * BLOCK, height - planes.row0)
    return span_w, torch.where(span_w > 0, span_h, torch.zeros_like(span_h))


def owner_chunks(
    planes: Planes, n_img: int, n_tri: int, height: int, width: int, images_per_chunk: int
) -> Iterator[Chunk]:
    """Rasterise, yielding the owners of chunks of whole images (see `Chunk`)."""
    if n_tri >= 2**TRIANGLE_BITS:
        raise ValueError(f"too many triangles: {n_tri} >= {2**TRIANGLE_BITS}")
    device = planes.col0.device
    per_chunk = max(1, min(images_per_chunk, n_img))
    bary_depth = planes.bary_depth
    span_w, span_h = tested_extent(planes, height, width)

    # Owners are numbered within a chunk: image (n % per_chunk) * T + triangle.
    bits = max(1, (per_chunk * n_tri - 1).bit_length())
    tallest = int(span_h.max()) if span_h.numel() else 0
    pad = 4 * BLOCK  # rows after the last image: a bucket's rows run past its triangles' rows
    while pad < tallest:
        pad *= 2
    # Pixel rows are laid out `pitch = W + 1` apart: a run ending at the end of a row is closed in
    # the extra column, so a running sum along each row paints it.
    pitch = width + 1
    chunk_pixels = per_chunk * height * pitch
    frame = chunk_pixels + pad * pitch
    # A pixel is covered at most once per triangle of its image, so sums stay below T << (bits + 1).
    dtype = torch.int32 if (n_tri + 1) << (bits + 1) < 2**31 else torch.int64
    r_all = torch.arange(span_h.numel(), device=device)
    local = torch.div(r_all, n_tri, rounding_mode="floor") % per_chunk
    owner_value = ((1 << bits) + local * n_tri + r_all % n_tri).to(dtype)
    row_base = (local * height + planes.row0) * pitch + planes.col0  # in the chunk's pixels
    edges, horizontal = _edge_table(bary_depth, span_w, span_h)

    # Buckets by tested height (rows: 4, 8, 12, 16, 24, 32, 48, ...), horizontal-edge triangles apart.
    live = span_h > 0
    sizes = [BLOCK, 2 * BLOCK, 3 * BLOCK]
    while sizes[-1] < pad:
        sizes.append(sizes[-2] * 2)
    n_sizes = len(sizes)
    bucket = torch.searchsorted(torch.tensor(sizes, device=device), span_h)  # first size >= span_h
    bucket = torch.where(live, bucket + n_sizes * horizontal.long(), torch.full_like(bucket, -1))
    order = torch.sort(bucket, stable=True).indices
    counts = torch.bincount(bucket[live], minlength=2 * n_sizes).tolist()
    start = int((~live).sum())
    chunk_rows = torch.arange(0, n_img + per_chunk, per_chunk, device=device).clamp(max=n_img) * n_tri
    runs, near = [], []  # per (triangle, row): first pixel, last pixel, value, triangle; chunk bounds
    for k, count in enumerate(counts):
        if count == 0:
            continue
        tri = order[start : start + count]
        start += count
        rows = sizes[k % n_sizes]
        *scanned, near_k = _scan_bucket(k, rows, k >= n_sizes, tri, edges, row_base, owner_value, pitch)
        runs.append((*scanned, (torch.searchsorted(tri, chunk_rows) * rows).tolist()))
        if near_k is not None:
            near.append(near_k)
    # Single pixels near the threshold that pass the reference test, sorted by triangle.
    singles = _near_pixels(near, bary_depth, row_base, owner_value, pitch) if near else None
    if singles is not None:
        tri, first_pixel, value = singles
        runs.append((first_pixel, first_pixel, value, tri, torch.searchsorted(tri, chunk_rows).tolist()))

    # Paint chunk by chunk and keep the runs with a multiply covered end pixel; then give multiply
    # covered pixels to the nearest surface, all chunks at once.
    delta = scratch("delta", frame, dtype, device)
    index = scratch("index", n_img * height * pitch + frame - chunk_pixels, dtype, device)
    multi = 2 << bits
    flagged = []
    for c, first in enumerate(range(0, n_img, per_chunk)):
        size = (min(n_img, first + per_chunk) - first) * height * pitch + frame - chunk_pixels
        chunk_index = index[first * height * pitch : first * height * pitch + size]
        pieces = [(run, run[-1][c], run[-1][c + 1]) for run in runs if run[-1][c] < run[-1][c + 1]]
        if not pieces:
            chunk_index.zero_()
            continue
        starts, lasts, values, tris = (torch.cat([run[i][a:b] for run, a, b in pieces]) for i in range(4))
        delta[:size].zero_()
        delta.scatter_add_(0, starts, values)
        delta.scatter_add_(0, lasts + 1, -values)
        rows = size // pitch
        torch.cumsum(delta[:size].view(rows, pitch), dim=1, out=chunk_index.view(rows, pitch))
        ends = torch.maximum(chunk_index.index_select(0, starts), chunk_index.index_select(0, lasts))
        hit = torch.nonzero((ends >= multi) & (values != 0)).squeeze(1)
        offset = first * height * pitch
        flagged.append((starts[hit] + offset, lasts[hit] + offset, values[hit], tris[hit]))
    if flagged:
        _resolve_overlaps(index, flagged, planes, n_tri, per_chunk, height, pitch, bits)
    for first in range(0, n_img, per_chunk):
        stop = min(n_img, first + per_chunk)
        yield Chunk(first, stop, index[first * height * pitch : stop * height * pitch], 1 << bits)
