"""Offline gender editor: a landmark warp toward sex-typical proportions plus texture cues.

Shape: the published male/female differences in `editors/data/gender_proportions.csv` (jaw, face and nose
widths, nose and lower-face heights) move the 478 mesh landmarks (`editors.gender.shape`), with the eyes,
brows and mouth carried rigidly (the landmarker reads their shapes as expression), and `editors.warp`
warps the photo onto them. Long hair (`editors.gender.hair`) is opt-in (`long_hair`, off by default).

Texture (`editors.gender_texture`), on the warped photo, in mesh-following soft regions:

* toward male: beard shadow with a stubble grain over the moustache, chin, jaw and lower cheeks, up to the
  vermilion border (multiplicative darkening in the person's own facial-hair colour, read from the
  brows' darkest pixels, so it keeps the skin tone and lighting; the grain is softened to the photo's own
  estimated blur, so a blurry photo gets a mottled shadow, not sharp noise); denser, darker brows (brow
  pixels fill in toward the brows' own hair colour, darkened); lips a little toward the surrounding skin;
  skin slightly darker;
* toward female: the beard region's shadow lifted toward the cheek tone; brows thinned (warp) and
  lightened toward the skin around them; a subtle lash line and upper-lid shadow; redder, slightly darker
  lips (colour only where the photo has colour); smoother skin (fine detail damped) and slightly lighter
  skin, i.e. higher facial contrast (Russell 2009, Perception 38:1211).

Every region's edge is feathered by the photo's own blur as well, so nothing is sharper than the photo.

Beard shadow and cosmetics (lash line, eyeshadow, lip darkening and colour) are adult traits: with
`adult_cues="auto"` (default) a face whose record metadata marks a child (`age` below 16, or an
`age_group` such as "child") gets neither, only the shape, brow, lip-tone and skin cues; a face without
such metadata gets them all (the editor never estimates an age). `"on"`/`"off"`: every face/no face.

`target` is "male" or "female": a fixed direction for every face. The editor never looks at who is in the
photo, and never runs an age/gender estimator. `target="opposite"` reads each face's own dataset metadata
(`metadata[metadata_key]`, e.g. "gender": "f") and pushes toward the other sex; a face without that
metadata is an error, never a guess. The direction is then per face (`direction = "opposite"`, and each
face's `target` is in its edit metadata).

Strength 0 is the sham: the same warp and texture pipeline with zero amounts, which returns the input
(up to float rounding of the identity resampling). Randomness (stubble grain) comes from
`batch.generators(seed)`, so results are deterministic and a batch equals one-by-one calls.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from editors.gender import masks as gm
from editors.gender import texture as gt
from editors.gender.hair import HAIR_FADE_YAW_DEG, own_hair_colour, render_hair
from editors.gender.shape import (
    PROPORTIONS_PATH,
    SHAPE_FEATURES,
    face_frame,
    female_ratios,
    load_proportions,
    target_landmarks,
)
from editors.gender.targets import (
    adult_cue_faces,
    check_adult_cues,
    check_target,
    face_targets,
    gender_target_check,
)
from editors.outer_warp import smooth_outer_warp
from editors.pose import face_widths, fade_with_yaw
from editors.warp import DEFAULT_RING_SCALE, apply_backward_map, backward_map
from engine.types import AuditPolicy, Editor, EditResult, FaceBatch

MM_PER_IOD = 63.5  # adult mean pupil distance (Dodgson 2004), to size hair grain in millimetres


class GenderEditor(Editor):
    """Push faces toward male or female proportions and texture.

    Args:
        target: "male", "female", or "opposite" (per face, from dataset metadata; see module docstring).
        metadata_key: the metadata field read when `target="opposite"`.
        shape_gain: multiple of the published female-minus-male proportion differences applied at strength 1.
        stubble: largest multiplicative darkening of full-density beard shadow (toward male).
        stubble_grain: share of the beard shadow that is grain rather than even shadow, in [0, 1].
        grain_mm: softening of the stubble grain in millimetres of face (at least the photo's own blur).
        brow_density: how far brow pixels fill in toward the darkened brow hair tone (toward male).
        brow_darkening: how much darker than the brows' own hair colour (their darkest quarter of pixels)
            the filled-in tone is (toward male).
        brow_lightening: blend of the brows toward the surrounding skin (toward female).
        shadow_lift: brightening of the beard region toward the cheek tone (toward female).
        lash_darkening: darkening along the upper lash line (toward female; the lower line gets a third).
        eyeshadow: darkening of the upper-lid area below the brow (toward female).
        lip_darkening: lip darkening (toward female).
        lip_redness: lip colour gain toward red (toward female; scaled by the photo's colourfulness).
        lip_to_skin: blend of the lips toward the skin around them (toward male).
        skin_smoothing: share of the fine skin detail removed (toward female).
        skin_tone: relative skin lightening (female) / darkening (male).
        adult_cues: "auto", "on" or "off": whether beard shadow and cosmetics are drawn (auto: not on faces
            whose metadata marks a child; see the module docstring).
        long_hair: opacity of long hair framing the face (toward female; `editors.gender.hair`).
        hair_darkening: how much darker than the photo's own hair (`own_hair_colour`) the long hair is.
        ring_scale: anchor ring of the warp (multiple of the face oval); nothing outside it changes.
        proportions_path: the proportions table.
    """

    property = "gender"
    sham_is_input = True  # every change scales with strength (tests/test_editor_contract.py)
    # Bumped when the output changes without a config change (edit cache). 8: stubble and brows in the
    # person's own hair colour (a blue-grey beard patch and near-black brows looked painted on fair
    # faces; brow_darkening is now relative to the brows' darkest pixels). 7: the edit may reach the face's
    # own hull (a turned face's nose and lips lie beyond the ring); 6: long hair hangs from the crown;
    # 5: per-face blurs and sums (batch-invariant)
    version = "rigid-features-8"

    def __init__(
        self,
        target: str = "female",
        metadata_key: str = "gender",
        shape_gain: float = 1.0,
        stubble: float = 0.25,
        stubble_grain: float = 0.3,
        grain_mm: float = 0.3,
        brow_density: float = 1.0,
        brow_darkening: float = 0.45,
        brow_lightening: float = 0.5,
        shadow_lift: float = 0.12,
        lash_darkening: float = 0.4,
        eyeshadow: float = 0.2,
        lip_darkening: float = 0.12,
        lip_redness: float = 0.15,
        lip_to_skin: float = 0.1,
        skin_smoothing: float = 0.25,
        skin_tone: float = 0.02,
        adult_cues: str = "auto",
        long_hair: float = 0.0,
        hair_darkening: float = 0.0,
        ring_scale: float = DEFAULT_RING_SCALE,
        proportions_path: str | None = None,
    ) -> None:
        check_target(target)
        check_adult_cues(adult_cues)
        knobs = {
            "shape_gain": (shape_gain, 0.0, 5.0), "stubble": (stubble, 0.0, 0.9),
            "stubble_grain": (stubble_grain, 0.0, 1.0), "grain_mm": (grain_mm, 0.05, 5.0),
            "brow_density": (brow_density, 0.0, 1.0), "brow_darkening": (brow_darkening, 0.0, 0.9),
            "brow_lightening": (brow_lightening, 0.0, 1.0),
            "shadow_lift": (shadow_lift, 0.0, 0.5), "lash_darkening": (lash_darkening, 0.0, 0.9),
            "eyeshadow": (eyeshadow, 0.0, 0.9),
            "lip_darkening": (lip_darkening, 0.0, 0.9), "lip_redness": (lip_redness, 0.0, 1.0),
            "lip_to_skin": (lip_to_skin, 0.0, 1.0), "skin_smoothing": (skin_smoothing, 0.0, 1.0),
            "skin_tone": (skin_tone, 0.0, 0.3), "long_hair": (long_hair, 0.0, 1.0),
            "hair_darkening": (hair_darkening, 0.0, 0.9), "ring_scale": (ring_scale, 1.05, 3.0),
        }  # fmt: skip
        for name, (value, lo, hi) in knobs.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"editor.{name}={value!r} must be a number in [{lo}, {hi}]")
        self.target = target
        self.direction = target
        self.metadata_key = metadata_key
        self.shape_gain = float(shape_gain)
        self.stubble = float(stubble)
        self.stubble_grain = float(stubble_grain)
        self.grain_mm = float(grain_mm)
        self.brow_density = float(brow_density)
        self.brow_darkening = float(brow_darkening)
        self.brow_lightening = float(brow_lightening)
        self.shadow_lift = float(shadow_lift)
        self.lash_darkening = float(lash_darkening)
        self.eyeshadow = float(eyeshadow)
        self.lip_darkening = float(lip_darkening)
        self.lip_redness = float(lip_redness)
        self.lip_to_skin = float(lip_to_skin)
        self.skin_smoothing = float(skin_smoothing)
        self.skin_tone = float(skin_tone)
        self.adult_cues = adult_cues
        self.long_hair = float(long_hair)
        self.hair_darkening = float(hair_darkening)
        self.ring_scale = float(ring_scale)
        self.proportions_path = str(proportions_path or PROPORTIONS_PATH)
        self._segmenter: Any = None  # the selfie segmenter, loaded on the first edit with long hair
        self._ratios = female_ratios(load_proportions(self.proportions_path))

    # -- directions ---------------------------------------------------------------------------------
    def face_targets(self, batch: FaceBatch) -> list[str]:
        """The target sex of every face: `target`, or the opposite of each face's metadata."""
        return face_targets(batch, self.target, self.metadata_key)

    def shape_amounts(self, signed: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per warped feature `(N,)`: the log-ratio to apply for signed strengths (+ female, - male)."""
        return {name: signed * self.shape_gain * math.log(self._ratios[name]) for name in SHAPE_FEATURES}

    # -- the edit ---------------------------------------------------------------------------------
    def audit_policy(self) -> AuditPolicy:
        """P(male) must move toward the target by `min_p_target_change` (see `gender_target_check`)."""
        return AuditPolicy(self.property, self.direction, gender_target_check(self.target))

    def edit(self, batch: FaceBatch, strength: float, seed: int) -> EditResult:
        if not (isinstance(strength, (int, float)) and 0.0 <= float(strength) <= 1.0):
            raise ValueError(f"strength={strength!r} must be in [0, 1]")
        images, src = batch.images, batch.landmarks.to(batch.images.device).float()
        size = batch.size
        targets = self.face_targets(batch)
        female = torch.tensor([t == "female" for t in targets], device=images.device, dtype=images.dtype)
        male = 1.0 - female
        s = float(strength)
        signed = (female - male) * s
        dst = target_landmarks(src, self.shape_amounts(signed))
        # Smoothed beyond the inner face: on a turned face the outline runs along the nose and lips,
        # and the plain mesh warp sliced them where it ends (photo_table#4).
        coords = smooth_outer_warp(backward_map(src, dst, size, ring_scale=self.ring_scale), dst, face_widths(dst))
        warped = apply_backward_map(images, coords)
        _, _, _, iod = face_frame(dst)
        own_blur = gt.estimate_blur(images, batch.face_mask.to(images.device))
        regions = gt.region_masks(dst, size, iod, own_blur)
        adult = adult_cue_faces(batch, self.adult_cues)
        textured = self._texture(
            warped, regions, iod, own_blur, female * s, male * s, batch.generators(seed, "stubble"),
            torch.tensor(adult, device=images.device, dtype=images.dtype),
        )
        allowed = self.allowed_region(src, dst, size, coords)
        amount = female * s * self.long_hair
        if self.long_hair > 0:
            # Curtains drawn for a frontal view fall over the near cheek of a turned face (photo_table#4).
            amount = amount * fade_with_yaw(src, *HAIR_FADE_YAW_DEG).to(images.dtype)
        # No hair to draw (male targets, the sham, profiles): no segmentation either; at amount 0 the
        # render gives back its input exactly, so skipping it changes no pixel.
        if bool((amount > 0).any()):
            skin = gt.masked_mean(warped, regions.cheeks)
            own_hair = self._own_hair(images, src, skin)
            colour = own_hair_colour(images, own_hair, src, skin) * (1.0 - self.hair_darkening)
            textured, support = render_hair(
                textured, dst, colour, amount, own_blur, batch.generators(seed, "hair")
            )
            allowed = torch.maximum(allowed, support)
        out = torch.where(allowed > 0, textured, images).clamp(0.0, 1.0)
        metadata = [
            {"target": t, "strength": s, "shape_gain": self.shape_gain, "adult_cues": adult[i],
             "mean_landmark_shift_px": float((dst - src)[i, :, :2].norm(dim=-1).mean())}
            for i, t in enumerate(targets)
        ]  # fmt: skip
        return EditResult(images=out, mask=allowed, metadata=metadata, landmarks=dst)

    def _own_hair(self, images: torch.Tensor, landmarks: torch.Tensor, skin: torch.Tensor) -> torch.Tensor:
        """`(N, 1, H, W)` the photo's own hair: selfie segmentation, outside the face, not coloured like
        the skin `skin (N, 3, 1, 1)` (the same masks as the age editor's greying, `editors.hair`)."""
        from editors.hair import PersonSegmenter, hair_masks
        from editors.skin import srgb_to_linear

        if self._segmenter is None:
            self._segmenter = PersonSegmenter()
        person = self._segmenter(images)
        return hair_masks(srgb_to_linear(images), landmarks, person, face_widths(landmarks), srgb_to_linear(skin))

    def allowed_region(
        self, src: torch.Tensor, dst: torch.Tensor, size: tuple[int, int], coords: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`(N, 1, H, W)` hard mask of the warp's anchor ring and the face's own hull (source and target),
        and of every pixel the warp `coords` moves: all edits lie inside. On a turned face the nose and
        lips stand out beyond the ring, and a ring alone cut the edit off across them (photo_table#4)."""
        from editors.outer_warp import landmark_hull
        from editors.warp import anchor_ring, moved_region

        grid = gm.mask_grid_size(*size, cell=1)
        outlines = [anchor_ring(lm[..., :2], self.ring_scale) for lm in (src, dst)]
        outlines += [landmark_hull(lm) for lm in (src, dst)]
        inside = torch.stack([gm.polygon_grid_masks(o, size, grid) for o in outlines]).amax(dim=0)
        # One grid cell of dilation so sub-cell polygon edges never leave a changed pixel outside.
        inside = torch.nn.functional.max_pool2d(inside, 3, stride=1, padding=1)
        inside = gm.upsample(inside, size).gt(0).to(src.dtype)
        return inside if coords is None else torch.maximum(inside, moved_region(coords).to(src.dtype))

    def _texture(
        self,
        images: torch.Tensor,
        r: gt.RegionMasks,
        iod: torch.Tensor,
        own_blur: torch.Tensor,
        to_female: torch.Tensor,
        to_male: torch.Tensor,
        generators: list[torch.Generator],
        adult: torch.Tensor,
    ) -> torch.Tensor:
        """Apply the texture cues; `to_female`/`to_male` `(N,)` are the per-face amounts in [0, 1], and
        `adult` `(N,)` 1 where the adult-only cues (beard shadow, cosmetics) are drawn, else 0."""
        f = to_female.view(-1, 1, 1, 1)
        m = to_male.view(-1, 1, 1, 1)
        grown_f, grown_m = f * adult.view(-1, 1, 1, 1), m * adult.view(-1, 1, 1, 1)
        colour = gt.colourfulness(images, r.oval)
        x = images

        # Skin detail: damp fine detail (female); frequency separation at ~0.4 mm keeps shading intact.
        fine = gm.gaussian_blur(x, 0.025 * iod) - x
        x = x + f * self.skin_smoothing * r.skin * fine

        # Beard region: stubble (male) / lift the lower face's shadow toward the cheeks (female).
        grain_px = self.grain_mm * iod / MM_PER_IOD
        grain = gt.stubble_grain(generators, tuple(x.shape[-2:]), grain_px, own_blur, x.device)
        density = r.beard * ((1.0 - self.stubble_grain) + self.stubble_grain * (1.0 + 0.5 * grain)).clamp(
            min=0.0
        )
        # In the person's own hair colour (the brows'): a blue-grey cast looked painted on fair, warm skin.
        hair_rgb = gt.hair_colour(x, r.brows)
        darken = self.stubble * density * gt.hair_tint(hair_rgb, gt.masked_mean(x, r.cheeks))
        x = x * (1.0 - grown_m * darken)
        cheek_tone = gt.masked_mean(gt.luminance(x), r.cheeks)
        local_tone = gm.smooth(gt.luminance(x), 0.08 * iod)
        deficit = (cheek_tone / local_tone.clamp(min=1e-3) - 1.0).clamp(0.0, 0.25)
        x = x * (1.0 + f * r.beard * (self.shadow_lift + 0.5 * deficit))

        # Brows: denser and darker (male): brow pixels, and a little of the skin at the brow's edge, fill in
        # toward the brow's own hair colour (its darkest pixels) made `brow_darkening` darker; hair-ness =
        # how much darker than the surrounding skin a pixel is. A tone relative to the brow's mean (mostly
        # skin) drew near-black brows over blonde ones. Female: thinner (warp), lighter toward the skin.
        around = gt.skin_estimate(x, r.brows_wide, 0.06 * iod)
        lum, around_lum = gt.luminance(x), gt.luminance(around)
        hair = ((around_lum - lum) / around_lum.clamp(min=1e-3) / 0.25).clamp(0.0, 1.0)
        hair_tone = hair_rgb * (1.0 - self.brow_darkening)
        fill = m * self.brow_density * r.brows_wide * (0.3 + 0.7 * hair)
        x = x + fill * (hair_tone - x).clamp(max=0.0)
        x = x + f * self.brow_lightening * r.brows * (around - x)

        # Lips: toward the surrounding skin (male) / redder and a little darker (female).
        lip_skin = gt.skin_estimate(x, r.lips, 0.05 * iod)
        x = x + m * self.lip_to_skin * r.lips * (lip_skin - x)
        lip_chroma = colour * colour.new_tensor(gt.LIP_TINT).view(1, 3, 1, 1)
        lip_gain = (1.0 - self.lip_darkening) * (1.0 + self.lip_redness * lip_chroma)
        x = x * (1.0 + grown_f * r.lips * (lip_gain - 1.0))

        # Lash line (female).
        lashes = torch.maximum(r.lash_upper, r.lash_lower / 3.0)
        x = x * (1.0 - grown_f * self.lash_darkening * lashes)
        x = x * (1.0 - grown_f * self.eyeshadow * r.lids)

        # Skin tone: lighter (female) / darker (male) skin, i.e. more / less facial contrast.
        x = x * (1.0 + (f - m) * self.skin_tone * r.skin)
        return x

    def fingerprint(self) -> dict[str, Any]:
        fp = super().fingerprint()
        fp["proportions"] = self._ratios
        return fp
