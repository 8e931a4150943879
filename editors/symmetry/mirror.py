"""The face's mirror geometry: its symmetry plane, mirrored partners, the mesh mirror map, and weights.

Shared by the symmetry editors and their image-space asymmetry judge. The symmetry plane is fitted per
face in 3-D (landmark x, y and depth z) to the midline landmarks and the midpoints of all left/right
mirror pairs, so a turned head is symmetrised about its own turned midline rather than the image's
vertical. With 2-D landmarks the same fit gives a midline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from editors.filters import box_mean_1d, max_filter
from editors.warp import apply_backward_map, backward_map, identity_coords
from engine.faces.mesh import face_triangles, landmark_group, mirror_index

NUM_MESH_POINTS = 468  # landmarks before the iris points
#: Round-trip error of the mirror map (in inter-ocular distances) below which the partner counts as
#: visible, and above which (the second value) it counts as hidden, e.g. behind the nose of a turned head.
MIRROR_VISIBLE_ERROR: tuple[float, float] = (0.02, 0.06)
#: Distance (IOD) over which the mirror fades in away from a hidden partner.
VISIBILITY_FEATHER = 0.12
#: Source area per output pixel of the mirror below which the mirror is not used (a foreshortened far
#: half of a turned head would be stretched over the near half), and above which it is fully used.
MIRROR_SOURCE_AREA: tuple[float, float] = (0.35, 0.75)


def _mirror(device: torch.device) -> torch.Tensor:
    return torch.tensor(mirror_index(), device=device)


def symmetry_plane(landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit the facial symmetry plane (3-D) or midline (2-D) of each face.

    Args:
        landmarks: `(N, 478, D)` with D = 3 (x, y, depth) or 2.

    Returns:
        `(centre, normal)`, each `(N, D)`: a point on the plane/line and its unit normal. The fit is a
        least-squares plane through the midpoints of the 468 mesh landmarks' mirror pairs (midline
        landmarks are their own midpoints).
    """
    mirror = _mirror(landmarks.device)[:NUM_MESH_POINTS]
    # Irises are left out: they follow gaze, which the symmetric target does not mirror.
    midpoints = (landmarks[:, :NUM_MESH_POINTS] + landmarks[:, mirror]) / 2
    centre = midpoints.mean(dim=1)
    # The normal is the direction of least spread of the midpoints; float64 keeps the SVD stable.
    _, _, vh = torch.linalg.svd((midpoints - centre[:, None]).double(), full_matrices=False)
    normal = vh[:, -1].to(landmarks.dtype)
    return centre, normal


def reflect(points: torch.Tensor, centre: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """Reflect `(N, P, D)` points across the planes `(centre, normal)` of `symmetry_plane`."""
    distance = ((points - centre[:, None]) * normal[:, None]).sum(dim=-1, keepdim=True)
    return points - 2 * distance * normal[:, None]


def inter_ocular_distance(landmarks: torch.Tensor) -> torch.Tensor:
    """`(N,)` distance between the centres of the two eye openings, in the image plane."""
    right = landmarks[:, list(landmark_group("right_eye")), :2].mean(dim=1)
    left = landmarks[:, list(landmark_group("left_eye")), :2].mean(dim=1)
    return (left - right).norm(dim=-1)


def mirrored_partners(landmarks: torch.Tensor) -> torch.Tensor:
    """Each landmark's mirror partner reflected across the face's own symmetry plane, `(N, 478, D)`."""
    centre, normal = symmetry_plane(landmarks)
    mirror = _mirror(landmarks.device)
    return reflect(landmarks[:, mirror], centre, normal)


def symmetry_index(landmarks: torch.Tensor) -> torch.Tensor:
    """`(N,)` asymmetry: mean image-plane distance between landmarks and their reflected partners / IOD.

    Taken over the 468 mesh landmarks; the irises are left out because their position is gaze, not
    shape. 0 for a perfectly symmetric shape (at any head pose, given 3-D landmarks).
    """
    partners = mirrored_partners(landmarks)
    gap = (landmarks[:, :NUM_MESH_POINTS, :2] - partners[:, :NUM_MESH_POINTS, :2]).norm(dim=-1).mean(dim=1)
    return gap / inter_ocular_distance(landmarks)


def symmetric_target(landmarks: torch.Tensor, strength: float) -> torch.Tensor:
    """Landmarks moved `strength` of the way to the mirrored-average shape, `(N, 478, D)`.

    Each iris moves rigidly with its eye opening (by the eye loop's mean shift), so gaze is unchanged.
    """
    partners = mirrored_partners(landmarks)
    target = landmarks + (strength / 2) * (partners - landmarks)
    for eye, iris in (("right_eye", "right_iris"), ("left_eye", "left_iris")):
        eye_idx, iris_idx = list(landmark_group(eye)), list(landmark_group(iris))
        eye_shift = (target[:, eye_idx] - landmarks[:, eye_idx]).mean(dim=1, keepdim=True)
        target[:, iris_idx] = landmarks[:, iris_idx] + eye_shift
    return target


# --- the mirror image through the mesh -----------------------------------------------------------------


def mirror_map(landmarks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Backward map `(N, H, W, 2)` of the face's mirror image, following the mesh (and so head pose).

    A pixel of triangle `(a, b, c)` samples the same barycentric point of the partner triangle
    `(a', b', c')`: eye lands on eye and mouth corner on mouth corner, whatever the pose, and midline
    points map to themselves. Pixels outside the face oval map to themselves.
    """
    mirror = _mirror(landmarks.device)
    return backward_map(landmarks[:, mirror], landmarks, size, triangles=face_triangles())


def compose_maps(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The backward map of warping by `first`, then by `second` (both `(N, H, W, 2)`), as one map."""
    return apply_backward_map(first.permute(0, 3, 1, 2), second).permute(0, 2, 3, 1)


def mirror_visibility(coords: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """`(N, 1, H, W)` in [0, 1]: how surely each pixel's mirror partner is visible in the image.

    Mirroring twice must come back to the start; where the partner surface is hidden (behind the nose
    of a turned head, on a fold of the projected mesh) the pixel seen there belongs to another triangle
    and the round trip misses. 0 above `MIRROR_VISIBLE_ERROR[1]` IOD of error, fading in over
    `VISIBILITY_FEATHER` IOD around such places.
    """
    miss = compose_maps(coords, coords) - identity_coords(
        coords.shape[0], tuple(coords.shape[1:3]), coords.device
    )
    error = torch.hypot(miss[..., 0], miss[..., 1]) / inter_ocular_distance(landmarks)[:, None, None]
    low, high = MIRROR_VISIBLE_ERROR
    hidden = ((error - low) / (high - low)).clamp(0, 1).unsqueeze(1)
    # Occlusion edges are jagged along the triangles of the fold; fade in away from them instead.
    return 1 - fade_beyond(hidden, VISIBILITY_FEATHER * inter_ocular_distance(landmarks))


def mirror_source_area(coords: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """`(N, 1, H, W)` in [0, 1]: 0 where the mirror would stretch a foreshortened source, 1 where it need not.

    The source area per output pixel is |det| of the map's Jacobian (central differences); it is
    about 1 on a frontal face and falls on the near half of a turned head, whose partner is the far
    half. Graded by `MIRROR_SOURCE_AREA` and smoothed over 0.04 IOD (the map is affine per triangle).
    """
    maps = coords.permute(0, 3, 1, 2)
    d_x = F.pad((maps[..., 2:] - maps[..., :-2]) / 2, (1, 1, 0, 0), mode="replicate")
    d_y = F.pad((maps[..., 2:, :] - maps[..., :-2, :]) / 2, (0, 0, 1, 1), mode="replicate")
    area = (d_x[:, 0] * d_y[:, 1] - d_x[:, 1] * d_y[:, 0]).abs().unsqueeze(1)
    low, high = MIRROR_SOURCE_AREA
    ramp = ((area - low) / (high - low)).clamp(0, 1)
    ramp = ramp * ramp * (3 - 2 * ramp)
    return smooth_within(ramp, torch.ones_like(ramp), 0.04 * inter_ocular_distance(landmarks))


def midline_distance(coords: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """`(N, 1, H, W)` signed image-plane distance from the facial midline, in IODs, + on the subject's left.

    Half the offset between a pixel and its mirror partner along the midline's normal, so it follows
    the mesh (and head pose) like the mirror does; 0 outside the face oval.
    """
    centre, normal = symmetry_plane(landmarks)
    across = F.normalize(normal[:, :2], dim=-1)
    left = landmarks[:, list(landmark_group("left_side")), :2]
    towards_left = ((left - centre[:, None, :2]) * across[:, None]).sum(dim=-1).mean(dim=1)
    across = across * torch.where(towards_left < 0, -1.0, 1.0)[:, None]
    start = identity_coords(coords.shape[0], tuple(coords.shape[1:3]), coords.device)
    offset = ((start - coords) * across[:, None, None]).sum(dim=-1) / 2
    return (offset / inter_ocular_distance(landmarks)[:, None, None]).unsqueeze(1)


def segment_distance(pixels: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance `(N, H, W)` from pixels `(N, H, W, 2)` to segments `a -> b`, each `(N, 2)`."""
    ab = (b - a)[:, None, None]
    t = (((pixels - a[:, None, None]) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-6)).clamp(0, 1)
    closest = a[:, None, None] + t[..., None] * ab
    return (pixels - closest).norm(dim=-1)


def polygon_distance(points: torch.Tensor, polygon: torch.Tensor) -> torch.Tensor:
    """Euclidean distance `(...)` from `points (..., 2)` to the closed `polygon (K, 2)`; 0 inside it.

    Exact for any shape, however flat: the nearest of the K edges (`segment_distance`), and a
    crossing-number inside test.
    """
    shape, pixels = points.shape[:-1], points.reshape(1, -1, 1, 2)
    nearest = torch.full(shape, float("inf"), dtype=points.dtype, device=points.device)
    inside = torch.zeros(shape, dtype=torch.bool, device=points.device)
    x, y = points[..., 0], points[..., 1]
    for a, b in zip(polygon, torch.roll(polygon, -1, dims=0), strict=True):
        nearest = torch.minimum(nearest, segment_distance(pixels, a[None], b[None]).reshape(shape))
        edge = b - a
        crosses = (a[1] > y) != (b[1] > y)
        at_x = a[0] + (y - a[1]) * edge[0] / torch.where(edge[1] == 0, 1e-12, edge[1])
        inside ^= crosses & (x < at_x)
    return torch.where(inside, torch.zeros_like(nearest), nearest)


def eye_openings(landmarks: torch.Tensor, size: tuple[int, int], feather: float) -> torch.Tensor:
    """`(N, 1, H, W)`: 1 inside both eye openings, fading to 0 `feather` IODs outside them.

    An opening is the polygon of its lid-margin loop, and the fade follows the Euclidean distance to
    it. (A half-ellipse fitted to the loop, faded by the first-order distance, ran out as a thin band
    across the whole face when the lids were nearly closed, and left a seam through the mirror blend.)
    Only a box around each eye is computed, per face, so the result does not depend on the batch.
    """
    height, width = size
    margin = (feather * inter_ocular_distance(landmarks)).clamp(min=1.0)
    out = torch.zeros((landmarks.shape[0], height, width), dtype=torch.float32, device=landmarks.device)
    loops = [list(landmark_group(eye)) for eye in ("right_eye", "left_eye")]
    for i in range(landmarks.shape[0]):
        reach = float(margin[i]) + 2.0
        for loop in loops:
            polygon = landmarks[i, loop, :2].double()
            (x0, y0), (x1, y1) = (polygon.amin(dim=0) - reach).floor(), (polygon.amax(dim=0) + reach).ceil()
            x0, y0 = max(int(x0), 0), max(int(y0), 0)
            x1, y1 = min(int(x1), width - 1), min(int(y1), height - 1)
            if x1 < x0 or y1 < y0:
                continue  # the eye lies outside the image
            # Pixel centres, as `identity_coords` has them.
            ys = torch.arange(y0, y1 + 1, dtype=torch.float64, device=landmarks.device) + 0.5
            xs = torch.arange(x0, x1 + 1, dtype=torch.float64, device=landmarks.device) + 0.5
            grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
            inside = (1 - polygon_distance(grid, polygon) / float(margin[i])).clamp(0, 1).float()
            box = out[i, y0 : y1 + 1, x0 : x1 + 1]
            out[i, y0 : y1 + 1, x0 : x1 + 1] = torch.maximum(box, inside)
    return (out * out * (3 - 2 * out)).unsqueeze(1)


def fade_beyond(masks: torch.Tensor, width_px: torch.Tensor) -> torch.Tensor:
    """`(N, 1, H, W)` masks in [0, 1] kept exact where they are 1, fading to 0 `width_px (N,)` beyond.

    A max filter over half the width, then a triangle filter (two box filters) over the other half, all
    separable and O(1) per pixel (`editors.filters`); fades wider than 12 px are made at half resolution (max-pooled, so still exact where the
    mask is 1) and scaled back up. The width is per image, so this loops over the (few) images.
    """
    out = []
    for mask, width in zip(masks, width_px.tolist(), strict=True):
        scale = 2 if width >= 12 else 1
        grown = F.max_pool2d(mask[None], scale, ceil_mode=True) if scale > 1 else mask[None]
        k = max(1, int(round(width / scale / 4)))
        grown = max_filter(grown, 2 * k, 2 * k)
        for _ in range(2):
            grown = box_mean_1d(box_mean_1d(grown, k, -1, count_padding=False), k, -2, count_padding=False)
        if scale > 1:
            grown = F.interpolate(grown, scale_factor=scale, mode="bilinear", align_corners=False)
            grown = grown[..., : mask.shape[-2], : mask.shape[-1]]
        out.append(grown[0])
    return torch.stack(out)


def smooth_within(values: torch.Tensor, weight: torch.Tensor, radius_px: torch.Tensor) -> torch.Tensor:
    """Weighted local mean of `values (N, C, H, W)` under `weight (N, 1, H, W)`, over about `radius_px (N,)`.

    Three separable box filters per image (close to a Gaussian of sigma `radius`); 0 where no weight is near.
    """
    out = []
    for value, mass, radius in zip(values * weight, weight, radius_px.tolist(), strict=True):
        k = max(1, int(round(radius)))
        both = torch.cat([value, mass])[None]
        for _ in range(3):
            both = box_mean_1d(box_mean_1d(both, k, -1, count_padding=True), k, -2, count_padding=True)
        out.append(both[0, :-1] / both[0, -1:].clamp(min=1e-4))
    return torch.stack(out)


def height_above_eyes(landmarks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`(N, 1, H, W)` each pixel's height above the line through the eye centres, in IODs (+ toward the brow)."""
    right = landmarks[:, list(landmark_group("right_eye")), :2].mean(dim=1)
    left = landmarks[:, list(landmark_group("left_eye")), :2].mean(dim=1)
    axis = F.normalize(left - right, dim=-1)
    up = torch.stack([axis[:, 1], -axis[:, 0]], dim=-1)  # image y points down
    offset = identity_coords(landmarks.shape[0], size, landmarks.device) - ((left + right) / 2)[:, None, None]
    height = (offset * up[:, None, None]).sum(dim=-1) / inter_ocular_distance(landmarks)[:, None, None]
    return height.unsqueeze(1)


def inner_face_weight(face_mask: torch.Tensor, landmarks: torch.Tensor, feather: float) -> torch.Tensor:
    """`(N, 1, H, W)`: 0 on and outside the face oval (mask < 0.5), rising to 1 `feather` IODs inside it.

    An edit weighted by it never reaches past the face, and fades in wide enough not to draw the oval.
    """
    outside = (face_mask < 0.5).float()
    return (1 - fade_beyond(outside, feather * inter_ocular_distance(landmarks))) * (1 - outside)


def image_asymmetry(images: torch.Tensor, coords: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`(N,)` weighted mean of |image - mirror image| over channels and pixels (0..1 intensity units)."""
    difference = (images - apply_backward_map(images, coords)).abs().mean(dim=1, keepdim=True)
    return (difference * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3)).clamp(min=1e-6)
