"""Geometry shared by the electrode layout and renderer: batch-invariant sums and lengths, the layout."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def fixed_sum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum along `dim` by pairwise halving, in the same order for any batch size.

    Library reductions pick their order from the tensor's shape (on CUDA), so a batch would differ in
    the last bits from one-by-one runs; elementwise halving does not.
    """
    x = x.movedim(dim, -1)
    n = x.shape[-1]
    width = 1 << max(n - 1, 0).bit_length()
    if width != n:
        x = F.pad(x, (0, width - n))
    while x.shape[-1] > 1:
        half = x.shape[-1] // 2
        x = x[..., :half] + x[..., half:]
    return x[..., 0]


def image_sum(x: torch.Tensor) -> torch.Tensor:
    """`(N, ...)` -> `(N,)` sum per image, batch-size invariant."""
    return fixed_sum(x.flatten(1), 1)


def length(v: torch.Tensor) -> torch.Tensor:
    """Euclidean length over the last dim (2 or 3), elementwise and hence batch-size invariant."""
    sq = v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1]
    if v.shape[-1] == 3:
        sq = sq + v[..., 2] * v[..., 2]
    return torch.sqrt(sq)


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / length(v)[..., None].clamp_min(1e-6)


@dataclass
class ElectrodeLayout:
    """Where the electrodes of one batch are, in crop pixels (z like x, smaller = nearer the camera)."""

    site_centre: torch.Tensor  # (N, S, 3)
    centres: torch.Tensor  # (N, E, 3) electrode centres
    normals: torch.Tensor  # (N, E, 3) unit outward skin normal (normal_z < 0 faces the camera)
    facing: torch.Tensor  # (N, E) bool, seen from the front
    site_of: torch.Tensor  # (E,) long, the site each electrode belongs to
    px_per_mm: torch.Tensor  # (N,)
    wire_end: torch.Tensor  # (N, E, 2) where each lead leaves the picture
    site_shift_mm: torch.Tensor  # (N, S) how far a crowded site was nudged from its anchor
