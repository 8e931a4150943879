"""dlib-exact face chips from MediaPipe meshes, for the audit's age, gender and identity judges.

Those networks were trained on dlib face chips, so the chips are cut here the way dlib's
`get_face_chip_details` + `extract_image_chip` cut them, reproduced in numpy/torch:

* a similarity transform fitted (Umeyama least squares) from dlib's 5-point template, padded, onto
  the face's 5 points: outer and inner corner of each eye and the base of the nose;
* the chip rectangle centred on the transformed chip centre, `size * scale` wide;
* a 2x image pyramid (5-tap [1 4 6 4 1] filter, integer maths, truncating) of the padded
  bounding box until one more halving would make the chip rectangle smaller than the chip;
* bilinear sampling of that level, truncated to uint8, black outside the image.

The chips equal dlib 20.0's bit for bit (tests/test_judges.py holds hashes of dlib's own chips),
except in dlib's fast-copy case (angle exactly 0 and scale exactly 1), which float landmarks
never hit. The 5 points come from the MediaPipe mesh instead of dlib's own 5-point predictor; on the
two demo portraits they agree with dlib's points to within a few pixels (see tests/test_judges.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: MediaPipe mesh indices in dlib's 5-point order: subject's left eye outer and inner corner
#: (image right), subject's right eye outer and inner corner (image left), base of the nose.
MESH_FIVE_POINTS: tuple[int, ...] = (263, 362, 33, 133, 2)

#: dlib's 5-point template on the unit square (`get_face_chip_details`, dlib interpolation.h).
DLIB_TEMPLATE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
CHIP_PADDING = 0.2
CHANNEL_MEANS = (122.782, 117.001, 104.298)


@dataclass
class ChipGeometry:
    """Where each chip of a batch comes from (all arrays have a leading batch axis).

    `box` is the integer bounding box (left, top, right, bottom, inclusive) of the sub-image the
    pyramid is built from; `level` the pyramid level sampled (-1: the sub-image itself);
    `affine` (N, 2, 3) maps chip pixel (x, y, 1) to that level's pixel coordinates.
    """

    box: np.ndarray
    level: np.ndarray
    affine: np.ndarray
    size: int


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama 1991, as dlib's `find_similarity_transform`).

    Args:
        src: (K, 2) or (N, K, 2) source points.
        dst: (N, K, 2) destination points.

    Returns:
        `(M, t)` with `M` (N, 2, 2) and `t` (N, 2) such that `dst ~ M @ src + t`.
    """
    dst = np.asarray(dst, dtype=np.float64)
    src = np.broadcast_to(np.asarray(src, dtype=np.float64), dst.shape)
    mean_src, mean_dst = src.mean(1), dst.mean(1)
    src_c, dst_c = src - mean_src[:, None], dst - mean_dst[:, None]
    sigma_src = (src_c**2).sum(-1).mean(1)
    cov = np.einsum("nki,nkj->nij", dst_c, src_c) / src.shape[1]
    u, d, vt = np.linalg.svd(cov)
    s = np.ones_like(d)
    # A reflection is never a valid face alignment: flip the weakest axis instead.
    det_cov, det_uv = np.linalg.det(cov), np.linalg.det(u) * np.linalg.det(vt)
    reflect = (det_cov < 0) | ((det_cov == 0) & (det_uv < 0))
    s[reflect, 1] = -1.0  # numpy's singular values are sorted, so d[1] <= d[0]
    rot = u @ (s[:, :, None] * vt)
    scale = np.where(sigma_src > 0, (d * s).sum(1) / np.where(sigma_src > 0, sigma_src, 1.0), 1.0)
    m = scale[:, None, None] * rot
    t = mean_dst - np.einsum("nij,nj->ni", m, mean_src)
    return m, t


def _rect_down(rect: np.ndarray) -> np.ndarray:
    """dlib's `pyramid_down<2>::rect_down` on (..., 4) rectangles (left, top, right, bottom)."""
    return rect / 2.0 - np.array([1.25, 0.75, 1.25, 0.75])


def _rect_area(rect: np.ndarray) -> np.ndarray:
    w, h = rect[..., 2] - rect[..., 0] + 1, rect[..., 3] - rect[..., 1] + 1
    empty = (rect[..., 0] > rect[..., 2]) | (rect[..., 1] > rect[..., 3])
    return np.where(empty, 0.0, w * h)


def _rotate(points: np.ndarray, centre: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate (N, K, 2) points about (N, 2) centres by (N,) angles (dlib's `rotate_point`)."""
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    rel = points - centre[:, None]
    x = cos * rel[..., 0] - sin * rel[..., 1]
    y = sin * rel[..., 0] + cos * rel[..., 1]
    return np.stack([x, y], -1) + centre[:, None]


def _corners(rect: np.ndarray) -> np.ndarray:
    """(N, 4) rectangles to (N, 4, 2) corners: tl, tr, bl, br."""
    left, top, right, bottom = (rect[:, i] for i in range(4))
    return np.stack(
        [np.stack(p, -1) for p in ((left, top), (right, top), (left, bottom), (right, bottom))], 1
    )


def face_chip_geometry(
    points5: np.ndarray, size: int, image_hw: tuple[int, int], padding: float = CHIP_PADDING
) -> ChipGeometry:
    """dlib's `get_face_chip_details` plus the geometry half of `extract_image_chip`.

    Args:
        points5: (N, 5, 2) face points in dlib's 5-point order, in image pixels.
        size: chip side in pixels.
        image_hw: (height, width) of the source images.
        padding: dlib's padding around the template.

    Returns:
        The per-image sub-image box, pyramid level and chip-to-level affine.
    """
    points5 = np.asarray(points5, dtype=np.float64)
    if points5.ndim != 3 or points5.shape[1:] != (5, 2):
        raise ValueError(f"points5 must have shape (N, 5, 2), got {points5.shape}")
    if size < 2 or padding < 0:
        raise ValueError(f"chip size must be >= 2 and padding >= 0, got size={size}, padding={padding}")
    n, chip_area = points5.shape[0], float(size * size)
    template = (padding + DLIB_TEMPLATE_5) / (2 * padding + 1) * size
    m, t = similarity_transform(template, points5)
    angle = np.arctan2(m[:, 1, 0], m[:, 0, 0])
    scale = np.hypot(m[:, 0, 0], m[:, 1, 0])
    centre = m @ np.array([size / 2.0, size / 2.0]) + t
    half = (size * scale - 1.0) / 2.0  # dlib's centered_drect(p, w, h) spans w - 1 pixels
    rect = np.stack([centre[:, 0] - half, centre[:, 1] - half, centre[:, 0] + half, centre[:, 1] + half], 1)

    # How deep the pyramid must go, and how much border the 5-tap filters need at that depth.
    depth, grow = np.zeros(n, dtype=np.int64), np.full(n, 2.0)
    down = _rect_down(rect)
    while (more := _rect_area(down) > chip_area).any():
        down = np.where(more[:, None], _rect_down(down), down)
        depth += more
        grow = np.where(more, grow * 2 + 2, grow)
    rotated = _rotate(_corners(rect), centre, angle)
    height, width = image_hw
    bound = np.concatenate([rotated.min(1) - grow[:, None], rotated.max(1) + grow[:, None]], 1)
    bound = np.maximum(bound, [0, 0, -np.inf, -np.inf])
    bound = np.minimum(bound, [np.inf, np.inf, width - 1, height - 1])
    box = np.floor(bound + 0.5).astype(np.int64)  # dlib's drectangle -> rectangle rounding

    level = np.full(n, -1, dtype=np.int64)
    local = rect - np.concatenate([box[:, :2], box[:, :2]], 1)
    while (more := _rect_area(_rect_down(local)) > chip_area).any():
        local = np.where(more[:, None], _rect_down(local), local)
        level += more
    local_centre = np.stack([(local[:, 0] + local[:, 2]) / 2, (local[:, 1] + local[:, 3]) / 2], 1)
    tl, tr, bl = np.moveaxis(_rotate(_corners(local)[:, :3], local_centre, angle), 1, 0)
    affine = np.stack([(tr - tl) / (size - 1), (bl - tl) / (size - 1), tl], -1)
    return ChipGeometry(box=box, level=level, affine=affine, size=size)


def _pyramid_down(x: torch.Tensor) -> torch.Tensor:
    """One level of dlib's `pyramid_down<2>` on uint8-valued float images (N, C, H, W).

    Sums of shifted slices instead of a convolution: exact in float32 on any device (no TF32).
    """
    w = x.shape[-1]
    cols = (w - 3) // 2
    row = sum(k * x[..., i : i + 2 * cols - 1 : 2] for i, k in enumerate((1, 4, 6, 4, 1)))
    h = row.shape[-2]
    rows = (h - 3) // 2
    full = sum(k * row[..., i : i + 2 * rows - 1 : 2, :] for i, k in enumerate((1, 4, 6, 4, 1)))
    return torch.floor(full / 256.0)


def _gather_hw(src: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """src (N, C, H, W), integer rows/cols (N, P) already in range -> (N, C, P)."""
    flat = (rows * src.shape[-1] + cols).unsqueeze(1).expand(-1, src.shape[1], -1)
    return torch.gather(src.flatten(2), 2, flat)


def extract_face_chips(images: torch.Tensor, geometry: ChipGeometry) -> torch.Tensor:
    """dlib's `extract_image_chip` (bilinear, pyramid, black border) for a batch.

    Args:
        images: (N, 3, H, W) float in [0, 1]; quantised to uint8 like the images dlib sees.
        geometry: from `face_chip_geometry` for the same images.

    Returns:
        (N, 3, size, size) float32 chips with uint8 values 0..255, on the images' device.
    """
    n, _, height, width = images.shape
    dev, size = images.device, geometry.size
    img = torch.round(images.float().clamp(0, 1) * 255.0)
    box = torch.as_tensor(geometry.box, device=dev)
    box_h, box_w = box[:, 3] - box[:, 1] + 1, box[:, 2] - box[:, 0] + 1
    max_h, max_w = max(int(box_h.max()), 1), max(int(box_w.max()), 1)
    rows = box[:, 1:2] + torch.arange(max_h, device=dev)  # (N, max_h)
    cols = box[:, 0:1] + torch.arange(max_w, device=dev)
    inside = (rows[:, :, None] < box[:, 3, None, None] + 1) & (cols[:, None, :] < box[:, 2, None, None] + 1)
    inside &= (rows[:, :, None] >= 0) & (cols[:, None, :] >= 0)
    r_idx = rows[:, :, None].clamp(0, height - 1).expand(-1, -1, max_w).reshape(n, -1)
    c_idx = cols[:, None, :].clamp(0, width - 1).expand(-1, max_h, -1).reshape(n, -1)
    sub = _gather_hw(img, r_idx, c_idx).view(n, 3, max_h, max_w) * inside[:, None]

    # Pyramid of every sub-image to the deepest level needed; each image keeps its valid size.
    levels, valid = [sub], [torch.stack([box_h, box_w], 1)]
    for _ in range(int(geometry.level.max()) + 1):
        prev = valid[-1]
        ok = (prev > 8).all(1, keepdim=True)  # dlib clears levels of images 8 px or smaller
        valid.append(torch.where(ok, (prev - 3) // 2, torch.zeros_like(prev)))
        levels.append(
            _pyramid_down(levels[-1]) if min(levels[-1].shape[-2:]) > 8 else levels[-1][..., :0, :0]
        )

    grid_y, grid_x = torch.meshgrid(
        torch.arange(size, device=dev, dtype=torch.float64),
        torch.arange(size, device=dev, dtype=torch.float64),
        indexing="ij",
    )
    pix = torch.stack(
        [grid_x.flatten(), grid_y.flatten(), torch.ones(size * size, device=dev, dtype=torch.float64)]
    )
    affine = torch.as_tensor(geometry.affine, device=dev, dtype=torch.float64)
    coords = affine @ pix  # (N, 2, P): x, y in level pixels
    chips = torch.zeros(n, 3, size * size, device=dev, dtype=torch.float64)
    for lev in np.unique(geometry.level):
        sel = torch.as_tensor(np.flatnonzero(geometry.level == lev), device=dev)
        src = levels[int(lev) + 1].index_select(0, sel).double()
        lim = valid[int(lev) + 1].index_select(0, sel)
        x, y = coords[sel, 0], coords[sel, 1]
        left, top = torch.floor(x), torch.floor(y)
        fx, fy = x - left, y - top
        left, top = left.long(), top.long()
        ok = (left >= 0) & (top >= 0) & (left + 1 < lim[:, 1:2]) & (top + 1 < lim[:, 0:1])
        if src.shape[-1] == 0:
            continue
        l0, t0 = left.clamp(0, src.shape[-1] - 1), top.clamp(0, src.shape[-2] - 1)
        l1, t1 = (left + 1).clamp(0, src.shape[-1] - 1), (top + 1).clamp(0, src.shape[-2] - 1)
        fx, fy = fx[:, None], fy[:, None]
        upper = (1 - fx) * _gather_hw(src, t0, l0) + fx * _gather_hw(src, t0, l1)
        lower = (1 - fx) * _gather_hw(src, t1, l0) + fx * _gather_hw(src, t1, l1)
        value = torch.floor(((1 - fy) * upper + fy * lower).clamp(0, 255))  # dlib truncates to uint8
        chips[sel] = value * ok[:, None]
    return chips.view(n, 3, size, size).float()


def five_points(landmarks: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, 478, 2+) MediaPipe mesh -> (N, 5, 2) float64 points in dlib's 5-point order."""
    lm = landmarks.detach().cpu().numpy() if isinstance(landmarks, torch.Tensor) else np.asarray(landmarks)
    if lm.ndim != 3 or lm.shape[1] != 478 or lm.shape[2] < 2:
        raise ValueError(f"landmarks must have shape (N, 478, 2 or 3), got {lm.shape}")
    return lm[:, MESH_FIVE_POINTS, :2].astype(np.float64)


def normalise_chips(chips: torch.Tensor) -> torch.Tensor:
    """uint8-valued (N, 3, S, S) chips -> the networks' input, `(x - channel mean) / 256`."""
    means = torch.tensor(CHANNEL_MEANS, device=chips.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (chips.float() - means) / 256.0


