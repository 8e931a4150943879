"""Skin folds of the ageing face as relief (height) maps in the shape-free template frame.

Each fold is a smooth curve through points defined on the face mesh (weighted averages of landmarks),
given in the subject's right half and mirrored to the left. Its cross-section is a soft groove with a
bulge of skin on one side (the cheek over a nasolabial fold, the bag over a tear trough), so that the
lighting model in `editors.skin.shading_from_height` gives the shadowed wall, the lit wall and the
occluded bottom of a real fold instead of a drawn line. Sizes are fractions of the face width; depths
are those of a face in its seventies seen under soft light, deliberately on the deep side, because the
shading is blurred down to the photo's resolution and low-resolution photos keep little of a fold.

Per image (seeded), every fold gets its own depth, a slow variation of depth along its length and a
slight waviness, so no two faces carry identical, ruler-straight lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from editors.age.template import TEMPLATE_SIZE, template_face_width, template_landmarks
from engine.faces.mesh import mirror_index

Weights = dict[int, float]


@dataclass(frozen=True)
class Fold:
    """One fold: `points` on the mesh, groove `width` and `depth`, and the bulge beside it.

    Attributes:
        group: the config knob that scales it ("forehead", "glabella", "crows_feet", "under_eye",
            "nasolabial", "marionette", "perioral", "eyelid"); mounds use "cheek_hollows", "temple_hollows" and "jowl_shading".
        points: control points, each a weighted average of landmarks (weights sum to 1).
        width: Gaussian sigma of the fold's broad valley, in face widths.
        depth: depth of the broad valley, in face widths.
        crease: depth of the narrow crease line at the bottom (sigma 0.3 width), in face widths.
        bulge: height of the skin roll beside the crease, in face widths.
        bulge_side: direction, in the template, toward which the roll lies ("up", "down", "lateral").
        mirror: also add the mirrored fold on the subject's left.
    """

    group: str
    points: tuple[Weights, ...]
    width: float
    depth: float
    crease: float
    bulge: float = 0.0
    bulge_side: str = "up"
    mirror: bool = True


def _forehead_line(t: float) -> tuple[Weights, ...]:
    """A horizontal forehead line at fraction `t` of the way from the brows up to the top of the mesh."""
    columns = (
        (63, 103),
        (105, 67),
        (66, 109),
        (107, 109),
        (9, 10),
        (336, 338),
        (296, 338),
        (334, 297),
        (293, 332),
    )
    return tuple({brow: 1.0 - t, top: t} if brow != top else {brow: 1.0} for brow, top in columns)


def _short_line(start: Weights, toward: Weights, begin: float, end: float) -> tuple[Weights, ...]:
    """A straight line from `start` toward `toward`, between fractions `begin` and `end` of the way."""

    def at(f: float) -> Weights:
        out: Weights = {}
        for k, v in start.items():
            out[k] = out.get(k, 0.0) + v * (1.0 - f)
        for k, v in toward.items():
            out[k] = out.get(k, 0.0) + v * f
        return out

    return (at(begin), at((begin + end) / 2), at(end))


# fmt: off
FOLDS: tuple[Fold, ...] = (
    *(Fold("forehead", _forehead_line(t), 0.006, 0.0025, 0.0015, 0.002, "down", mirror=False)
      for t in (0.3, 0.52, 0.74)),
    Fold("glabella", ({55: 0.55, 8: 0.45}, {107: 0.45, 9: 0.25, 108: 0.15, 151: 0.15}),
         0.006, 0.004, 0.003, 0.003, "lateral"),
    *(Fold("crows_feet", _short_line({130: 1.0}, target, 0.3, 0.95), 0.004, 0.006, 0.0036, 0.0032, "down")
      for target in ({124: 1.0}, {35: 0.6, 143: 0.4}, {111: 0.7, 31: 0.3})),
    Fold("under_eye", ({110: 1.0}, {24: 1.0}, {23: 1.0}, {22: 1.0}, {26: 1.0}), 0.004, 0.0025, 0.002, 0.0025, "down"),
    Fold("under_eye", ({233: 1.0}, {232: 0.5, 121: 0.5}, {231: 0.3, 120: 0.7}, {230: 0.4, 119: 0.6},
                       {229: 0.4, 118: 0.6}, {228: 0.5, 117: 0.5}), 0.016, 0.015, 0.004, 0.02, "up"),
    Fold("nasolabial", ({129: 1.0}, {206: 0.3, 92: 0.4, 165: 0.3}, {57: 0.6, 202: 0.2, 212: 0.2}),
         0.018, 0.04, 0.009, 0.05, "lateral"),
    Fold("marionette", ({61: 0.3, 43: 0.7}, {43: 0.5, 204: 0.5}, {204: 0.5, 211: 0.5}),
         0.014, 0.03, 0.0075, 0.035, "lateral"),
    *(Fold("perioral", _short_line(lip, up, 0.05, 0.42), 0.003, 0.004, 0.003, 0.0025, "lateral")
      for lip, up in (({37: 1.0}, {167: 1.0}), ({39: 1.0}, {165: 0.5, 167: 0.5}), ({40: 1.0}, {92: 1.0}))),
    *(Fold("perioral", _short_line(lip, down, 0.08, 0.4), 0.003, 0.004, 0.003, 0.0025, "lateral")
      for lip, down in (({84: 1.0}, {18: 0.6, 83: 0.4}), ({181: 1.0}, {182: 1.0}))),
    Fold("eyelid", ({247: 1.0}, {30: 1.0}, {29: 1.0}, {27: 1.0}, {28: 1.0}, {56: 1.0}),
         0.005, 0.003, 0.0022, 0.0045, "up"),
)
# fmt: on


@dataclass(frozen=True)
class Mound:
    """A broad hollow (negative `height`) or swelling of the face, an elliptic Gaussian on the mesh.

    `centre` is a weighted average of landmarks; `radius` (x, y) and `height` are in face widths. The
    heights are best read as shading strengths: the soft-light model saturates long before such depths
    would be anatomical, and what shows is a broad shadow on the upper wall of a hollow.
    """

    group: str
    centre: Weights
    radius: tuple[float, float]
    height: float
    mirror: bool = True


MOUNDS: tuple[Mound, ...] = (
    # The buccal hollow below the cheekbone: broad, so its walls slope gently. At radii (0.06, 0.078)
    # and height -0.15 it shaded as a compact well, 40 % darker at its upper wall: a dark blotch like a
    # bruise on evenly lit sharp faces. This one darkens a wide patch softly (tuning half: judged age
    # +7.8 y median with every other cue, against +10.1 y; sharp faces +5.5 against +3.4 y).
    Mound("cheek_hollows", {187: 0.5, 192: 0.5}, (0.132, 0.172), -0.25),
    Mound("temple_hollows", {71: 0.5, 139: 0.5}, (0.048, 0.072), -0.10),
    Mound("jowl_shading", {136: 0.5, 150: 0.3, 169: 0.2}, (0.06, 0.048), 0.10),  # jowl swelling
)
FOLD_GROUPS: tuple[str, ...] = tuple(dict.fromkeys([*(f.group for f in FOLDS), *(m.group for m in MOUNDS)]))


def _catmull_rom(points: np.ndarray, samples_per_span: int = 24) -> np.ndarray:
    """Dense points `(M, 2)` of a centripetal-free (uniform) Catmull-Rom spline through `points`."""
    if len(points) == 2:
        t = np.linspace(0.0, 1.0, samples_per_span + 1)[:, None]
        return points[0] * (1 - t) + points[1] * t
    padded = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    out = []
    t = np.linspace(0.0, 1.0, samples_per_span, endpoint=False)[:, None]
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1 : i + 3]
        out.append(
            0.5
            * (
                (2 * p1)
                + (-p0 + p2) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
            )
        )
    out.append(points[-1:])
    return np.concatenate(out)


@dataclass
class FoldMap:
    """A fold rasterised in the template: a window and, per window pixel, signed distance and position."""

    fold_index: int
    group: str
    box: tuple[int, int, int, int]  # y0, y1, x0, x1 (exclusive ends)
    offset: np.ndarray  # (h, w) signed distance from the curve in template px (+ toward the bulge side)
    along: np.ndarray  # (h, w) position along the curve in [0, 1]
    width: float  # template px
    depth: float
    crease: float
    bulge: float


def _side_vector(side: str, curve: np.ndarray, centre_x: float) -> np.ndarray:
    if side == "up":
        return np.array([0.0, -1.0])
    if side == "down":
        return np.array([0.0, 1.0])
    if side == "lateral":
        return np.array([np.sign(curve[:, 0].mean() - centre_x) or 1.0, 0.0])
    raise ValueError(f"fold bulge_side={side!r} must be 'up', 'down' or 'lateral'")


def _rasterise(fold_index: int, fold: Fold, weights: list[Weights], size: int) -> FoldMap:
    lms = template_landmarks(size)[:, :2].astype(np.float64)
    unit = template_face_width(size)
    ctrl = np.array([sum(w * lms[k] for k, w in pt.items()) / sum(pt.values()) for pt in weights])
    curve = _catmull_rom(ctrl)
    seg_a, seg_b = curve[:-1], curve[1:]
    seg_len = np.linalg.norm(seg_b - seg_a, axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg_len)]) / max(seg_len.sum(), 1e-9)
    width, depth, crease, bulge = fold.width * unit, fold.depth * unit, fold.crease * unit, fold.bulge * unit
    margin = int(np.ceil(3.5 * width + 3))
    y0, x0 = np.maximum(np.floor(curve.min(axis=0)[::-1]).astype(int) - margin, 0)
    y1, x1 = np.minimum(np.ceil(curve.max(axis=0)[::-1]).astype(int) + margin, size)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    pix = np.stack([xx + 0.5, yy + 0.5], axis=-1).reshape(-1, 1, 2)
    d = seg_b - seg_a
    t = np.clip(((pix - seg_a) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-12), 0.0, 1.0)
    nearest = seg_a + t[..., None] * d
    dist = np.linalg.norm(pix - nearest, axis=-1)
    k = dist.argmin(axis=1)
    rows = np.arange(len(k))
    normal = np.stack([-d[k, 1], d[k, 0]], axis=-1) / np.maximum(seg_len[k, None], 1e-12)
    toward = _side_vector(fold.bulge_side, curve, lms[:, 0].mean())
    sign = np.where((normal @ toward) >= 0, 1.0, -1.0)
    side = np.sign(((pix[:, 0] - nearest[rows, k]) * normal).sum(-1)) * sign
    offset = (dist[rows, k] * np.where(side == 0, 1.0, side)).reshape(yy.shape)
    along = (cum[k] + t[rows, k] * (cum[k + 1] - cum[k])).reshape(yy.shape)
    return FoldMap(
        fold_index,
        fold.group,
        (int(y0), int(y1), int(x0), int(x1)),
        offset.astype(np.float32),
        along.astype(np.float32),
        width,
        depth,
        crease,
        bulge,
    )


@lru_cache(maxsize=2)
def fold_maps(size: int = TEMPLATE_SIZE) -> tuple[FoldMap, ...]:
    """Every fold of `FOLDS` (both sides) rasterised in the template; computed once per process."""
    mirror = mirror_index()
    maps = []
    for i, fold in enumerate(FOLDS):
        maps.append(_rasterise(i, fold, list(fold.points), size))
        if fold.mirror:
            mirrored = [{int(mirror[k]): w for k, w in pt.items()} for pt in fold.points]
            maps.append(_rasterise(i, fold, mirrored, size))
    return tuple(maps)


def fold_relief(
    amounts: torch.Tensor,
    generators: list[torch.Generator],
    size: int = TEMPLATE_SIZE,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Height map `(N, 1, T, T)` of all folds in template pixels (negative = into the skin).

    Args:
        amounts: `(N, G)` depth multiplier per image and fold group (order of `FOLD_GROUPS`); 0 gives
            a flat map.
        generators: one per image, for the per-fold variation.
        size: template side.
        device: where to build the map.
    """
    maps = fold_maps(size)
    n = amounts.shape[0]
    # Per image and fold map: depth factor, along-length ripple (amplitude, frequency, phase), waviness.
    draws = torch.stack([torch.rand(len(maps), 6, generator=g) for g in generators]).to(device)
    relief = torch.zeros(n, 1, size, size, device=device)
    for j, fm in enumerate(maps):
        amount = amounts[:, FOLD_GROUPS.index(fm.group)].to(device)
        if not bool((amount != 0).any()):
            continue
        y0, y1, x0, x1 = fm.box
        offset = torch.as_tensor(fm.offset, device=device)[None]
        along = torch.as_tensor(fm.along, device=device)[None]
        r = draws[:, j].view(n, 6, 1, 1)
        depth_factor = 0.7 + 0.6 * r[:, 0]
        ripple = 1.0 + 0.3 * r[:, 1] * torch.sin(2 * torch.pi * ((0.5 + 1.0 * r[:, 2]) * along + r[:, 3]))
        wave = 0.2 * fm.width * torch.sin(2 * torch.pi * ((0.5 + 1.0 * r[:, 4]) * along + r[:, 5]))
        taper = torch.sin(torch.pi * along.clamp(0.0, 1.0)).clamp(min=0.0) ** 1.2
        o = offset - wave
        # A narrow crease at the bottom, and beside it a roll of skin that rises steeply out of the
        # crease and flattens out over a few widths (the cheek over a nasolabial fold, a bag over a
        # tear trough) over a broad, shallow valley; the other side stays flat: a step with a sharp line.
        crease = -fm.crease * torch.exp(-0.5 * (o / (0.3 * fm.width)) ** 2)
        rise = (o / (0.7 * fm.width)).clamp(min=0.0)
        roll = fm.bulge * rise**2 * torch.exp(2.0 * (1.0 - rise))
        valley = -fm.depth * torch.exp(-0.5 * (o / fm.width) ** 2)
        height = (crease + roll + valley) * taper * ripple * depth_factor * amount.view(n, 1, 1)
        relief[:, 0, y0:y1, x0:x1] += height
    relief += _mound_relief(amounts, size, device)
    return relief


def _mound_relief(amounts: torch.Tensor, size: int, device: torch.device | str) -> torch.Tensor:
    lms = template_landmarks(size)[:, :2].astype(np.float64)
    unit = template_face_width(size)
    mirror = mirror_index()
    ys, xs = torch.meshgrid(
        torch.arange(size, device=device) + 0.5, torch.arange(size, device=device) + 0.5, indexing="ij"
    )
    out = torch.zeros(amounts.shape[0], 1, size, size, device=device)
    for mound in MOUNDS:
        amount = amounts[:, FOLD_GROUPS.index(mound.group)].to(device).view(-1, 1, 1, 1)
        centres = [mound.centre] + (
            [{int(mirror[k]): w for k, w in mound.centre.items()}] if mound.mirror else []
        )
        for c in centres:
            cx, cy = sum(w * lms[k] for k, w in c.items()) / sum(c.values())
            rx, ry = mound.radius[0] * unit, mound.radius[1] * unit
            blob = torch.exp(-0.5 * (((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2))
            out += amount * mound.height * unit * blob
    return out
