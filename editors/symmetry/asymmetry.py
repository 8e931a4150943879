"""Unilateral facial droop: the resting appearance of a lower-motor-neuron (peripheral) facial palsy.

A peripheral facial palsy (Bell's palsy; visibly asymmetric at rest from House-Brackmann grade V) weakens
every muscle of the facial nerve on one side, so gravity and the healthy side's tone win:

* the mouth corner sags and the lip line slopes down toward it (zygomaticus/levator weakness);
* the cheek sags and the nasolabial fold flattens (its crease is held by the same elevators);
* the brow sits lower and the forehead loses its lift and wrinkles (frontalis weakness);
* the lower lid sags away from the eye and the aperture widens (orbicularis oculi weakness; the
  upper lid is lifted by a different nerve, so it stays);
* the healthy side, unopposed, pulls the lips toward itself and lifts its own mouth corner a little.

The editor moves landmarks by a displacement field built on MediaPipe's canonical face
(`editors.symmetry.palsy`): each region
has anchor landmarks, a magnitude in inter-ocular distances (IOD, eye-centre to eye-centre) and a
Gaussian falloff over the 3-D mesh; the sagging regions fade to 0 at the facial midline, so the other
half does not sag (only its mouth corner and the lips move, pulled by the healthy side). Directions follow the head: "down" is the face's own forehead-to-chin axis and
"medial" points toward its symmetry plane, so pitch, roll and yaw are respected. The image is then
warped with `editors.warp.warp_images`; the fold flattening also removes the fold's mid-scale shading.

Sides are the SUBJECT's, as in MediaPipe's landmark names: `side="left"` droops the subject's left
half, which is on the IMAGE's right in an ordinary (non-mirrored) photograph.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from editors.filters import max_filter
from editors.outer_warp import smooth_outer_warp
from editors.pose import face_widths
from editors.symmetry.measures import ImageAsymmetryJudge, MouthCornerJudge, lower_mouth_side
from editors.symmetry.mirror import (
    inter_ocular_distance,
    segment_distance,
    smooth_within,
    symmetry_index,
)
from editors.symmetry.palsy import (
    MOUTH_CORNERS,
    SIDE_CHOICES,
    SIDES,
    face_axes,
    lower_lid,
    nasolabial_path,
    palsy_weights,
)
from editors.warp import apply_backward_map, backward_map, identity_coords, moved_region
from engine.faces.mesh import landmark_group
from engine.types import AuditPolicy, Editor, EditResult, FaceBatch, TargetCheck


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
    #: side is the side whose mouth corner sits lower; 4: the warp smoothed beyond the inner face).
    version = 4

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
        # Smoothed beyond the inner face: on a turned face the outline runs along the nose and lips,
        # and the plain mesh warp drew a hard line across the upper lip there (photo_table#4).
        coords = smooth_outer_warp(backward_map(landmarks, target, size), target, face_widths(target[..., :2]))
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
            [segment_distance(pixels, path[:, i], path[:, i + 1]) for i in range(path.shape[1] - 1)]
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
        lid = [float(moved[i, lower_lid(f"{side}_eye")[0]].max()) for i, side in enumerate(sides)]
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
