"""Long hair framing the face, the strongest female cue a face-only editor can add.

Long hair falling beside the cheeks is what viewers (and face-gender networks) read first as female;
brows, lids and lips alone barely move a judgement of a man's face. The hair is rendered, not pasted:

* it hangs from the crown: a shell over the skull (the face oval's upper half raised to the crown,
  `SKULL`) that stands off it by `STANDOFF_TOP` and falls in two straight curtains `CURTAIN` wide beside
  the face to below the jaw. The photo's own hair on the skull is kept, and the face oval the
  landmarker fits (slightly grown) stays clear, with no fringe: hair over the face's edge moves the
  re-detected mesh (blendshapes). A first version filled a band between the face oval and a larger
  oval, which put a helmet with a fringe over the forehead;
* it fades out on turned faces (`HAIR_FADE_YAW_DEG`): beside a profile the near curtain lies over the
  cheek;
* strands radiate from the parting (a texture that varies fast across strands and slowly along
  them), in two octaves of clumping, with no drawn highlight (it read as a light streak);
* its colour is the median of the photo's own segmented hair outside the face (`own_hair_colour`),
  falling back to dark brown-black (grey in a grey photo) where there is none;
* the hair's inner edge casts a soft shadow on the skin; everything, edges and strands, is softened
  by the photo's own estimated blur, so the hair is never sharper than the photo.

Off by default (`long_hair: 0`): on sharp photos it reads as long hair on most faces, but as straight
panels laid over a bob or curls (docs/EDITORS.md, "Gender").

The strand texture comes from the per-image generators, so it is deterministic given the seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from editors.gender import masks as gm
from editors.pose import face_frame

#: Strand texture resolution: samples across the strands (over +-_ARC IOD of arc) and along them.
_ACROSS, _ALONG, _ARC = 1600, 12, 8.0


def face_coordinates(
    landmarks: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel coordinates in the face frame, `(u, v)` each `(N, 1, H, W)` in IOD units, and the IOD `(N,)`.

    Origin between the eyes, u toward the subject's left (image right), v down the face.
    """
    centre, ex, ey, iod = face_frame(landmarks)
    h, w = size
    ys = torch.arange(h, device=landmarks.device, dtype=torch.float32) + 0.5
    xs = torch.arange(w, device=landmarks.device, dtype=torch.float32) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    dx = gx[None] - centre[:, 0, None, None]
    dy = gy[None] - centre[:, 1, None, None]
    u = (dx * ex[:, 0, None, None] + dy * ex[:, 1, None, None]) / iod[:, None, None]
    v = (dx * ey[:, 0, None, None] + dy * ey[:, 1, None, None]) / iod[:, None, None]
    return u[:, None], v[:, None], iod


def _scaled_oval(landmarks: torch.Tensor, sx: float, sy: float, lift: float) -> torch.Tensor:
    """The face oval scaled about its centroid by (sx, sy) in the face frame and raised by `lift` IOD."""
    from engine.faces.mesh import landmark_group

    _, ex, ey, iod = face_frame(landmarks)
    oval = landmarks[:, list(landmark_group("face_oval")), :2]
    c = oval.mean(dim=1, keepdim=True)
    rel = oval - c
    a = (rel * ex[:, None]).sum(-1, keepdim=True)
    b = (rel * ey[:, None]).sum(-1, keepdim=True)
    return c + sx * a * ex[:, None] + (sy * b - lift * iod[:, None, None]) * ey[:, None]


def _oval_uv(landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The face oval's points in the face frame: `(u, v)` each `(N, K)`, in IOD."""
    from engine.faces.mesh import landmark_group

    centre, ex, ey, iod = face_frame(landmarks)
    rel = landmarks[:, list(landmark_group("face_oval")), :2] - centre[:, None]
    return (rel * ex[:, None]).sum(-1) / iod[:, None], (rel * ey[:, None]).sum(-1) / iod[:, None]


def _head(landmarks: torch.Tensor, grow_u: float, grow_top: float) -> torch.Tensor:
    """The head's outline `(N, K, 2)`: the face oval with its upper half raised to the skull's crown.

    The oval ends on the upper forehead; the crown lies about `SKULL` times as far above the eye line. Points
    are then pushed out by `grow_u` IOD sideways and `grow_top` IOD over the top (0 for the skull itself).
    """
    centre, ex, ey, iod = face_frame(landmarks)
    u, v = _oval_uv(landmarks)
    up = v < 0
    v = torch.where(up, v * SKULL, v)
    norm = torch.hypot(u, torch.where(up, v, torch.zeros_like(v))).clamp(min=1e-6)
    # Outward along the head's own normal above the eye line, straight sideways below it.
    du = torch.where(up, u / norm, torch.sign(u)) * grow_u
    dv = torch.where(up, v / norm * grow_top, torch.zeros_like(v))
    u, v = u + du, v + dv
    return centre[:, None] + (u * iod[:, None])[..., None] * ex[:, None] + (v * iod[:, None])[..., None] * ey[:, None]


#: Yaw (degrees) from which the long hair fades, and at which it is gone: the curtains are drawn for a
#: frontal view, and beside a profile the near one lies over the cheek.
HAIR_FADE_YAW_DEG = (20.0, 40.0)
#: Eye line to crown over eye line to hairline (about 1.9 against 1.2 IOD on adult heads).
SKULL = 1.8
#: How far loose long hair stands off the skull: over the crown, and beside the face (in IOD; a head is
#: ~2.3 IOD wide, straight shoulder-length hair adds a few centimetres each side).
STANDOFF_TOP, CURTAIN = 0.12, 0.45


def hair_region(landmarks: torch.Tensor, size: tuple[int, int], blur_px: torch.Tensor) -> torch.Tensor:
    """Soft coverage `(N, 1, H, W)` of long hair: a shell over the crown that falls in two curtains beside
    the face, before strand texture."""
    lm = landmarks[..., :2].float()
    u, v, iod = face_coordinates(lm, size)
    feather = ((0.04 * iod) ** 2 + blur_px**2).sqrt()
    v_chin = _frame_v(lm, 152)
    # The shell: between the skull and the outline the hair stands out to. Over the crown and temples
    # it replaces background only, so the photo's own hair stays where it is.
    outline = gm.soft_polygons(_head(lm, CURTAIN, STANDOFF_TOP), size, feather)
    # Below the face's widest point the curtains fall straight and flare a little toward the shoulders.
    half = _oval_halfwidth(lm, u)
    soft = (feather / iod).view(-1, 1, 1, 1) + 0.04
    flare = 0.15 * torch.sigmoid((v - v_chin) / 0.3)
    fall = torch.sigmoid((half + CURTAIN + flare - u.abs()) / soft) * torch.sigmoid(v / 0.1)
    outer = torch.maximum(outline, fall)
    skull = gm.soft_polygons(_head(lm, 0.0, 0.0), size, feather) * torch.sigmoid(-v / 0.1)
    # The face oval the landmarker fits (slightly grown) stays clear: hair over the face's edge moves the
    # re-detected mesh, i.e. the expression the audit must see kept. No fringe over the forehead either.
    face = gm.soft_polygons(_scaled_oval(lm, 1.06, 1.04, 0.0), size, feather)
    inner = torch.maximum(face, skull)
    # The neck column under the jaw stays clear; the hair hangs behind and beside it.
    neck = torch.sigmoid((0.95 - u.abs()) / 0.05) * torch.sigmoid((v - (v_chin - 0.6)) / 0.08)
    cover = outer * (1.0 - inner) * (1.0 - neck)
    # Hair ends below the jaw (a soft edge; strands make it ragged).
    cover = cover * torch.sigmoid((v_chin + 0.9 - v) / 0.12)
    return cover.clamp(0.0, 1.0)


def _oval_halfwidth(landmarks: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """How far the face oval reaches on each pixel's side of the face `(N, 1, H, W)`, in IOD."""
    ou, _ = _oval_uv(landmarks)
    left, right = (-ou).amax(dim=1), ou.amax(dim=1)
    return torch.where(u >= 0, right.view(-1, 1, 1, 1), left.view(-1, 1, 1, 1))


def _frame_v(landmarks: torch.Tensor, index: int) -> torch.Tensor:
    """v coordinate `(N, 1, 1, 1)` of one landmark in the face frame."""
    centre, _, ey, iod = face_frame(landmarks)
    return (((landmarks[:, index, :2] - centre) * ey).sum(-1) / iod).view(-1, 1, 1, 1)


#: Hair colour where the photo shows no hair of its own (bald, shaved, cropped, or hair the segmenter
#: misses): dark brown-black, the commonest hair colour; grey in a grey photo.
FALLBACK_COLOUR = (0.10, 0.075, 0.06)
#: How far (IOD) the forehead may reach above the face oval's top before the hairline.
FOREHEAD_ABOVE_OVAL = 0.5
#: The photo's own hair must cover this share of the crop outside the face for its colour to be used.
MIN_OWN_HAIR = 0.003


def own_hair_colour(
    images: torch.Tensor, own_hair: torch.Tensor, landmarks: torch.Tensor, skin: torch.Tensor
) -> torch.Tensor:
    """The photo's own hair colour `(N, 3, 1, 1)`: the per-channel median of its hair outside the face.

    `own_hair (N, 1, H, W)` is the segmented hair (`editors.hair.hair_masks`). Inside the face oval it
    also takes some forehead (a fringe may hang there), so only hair outside the oval and the forehead
    above it counts. A median,
    not the darkest pixels: blonde and grey hair keep their colour (the darkest tenth of a band above
    the forehead, used before, gave brown for a blonde child's curls: the shadows between them). With
    too little hair the colour falls back to `FALLBACK_COLOUR`, its chroma following the skin's
    `skin (N, 3, 1, 1)` so that a grey photo gets grey hair.
    """
    from editors.gender.texture import luminance

    size = tuple(images.shape[-2:])
    lm, sharp = landmarks[..., :2].float(), torch.zeros(images.shape[0], device=images.device)
    # The oval ends on the upper forehead (landmark 10); the hairline lies up to about 0.5 IOD higher,
    # and the segmenter takes much of that skin for hair in grey photos, so the raised oval is left out.
    face = torch.maximum(
        gm.soft_polygons(_scaled_oval(lm, 1.06, 1.04, 0.0), size, sharp),
        gm.soft_polygons(_scaled_oval(lm, 1.0, 1.0, FOREHEAD_ABOVE_OVAL), size, sharp),
    )
    sample = (own_hair > 0.5) & (face < 0.5)
    colours = []
    for i in range(images.shape[0]):  # per image: sample counts differ
        if int(sample[i].sum()) >= MIN_OWN_HAIR * size[0] * size[1]:
            colours.append(images[i][:, sample[i, 0]].median(dim=1).values)
            continue
        skin_rgb = skin[i].view(3)
        chroma = float((skin_rgb.max() - skin_rgb.min()) / skin_rgb.max().clamp(min=1e-6))
        brown = images.new_tensor(FALLBACK_COLOUR)
        grey = luminance(brown.view(1, 3, 1, 1)).view(1)
        colours.append(grey + (brown - grey) * min(chroma / 0.2, 1.0))
    return torch.stack(colours).view(-1, 3, 1, 1)


def strand_texture(
    landmarks: torch.Tensor, size: tuple[int, int], generators: list[torch.Generator]
) -> torch.Tensor:
    """Zero-mean strand texture `(N, 1, H, W)`, about unit spread, radiating from the parting."""
    lm = landmarks[..., :2].float()
    u, v, _ = face_coordinates(lm, size)
    parting_v = _frame_v(lm, 10) - 0.45
    angle = torch.atan2(u, v - parting_v)  # 0 straight down, +-pi straight up
    radius = torch.hypot(u, v - parting_v)
    # Sample a texture stretched along the strands: x = arc length across them (fast), y = radius (slow);
    # arc length, not angle, so strands keep their width from the parting to the ends.
    across = (angle * radius / _ARC).clamp(-1.0, 1.0)
    grid = torch.cat([across, (radius / 3.0 - 1.0).clamp(-1.0, 1.0)], dim=1)
    grid = grid.permute(0, 2, 3, 1)
    noise = torch.stack(
        [torch.randn(2, _ALONG, _ACROSS, generator=g) for g in generators]
    ).to(landmarks.device)
    fine = gm.gaussian_blur(noise[:, :1], 1.0)
    coarse = gm.gaussian_blur(noise[:, 1:], 8.0)
    coarse = coarse / coarse.flatten(1).std(dim=1).view(-1, 1, 1, 1).clamp(min=1e-6)
    fine = fine / fine.flatten(1).std(dim=1).view(-1, 1, 1, 1).clamp(min=1e-6)
    tex = 0.5 * fine + 0.7 * coarse
    return F.grid_sample(tex, grid, mode="bilinear", padding_mode="border", align_corners=False)


def render_hair(
    images: torch.Tensor,
    landmarks: torch.Tensor,
    colour: torch.Tensor,
    amount: torch.Tensor,
    blur_px: torch.Tensor,
    generators: list[torch.Generator],
    shadow: float = 0.25,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite long hair onto `images`; returns the images and the hair's hard support `(N, 1, H, W)`.

    Args:
        images: `(N, 3, H, W)` in [0, 1].
        landmarks: `(N, 478, 2|3)` target landmarks.
        colour: `(N, 3, 1, 1)` base hair colour.
        amount: `(N,)` opacity in [0, 1] (strength times the per-face female amount).
        blur_px: `(N,)` the photo's own blur in pixels.
        generators: one per image, for the strand texture.
        shadow: darkening of the skin just inside the hair's edge.
    """
    size = tuple(images.shape[-2:])
    cover = hair_region(landmarks, size, blur_px)
    tex = gm.gaussian_blur(strand_texture(landmarks, size, generators), blur_px)
    _, _, iod = face_coordinates(landmarks[..., :2].float(), size)
    # Strand shading only, no sheen band: a drawn highlight reads as a light streak.
    gain = (1.0 + 0.3 * tex).clamp(0.3, 2.0)
    hair = (colour * gain).clamp(0.0, 1.0)
    # Ragged ends and a thin, strand-broken edge: strands reach a little further or stop a little short.
    alpha = (cover * (1.0 + 0.35 * tex)).clamp(0.0, 1.0) * amount.view(-1, 1, 1, 1)
    # The hair's edge shadows the skin beside it (ambient occlusion under a curtain of hair).
    halo = gm.gaussian_blur(cover, 0.06 * iod) - cover
    shade = 1.0 - shadow * amount.view(-1, 1, 1, 1) * halo.clamp(min=0.0) * 2.0
    out = images * shade.clamp(0.5, 1.0)
    out = out * (1.0 - alpha) + hair * alpha
    # Beyond 0.2 % coverage a change is under a grey level: that is where the edit's mask ends.
    reach = cover + gm.gaussian_blur(cover, 0.06 * iod)
    return out, ((reach > 2e-3) & (amount.view(-1, 1, 1, 1) > 0)).to(images.dtype)
