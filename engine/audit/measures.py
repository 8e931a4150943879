"""Measures behind the audit's judges: mesh symmetry, pixel change outside a mask, score change.

Torch or numpy in, float64 numpy out (one value per face), NaN where a face was not measured.
"""

from __future__ import annotations

import numpy as np
import torch


def as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """float64 numpy copy of a tensor or array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def symmetry_index(
    landmarks: torch.Tensor | np.ndarray,
    mirror_pairs: np.ndarray,
    midline_idx: np.ndarray,
    use_depth: bool = True,
) -> np.ndarray:
    """Asymmetry of each face mesh: 0 for a mirror-symmetric face, larger when less symmetric.

    The best reflection of the mesh onto itself (left point onto its right partner and back,
    midline points onto themselves) is fitted by least squares (Kabsch with determinant -1), in
    3D by default so head yaw does not count as asymmetry. The index is the mean distance between
    each reflected point and its partner, divided by the RMS distance of those points from their
    centroid, so it does not depend on face size, position or pose.

    Args:
        landmarks: (N, K, 2 or 3) meshes in pixels (NaN rows give NaN).
        mirror_pairs: (P, 2) indices of left/right partner points.
        midline_idx: (M,) indices of points on the face's midline.
        use_depth: use z when the landmarks have it.

    Returns:
        (N,) float64 asymmetry index.
    """
    lm = as_numpy(landmarks)
    if lm.ndim != 3 or lm.shape[-1] not in (2, 3):
        raise ValueError(f"landmarks must have shape (N, K, 2 or 3), got {lm.shape}")
    pairs = np.asarray(mirror_pairs, dtype=np.int64).reshape(-1, 2)
    mid = np.asarray(midline_idx, dtype=np.int64).reshape(-1)
    if len(pairs) + len(mid) < 3:
        raise ValueError(f"need at least 3 mirror pairs + midline points, got {len(pairs)} + {len(mid)}")
    if (
        max(pairs.max(initial=-1), mid.max(initial=-1)) >= lm.shape[1]
        or min(pairs.min(initial=0), mid.min(initial=0)) < 0
    ):
        raise ValueError(f"mirror_pairs/midline_idx out of range for {lm.shape[1]} landmarks")
    if not use_depth:
        lm = lm[..., :2]
    src_idx = np.concatenate([pairs[:, 0], pairs[:, 1], mid])
    dst_idx = np.concatenate([pairs[:, 1], pairs[:, 0], mid])
    src, dst = lm[:, src_idx], lm[:, dst_idx]
    out = np.full(len(lm), np.nan)
    ok = np.isfinite(src).all((1, 2))
    if not ok.any():
        return out
    src, dst = src[ok], dst[ok]
    centred_src = src - src.mean(1, keepdims=True)
    centred_dst = dst - dst.mean(1, keepdims=True)
    u, _, vt = np.linalg.svd(np.einsum("nki,nkj->nij", centred_src, centred_dst))
    # Optimal orthogonal map with det -1 (a reflection): flip the weakest singular direction.
    d = np.ones((len(src), src.shape[-1]))
    d[:, -1] = -np.sign(np.linalg.det(vt.transpose(0, 2, 1) @ u.transpose(0, 2, 1)))
    rot = vt.transpose(0, 2, 1) @ (d[:, :, None] * u.transpose(0, 2, 1))
    mapped = np.einsum("nij,nkj->nki", rot, centred_src)
    residual = np.linalg.norm(mapped - centred_dst, axis=-1).mean(1)
    scale = np.sqrt((centred_src**2).sum(-1).mean(1))
    out[ok] = residual / np.maximum(scale, 1e-12)
    return out


def mean_abs_change(after: np.ndarray, before: np.ndarray) -> np.ndarray:
    """(N,) mean |after - before| over the scores both rows have; NaN where neither has any.

    Blendshapes are NaN for a face the detector did not find, so such a row gives NaN.
    """
    diff = np.abs(np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64))
    present = ~np.isnan(diff)
    count = present.sum(axis=1)
    total = np.where(present, diff, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def relative_change(ref: np.ndarray, edit: np.ndarray) -> np.ndarray:
    """(edit - ref) / ref where the reference reading is positive, else NaN (a unitless index's change)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ref > 0, (edit - ref) / np.where(ref > 0, ref, 1.0), np.nan)


def outside_mask_change(
    ref: torch.Tensor, edit: torch.Tensor, mask: torch.Tensor, threshold: float = 1e-3
) -> np.ndarray:
    """(N,) mean absolute pixel change (channel mean, 0..1 scale) where `mask <= threshold`.

    The soft rim of the mask counts as inside: the edit may blend there. NaN where the mask
    leaves nothing outside.
    """
    if ref.shape != edit.shape or ref.ndim != 4:
        raise ValueError(
            f"ref and edit must both be (N, C, H, W), got {tuple(ref.shape)} and {tuple(edit.shape)}"
        )
    if (
        mask.ndim != 4
        or mask.shape[1] != 1
        or mask.shape[0] != ref.shape[0]
        or mask.shape[-2:] != ref.shape[-2:]
    ):
        raise ValueError(f"mask must be (N, 1, H, W) matching the images, got {tuple(mask.shape)}")
    diff = (edit.float() - ref.float()).abs().mean(1, keepdim=True)
    outside = (mask.to(diff.device) <= threshold).float()
    total = outside.sum((1, 2, 3))
    change = (diff * outside).sum((1, 2, 3)) / total.clamp_min(1)
    return as_numpy(torch.where(total > 0, change, torch.full_like(change, float("nan"))))
