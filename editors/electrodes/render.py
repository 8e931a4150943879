"""Rendering of sEMG electrodes: foam pads, Ag/AgCl centres, shadows and lead wires.

Only elementwise arithmetic touches the per-electrode pixel windows, so a pixel's value does not
depend on the window or batch it was computed in: batch equals one-by-one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from editors.electrodes.geometry import ElectrodeLayout, fixed_sum, image_sum, unit
from editors.electrodes.geometry import length as vector_length
from engine.types import FaceBatch

FOAM_RGB = (0.91, 0.90, 0.86)
HOUSING_RGB = (0.80, 0.80, 0.79)
METAL_RGB = (0.60, 0.61, 0.63)
MIN_SQUASH = 0.35  # thinnest drawn ellipse (minor/major axis)
WIRE_RGB = (0.06, 0.06, 0.07)


@dataclass(frozen=True)
class ElectrodeStyle:
    """What the electrodes look like: pad and gel diameters, lead width (mm), shadows and leads on/off."""

    diameter_mm: float
    gel_diameter_mm: float
    wire_width_mm: float
    shadow: bool
    wires: bool


class ElectrodeRenderer:
    """Draws one batch: pad shadows, then each lead wire with its shadow, then the pads on top."""

    def __init__(self, editor: ElectrodeStyle, batch: FaceBatch, lay: ElectrodeLayout, strength: float,
                 seed: int) -> None:  # fmt: skip
        self.ed, self.lay, self.strength = editor, lay, strength
        self.img = batch.images
        dev = self.img.device
        n, _, self.h, self.w = self.img.shape
        gens = batch.generators(seed, "semg-electrodes")
        self.noise = torch.stack([torch.randn(1, self.h, self.w, generator=g) for g in gens]).to(dev)
        self.grain = F.avg_pool2d(self.noise, 3, stride=1, padding=1, count_include_pad=False)
        mask = batch.face_mask.to(dev)
        self.light, self.light_dir = _lighting(self.img, mask)
        soft, self.photo_noise = _photo_softness(self.img, mask)
        self.soft = soft[:, None, None]  # edge ramp width in px, matched to the photo's own blur
        self.out = self.img.clone()
        self.alpha_keep = torch.ones(n, 1, self.h, self.w, device=dev)  # prod(1 - alpha)
        self.placed = torch.zeros(lay.facing.shape, dtype=torch.bool, device=dev)
        self.ppm = lay.px_per_mm[:, None, None]
        self.r_pad = 0.5 * editor.diameter_mm * self.ppm
        self.r_gel = 0.5 * editor.gel_diameter_mm * self.ppm
        self.shadow_shift = -self.light_dir * 0.8 * lay.px_per_mm[:, None]  # (N, 2): away from the light

    def run(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n_el = self.lay.centres.shape[1]
        # crowded montages: overlapping foam collars are trimmed along the bisector, as done by hand;
        # `near` is decided per image, so another image in the batch never changes this one
        c = self.lay.centres[..., :2]
        facing = self.lay.facing
        dist = vector_length(c[:, :, None] - c[:, None])
        self.near = (dist < 2.0 * self.r_pad[:, :, :1] + 2.0) & facing[:, None] & facing[:, :, None]
        union = self.near.any(0)
        self.neighbours = [
            [j for j in torch.nonzero(union[e]).flatten().tolist() if j != e] for e in range(n_el)
        ]
        if self.ed.shadow:
            for e in range(n_el):
                self._pad(e, shadow=True)
        if self.ed.wires:
            for e in range(n_el):
                self._wire(e)
        for e in range(n_el):
            self._pad(e, shadow=False)
        return self.out, 1.0 - self.alpha_keep, self.placed

    def _window(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[int, int, int, int] | None:
        """Union over the batch of a pixel box; None when it misses the image."""
        x0, y0 = (int(v) - 2 for v in lo.amin(0).floor().tolist())
        x1, y1 = (int(v) + 3 for v in hi.amax(0).ceil().tolist())
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, self.w), min(y1, self.h)
        return None if x0 >= x1 or y0 >= y1 else (x0, y0, x1, y1)

    def _grid(self, box: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        x0, y0, x1, y1 = box
        dev = self.img.device
        ys = torch.arange(y0, y1, device=dev, dtype=torch.float32)[None, :, None] + 0.5
        xs = torch.arange(x0, x1, device=dev, dtype=torch.float32)[None, None, :] + 0.5
        return xs, ys

    def _crop(self, t: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        return t[:, :, box[1] : box[3], box[0] : box[2]]

    def _composite(self, box, alpha: torch.Tensor, rgb: torch.Tensor | None) -> None:
        """Alpha-blend `rgb` (N,3,h,w; None = black) into the window, touching only alpha > 0."""
        a = (alpha * self.strength).clamp(0.0, 1.0)[:, None]
        region = self._crop(self.out, box)
        if rgb is None:
            blended = region * (1.0 - a)
        else:  # the photo's own grain, so the overlay is not cleaner than the picture around it
            rgb = rgb + self._crop(self.noise, box) * self.photo_noise[:, None, None, None]
            blended = region * (1.0 - a) + rgb.clamp(0.0, 1.0) * a
        self._crop(self.out, box).copy_(torch.where(a > 0, blended, region))
        self._crop(self.alpha_keep, box).mul_(1.0 - a)

    def _pad(self, e: int, shadow: bool) -> None:
        lay = self.lay
        shift = self.shadow_shift if shadow else torch.zeros_like(self.shadow_shift)
        c = lay.centres[:, e, :2] + shift
        nrm = lay.normals[:, e]
        reach = (self.r_pad + self.soft + (1.5 * self.ppm if shadow else 0.0))[:, 0]
        box = self._window(c - reach, c + reach)
        if box is None:
            return
        xs, ys = self._grid(box)
        # squash by the skin's tilt, but no thinner than MIN_SQUASH: landmark depth near the jaw and
        # temple silhouette exaggerates the tilt, and real electrodes there still read as ellipses
        squash = nrm[:, 2].abs().clamp(MIN_SQUASH, 1.0)
        tilt = unit(nrm[:, :2]) * torch.sqrt(1.0 - squash * squash)[:, None]
        nx, ny, nz = tilt[:, 0, None, None], tilt[:, 1, None, None], -squash[:, None, None]
        qx, qy = xs - c[:, 0, None, None], ys - c[:, 1, None, None]
        qz = -(qx * nx + qy * ny) / nz  # lift the pixel onto the skin's tangent plane
        r = torch.sqrt(qx * qx + qy * qy + qz * qz)  # distance from the centre along the skin, px
        # |grad r| turns distances along the skin back into pixels, for the edge ramps
        gx, gy = qx - nx / nz * qz, qy - ny / nz * qz
        grad = torch.where(r > 1e-3, torch.sqrt(gx * gx + gy * gy) / r.clamp_min(1e-3), torch.ones_like(r))
        ramp = grad.clamp_min(1.0) * self.soft
        facing = lay.facing[:, e, None, None].float()
        edge = self.r_pad - r  # inside distance to the pad's edge, trimmed by close neighbours
        for j in self.neighbours[e]:
            other = lay.centres[:, j, :2] + shift
            axis = unit(c - other)
            mid = 0.5 * (c + other)
            side = (xs - mid[:, 0, None, None]) * axis[:, 0, None, None] + (
                ys - mid[:, 1, None, None]
            ) * axis[:, 1, None, None]
            far = (~self.near[:, e, j]).float()[:, None, None]
            edge = torch.minimum(edge, side - 0.25 * self.ppm + far * 1e4)
        if shadow:
            soft = 1.3 * self.ppm + self.soft
            t = ((edge + soft) / (2.0 * soft)).clamp(0.0, 1.0)
            self._composite(box, 0.45 * t * t * (3.0 - 2.0 * t) * facing, None)
            return
        cover = (edge / ramp + 0.5).clamp(0.0, 1.0) * facing
        self.placed[:, e] = cover.flatten(1).amax(1) > 0
        dev = self.img.device
        lx, ly = self.light_dir[:, 0, None, None], self.light_dir[:, 1, None, None]
        toward = (qx * lx + qy * ly) / r.clamp_min(1e-3)  # +1 on the lit side of the rim
        rim = (1.0 - edge / (0.3 * self.r_pad)).clamp(0.0, 1.0)
        # foam: fine grain, a rounded edge lit on one side and in shade on the other
        foam_shade = 1.0 - 0.07 * rim * rim + 0.09 * rim * toward + 0.035 * self._crop(self.grain, box)[:, 0]
        foam = torch.tensor(FOAM_RGB, device=dev)[None, :, None, None] * foam_shade[:, None]
        # snap housing ring around the Ag/AgCl disc, whose dome carries a highlight toward the light
        g = r / self.r_gel
        housing = ((1.45 * self.r_gel - r) / ramp + 0.5).clamp(0.0, 1.0)
        metal_cover = ((self.r_gel - r) / ramp + 0.5).clamp(0.0, 1.0)
        hx, hy = qx / self.r_gel - 0.35 * lx, qy / self.r_gel - 0.35 * ly
        spec = (1.0 - (hx * hx + hy * hy) / 0.3).clamp(0.0, 1.0)
        metal_shade = 0.8 + 0.2 * (1.0 - g * g).clamp(0.0, 1.0) + 0.3 * spec * spec
        metal = torch.tensor(METAL_RGB, device=dev)[None, :, None, None] * metal_shade[:, None]
        ring_shade = 1.0 - 0.25 * ((g - 1.0) / 0.45).clamp(0.0, 1.0) + 0.06 * toward
        house = torch.tensor(HOUSING_RGB, device=dev)[None, :, None, None] * ring_shade[:, None]
        rgb = foam + (house - foam) * housing[:, None]
        rgb = rgb + (metal - rgb) * metal_cover[:, None]
        self._composite(box, cover, rgb * self._crop(self.light, box))

    def _wire(self, e: int) -> None:
        """A sagging lead from the electrode to its exit, drawn in bands along its main axis."""
        lay = self.lay
        a, b = lay.centres[:, e, :2], lay.wire_end[:, e]
        chord = b - a
        length = vector_length(chord)[:, None].clamp_min(1e-3)
        t = chord / length
        perp = torch.stack([-t[:, 1], t[:, 0]], -1)
        perp = torch.where(perp[:, 1:2] < 0, -perp, perp)  # sag downwards (sideways if vertical)
        sag = (0.03 + 0.06 * t[:, 0:1].abs()) * length
        half_w = (0.5 * self.ed.wire_width_mm * lay.px_per_mm).clamp_min(0.5)
        u = torch.linspace(0.0, 1.0, 33, device=a.device)[None, :, None]
        pts = (
            a[:, None] + t[:, None] * length[:, None] * u + perp[:, None] * (4.0 * sag[:, None] * u * (1 - u))
        )
        shift = self.shadow_shift[:, None] if self.ed.shadow else torch.zeros_like(pts[:, :1])
        pts = torch.cat([pts, pts + shift], 1)  # the band boxes also hold the wire's shadow
        axis = 0 if float(chord[:, 0].abs().sum()) >= float(chord[:, 1].abs().sum()) else 1
        pad = float((2.2 * half_w + self.soft[:, 0, 0]).amax()) + 3.0
        lo, hi = int(float(pts[..., axis].amin()) - pad), int(float(pts[..., axis].amax()) + pad) + 1
        size = (self.w, self.h)[axis]
        lo, hi = max(lo, 0), min(hi, size)
        seg_lo = torch.minimum(pts[:, :-1], pts[:, 1:]).flatten(0, 1)  # segments of both polylines
        seg_hi = torch.maximum(pts[:, :-1], pts[:, 1:]).flatten(0, 1)
        band = 40
        geom = (a, t, perp, length, sag, half_w)
        for start in range(lo, hi, band):
            stop = min(start + band, hi)
            hit = (seg_hi[:, axis] >= start - pad) & (seg_lo[:, axis] <= stop + pad)
            if not bool(hit.any()):
                continue
            other_lo = int(float(seg_lo[hit, 1 - axis].amin()) - pad)
            other_hi = int(float(seg_hi[hit, 1 - axis].amax()) + pad) + 1
            box = (start, max(other_lo, 0), stop, min(other_hi, self.h)) if axis == 0 else \
                (max(other_lo, 0), start, min(other_hi, self.w), stop)  # fmt: skip
            if box[0] < box[2] and box[1] < box[3]:
                self._wire_band(e, box, geom)

    def _wire_band(self, e: int, box, geom) -> None:
        a, t, perp, length, sag, half_w = geom
        xs, ys = self._grid(box)
        visible = self.lay.facing[:, e, None, None].float()
        hw = half_w[:, None, None]

        def distance(origin: torch.Tensor) -> torch.Tensor:
            px, py = xs - origin[:, 0, None, None], ys - origin[:, 1, None, None]
            tx, ty = t[:, 0, None, None], t[:, 1, None, None]
            ex, ey = perp[:, 0, None, None], perp[:, 1, None, None]
            ln, s = length[:, :, None], sag[:, :, None]
            along = (px * tx + py * ty) / ln  # 0 at the electrode, 1 at the exit
            k = along.clamp(0.0, 1.0)
            curve = 4.0 * s * k * (1.0 - k)
            slope = 4.0 * s * (1.0 - 2.0 * k) / ln
            d_in = (px * ex + py * ey - curve).abs() / torch.sqrt(1.0 + slope * slope)
            ox, oy = px - k * ln * tx - curve * ex, py - k * ln * ty - curve * ey
            return torch.where(along == k, d_in, torch.sqrt(ox * ox + oy * oy))

        if self.ed.shadow:
            d = distance(a + self.shadow_shift)
            sw = 2.2 * hw + self.soft
            tt = ((sw - d) / sw).clamp(0.0, 1.0)
            self._composite(box, 0.32 * tt * tt * visible, None)
        d = distance(a)
        # a blurred thin line: box profile convolved with the photo's edge ramp
        cover = ((hw - d) / self.soft + 0.5).clamp(0.0, 1.0) - ((-hw - d) / self.soft + 0.5).clamp(0.0, 1.0)
        v = (1.0 - (d / hw) * (d / hw)).clamp(0.0, 1.0)
        rgb = (
            torch.tensor(WIRE_RGB, device=self.img.device)[None, :, None, None] * (1.0 + 2.5 * v * v)[:, None]
        )
        self._composite(box, cover * visible, rgb * self._crop(self.light, box))


def _usable_mask(face_mask: torch.Tensor) -> torch.Tensor:
    """The face mask as bool, or the whole picture where a face mask is empty."""
    m = face_mask > 0.5
    return m | ~m.flatten(1).any(1)[:, None, None, None]


def _photo_softness(images: torch.Tensor, face_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge ramp width (px) and grain level of each photo, so drawn edges are no sharper than its own.

    The ratio of fine (3 px) to medium (3-7 px) detail energy over the face falls as a picture is
    blurred or upsampled; the mapping to a Gaussian-equivalent blur was calibrated on Gaussian-blurred
    crops of the astronaut and Grace Hopper photos. The grain level is a robust (MAD) estimate of the
    fine residual.
    """
    luma = (images[:, 0:1] + images[:, 1:2] + images[:, 2:3]) / 3.0
    m = _usable_mask(face_mask)
    b3 = F.avg_pool2d(luma, 3, stride=1, padding=1, count_include_pad=False)
    b7 = F.avg_pool2d(luma, 7, stride=1, padding=3, count_include_pad=False)
    fine, medium = (luma - b3) * m, (b3 - b7) * m
    ratio = torch.sqrt(image_sum(fine * fine) / image_sum(medium * medium).clamp_min(1e-12))
    knots_r = torch.tensor([0.22, 0.24, 0.26, 0.28, 0.31, 0.34], device=images.device)
    knots_s = torch.tensor([3.0, 2.0, 1.5, 1.0, 0.5, 0.0], device=images.device)
    r = ratio.clamp(0.22, 0.34)[:, None]
    seg = ((r - knots_r[:-1]) / (knots_r[1:] - knots_r[:-1])).clamp(0.0, 1.0)
    sigma = knots_s[0] + fixed_sum(seg * (knots_s[1:] - knots_s[:-1]), 1)
    residual = torch.where(m, (luma - b3).abs(), torch.full_like(luma, float("nan"))).flatten(1)
    noise = torch.nan_to_num(residual.nanmedian(1).values * 1.4826 * 0.8, nan=0.0).clamp(0.0, 0.04)
    return (2.5 * sigma).clamp_min(1.0), noise


def _lighting(images: torch.Tensor, face_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Slowly varying illumination of the face (N,3,H,W) and a 2-D unit direction toward the light (N,2).

    A white pad takes the exposure, shading and colour cast of the skin around it: its colour is
    multiplied by the local skin brightness relative to the face mean, an exposure factor and a mild
    colour cast toward the face's mean colour.
    """
    n, _, h, w = images.shape
    luma = 0.299 * images[:, 0:1] + 0.587 * images[:, 1:2] + 0.114 * images[:, 2:3]
    m = _usable_mask(face_mask).float()
    m_sum = image_sum(m).clamp_min(1.0)
    face_luma = image_sum(luma * m) / m_sum  # (N,)
    cover = F.adaptive_avg_pool2d(m, 24)
    local = F.adaptive_avg_pool2d(luma * m, 24) / cover.clamp_min(1e-4)
    weight = cover.clamp(0.0, 1.0)
    local = local * weight + face_luma[:, None, None, None] * (1.0 - weight)
    local = F.interpolate(local, size=(h, w), mode="bilinear", align_corners=False)
    relative = (local / face_luma[:, None, None, None].clamp_min(1e-3)).clamp(0.45, 1.3)
    exposure = (face_luma / 0.55).clamp(0.5, 1.08)[:, None, None, None]
    rgb_mean = torch.stack([image_sum(images[:, k : k + 1] * m) for k in range(3)], 1) / m_sum[:, None]
    grey = (rgb_mean[:, 0:1] + rgb_mean[:, 1:2] + rgb_mean[:, 2:3]) / 3.0
    cast = (rgb_mean / grey.clamp_min(1e-3)).clamp(0.7, 1.3)
    light = relative * exposure * (1.0 + 0.25 * (cast - 1.0))[:, :, None, None]
    # toward the light: the brighter half of the face, and from above
    xs = torch.linspace(-1.0, 1.0, w, device=images.device)[None, None, None, :]
    ys = torch.linspace(-1.0, 1.0, h, device=images.device)[None, None, :, None]
    cx = image_sum((luma - face_luma[:, None, None, None]) * m * xs) / m_sum
    cy = image_sum((luma - face_luma[:, None, None, None]) * m * ys) / m_sum
    direction = torch.stack([(cx * 8.0).clamp(-0.8, 0.8), (cy * 4.0).clamp(-0.3, 0.3) - 0.7], -1)
    return light, unit(direction)
