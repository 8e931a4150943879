"""Unilateral facial droop: the resting appearance of a lower-motor-neuron (peripheral) facial palsy.

A peripheral facial palsy (Bell's palsy; visibly asymmetric at rest from House-Brackmann grade V) weakens
every muscle of the facial nerve on one side, so gravity and the healthy side's tone win:

* the mouth corner sags and the lip line slopes down toward it (zygomaticus/levator weakness);
* the cheek sags and the nasolabial fold flattens (its crease is held by the same elevators);
* the brow sits lower and the forehead loses its lift and wrinkles (frontalis weakness);
* the lower lid sags away from the eye and the aperture widens (orbicularis oculi weakness; the
  upper lid is lifted by a different nerve, so it stays);
* the healthy side, unopposed, pulls the lips toward itself and lifts its own mouth corner a little.

The editor moves landmarks by a displacement field built on MediaPipe's canonical face: each region
has anchor landmarks, a magnitude in inter-ocular distances (IOD, eye-centre to eye-centre) and a
Gaussian falloff over the 3-D mesh; the sagging regions fade to 0 at the facial midline, so the other
half does not sag (only its mouth corner and the lips move, pulled by the healthy side). Directions follow the head: "down" is the face's own forehead-to-chin axis and
"medial" points toward its symmetry plane, so pitch, roll and yaw are respected. The image is then
warped with `editors.warp.warp_images`; the fold flattening also removes the fold's mid-scale shading.

Sides are the SUBJECT's, as in MediaPipe's landmark names: `side="left"` droops the subject's left
half, which is on the IMAGE's right in an ordinary (non-mirrored) photograph.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from editors.filters import max_filter
from editors.symmetry.measures import ImageAsymmetryJudge, MouthCornerJudge, lower_mouth_side
from editors.symmetry.mirror import (
    inter_ocular_distance,
    smooth_within,
    symmetry_index,
    symmetry_plane,
)
from editors.warp import apply_backward_map, backward_map, identity_coords, moved_region
from engine.faces.mesh import NUM_LANDMARKS, canonical_vertices, landmark_group
from engine.types import AuditPolicy, Editor, EditResult, FaceBatch, TargetCheck

SIDES: tuple[str, ...] = ("left", "right")
#: `side` may also be "auto": per face, the side whose droop raises the symmetry index more.
SIDE_CHOICES: tuple[str, ...] = (*SIDES, "auto")
#: Mouth corners (subject's left, subject's right).
MOUTH_CORNERS = {"left": 291, "right": 61}
#: Falloff radii (IOD) of each region's displacement over the mesh.
RADIUS = {"mouth": 0.38, "cheek": 0.4, "brow_above": 0.5, "brow_below": 0.14, "lid": 0.1, "pull": 0.3}
#: Lip landmarks (upper and lower lip on the midline) that anchor the mouth's pull toward the healthy side.
LIP_MIDLINE = (0, 13, 14, 17)
#: The pull fades from 1 at the midline to 0 this far (IOD) toward the healthy side (about its mouth corner).
PULL_FADE = 0.4
#: The weights reach 1 this far (IOD) from the midline, and are 0 on it.
SIDE_RAMP = 0.25
#: Nasolabial fold, from the nose wing around the mouth, as points of the canonical face (cm, x to the
#: subject's left); each is replaced by its nearest canonical vertex.
NASOLABIAL_PATH_CM = ((1.75, -1.0), (2.75, -2.9), (3.25, -5.0))
#: Cheek point (canonical cm) whose tissue sags with the fold.
CHEEK_CM = (3.5, -2.6)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@lru_cache(maxsize=1)
def _canonical() -> tuple[np.ndarray, float]:
    """Canonical vertices (468, 3) in cm and their inter-ocular distance."""
    canon = np.asarray(canonical_vertices(), dtype=np.float64)
    right = canon[list(landmark_group("right_eye"))].mean(axis=0)
    left = canon[list(landmark_group("left_eye"))].mean(axis=0)
    return canon, float(np.linalg.norm(left - right))


def _nearest_vertex(x_cm: float, y_cm: float) -> int:
    """The canonical vertex nearest to (x, y) in the frontal view, among the front-facing (z > 2 cm) ones."""
    canon, _ = _canonical()
    distance = np.hypot(canon[:, 0] - x_cm, canon[:, 1] - y_cm) + 1e3 * (canon[:, 2] < 2.0)
    return int(distance.argmin())


def _lower_lid(eye: str) -> tuple[list[int], np.ndarray]:
    """Lower-lid landmarks of an eye loop and a profile (0 at the corners, 1 mid-lid) along them."""
    canon, _ = _canonical()
    loop = list(landmark_group(eye))
    x = canon[loop, 0]
    first, last = loop[int(x.argmin())], loop[int(x.argmax())]
    t = (canon[loop, 0] - canon[first, 0]) / (canon[last, 0] - canon[first, 0])
    line = canon[first, 1] + t * (canon[last, 1] - canon[first, 1])
    lower = [
        i for i, y, y_line, ti in zip(loop, canon[loop, 1], line, t, strict=True) if y < y_line and 0 < ti < 1
    ]
    profile = np.sin(np.pi * ((canon[lower, 0] - canon[first, 0]) / (canon[last, 0] - canon[first, 0])))
    return lower, profile


@lru_cache(maxsize=2)
def palsy_weights(side: str) -> dict[str, np.ndarray]:
    """Per-landmark weights `(478,)` in [0, 1] of each droop region on the subject's `side`.

    Each is the largest of `profile_j * exp(-(d_ij / radius)^2)` over the region's anchor landmarks j,
    with d the 3-D distance on the canonical face in IODs, times a ramp from 0 at the midline to 1 at
    `SIDE_RAMP`. The irises get 0: the eyeballs do not sag.
    """
    if side not in SIDES:
        raise ValueError(f"side={side!r}: choose one of {SIDES}")
    canon, iod = _canonical()
    sign = 1.0 if side == "left" else -1.0  # canonical x points to the subject's left
    lateral = _smoothstep(sign * canon[:, 0] / iod / SIDE_RAMP)

    def spread(anchors: list[int], profile: np.ndarray, radius: np.ndarray | float) -> np.ndarray:
        d = np.linalg.norm(canon[:, None] - canon[None, anchors], axis=-1) / iod  # (468, A)
        radius = np.asarray(radius, dtype=np.float64).reshape(-1, 1) if np.ndim(radius) else radius
        return (profile[None] * np.exp(-((d / radius) ** 2))).max(axis=1)

    suffix = "left" if side == "left" else "right"
    brow = list(landmark_group(f"{suffix}_eyebrow"))
    brow_x = sign * canon[brow, 0] / iod
    # Lateral brow ptosis is the larger one; the medial brow is partly held by the procerus.
    brow_profile = 0.6 + 0.4 * (brow_x - brow_x.min()) / (brow_x.max() - brow_x.min())
    below_brow = canon[:, 1] < canon[brow, 1].min()
    lid, lid_profile = _lower_lid(f"{suffix}_eye")
    # Only what lies below the eye line follows the lower lid: the upper lid and the iris stay.
    eye_centre_y = canon[list(landmark_group(f"{suffix}_eye")), 1].mean()
    below_eye = canon[:, 1] < eye_centre_y
    cheek = _nearest_vertex(sign * CHEEK_CM[0], CHEEK_CM[1])  # given for the subject's left
    weights = {
        "mouth": spread([MOUTH_CORNERS[side]], np.ones(1), RADIUS["mouth"]),
        "cheek": spread([cheek], np.ones(1), RADIUS["cheek"]),
        "brow": spread(brow, brow_profile, np.where(below_brow, RADIUS["brow_below"], RADIUS["brow_above"])),
        "lid": spread(lid, lid_profile, RADIUS["lid"]) * below_eye,
    }
    # The healthy side's tone pulls the lips over: the whole affected half and the midline move, the
    # healthy corner stays (so the pull is not ramped to 0 at the midline like the sagging regions).
    pull = spread([MOUTH_CORNERS[side], *LIP_MIDLINE], np.ones(1 + len(LIP_MIDLINE)), RADIUS["pull"])
    toward_healthy = _smoothstep(1 + sign * canon[:, 0] / iod / PULL_FADE)
    out = {}
    for name, weight in [*((k, w * lateral) for k, w in weights.items()), ("pull", pull * toward_healthy)]:
        full = np.zeros(NUM_LANDMARKS)
        full[: len(canon)] = weight
        out[name] = full
    return out


@lru_cache(maxsize=2)
def nasolabial_path(side: str) -> tuple[int, ...]:
    """Landmarks along the nasolabial fold of the subject's `side`, from the nose wing down."""
    sign = 1.0 if side == "left" else -1.0
    return tuple(_nearest_vertex(sign * x, y) for x, y in NASOLABIAL_PATH_CM)


def face_axes(landmarks: torch.Tensor, side: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per face `(N, 3)` unit "down" (forehead to chin) and "medial" (toward the midline from `side`)
    directions in landmark space, and the 3-D inter-ocular distance `(N,)`."""
    _, normal = symmetry_plane(landmarks)
    left = landmarks[:, list(landmark_group("left_side"))].mean(dim=1)
    centre = landmarks[:, :468].mean(dim=1)
    normal = normal * torch.where(((left - centre) * normal).sum(-1) < 0, -1.0, 1.0)[:, None]
    down = landmarks[:, 152] - landmarks[:, 10]
    down = F.normalize(down - (down * normal).sum(-1, keepdim=True) * normal, dim=-1)
    medial = -normal if side == "left" else normal
    right_eye = landmarks[:, list(landmark_group("right_eye"))].mean(dim=1)
    left_eye = landmarks[:, list(landmark_group("left_eye"))].mean(dim=1)
    return down, medial, (left_eye - right_eye).norm(dim=-1)


def _segment_distance(pixels: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance `(N, H, W)` from pixels `(N, H, W, 2)` to segments `a -> b`, each `(N, 2)`."""
    ab = (b - a)[:, None, None]
    t = (((pixels - a[:, None, None]) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-6)).clamp(0, 1)
    closest = a[:, None, None] + t[..., None] * ab
    return (pixels - closest).norm(dim=-1)


class AsymmetryEditor(Editor):
    """Makes faces less symmetric: a one-sided droop like a peripheral facial palsy, at rest.

    Clinical scale. A still photograph shows only the resting items of a grading scale. The edit at
    strength 1 approximates the resting appearance of House-Brackmann grade V (the first grade with
    asymmetry at rest; grades II-IV are symmetric at rest, so at rest they look like strength 0), scored
    on the Sunnybrook resting-symmetry items as mouth "corner drooped" (1), cheek "nasolabial fold less
    pronounced" (1) and eye "normal" (0; the lower lid sags about 0.6 mm, below what a rater grades
    "wide"): a resting-asymmetry score of 2 x 5 = 10 of 20. On eFACE's static zones it lowers the
    oral-commissure, nasolabial-fold and brow scores and leaves the palpebral fissure. Displacements scale
    linearly with strength. Strength 1: the mouth corner sags about 6 mm and the healthy corner rises
    about 3.5 mm (and moves 3.5 mm out), so the corners differ by about 10 mm; the brow sags about 3 mm:
    a clear resting droop (HB V). Strength 0.5 (corners about 5 mm apart): a mild droop, about the least
    a rater scores "corner drooped" (the HB IV-V border). Voluntary movement, which defines HB grades
    II-IV, is not simulated.

    Magnitudes are at strength 1, in inter-ocular distances (IOD, about 63 mm in adults, so 0.1 IOD is
    about 6 mm). On the tuning demo faces MediaPipe re-detects most of the mouth-corner offset (the audit's
    `mouth_corner_drop`), and the 52 expression blendshapes move by a mean absolute change of about 0.03:
    MediaPipe reads a one-sided droop partly as a lost smile on both sides.

    Args:
        side: the SUBJECT's side that droops, "left" or "right" (the subject's left is on the image's
            right in a non-mirrored photo), or "auto": per face, the side whose mouth corner already sits
            lower (`editors.symmetry.measures.lower_mouth_side`; a droop on the other side would first
            make such a face MORE symmetric). The side used is in the metadata.
        droop_mouth: how far the mouth corner sags (IOD); the lips and chin beside it follow.
        droop_cheek: how far the cheek beside the nasolabial fold sags down and inward (IOD).
        flatten_nasolabial: share in [0, 1] of the fold's mid-scale shading (its crease) removed.
        droop_brow: how far the brow sags (IOD, lateral end; 60 % of it at the medial end); the forehead
            above follows, so it loses its lift.
        eyelid: how far the middle of the lower lid sags (IOD), widening the eye aperture.
        pull_mouth: how far the lips are pulled toward the healthy side (IOD, at the midline and the
            drooping half; the healthy corner stays).
        lift_healthy: how far the healthy side's mouth corner rises and moves out (IOD): its zygomatic
            tone is no longer balanced by the palsied side.
        mask_dilation_px: how far the returned edit mask extends beyond the changed pixels.
    """

    property: ClassVar[str] = "symmetry"
    sham_is_input = True  # every change scales with strength (tests/test_editor_contract.py)
    direction: str | None = "less"

    #: Bumped when the output changes without a config change (2: running-sum box filters; 3: the "auto"
    #: side is the side whose mouth corner sits lower).
    version = 3

    def __init__(
        self,
        side: str = "auto",
        droop_mouth: float = 0.10,
        droop_cheek: float = 0.05,
        flatten_nasolabial: float = 0.7,
        droop_brow: float = 0.05,
        eyelid: float = 0.01,
        pull_mouth: float = 0.03,
        lift_healthy: float = 0.08,
        mask_dilation_px: int = 3,
    ) -> None:
        if side not in SIDE_CHOICES:
            raise ValueError(
                f"AsymmetryEditor side={side!r}: choose the subject's side, one of {SIDE_CHOICES}"
            )
        for name, value in (
            ("droop_mouth", droop_mouth),
            ("droop_cheek", droop_cheek),
            ("droop_brow", droop_brow),
            ("eyelid", eyelid),
            ("pull_mouth", pull_mouth),
            ("lift_healthy", lift_healthy),
        ):
            if not 0.0 <= float(value) <= 0.3:
                raise ValueError(
                    f"AsymmetryEditor {name}={value!r} must be in [0, 0.3] inter-ocular distances"
                )
        if not 0.0 <= float(flatten_nasolabial) <= 1.0:
            raise ValueError(f"AsymmetryEditor flatten_nasolabial={flatten_nasolabial!r} must be in [0, 1]")
        if mask_dilation_px < 0:
            raise ValueError(f"AsymmetryEditor mask_dilation_px={mask_dilation_px} must be >= 0")
        self.side = side
        self.droop_mouth = float(droop_mouth)
        self.droop_cheek = float(droop_cheek)
        self.flatten_nasolabial = float(flatten_nasolabial)
        self.droop_brow = float(droop_brow)
        self.eyelid = float(eyelid)
        self.pull_mouth = float(pull_mouth)
        self.lift_healthy = float(lift_healthy)
        self.mask_dilation_px = int(mask_dilation_px)

    def droop_field(self, landmarks: torch.Tensor, side: str) -> torch.Tensor:
        """`(N, 478, 3)` landmark displacement of the full (strength 1) droop of `side`, in landmark units."""
        weights = {
            k: torch.as_tensor(v, dtype=landmarks.dtype, device=landmarks.device)
            for k, v in palsy_weights(side).items()
        }
        healthy = torch.as_tensor(palsy_weights(SIDES[1 - SIDES.index(side)])["mouth"], dtype=landmarks.dtype,
                                  device=landmarks.device)
        down, medial, iod = face_axes(landmarks, side)
        # The sagging cheek also slides a little toward the nose: the fold's bulge flattens.
        cheek_direction = F.normalize(down + 0.5 * medial, dim=-1)
        field = (
            weights["mouth"][None, :, None] * self.droop_mouth * down[:, None]
            + weights["cheek"][None, :, None] * self.droop_cheek * cheek_direction[:, None]
            + weights["brow"][None, :, None] * self.droop_brow * down[:, None]
            + weights["lid"][None, :, None] * self.eyelid * down[:, None]
            + weights["pull"][None, :, None] * self.pull_mouth * medial[:, None]
            # The healthy side's unopposed zygomatic tone: its corner rises and moves out (away from the palsy).
            + healthy[None, :, None] * self.lift_healthy * F.normalize(medial - down, dim=-1)[:, None]
        )
        return iod[:, None, None] * field

    def droop_sides(self, landmarks: torch.Tensor) -> list[str]:
        """The subject's side that droops, per face (decided at strength 1, so it never depends on strength)."""
        if self.side != "auto":
            return [self.side] * landmarks.shape[0]
        return lower_mouth_side(landmarks.detach().cpu().double().numpy())

    def displacement(self, landmarks: torch.Tensor, strength: float) -> torch.Tensor:
        """`(N, 478, 3)` landmark displacement of the droop at `strength`, in landmark units."""
        sides = self.droop_sides(landmarks)
        if len(set(sides)) == 1:
            field = self.droop_field(landmarks, sides[0])
        else:
            left = torch.tensor([side == "left" for side in sides], device=landmarks.device)[:, None, None]
            field = torch.where(
                left, self.droop_field(landmarks, "left"), self.droop_field(landmarks, "right")
            )
        return strength * field

    def audit_policy(self) -> AuditPolicy:
        """Asymmetry must rise, on the re-detected mesh or in the mirror image (whichever shows it).

        The mouth-corner judge adds `mouth_corner_drop`: the droop a person sees, read from the
        re-detected landmarks on the side this editor drooped (reported, not a pass/fail check).
        """
        target = TargetCheck(("delta_symmetry_index_rel", "delta_image_asymmetry_rel"), "min_symmetry_change", sign=+1)
        return AuditPolicy(self.property, self.direction, target,
                           judges=(ImageAsymmetryJudge(), MouthCornerJudge(self.side)))

    def edit(self, batch: FaceBatch, strength: float, seed: int) -> EditResult:
        """Droop one side of every face by `strength` (0 is the sham: same pipeline, no change).

        Deterministic, with no randomness: `seed` does not change the output.
        """
        value = float(strength)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"AsymmetryEditor strength={strength!r} must be in [0, 1]")
        images, size = batch.images, batch.size
        landmarks = batch.landmarks.to(images.device, torch.float32)
        sides = self.droop_sides(landmarks)
        shift = self.displacement(landmarks, value)
        target = landmarks + shift
        flattened, fold = self._flatten_fold(images, landmarks, sides, value)
        coords = backward_map(landmarks, target, size)
        edited = apply_backward_map(flattened, coords).clamp(0.0, 1.0)
        mask = moved_region(coords, dilation_px=self.mask_dilation_px)
        # The fold region moves with the warp, so where it lands comes from the same map.
        moved_fold = apply_backward_map(fold, coords)
        k = self.mask_dilation_px
        fold_mask = (moved_fold > 0).float()
        if k:
            fold_mask = max_filter(fold_mask, k, k)
        return EditResult(
            images=edited,
            mask=torch.maximum(mask, fold_mask),
            metadata=self._metadata(landmarks, target, shift, sides, value),
            landmarks=target,
        )

    def _flatten_fold(
        self, images: torch.Tensor, landmarks: torch.Tensor, sides: list[str], strength: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images with the nasolabial crease's shading taken out, and the `(N, 1, H, W)` blend weight.

        The crease is the band between a fine and a coarse blur (skin grain and overall tone stay);
        the weight is a soft band around the fold's path, 0.08 IOD wide.
        """
        iod = inter_ocular_distance(landmarks)
        folds = torch.tensor([nasolabial_path(side) for side in sides], device=landmarks.device)
        path = torch.gather(landmarks[..., :2], 1, folds[..., None].expand(-1, -1, 2))
        pixels = identity_coords(images.shape[0], tuple(images.shape[-2:]), images.device)
        distance = torch.stack(
            [_segment_distance(pixels, path[:, i], path[:, i + 1]) for i in range(path.shape[1] - 1)]
        ).amin(dim=0)
        band = (1 - distance / (0.08 * iod[:, None, None])).clamp(0, 1)
        weight = (strength * self.flatten_nasolabial * band * band * (3 - 2 * band)).unsqueeze(1)
        ones = torch.ones_like(images[:, :1])
        fine = smooth_within(images, ones, 0.012 * iod)
        coarse = smooth_within(images, ones, 0.06 * iod)
        return images - weight * (fine - coarse), weight

    def _metadata(
        self,
        before: torch.Tensor,
        after: torch.Tensor,
        shift: torch.Tensor,
        sides: list[str],
        strength: float,
    ) -> list[dict[str, Any]]:
        index_before = symmetry_index(before).tolist()
        index_after = symmetry_index(after).tolist()
        moved = shift[..., :2].norm(dim=-1)
        corner = [float(moved[i, MOUTH_CORNERS[side]]) for i, side in enumerate(sides)]
        brow = [
            float(moved[i, list(landmark_group(f"{side}_eyebrow"))].mean()) for i, side in enumerate(sides)
        ]
        lid = [float(moved[i, _lower_lid(f"{side}_eye")[0]].max()) for i, side in enumerate(sides)]
        return [
            {
                "editor": self.name,
                "side": sides[i],
                "strength": strength,
                "symmetry_index_before": index_before[i],
                "symmetry_index_after": index_after[i],
                "mouth_corner_droop_px": corner[i],
                "brow_droop_px": brow[i],
                "lower_lid_sag_px": lid[i],
            }
            for i in range(before.shape[0])
        ]
