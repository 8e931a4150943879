"""The scanline machinery of `editors.raster`: plane evaluation with the reference rounding, edge
crossings, run scanning and the resolution of pixels covered by several triangles.

See `editors.raster` for the contract and how it is fast; this module holds its constants, the reused
work buffers (`scratch`) and the private steps `owner_chunks` calls.
"""


from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

BLOCK = 4
SLACK = 1e-4
DEPTH_STEPS_PER_PIXEL = 64.0
TRIANGLE_BITS = 16
_THRESHOLD = float(np.float32(-SLACK))  # the reference compares in float32
_EPS = 2.0**-24  # float32 unit roundoff
# The block evaluation rounds seven times, each a value of at most about S = |p0| U + |p1| V + |p2|
# (u < U, v < V), so it is within 6 _EPS S of the exact value; `_ROUNDING * S` is used as the bound
# and the crossings get twice that as margin, plus their own float32 rounding (`_edge_table`).
_ROUNDING = 8 * _EPS
#: (triangle, row) pairs scanned at once; bounds temporaries, never changes results.
SPANS_PER_PIECE = 1 << 20


_WORKSPACE = threading.local()


def scratch(name: str, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 1-D buffer of `numel` elements with undefined contents, reused across calls (CPU, per thread).

    Fresh CPU memory costs a page fault per 4 KiB on first touch, as much as a few passes over it;
    these buffers keep their pages (about 60 MB per thread after warping 32 images of 512 px). The
    caller must be done with a buffer before asking for it again.
    """
    if torch.device(device).type != "cpu":
        return torch.empty(numel, dtype=dtype, device=device)
    buffers = getattr(_WORKSPACE, "buffers", None)
    if buffers is None:
        buffers = _WORKSPACE.buffers = {}
    buffer = buffers.get((name, dtype))
    if buffer is None or buffer.numel() < numel:
        buffer = buffers[(name, dtype)] = torch.empty(numel, dtype=dtype, device=device)
    return buffer[:numel]


@dataclass
class Planes:
    """Per (image, triangle) rows `r = image * T + triangle` of a batch of triangulations.

    `bary_depth[r, k]` holds plane k (the three barycentric coordinates, then depth) as `p0, p1, p2`
    in the triangle's local pixel frame: `u = column - col0`, `v = row - row0`, pixel centres at
    integer `(u, v)`. `box_w`, `box_h`: pixel centres in the bounding box (`box_h = 0`: skip it).
    """

    bary_depth: torch.Tensor  # (R, 4, 3) float32
    col0: torch.Tensor  # (R,) long, in [0, W]
    row0: torch.Tensor  # (R,) long, in [0, H]
    box_w: torch.Tensor  # (R,) long
    box_h: torch.Tensor  # (R,) long


def _plane_values(
    bary_depth: torch.Tensor, rows: torch.Tensor, u: torch.Tensor, v: torch.Tensor, planes: slice
) -> torch.Tensor:
    """Planes of rows `rows` at local pixels `(u, v)`, `(K, planes)`, with the reference rounding.

    The block corner's value `p0*u0 + p1*v0 + p2` (float32), plus the in-block term: `p0*du`
    rounded, then `p1*dv` added as a fused multiply-add (exact in float64 as `dv <= 3`, rounded once).
    """
    u_off, v_off = u & (BLOCK - 1), v & (BLOCK - 1)
    p = bary_depth[:, planes].index_select(0, rows)  # (K, k, 3)
    u0, v0 = (u - u_off).to(p.dtype)[:, None], (v - v_off).to(p.dtype)[:, None]
    corner = p[..., 0] * u0 + p[..., 1] * v0 + p[..., 2]
    in_block = (
        p[..., 1].double() * v_off.double()[:, None] + (p[..., 0] * u_off.to(p.dtype)[:, None]).double()
    )
    return corner + in_block.float()


def _depth_keys(bary_depth: torch.Tensor, rows: torch.Tensor, u: torch.Tensor, v: torch.Tensor, n_tri: int):
    depth = _plane_values(bary_depth, rows, u, v, slice(3, 4))[:, 0]
    depth_q = torch.round(depth * DEPTH_STEPS_PER_PIXEL).clamp_(0, 2**40).long()
    return (depth_q << TRIANGLE_BITS) + rows % n_tri


def _solve_rows(
    p1: torch.Tensor, p2: torch.Tensor, target: torch.Tensor, grow: float
) -> tuple[torch.Tensor, ...]:
    """Integer `v` range where `p1*v + p2 >= target` (float64), widened by `grow` (relative)."""
    rhs = target - p2
    pos, neg = p1 > 0, p1 < 0
    q = rhs / torch.where(pos | neg, p1, torch.ones_like(p1))
    slack = (1.0 + q.abs()) * grow
    everywhere = rhs <= 0
    inf = torch.full_like(q, float("inf"))
    lo = torch.where(pos, q - slack, torch.where(everywhere | neg, -inf, inf))
    hi = torch.where(neg, q + slack, torch.where(everywhere | pos, inf, -inf))
    return torch.ceil(lo), torch.floor(hi)


# Columns of the per-triangle edge table (float32).
_A_L1, _B_L1, _A_L2, _B_L2, _A_H1, _B_H1, _A_H2, _B_H2, _M_L, _M_H, _WIDTH, _LAST = range(12)
_SURE_V0, _SURE_V1, _MAYBE_V0, _MAYBE_V1 = range(12, 16)


def _edge_table(
    bary_depth: torch.Tensor, span_w: torch.Tensor, span_h: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """`(R, 16)` float32: per triangle, where each pixel row crosses its three inside tests.

    Plane k's test `p0*u + p1*v + p2 >= threshold` crosses row v at `u = a + b*v`. With `p0 > 0` it
    bounds the run from the left, with `p0 < 0` from the right; a triangle has one or two of each
    (`L1, L2`, `H1, H2`; a single one is used twice). `M_L`, `M_H`: margins (pixels) that cover the
    rounding of the reference test (with room to spare) and of the float32 crossing `a + b*v`. A plane
    with `p0 == 0` (a horizontal edge; at most one per triangle) is evaluated the same all along a
    row, so it selects rows: `[SURE_V0, SURE_V1]` where it surely passes, `[MAYBE_V0, MAYBE_V1]` where
    it may. Also returns which triangles have such a plane.
    """
    p0, p1, p2 = bary_depth[:, :3].permute(2, 0, 1).contiguous()  # (R, 3) each, float32
    width, height = span_w.to(p0.dtype)[:, None], span_h.to(p0.dtype)[:, None]
    err = _ROUNDING * (p0.abs() * width + p1.abs() * height + p2.abs())
    safe = torch.where(p0 != 0, p0, torch.ones_like(p0))
    a = (_THRESHOLD - p2) / safe
    b = -p1 / safe
    margin = 2.0 * err / safe.abs() + 16 * _EPS * (a.abs() + b.abs() * height + width + 1.0)
    order = torch.argsort(p0, dim=1, descending=True)  # p0 of the left bounds first
    p0 = p0.gather(1, order)
    middle = p0[:, 1:2]
    # Columns of the sorted planes used as L1, L2, H1, H2: (0, 0 or 1, 1 or 2, 2).
    slots = [
        torch.zeros_like(order[:, :1]),
        (middle > 0).long(),
        2 - (middle < 0).long(),
        torch.full_like(order[:, :1], 2),
    ]
    slots = torch.cat(slots, dim=1)
    slots = order.gather(1, slots)
    a, b, margin = (x.gather(1, slots) for x in (a, b, margin))  # (R, 4) each
    last_row = height - 1
    zeros = torch.zeros_like(width)
    table = torch.cat(
        [
            torch.stack([a, b], dim=2).view(-1, 8),
            margin[:, :2].amax(dim=1, keepdim=True),
            margin[:, 2:].amax(dim=1, keepdim=True),
            width,
            width - 1,
            zeros,
            last_row,
            zeros,
            last_row,
        ],
        dim=1,
    )
    # Anything the crossings cannot describe (no bound on a side, overflow) is tested pixel by pixel.
    odd = ~(table[:, :_WIDTH].sum(dim=1).isfinite() & (p0[:, 0] > 0) & (p0[:, 2] < 0))
    if bool(odd.any()):
        table[odd, :_M_L] = 0.0
        table[odd, _M_L:_WIDTH] = float("inf")
    horizontal = middle[:, 0] == 0
    flat = torch.nonzero(horizontal).squeeze(1)
    if flat.numel():
        plane = order[flat, 1:2]
        z1, z2, z_err = (x[flat].double().gather(1, plane) for x in (p1, p2, err))
        last = last_row[flat].double()
        for k, target, grow in ((_SURE_V0, _THRESHOLD + z_err, -1e-9), (_MAYBE_V0, _THRESHOLD - z_err, 1e-9)):
            lo, hi = _solve_rows(z1, z2, target, grow)
            table[flat, k : k + 1] = torch.minimum(lo.clamp(min=0.0), last + 1).float()
            table[flat, k + 1 : k + 2] = torch.minimum(hi, last).clamp(min=-1.0).float()
    return table, horizontal


def _scan_bucket(key, rows, horizontal, tri, edges, row_base, owner_value, pitch):
    """The runs of one bucket's (triangle, row) pairs, and its rows with pixels near the threshold.

    Per (triangle, row), in triangle order: first pixel, last pixel, value painted (0: no run),
    triangle row. Done in pieces of about `SPANS_PER_PIECE` rows, so that temporaries stay small.
    """
    device, count = tri.device, tri.numel()
    start = scratch(f"start{key}", count * rows, torch.long, device)
    last = scratch(f"last{key}", count * rows, torch.long, device)
    value = scratch(f"value{key}", count * rows, owner_value.dtype, device)
    v = torch.arange(rows, device=device, dtype=edges.dtype)
    row_offset = torch.arange(rows, device=device) * pitch
    zero, minus_one = edges.new_zeros(()), edges.new_full((), -1.0)
    step = max(1, SPANS_PER_PIECE // rows)
    near_rows = []
    for first in range(0, count, step):
        tri_p = tri[first : first + step]
        table = edges.index_select(0, tri_p)

        def col(k: int, table: torch.Tensor = table) -> torch.Tensor:
            return table[:, k : k + 1]

        left = torch.maximum(
            torch.addcmul(col(_A_L1), col(_B_L1), v), torch.addcmul(col(_A_L2), col(_B_L2), v)
        )
        right = torch.minimum(
            torch.addcmul(col(_A_H1), col(_B_H1), v), torch.addcmul(col(_A_H2), col(_B_H2), v)
        )
        sure_lo = torch.clamp(left + col(_M_L), zero, col(_WIDTH)).ceil_()
        sure_hi = torch.clamp(right - col(_M_H), minus_one, col(_LAST)).floor_()
        maybe_lo = left.sub_(col(_M_L)).clamp_(min=0.0).ceil_()
        maybe_hi = torch.minimum(right.add_(col(_M_H)), col(_LAST), out=right).floor_()
        if horizontal:
            sure_row = (v >= col(_SURE_V0)) & (v <= col(_SURE_V1))
            maybe_row = (v >= col(_MAYBE_V0)) & (v <= col(_MAYBE_V1))
            run = (sure_lo <= sure_hi) & sure_row
            near = maybe_row & ((maybe_lo < sure_lo) | (maybe_hi > sure_hi) | ~sure_row)
        else:
            maybe_row = v <= col(_SURE_V1)  # rows in the triangle's tested height
            run = (sure_lo <= sure_hi) & maybe_row
            near = maybe_row & ((maybe_lo < sure_lo) | (maybe_hi > sure_hi))
        if bool(near.any()):
            where = torch.nonzero(near.view(-1)).squeeze(1)
            near_rows.append(
                (
                    tri_p[torch.div(where, rows, rounding_mode="floor")],
                    where % rows,
                    run.view(-1)[where],
                    *(x.view(-1)[where].long() for x in (maybe_lo, sure_lo, sure_hi, maybe_hi)),
                )
            )
        out = slice(first * rows, (first + tri_p.numel()) * rows)
        base = row_base.index_select(0, tri_p)[:, None] + row_offset
        torch.add(base, sure_lo.long(), out=start[out].view(-1, rows))
        torch.add(base, sure_hi.clamp_(min=0).long(), out=last[out].view(-1, rows))
        torch.mul(run, owner_value.index_select(0, tri_p)[:, None], out=value[out].view(-1, rows))
    near_rows = [torch.cat(x) for x in zip(*near_rows)] if near_rows else None
    return start, last, value, tri[:, None].expand(count, rows).reshape(-1), near_rows


def _near_pixels(near: list, bary_depth, row_base, owner_value, pitch):
    """Pixels of the maybe range outside the sure run, tested with the reference arithmetic.

    Returns `(triangle, start, value)` of those that pass, sorted by triangle, or None.
    """
    tri, v, has_run, lo_m, lo_s, hi_s, hi_m = (torch.cat(x) for x in zip(*near))
    device = tri.device
    # Left part [lo_m, lo_s - 1] and right part [hi_s + 1, hi_m]; without a run, all of [lo_m, hi_m].
    left_hi = torch.where(has_run, lo_s - 1, hi_m)
    right_lo = torch.where(has_run, hi_s + 1, hi_m + 1)
    firsts = torch.stack([lo_m, right_lo], dim=1).view(-1)
    counts = torch.stack([left_hi - lo_m + 1, hi_m - right_lo + 1], dim=1).clamp(min=0).view(-1)
    total = int(counts.sum())
    if total == 0:
        return None
    segment = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts, output_size=total)
    u = firsts[segment] + torch.arange(total, device=device) - (torch.cumsum(counts, 0) - counts)[segment]
    pair = torch.div(segment, 2, rounding_mode="floor")
    tri, v = tri[pair], v[pair]
    keep = torch.nonzero((_plane_values(bary_depth, tri, u, v, slice(0, 3)) >= -SLACK).all(dim=1)).squeeze(1)
    if keep.numel() == 0:
        return None
    tri, v, u = tri[keep], v[keep], u[keep]
    order = torch.sort(tri, stable=True).indices
    tri, v, u = tri[order], v[order], u[order]
    return tri, row_base[tri] + v * pitch + u, owner_value[tri]


def _resolve_overlaps(index, flagged, planes, n_tri, per_chunk, height, pitch, bits) -> None:
    """Give pixels covered by several runs to the nearest surface (ties: the lower triangle index).

    Every overlap of two runs holds an end of one of them, which is then multiply covered too. So the
    runs with a multiply covered end (`flagged`: first and last pixel, painted value, triangle row)
    cover every such pixel, with at most one more run each: the one whose both ends are covered
    once, named by the painted sum minus what the flagged runs painted.
    """
    device, multi = index.device, 2 << bits
    starts, lasts, values, tris = (torch.cat(x) for x in zip(*flagged))
    lengths = lasts - starts + 1
    total = int(lengths.sum())
    before = torch.cumsum(lengths, 0) - lengths
    run = torch.repeat_interleave(torch.arange(lengths.numel(), device=device), lengths, output_size=total)
    pixel = (starts - before)[run] + torch.arange(total, device=device)
    covered = torch.nonzero(index[pixel] >= multi).squeeze(1)
    pixel, run = pixel[covered], run[covered]
    tri, painted_by = tris[run], values[run]
    pixels, slot = torch.unique(pixel, return_inverse=True)
    painted = torch.zeros(pixels.numel(), dtype=index.dtype, device=device).index_add_(0, slot, painted_by)
    rest = index[pixels] - painted  # 0, or what one more run painted: 2**bits + owner
    extra = torch.nonzero(rest).squeeze(1)
    image = torch.div(pixels, height * pitch, rounding_mode="floor")
    chunk_row = (image - image % per_chunk) * n_tri  # owner numbers start there
    pixel = torch.cat([pixel, pixels[extra]])
    slot = torch.cat([slot, extra])
    tri = torch.cat([tri, chunk_row[extra] + (rest[extra] - (1 << bits))])
    local = pixel % (height * pitch)
    u = local % pitch - planes.col0[tri]
    v = torch.div(local, pitch, rounding_mode="floor") - planes.row0[tri]
    keys = _depth_keys(planes.bary_depth, tri, u, v, n_tri)
    best = torch.full((pixels.numel(),), torch.iinfo(torch.long).max, device=device)
    best.scatter_reduce_(0, slot, keys, reduce="amin")
    winner = (image % per_chunk) * n_tri + (best & (2**TRIANGLE_BITS - 1))
    index[pixels] = ((1 << bits) + winner).to(index.dtype)
