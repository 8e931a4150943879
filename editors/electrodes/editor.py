"""sEMG electrode overlays at published facial-EMG placement schemes.

Every recording site is data (`editors.electrodes.sites`), anchored on the face mesh, so it moves with
head pose and expression. Electrodes are drawn as disposable surface electrodes (foam pad, Ag/AgCl
centre, soft shadow, optional lead wires) with analytic signed distances on the pixel grid, sized in
millimetres from the inter-ocular distance and foreshortened by the local surface normal.

Only elementwise arithmetic (no exp/pow/convolution) touches the per-electrode pixel windows, so a
pixel's value does not depend on the window or batch it was computed in: batch equals one-by-one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from editors.electrodes.geometry import ElectrodeLayout, fixed_sum, length, unit
from editors.electrodes.render import ElectrodeRenderer, ElectrodeStyle
from editors.electrodes.sites import SCHEMES, load_site_table, select_sites
from engine.faces.masks import FACE_OVAL
from engine.types import AuditPolicy, Editor, EditResult, FaceBatch, ReportedTarget

EYE_CORNERS = ((33, 133), (362, 263))  # subject's right eye, subject's left eye
EAR_LANDMARK = {"right": 234, "left": 454}  # face-oval points beside the tragus

# Appearance (linear RGB-ish, in [0, 1]); chosen by eye against photographs of foam EMG electrodes.
# Visibility of an electrode (see `ElectrodeEditor.visible`): hidden when its skin faces away (normal_z
# above +MIN_FACING), or when it is nearly edge-on (|normal_z| < EDGE_ON, where landmark depth cannot tell
# facing from edge-on) and its centre lies more than OUTLINE_TOLERANCE pad radii beyond the face outline,
# where less than a third of the pad (a circular segment) would still show.
MIN_FACING = 0.05
EDGE_ON = 0.25
OUTLINE_TOLERANCE = 0.26


class ElectrodeEditor(Editor):
    """Overlays disposable sEMG surface electrodes at Fridlund & Cacioppo or Kuramoto sites.

    Args:
        scheme: "fridlund_cacioppo" (22 sites), "kuramoto" (19 sites), or "custom" (sites picked by
            ``sites`` from both published tables, or every row of ``table``).
        sites: optional subset: site ids ("F19") and/or (muscle, side) pairs, side "left", "right"
            (the subject's own), "midline" or "both".
        bipolar: True draws a pair per site along the muscle fibres, False one electrode per site,
            None follows each row's published montage (Fridlund bipolar, Kuramoto monopolar).
        wires: draw lead wires running off the face.
        diameter_mm, gel_diameter_mm: foam pad and Ag/AgCl centre diameters.
        inter_electrode_mm: centre-to-centre distance of a bipolar pair.
        wire_width_mm: lead wire diameter.
        shadow: draw soft contact shadows.
        interocular_mm: assumed distance between the eye centres, which sets the mm-to-pixel scale.
        table: path of a user site table (same columns as ``editors/electrodes/data``); implies scheme
            "custom".

    The edit strength is the electrodes' opacity (0, the sham, draws nothing through the same pipeline).
    """

    property = "semg"
    version = "3"  # metadata reports the sites facing the camera (cached edits of older versions lack it)
    sham_is_input = True  # every change scales with strength (tests/test_editor_contract.py)

    def __init__(
        self,
        scheme: str = "fridlund_cacioppo",
        sites: Sequence[Any] | None = None,
        bipolar: bool | None = None,
        wires: bool = True,
        diameter_mm: float = 10.0,
        gel_diameter_mm: float = 4.0,
        inter_electrode_mm: float = 10.0,
        wire_width_mm: float = 0.8,
        shadow: bool = True,
        interocular_mm: float = 63.0,
        table: str | None = None,
    ) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"scheme={scheme!r}: allowed {', '.join(SCHEMES)}")
        if bipolar not in (None, True, False):
            raise ValueError(f"bipolar={bipolar!r}: allowed True, False or None (as published)")
        for name, value in (("diameter_mm", diameter_mm), ("gel_diameter_mm", gel_diameter_mm),
                            ("inter_electrode_mm", inter_electrode_mm), ("wire_width_mm", wire_width_mm),
                            ("interocular_mm", interocular_mm)):  # fmt: skip
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}={value!r}: must be a positive number of millimetres")
        if gel_diameter_mm >= diameter_mm:
            raise ValueError(
                f"gel_diameter_mm={gel_diameter_mm!r}: must be below diameter_mm={diameter_mm!r}"
            )
        if table is not None:
            scheme = "custom"
            rows = load_site_table(table)
        elif scheme == "custom":
            if sites is None:
                raise ValueError("sites=None with scheme='custom': list (muscle, side) pairs or site ids")
            rows = load_site_table(SCHEMES[0]) + load_site_table(SCHEMES[1])
        else:
            rows = load_site_table(scheme)
        self.scheme = scheme
        self.sites = None if sites is None else [s if isinstance(s, str) else list(s) for s in sites]
        self.bipolar, self.wires, self.shadow = bipolar, bool(wires), bool(shadow)
        self.diameter_mm, self.gel_diameter_mm = float(diameter_mm), float(gel_diameter_mm)
        self.inter_electrode_mm, self.wire_width_mm = float(inter_electrode_mm), float(wire_width_mm)
        self.interocular_mm = float(interocular_mm)
        self.table = None if table is None else str(table)
        self._rows = select_sites(rows, sites)

    def style(self) -> ElectrodeStyle:
        """How the electrodes look (what the renderer needs of this editor)."""
        return ElectrodeStyle(self.diameter_mm, self.gel_diameter_mm, self.wire_width_mm, self.shadow, self.wires)

    def audit_policy(self) -> AuditPolicy:
        """No judge measures "wears electrodes": the editor reports whether every site on skin the camera
        sees was drawn (see `all_sites_drawn`). The pads and leads cover the face (occluding): the landmarker may not re-find it under
        them, and the age, gender and expression judges would read the cover, not the face beneath."""
        return AuditPolicy(self.property, None, ReportedTarget(all_sites_drawn, "sites_missing"), occluding=True)

    def site_ids(self) -> list[str]:
        """Ids of the sites this editor draws, in drawing order."""
        return [r["site_id"] for r in self._rows]

    # ------------------------------------------------------------------ geometry
    def layout(self, landmarks: torch.Tensor) -> ElectrodeLayout:
        """Place every electrode on a batch of `(N, 478, 3)` landmarks (crop pixels)."""
        lm = landmarks.float()
        dev = lm.device
        rows = self._rows

        tri = torch.tensor([[r["tri_a"], r["tri_b"], r["tri_c"]] for r in rows], device=dev)
        bary = torch.tensor([[r["w_a"], r["w_b"], r["w_c"]] for r in rows], device=dev)
        centre = fixed_sum(lm[:, tri] * bary[..., None], 2)  # (N, S, 3)
        # skin tangents from the least-squares affine fit canvas -> image over each site's ring
        ring = lm[:, torch.tensor([r["ring"] for r in rows], device=dev)]  # (N, S, K, 3)
        t_u = fixed_sum(ring * torch.tensor([r["ring_du"] for r in rows], device=dev)[..., None], 2)
        t_v = fixed_sum(ring * torch.tensor([r["ring_dv"] for r in rows], device=dev)[..., None], 2)
        normal = -torch.linalg.cross(t_u, t_v)  # outward: the canvas is seen from the front
        normal = unit(normal)
        angle = torch.tensor([math.radians(r["fibre_angle_deg"]) for r in rows], device=dev)[:, None]
        fibre = angle.cos() * t_u - angle.sin() * t_v  # canvas y points up, t_v downwards
        fibre = unit(fibre - fixed_sum(fibre * normal, -1)[..., None] * normal)

        eyes = [0.5 * (lm[:, a] + lm[:, b]) for a, b in EYE_CORNERS]
        px_per_mm = length(eyes[0] - eyes[1]) / self.interocular_mm

        pairs = [self.bipolar if self.bipolar is not None else r["montage"] == "bipolar" for r in rows]
        site_of = torch.tensor([i for i, p in enumerate(pairs) for _ in range(2 if p else 1)], device=dev)
        sign = torch.tensor([s for p in pairs for s in ((-0.5, 0.5) if p else (0.0,))], device=dev)
        half = sign[None, :, None] * (self.inter_electrode_mm * px_per_mm)[:, None, None]
        centres = centre[:, site_of] + half * fibre[:, site_of]
        normals = normal[:, site_of]
        facing = self.visible(centres[..., :2], normals, lm, 0.5 * self.diameter_mm * px_per_mm)
        centres, shift = self._spread(centres, site_of, facing, px_per_mm)
        wire_end = self._wire_ends(lm, centres[..., :2], site_of, sign * 6.0 * px_per_mm[:, None])
        return ElectrodeLayout(
            centre, centres, normals, facing, site_of, px_per_mm, wire_end, shift / px_per_mm[:, None]
        )

    def _spread(
        self, centres: torch.Tensor, site_of: torch.Tensor, facing: torch.Tensor, px_per_mm: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Nudge whole sites apart where pads of different sites would overlap by more than 10 %.

        The published sites are ~1.5 cm apart in the brow region, closer than two 1-cm pairs allow;
        experimenters then shift an electrode by a few millimetres, which this mimics. Returns the moved
        centres and each site's shift in pixels `(N, S)`.
        """
        n_sites = len(self._rows)
        other_site = (site_of[:, None] != site_of[None, :]).float()
        both = (facing[:, :, None] & facing[:, None, :]).float() * other_site
        count = torch.zeros(n_sites, device=centres.device).index_add(
            0, site_of, torch.ones_like(site_of, dtype=torch.float32)
        )
        d_min = 0.9 * self.diameter_mm * px_per_mm[:, None, None]
        moved = centres
        for _ in range(16):
            diff = moved[:, :, None] - moved[:, None]
            dist = length(diff)
            overlap = (d_min - dist).clamp_min(0.0) * both
            push = 0.5 * fixed_sum(overlap[..., None] * diff / dist[..., None].clamp_min(1e-3), 2)
            per_site = torch.zeros(centres.shape[0], n_sites, 3, device=centres.device).index_add(
                1, site_of, push
            )
            moved = moved + (per_site / count[None, :, None])[:, site_of]
        shift = (
            torch.zeros(centres.shape[0], n_sites, device=centres.device).index_add(
                1, site_of, length(moved - centres)
            )
            / count[None]
        )
        return moved, shift

    def _wire_ends(
        self, lm: torch.Tensor, start: torch.Tensor, site_of: torch.Tensor, spacing: torch.Tensor
    ) -> torch.Tensor:
        """Exit points `(N, E, 2)` of the leads: beyond the ear on the site's side, or up over the forehead.

        `spacing` `(N, E)` separates the two leads of a pair (px), so they run side by side.
        """
        oval = lm[:, list(FACE_OVAL), :2]
        lo, hi = oval.amin(1), oval.amax(1)  # (N, 2)
        size = hi - lo
        centre = (lo + hi) / 2
        exits = [self._rows[int(i)]["wire_exit"] for i in site_of.tolist()]
        # leads drape downwards toward the ear, except from the midline, where that would cross the lips
        drop = torch.tensor(
            [0.0 if self._rows[int(i)]["side"] == "midline" else 0.18 for i in site_of.tolist()]
        )
        drop = drop.to(lm.device)[None] * size[:, None, 1]
        end = torch.empty_like(start)
        for side in ("left", "right"):
            sel = torch.tensor([e == side for e in exits], device=lm.device)
            if not bool(sel.any()):
                continue
            ear = lm[:, EAR_LANDMARK[side], :2]
            out = unit(ear - centre)
            x = ear[:, None, 0] + out[:, None, 0] * 0.45 * size[:, None, 0]
            y = ear[:, None, 1] + 0.55 * (start[..., 1] - ear[:, None, 1]) + drop + spacing
            end = torch.where(sel[None, :, None], torch.stack([x.expand_as(y), y], -1), end)
        top = torch.tensor([e == "top" for e in exits], device=lm.device)
        x = start[..., 0] + 0.6 * (start[..., 0] - centre[:, None, 0]) + spacing
        y = (lo[:, None, 1] - 0.45 * size[:, None, 1]).expand_as(x)
        return torch.where(top[None, :, None], torch.stack([x, y], -1), end)

    @staticmethod
    def visible(points: torch.Tensor, normals: torch.Tensor, landmarks: torch.Tensor,
                radius: torch.Tensor) -> torch.Tensor:
        """`(N, E)` bool: whether electrodes at `points` `(N, E, 2)` with skin `normals` can be seen.

        A site near the face's silhouette (the masseter sits on the jaw outline of a frontal face) is
        edge-on, so neither its normal nor its centre alone can decide: landmark depth there is noisy
        (it puts the masseter at cos 0.15 on frontal faces, the canonical face at cos 0.33) and the
        outline moves by about a millimetre with landmark noise. So an electrode is hidden when its skin
        faces away (normal_z > MIN_FACING), or when it is nearly edge-on (|normal_z| < EDGE_ON) and its
        centre lies more than OUTLINE_TOLERANCE pad radii (`radius`, (N,) px) beyond the face outline:
        then under a third of the pad would show. Skin that clearly faces the camera is visible wherever
        the outline polygon runs (on a turned face the far side of the mesh's oval folds inside the
        cheek). On faces turned ~15 deg or more the far-side zygomaticus and masseter sites lie beyond the
        outline in the photo itself: they are genuinely hidden, and reported.
        """
        poly = landmarks[:, list(FACE_OVAL), :2]
        a, b = poly[:, None], poly.roll(-1, dims=1)[:, None]  # (N, 1, V, 2)
        ab, ap = b - a, points[:, :, None] - a
        t = (fixed_sum(ap * ab, -1) / fixed_sum(ab * ab, -1).clamp_min(1e-9)).clamp(0.0, 1.0)
        gap = length(ap - t[..., None] * ab).amin(-1)  # (N, E) distance to the outline
        near = ElectrodeEditor.inside_face(points, landmarks) | (gap <= OUTLINE_TOLERANCE * radius[:, None])
        nz = normals[..., 2]
        return (nz <= MIN_FACING) & ((nz < -EDGE_ON) | near)

    @staticmethod
    def inside_face(points: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """`(N, S)` bool: whether 2-D points `(N, S, 2)` lie inside the face-oval polygon (ray casting)."""
        poly = landmarks[:, list(FACE_OVAL), :2]
        a, b = poly[:, None], poly.roll(-1, dims=1)[:, None]  # (N, 1, V, 2)
        px, py = points[..., 0:1], points[..., 1:2]  # (N, S, 1)
        crosses = (a[..., 1] > py) != (b[..., 1] > py)
        dy = b[..., 1] - a[..., 1]
        x_at = a[..., 0] + (py - a[..., 1]) * (b[..., 0] - a[..., 0]) / torch.where(dy == 0, 1e-9, dy)
        return ((crosses & (px < x_at)).sum(-1) % 2) == 1

    # ------------------------------------------------------------------ rendering
    def edit(self, batch: FaceBatch, strength: float, seed: int) -> EditResult:
        """Draw the electrodes with opacity `strength` (0 = sham: same pipeline, nothing visible)."""
        if not isinstance(strength, (int, float)) or not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"strength={strength!r}: must be a number in [0, 1]")
        images = batch.images
        n, _, h, w = images.shape
        lay = self.layout(batch.landmarks.to(images.device))
        render = ElectrodeRenderer(self.style(), batch, lay, float(strength), seed)
        out, alpha, placed = render.run()
        mask = (alpha > 0).float()

        drawn_e = placed & (float(strength) > 0)
        s = len(self._rows)
        per_site = torch.zeros(n, s, device=images.device)
        site_placed = per_site.index_add(1, lay.site_of, placed.float()) > 0  # any electrode of the site
        site_drawn = per_site.index_add(1, lay.site_of, drawn_e.float()) > 0
        site_facing = torch.zeros(n, s, device=images.device).index_add(1, lay.site_of, lay.facing.float()) > 0
        ids = self.site_ids()
        metadata = []
        for i in range(n):
            metadata.append({
                "editor": "electrodes", "scheme": self.scheme, "strength": float(strength),
                "sites_requested": s,
                "sites_placed": int(site_placed[i].sum()),
                "sites_drawn": int(site_drawn[i].sum()),
                "sites_facing": int(site_facing[i].sum()),  # on skin the camera sees (see `visible`)
                "electrodes_drawn": int(drawn_e[i].sum()),
                # hidden by the pose (see `visible`), or off the picture: reported in the audit table
                "sites_not_drawn": " ".join(k for k, d in zip(ids, site_drawn[i].tolist()) if not d),
                "site_ids": ids,
                "site_drawn": site_drawn[i].tolist(),
                "px_per_mm": float(lay.px_per_mm[i]),
                "max_site_shift_mm": float(lay.site_shift_mm[i].max()),
                "mask_fraction": float(mask[i].mean()),
            })  # fmt: skip
        return EditResult(images=out, mask=mask, metadata=metadata)


#: The least share of the requested sites that must face the camera for the edit to count: a face so
#: turned that most sites are behind it is not the intervention the study compares.
MIN_FACING_SHARE = 0.75


def all_sites_drawn(meta: Mapping[str, Any]) -> bool:
    """The audit's target check: every site on skin the camera sees was drawn (so it is visible), and
    at least `MIN_FACING_SHARE` of the requested sites are on such skin.

    A site the head's own turn hides (the far cheek and jaw of a face turned 15 degrees or more) is
    not drawn, as it would not show in a photo of that person wearing the electrodes: its absence is
    correct rendering, not a failed edit, and it is listed in `sites_not_drawn` in the audit table.
    A site that faces the camera but was not drawn (off the picture, fully clipped) fails.
    """
    requested = float(meta["sites_requested"])
    facing = float(meta.get("sites_facing", requested))
    return float(meta["sites_drawn"]) >= facing and facing >= MIN_FACING_SHARE * requested
