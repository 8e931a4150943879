"""Facial symmetry editor: the mirrored-average shape, the mirrored texture, or both.

The symmetry plane is fitted per face in 3-D (landmark x, y and depth z) to the midline landmarks and
the midpoints of all left/right mirror pairs, so a turned head is symmetrised about its own turned
midline rather than about the image's vertical. With 2-D landmarks the same fit gives a midline.

* shape: each landmark's target is `p + strength / 2 * (R(p_partner) - p)`, where `R` reflects across
  that plane; at strength 1 the shape is exactly the mirrored average, and the symmetry index falls as
  `1 - strength`. The irises only follow their eyes: gaze is not part of facial shape.
* texture: the face's own mirror image, made through the mesh correspondence (every pixel samples the
  same place of its partner triangle, so the mirror follows head pose and lands feature on feature), is
  blended into the face. `source_side="average"` blends half of it in everywhere, which also makes the
  lighting symmetric; "left"/"right" copy that half of the subject's face onto the other half, with a
  soft seam band along the midline. The geometry (landmarks) is kept. The blend stays inside the face
  oval and below the forehead's hair, leaves the eye openings alone, and skips pixels whose partner is
  hidden or foreshortened on a turned head; "average" keeps the finest detail the face's own, so
  glasses and landmark errors never show double edges. Left/right copies suit near-frontal faces.
* both: shape, then texture on the symmetric shape, resampling the original image only once.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from editors.filters import max_filter
from editors.symmetry.measures import ImageAsymmetryJudge
from editors.symmetry.mirror import (
    compose_maps,
    eye_openings,
    height_above_eyes,
    image_asymmetry,
    inner_face_weight,
    inter_ocular_distance,
    midline_distance,
    mirror_map,
    mirror_source_area,
    mirror_visibility,
    smooth_within,
    symmetric_target,
    symmetry_index,
)
from editors.symmetry.register import registered_coords, registration_flow
from editors.warp import apply_backward_map, backward_map, moved_region, warp_masks
from engine.types import AuditPolicy, Editor, EditResult, FaceBatch, TargetCheck

SYMMETRY_MODES: tuple[str, ...] = ("shape", "texture", "both")
SOURCE_SIDES: tuple[str, ...] = ("average", "left", "right")
#: The audit sees symmetry in two facets: the re-detected mesh and the mirror image's pixels.
SYMMETRY_DELTAS = ("delta_symmetry_index_rel", "delta_image_asymmetry_rel")
#: ... and with the photo's lighting kept (`lighting_scale`), the pixels of the face's detail alone.
DETAIL_SYMMETRY_DELTAS = ("delta_symmetry_index_rel", "delta_image_asymmetry_detail_rel")


class SymmetryEditor(Editor):
    """Makes faces more symmetric: mirrored-average shape, mirrored texture, or both.

    Args:
        mode: "shape" (warp to the mirrored-average shape), "texture" (blend in the face's own mirror
            image, landmarks kept) or "both" (shape, then texture).
        source_side: for texture: "average" (the mean of the face and its mirror image) or the
            subject's "left"/"right" half, copied onto the other half.
        seam_width: width (in inter-ocular distances, IOD) of the band beside the midline over which a
            copied half fades in; unused for "average", whose mirror blend is continuous at the midline.
        face_feather: how far (IOD) inside the face oval the texture blend fades in from 0.
        top_limit: height (IOD) above the eye line where the texture blend has faded out (over
            `face_feather`), so hair falling over the forehead is not mirrored; None: up to the oval.
        detail_scale: for "average": texture differences finer than this (IOD; the sigma of a Gaussian)
            stay the face's own, coarser ones (shading, tone) are averaged, so glasses, stray hair and
            small landmark errors never show double edges and the skin is not smoothed; None averages all
            detail. A copied half ("left"/"right") has one source, so it copies all detail.
        lighting_scale: for "average": differences coarser than this (IOD, a Gaussian's sigma) also stay
            the face's own, so the photo's lighting is kept and only the face's features and skin are
            averaged (a band between `detail_scale` and this); None (default) evens out the lighting
            too. With it the audit's pixel facet is the detail asymmetry (`ImageAsymmetryJudge`).
        keep_eyes: leave the eye openings (iris, sclera, catchlights: gaze and highlights, not facial
            symmetry) out of the texture mirroring.
        eye_feather: how far (IOD) beyond the lid margin the kept eye region fades out.
        mirror_share: for "average": the share of the mirror image blended in, in (0, 0.5]; 0.5 makes
            the averaged scales fully symmetric, a share s leaves (1 - 2 s) of their asymmetry.
        register_max_shift: for "average": before blending, register the mirror image to the face by
            optical flow (`editors.symmetry.register`), moving it at most this far (IOD; 0.08 was chosen
            on the tuning half), so the mesh's own misplacement does not draw edges twice; None
            (default): the mesh mirror map alone. A copied half has one source and draws no double
            edge, so it is not registered. It about triples the texture edit's CPU time.
        measure_image: add the image-space asymmetry before/after to the metadata (texture mode needs no
            extra warp for it; both and shape modes need one and two).
        mask_dilation_px: how far the returned edit mask extends beyond the changed pixels.
    """

    property: ClassVar[str] = "symmetry"
    sham_is_input = True  # every change scales with strength (tests/test_editor_contract.py)
    direction: str | None = "more"

    #: Bumped when the output changes without a config change (2: running-sum box filters; 3: the kept
    #: eye openings are the lid loops with an exact distance fade, no band across squinting faces).
    #: `register_max_shift` is a config change, off by default, so it needs no bump.
    version = 3

    def __init__(
        self,
        mode: str = "shape",
        source_side: str = "average",
        seam_width: float = 0.15,
        face_feather: float = 0.2,
        top_limit: float | None = 0.65,
        detail_scale: float | None = 0.02,
        lighting_scale: float | None = None,
        keep_eyes: bool = True,
        eye_feather: float = 0.06,
        mirror_share: float = 0.5,
        register_max_shift: float | None = None,
        measure_image: bool = True,
        mask_dilation_px: int = 3,
    ) -> None:
        if mode not in SYMMETRY_MODES:
            raise ValueError(f"SymmetryEditor mode={mode!r} is not supported; choose one of {SYMMETRY_MODES}")
        if source_side not in SOURCE_SIDES:
            raise ValueError(f"SymmetryEditor source_side={source_side!r}: choose one of {SOURCE_SIDES}")
        for name, value in (
            ("seam_width", seam_width),
            ("face_feather", face_feather),
            ("eye_feather", eye_feather),
        ):
            if not 0.0 < float(value) <= 1.0:
                raise ValueError(f"SymmetryEditor {name}={value!r} must be in (0, 1] inter-ocular distances")
        if top_limit is not None and not 0.0 < float(top_limit) <= 2.0:
            raise ValueError(
                f"SymmetryEditor top_limit={top_limit!r} must be None or in (0, 2] IODs above the eyes"
            )
        if detail_scale is not None and not 0.0 < float(detail_scale) <= 1.0:
            raise ValueError(f"SymmetryEditor detail_scale={detail_scale!r} must be None or in (0, 1] IODs")
        if lighting_scale is not None and not (detail_scale or 0.0) < float(lighting_scale) <= 2.0:
            raise ValueError(
                f"SymmetryEditor lighting_scale={lighting_scale!r} must be None or in (detail_scale, 2] IODs"
            )
        if not 0.0 < float(mirror_share) <= 0.5:
            raise ValueError(f"SymmetryEditor mirror_share={mirror_share!r} must be in (0, 0.5]")
        if register_max_shift is not None and not 0.0 < float(register_max_shift) <= 0.2:
            raise ValueError(
                f"SymmetryEditor register_max_shift={register_max_shift!r} must be None or in (0, 0.2] IODs"
            )
        if mask_dilation_px < 0:
            raise ValueError(f"SymmetryEditor mask_dilation_px={mask_dilation_px} must be >= 0")
        self.mode = mode
        self.source_side = source_side
        self.seam_width = float(seam_width)
        self.face_feather = float(face_feather)
        self.top_limit = None if top_limit is None else float(top_limit)
        self.detail_scale = None if detail_scale is None else float(detail_scale)
        self.lighting_scale = None if lighting_scale is None else float(lighting_scale)
        self.keep_eyes = bool(keep_eyes)
        self.eye_feather = float(eye_feather)
        self.mirror_share = float(mirror_share)
        self.register_max_shift = None if register_max_shift is None else float(register_max_shift)
        self.measure_image = bool(measure_image)
        self.mask_dilation_px = int(mask_dilation_px)

    def audit_policy(self) -> AuditPolicy:
        """Asymmetry must fall, on the re-detected mesh or in the mirror image (whichever shows it).

        Mirrored texture replaces skin with its mirror image, so the detector's blendshapes move
        without the expression changing: with texture, the expression change is reported, not checked.
        An edit that keeps the photo's lighting is judged on the detail asymmetry, lighting taken out.
        """
        kept_lighting = self.mode != "shape" and self.source_side == "average" and self.lighting_scale is not None
        target = TargetCheck(DETAIL_SYMMETRY_DELTAS if kept_lighting else SYMMETRY_DELTAS, "min_symmetry_change",
                             sign=-1)
        return AuditPolicy(self.property, self.direction, target, expression_kept=self.mode == "shape",
                           judges=(ImageAsymmetryJudge(),))

    def edit(self, batch: FaceBatch, strength: float, seed: int) -> EditResult:
        """Make every face `strength` of the way symmetric (0 is the sham: same pipeline, no change).

        The edit is deterministic and uses no randomness, so `seed` does not change the output.
        """
        strength = self._check_strength(strength)
        images, size = batch.images, batch.size
        landmarks = batch.landmarks.to(images.device, torch.float32)
        face_mask = batch.face_mask.to(images.device, torch.float32)
        target = self._target_landmarks(landmarks, strength)
        if self.mode == "texture":
            shape_coords, edited, target_mask = None, images, face_mask
            mask = torch.zeros_like(face_mask)
        else:
            shape_coords = backward_map(landmarks, target, size)
            edited = apply_backward_map(images, shape_coords)
            target_mask = warp_masks(face_mask, landmarks, target, coords=shape_coords)
            mask = moved_region(shape_coords, dilation_px=self.mask_dilation_px)
        if self.mode != "shape" or self.measure_image:
            mirror = mirror_map(target, size)
            visible = mirror_visibility(mirror, target)
            face_weight = inner_face_weight(target_mask, target, self.face_feather)
        if self.mode != "shape":
            # Mirror the warped face without resampling twice: compose the shape and mirror maps.
            sample = mirror if shape_coords is None else compose_maps(shape_coords, mirror)
            weight = self.texture_weight(target, mirror, visible, face_weight)
            mirrored = apply_backward_map(images, sample)
            iod = inter_ocular_distance(target)
            if self.register_max_shift is not None and self.source_side == "average":
                flow = registration_flow(edited, mirrored, weight, iod, self.register_max_shift)
                sample = compose_maps(sample, registered_coords(flow))
                mirrored = apply_backward_map(images, sample)
            change = mirrored - edited
            if self.source_side == "average":
                change = self._band(change, weight, iod)
            weight = strength * weight
            edited = edited + weight * change
            changed = (weight > 0).float()
            if self.mask_dilation_px:
                k = self.mask_dilation_px
                changed = max_filter(changed, k, k)
            mask = torch.maximum(mask, changed)
        edited = edited.clamp(0.0, 1.0)
        metadata = self._metadata(landmarks, target, strength)
        if self.measure_image:
            # Weighted by where the mirror partner is visible: elsewhere the difference measures occlusion.
            after = image_asymmetry(edited, mirror, face_weight * visible)
            if self.mode == "texture":
                before = image_asymmetry(images, mirror, face_weight * visible)
            else:
                mirror = mirror_map(landmarks, size)
                weight = inner_face_weight(face_mask, landmarks, self.face_feather)
                before = image_asymmetry(images, mirror, weight * mirror_visibility(mirror, landmarks))
            for meta, value_before, value_after in zip(
                metadata, before.tolist(), after.tolist(), strict=True
            ):
                meta["image_asymmetry_before"] = value_before
                meta["image_asymmetry_after"] = value_after
        return EditResult(images=edited, mask=mask, metadata=metadata, landmarks=target)

    def texture_weight(
        self, landmarks: torch.Tensor, coords: torch.Tensor, visible: torch.Tensor, face_weight: torch.Tensor
    ) -> torch.Tensor:
        """`(N, 1, H, W)` share of the mirror image in the texture target, before `strength`.

        The inner face (`face_weight`, see `inner_face_weight`) where the mirror partner is `visible` and
        not foreshortened (see `mirror_source_area`), less the eye openings if kept; then half
        everywhere for "average", else 1 on the copied-onto half beyond a smooth seam band.
        """
        weight = face_weight * visible * mirror_source_area(coords, landmarks)
        size = tuple(coords.shape[1:3])
        if self.keep_eyes:
            weight = weight * (1 - eye_openings(landmarks, size, self.eye_feather))
        if self.top_limit is not None:
            below = ((self.top_limit - height_above_eyes(landmarks, size)) / self.face_feather).clamp(0, 1)
            weight = weight * below * below * (3 - 2 * below)
        if self.source_side == "average":
            return self.mirror_share * weight
        side = midline_distance(coords, landmarks)
        onto = -side if self.source_side == "left" else side  # > 0 on the half that receives the copy
        ramp = (onto / self.seam_width).clamp(0, 1)
        return weight * ramp * ramp * (3 - 2 * ramp)

    def _band(self, change: torch.Tensor, weight: torch.Tensor, iod: torch.Tensor) -> torch.Tensor:
        """The part of the mirror blend's `change` between `detail_scale` and `lighting_scale` (IODs)."""
        kept = change if self.detail_scale is None else smooth_within(change, weight, self.detail_scale * iod)
        if self.lighting_scale is not None:
            # The finest band is already out of `kept`; smoothing `change` itself takes the lighting out.
            kept = kept - smooth_within(change, weight, self.lighting_scale * iod)
        return kept

    def _target_landmarks(self, landmarks: torch.Tensor, strength: float) -> torch.Tensor:
        if self.mode == "texture":
            return landmarks.clone()
        return symmetric_target(landmarks, strength)

    @staticmethod
    def _check_strength(strength: float) -> float:
        value = float(strength)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"SymmetryEditor strength={strength!r} must be in [0, 1]")
        return value

    def _metadata(self, before: torch.Tensor, after: torch.Tensor, strength: float) -> list[dict[str, Any]]:
        index_before = symmetry_index(before).tolist()
        index_after = symmetry_index(after).tolist()
        shift = (after[..., :2] - before[..., :2]).norm(dim=-1)
        return [
            {
                "editor": self.name,
                "mode": self.mode,
                "source_side": self.source_side,
                "strength": strength,
                "symmetry_index_before": index_before[i],
                "symmetry_index_after": index_after[i],
                "mean_landmark_shift_px": float(shift[i].mean()),
                "max_landmark_shift_px": float(shift[i].max()),
            }
            for i in range(before.shape[0])
        ]
