"""Offline age editor: folds, skin ageing, greying and sagging (older), or smoothing and lifting (younger).

Pipeline (each step runs at every strength, so strength 0 is the sham through the same resampling):

1. **Sagging** (`editors.age_shape`): jowls, cheek descent, brow ptosis, eyelid hooding and lip thinning
   as landmark displacements, applied with the piecewise-affine mesh warp (`editors.warp`).
2. **Relief** (`editors.age_creases`, `editors.age_texture`): mesh-defined folds (forehead, glabella,
   crow's feet, tear troughs and bags, nasolabial and marionette folds, perioral lines, and an upper-lid
   crease that is off by default), broad hollows (buccal, temple) and jowl swellings, plus pore-scale
   texture, are synthesised as a height map in the shape-free template and warped onto the (sagged)
   face. A lighting model turns the relief into multiplicative shading of the skin in linear light, so
   folds keep the local skin tone.
   The shading is blurred down to the photo's own level of detail (`match_photo_detail`): a blurry,
   upscaled face does not get pin-sharp wrinkles.
3. **Skin tone** (`editors.age_tone`): yellowing and desaturation (only as strongly as the photo has
   colour), dulled sheen, mottled pigment and age spots, faded lips and brows.
4. **Hair greying** (`editors.hair`, off by default: `greying=0`): only on hair pixels from the
   selfie-segmentation person mask, above the mouth, outside the face below the brows, not skin-coloured.

Strength 1 is a strong ageing (roughly a face in its seventies); every size is a fraction of the face
width, so crops of any resolution get the same edit. Knobs are documented on `AgeEditor`; the
manipulation check is `scripts/eval_age.py`.

`direction="younger"` reverses the shape changes (lifting, fuller lips), raises feature contrast, and
replaces folds and texture by edge-preserving smoothing with extra fold removal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from editors.age.creases import FOLD_GROUPS, fold_relief
from editors.age.geometry import allowed_region, frontal_weight
from editors.age.shape import SAG_PARTS, growth_displacements, sag_displacements
from editors.age.template import (
    TEMPLATE_SIZE,
    sample_template,
    template_face_width,
    template_sampling_map,
)
from editors.age.texture import MAX_SPOTS, texture_maps
from editors.age.tone import (
    age_skin_tone,
    apply_pigment,
    colourfulness,
    fade_features,
    fold_region,
    grey_hair,
    masked_mean,
    region_masks,
    smooth_skin,
)
from editors.outer_warp import smooth_outer_warp
from editors.pose import face_widths
from editors.skin import (
    detail_scale,
    gaussian_blur,
    last_axis_sums,
    linear_to_srgb,
    luminance,
    shading_from_height,
    srgb_to_linear,
)
from editors.warp import apply_backward_map, backward_map
from engine.types import AuditPolicy, Editor, EditResult, FaceBatch, TargetCheck

DIRECTIONS = ("older", "younger")
HAIR_MASKS = ("selfie_segmentation", "none")
#: Per-channel exponent of the relief shading (linear RGB): shadows in skin are redder than the light
#: (light scattered under the skin comes back red). At (0.8, 1.0, 1.15) a broad hollow read as a grey,
#: bruise-like patch beside saturated skin on the sharp photos; at this tint, a darkening of 0.7 keeps
#: 0.82 of the red and 0.62 of the blue, and the shadow reads as skin in shade.
SHADOW_TINT = (0.55, 1.0, 1.35)
#: How much of a buccal hollow a full smile (MediaPipe mouthSmile blendshapes) hides.
SMILE_HIDES_HOLLOWS = 0.8
SMILE_BLENDSHAPES = (44, 45)  # mouthSmileLeft, mouthSmileRight
#: Fold groups off by default: the Face Landmarker reads a shaded upper-lid crease as a half-closed,
#: downcast eye (eyeBlink / eyeLookDown), which is an expression change, not ageing.
DEFAULT_FOLDS_OFF = ("eyelid",)


def _weights(
    name: str, given: Mapping[str, float] | None, keys: tuple[str, ...], off: tuple[str, ...] = ()
) -> dict[str, float]:
    out = {k: 0.0 if k in off else 1.0 for k in keys}
    for key, value in dict(given or {}).items():
        if key not in out:
            raise ValueError(f"{name} key={key!r} is unknown; available: {list(keys)}")
        if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}.{key}={value!r} must be a finite number >= 0")
        out[key] = float(value)
    return out


class AgeEditor(Editor):
    """Make faces look older (or younger) without changing expression or apparent sex.

    Args:
        direction: "older" or "younger".
        fold_depth: overall depth of the folds (1 = the depths in `editors.age_creases`).
        folds: per fold group multipliers (keys of `FOLD_GROUPS`), default 1 each except "eyelid" (0).
        light_elevation_deg: elevation of the light that shades the relief (90 = from the camera).
        shading_diffuse: fraction of the light from the directional key light (the rest is ambient).
        shading_occlusion: ambient occlusion: log-darkening of a cavity per 1 % of the face width of depth.
        texture: pore relief amplitude, in face widths.
        pore_scale: pore size (Gaussian sigma), in face widths.
        yellowing: yellow cast of the skin (0-1), scaled by how colourful the photo is.
        desaturation: fraction of skin chroma removed.
        dulling: dimming of the skin and of its sheen (0-1).
        mottling: optical density of uneven, blotchy pigment.
        age_spots: number of age spots per face (at most 24).
        spot_density: peak optical density of an age spot.
        feature_fading: fraction by which lip and brow colour move toward the skin colour.
        greying: fraction by which hair is lifted toward silver and drained of colour. Off by default:
            the hair mask cannot tell a dark hat from dark hair (see `editors.hair`), and on the demo
            set greying did not raise the independent judge's age estimate.
        hair_mask: "selfie_segmentation" (person mask from the asset) or "none" (no greying).
        sag: overall sagging (1 = the displacements in `editors.age_shape`).
        sag_parts: per part multipliers (keys of `SAG_PARTS`), default 1 each.
        smoothing: younger only: blend toward edge-preserving smoothed skin (0-1).
        fold_removal: younger only: extra, broader smoothing over the fold lines (0-1).
        lift: younger only: fraction of the sagging applied in reverse.
        match_photo_detail: blur the shading to the photo's own finest detail.
    """

    version = 10  # 2-7: smoothed sag warp beyond the inner face; broad hollows fade with yaw; per-face sums
    # 8: broad, shallow-sloped buccal hollows and warmer shadows (the old ones drew dark blotches)
    # 9: the red lip thins evenly toward the inner contour (the mesh folded over the mouth line)
    # 10: the edit may reach the face's own hull too (a turned face's nose and lips lie beyond the ring)

    property = "age"
    sham_is_input = True  # every change scales with strength (tests/test_editor_contract.py)

    def __init__(
        self,
        direction: str = "older",
        fold_depth: float = 1.0,
        folds: Mapping[str, float] | None = None,
        light_elevation_deg: float = 55.0,
        shading_diffuse: float = 0.7,
        shading_occlusion: float = 0.4,
        texture: float = 0.0012,
        pore_scale: float = 0.003,
        yellowing: float = 0.5,
        desaturation: float = 0.08,
        dulling: float = 0.06,
        mottling: float = 0.05,
        age_spots: int = 8,
        spot_density: float = 0.25,
        feature_fading: float = 0.35,
        greying: float = 0.0,
        hair_mask: str = "selfie_segmentation",
        sag: float = 1.0,
        sag_parts: Mapping[str, float] | None = None,
        growth: float = 0.0,
        smoothing: float = 0.8,
        fold_removal: float = 0.6,
        lift: float = 0.6,
        match_photo_detail: bool = True,
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction={direction!r} must be one of {DIRECTIONS}")
        if hair_mask not in HAIR_MASKS:
            raise ValueError(f"hair_mask={hair_mask!r} must be one of {HAIR_MASKS}")
        if not 5.0 <= light_elevation_deg <= 90.0:
            raise ValueError(f"light_elevation_deg={light_elevation_deg} must be in [5, 90]")
        if not 0 <= int(age_spots) <= MAX_SPOTS:
            raise ValueError(f"age_spots={age_spots} must be in [0, {MAX_SPOTS}]")
        for name, value, hi in (
            ("fold_depth", fold_depth, 10.0), ("shading_diffuse", shading_diffuse, 1.0),
            ("shading_occlusion", shading_occlusion, 10.0), ("texture", texture, 0.05),
            ("yellowing", yellowing, 1.0), ("desaturation", desaturation, 1.0), ("dulling", dulling, 1.0),
            ("mottling", mottling, 2.0), ("spot_density", spot_density, 2.0),
            ("feature_fading", feature_fading, 1.0), ("greying", greying, 1.0), ("sag", sag, 5.0),
            ("growth", growth, 0.3), ("smoothing", smoothing, 1.0), ("fold_removal", fold_removal, 1.0), ("lift", lift, 2.0),
        ):  # fmt: skip
            if not (isinstance(value, int | float) and 0.0 <= float(value) <= hi):
                raise ValueError(f"{name}={value!r} must be a number in [0, {hi}]")
        if not 0.0005 <= pore_scale <= 0.05:
            raise ValueError(f"pore_scale={pore_scale} must be in [0.0005, 0.05] face widths")
        self.direction = direction
        self.fold_depth = float(fold_depth)
        self.folds = _weights("folds", folds, FOLD_GROUPS, DEFAULT_FOLDS_OFF)
        self.light_elevation_deg = float(light_elevation_deg)
        self.shading_diffuse = float(shading_diffuse)
        self.shading_occlusion = float(shading_occlusion)
        self.texture = float(texture)
        self.pore_scale = float(pore_scale)
        self.yellowing = float(yellowing)
        self.desaturation = float(desaturation)
        self.dulling = float(dulling)
        self.mottling = float(mottling)
        self.age_spots = int(age_spots)
        self.spot_density = float(spot_density)
        self.feature_fading = float(feature_fading)
        self.greying = float(greying)
        self.hair_mask = hair_mask
        self.sag = float(sag)
        self.sag_parts = _weights("sag_parts", sag_parts, SAG_PARTS)
        self.growth = float(growth)
        self.smoothing = float(smoothing)
        self.fold_removal = float(fold_removal)
        self.lift = float(lift)
        self.match_photo_detail = bool(match_photo_detail)
        self._segmenter: Any = None

    # -- pieces ------------------------------------------------------------------------------------
    def _person(self, images: torch.Tensor) -> torch.Tensor:
        if self._segmenter is None:
            from editors.hair import PersonSegmenter

            self._segmenter = PersonSegmenter()
        return self._segmenter(images)

    @staticmethod
    def _smile(batch: FaceBatch) -> torch.Tensor:
        """`(N,)` smile in [0, 1] from the batch's blendshapes (0 where they are missing)."""
        if batch.blendshapes.ndim != 2 or batch.blendshapes.shape[1] <= max(SMILE_BLENDSHAPES):
            return torch.zeros(len(batch), device=batch.device)
        return batch.blendshapes[:, list(SMILE_BLENDSHAPES)].float().mean(dim=1).clamp(0.0, 1.0)

    def _target_landmarks(self, landmarks: torch.Tensor, strength: float) -> torch.Tensor:
        sign = 1.0 if self.direction == "older" else -self.lift
        parts = torch.tensor([self.sag_parts[p] for p in SAG_PARTS], device=landmarks.device)
        amounts = (sign * strength * self.sag * parts).expand(landmarks.shape[0], -1)
        moved = landmarks + sag_displacements(landmarks, amounts)
        if self.growth > 0:
            k = torch.full((landmarks.shape[0],), sign * strength * self.growth, device=landmarks.device)
            moved = moved + growth_displacements(landmarks, k)
        return moved

    def audit_policy(self) -> AuditPolicy:
        """The judged age must move by `min_age_change` years in the editor's direction."""
        sign = 1 if self.direction == "older" else -1
        return AuditPolicy(self.property, self.direction, TargetCheck(("delta_est_age",), "min_age_change", sign))

    def edit(self, batch: FaceBatch, strength: float, seed: int) -> EditResult:
        """Age (or rejuvenate) every face of `batch` by `strength` in [0, 1]; see the module docstring."""
        strength = float(strength)
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength={strength} must be in [0, 1]")
        if len(batch) == 0:
            return EditResult(
                batch.images.clone(), torch.zeros_like(batch.images[:, :1]), [], batch.landmarks
            )
        images, device = batch.images.float(), batch.device
        n, size = len(batch), batch.size
        older = self.direction == "older"
        generators = batch.generators(seed, "age")
        landmarks = batch.landmarks.float()
        width = face_widths(landmarks)

        # 1. sagging (an identity warp at strength 0: same resampling as an edit)
        target = self._target_landmarks(landmarks, strength)
        coords = smooth_outer_warp(backward_map(landmarks, target, size), target, width)
        lin = srgb_to_linear(apply_backward_map(images, coords))

        detail = detail_scale(luminance(srgb_to_linear(images)).sqrt(), batch.face_mask, width)
        masks = region_masks(target, size, width, detail)
        skin = masks["skin"]
        colour_weight = (colourfulness(lin, skin) / 0.12).clamp(0.0, 1.0)
        match_sigma = detail
        if not self.match_photo_detail:
            match_sigma = torch.zeros_like(match_sigma)

        # 2.-3. relief, pigment and tone (older), or smoothing (younger), on the skin
        tpl_coords, tpl_scale = template_sampling_map(target, size)
        groups = torch.tensor([self.folds[g] for g in FOLD_GROUPS], device=device)
        fold_amounts = (strength * self.fold_depth * groups).expand(n, -1).clone()
        # A smile lifts and bunches the cheeks: no buccal hollow shows under them.
        smile = self._smile(batch)
        fold_amounts[:, FOLD_GROUPS.index("cheek_hollows")] *= 1.0 - SMILE_HIDES_HOLLOWS * smile
        # The broad hollows are shaded for a frontal view; on a turned face they spread into a dark
        # patch over the near cheek or temple (seen on the sharp photos), so they fade out with yaw.
        frontal = frontal_weight(landmarks)
        for group in ("cheek_hollows", "temple_hollows"):
            fold_amounts[:, FOLD_GROUPS.index(group)] *= frontal
        relief_tpl = fold_relief(fold_amounts, generators, TEMPLATE_SIZE, device)
        if older:
            lin = self._age_skin(
                lin,
                masks,
                relief_tpl,
                tpl_coords,
                tpl_scale,
                generators,
                strength,
                width,
                colour_weight,
                match_sigma,
            )
        else:
            folds = sample_template(relief_tpl, tpl_coords) * tpl_scale.view(n, 1, 1, 1)
            full = torch.full((n,), strength, device=device)
            lin = smooth_skin(
                lin, skin, fold_region(folds, width), full * self.smoothing, full * self.fold_removal, width
            )
            lin = fade_features(
                lin, masks, -0.5 * full * self.feature_fading, -0.5 * full * self.feature_fading
            )

        # 4. hair (found on the input at every strength, so the sham takes the same path and mask)
        hair = torch.zeros_like(skin)
        if self.hair_mask == "selfie_segmentation" and older and self.greying > 0:
            from editors.hair import hair_masks

            hair = hair_masks(
                srgb_to_linear(images), target, self._person(images), width, masked_mean(lin, skin)
            )
            lin = grey_hair(lin, hair, torch.full((n,), strength * self.greying, device=device), width)

        out = linear_to_srgb(lin)
        allowed = allowed_region(landmarks, target, coords, size, hair)
        out = torch.where(allowed > 0, out, images)
        changed = (out - images).abs().amax(dim=1, keepdim=True)
        inside = (allowed > 0).float()
        mean_change = last_axis_sums((changed * inside).flatten(1)) / last_axis_sums(inside.flatten(1)).clamp(min=1.0)
        sag_px = (target - landmarks)[..., :2].norm(dim=-1).amax(dim=1)
        metadata = [
            {
                "direction": self.direction,
                "strength": strength,
                "face_width_px": round(float(width[i]), 2),
                "photo_detail_px": round(float(detail[i]), 3),
                "shading_blur_px": round(float(match_sigma[i]), 3),
                "colour_weight": round(float(colour_weight[i]), 3),
                "sag_max_px": round(float(sag_px[i]), 3),
                "fold_depth": strength * self.fold_depth if older else 0.0,
                "smoothing": 0.0 if older else strength * self.smoothing,
                "hair_fraction": round(float(hair[i].mean()), 4),
                "greying": strength * self.greying if float(hair[i].amax()) > 0 else 0.0,
                "mean_abs_change": round(float(mean_change[i]), 5),
            }
            for i in range(n)
        ]
        return EditResult(images=out, mask=allowed, metadata=metadata, landmarks=target)

    def _age_skin(
        self,
        lin: torch.Tensor,
        masks: dict[str, torch.Tensor],
        relief_tpl: torch.Tensor,
        tpl_coords: torch.Tensor,
        tpl_scale: torch.Tensor,
        generators: list[torch.Generator],
        strength: float,
        width: torch.Tensor,
        colour_weight: torch.Tensor,
        match_sigma: torch.Tensor,
    ) -> torch.Tensor:
        """Shade the folds and pores, lay down pigment, and age the skin tone and feature contrast."""
        n, device = lin.shape[0], lin.device
        skin = masks["skin"]
        spots = torch.full((n,), float(self.age_spots))
        tex = texture_maps(generators, self.pore_scale, spots, TEMPLATE_SIZE, device)
        relief_tpl = relief_tpl + strength * self.texture * template_face_width() * tex["pores"]
        pigment_tpl = strength * (
            self.mottling * tex["mottle"].clamp(min=0) + self.spot_density * tex["spots"]
        )
        sampled = sample_template(torch.cat([relief_tpl, pigment_tpl], dim=1), tpl_coords)
        height = sampled[:, :1] * tpl_scale.view(n, 1, 1, 1)
        # Occlusion is per 1 % of the face width of depth, so it does not depend on the crop size.
        occlusion = (self.shading_occlusion / (0.01 * width)).view(n, 1, 1, 1)
        shade = shading_from_height(
            height, self.light_elevation_deg, self.shading_diffuse, occlusion, 0.02 * width
        )
        region = masks["inner"] * (1 - masks["eyes"])
        log_shade = gaussian_blur(torch.log(shade.clamp(min=1e-4)) * region, match_sigma)
        # Skin shadows are warmer than the light (subsurface scattering): red darkens least.
        tint = torch.tensor(SHADOW_TINT, device=device).view(1, 3, 1, 1)
        tint = 1.0 + colour_weight.view(n, 1, 1, 1) * (tint - 1.0)  # grey photos stay grey
        lin = lin * torch.exp(log_shade * tint)
        lin = apply_pigment(lin, gaussian_blur(sampled[:, 1:2] * skin, match_sigma), colour_weight)
        full = torch.full((n,), strength, device=device)
        lin = age_skin_tone(
            lin,
            skin,
            colour_weight,
            full * self.yellowing,
            full * self.desaturation,
            full * self.dulling,
            width,
        )
        return fade_features(lin, masks, full * self.feature_fading, full * self.feature_fading)
