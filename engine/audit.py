"""Edit audit (manipulation checks): did an edit change its property, and only that property?

Measures (torch or numpy in, numpy out):

* `symmetry_index`: how far a face mesh is from mirror symmetry, after the best 3D reflection;
* `blendshape_change`: mean absolute change of the 52 MediaPipe blendshapes (expression);
* `outside_mask_change`: mean absolute pixel change where the edit was not allowed to act.

Verdicts (pandas out): `audit_edits` builds one row per image from reference and edit measures,
and `verdicts` adds `valid` and `reasons` to such a table according to an `AuditConfig`:

* ``target_not_moved``  the judged property did not move enough in the intended direction;
* ``nontarget_moved``   a property the edit should keep (age, gender) moved too much;
* ``expression_moved``  the blendshapes moved too much;
* ``leak_outside_mask`` pixels (or LPIPS) changed outside the edit mask;
* ``identity_changed``  the face no longer reads as the same person (dlib descriptor distance);
* ``face_not_found``    the judges could not measure the reference or the edit;
* ``target_not_measured`` the table has no judge for the edited property (e.g. no symmetry measure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch

#: Intended directions each property accepts (None: either direction counts).
DIRECTIONS: dict[str, tuple[str, ...]] = {
    "age": ("older", "younger"),
    "gender": ("male", "female"),
    "symmetry": ("more", "less"),
}
REASONS = (
    "target_not_moved",
    "target_not_measured",
    "nontarget_moved",
    "expression_moved",
    "leak_outside_mask",
    "identity_changed",
    "face_not_found",
)
# Column aliases: the audit stage (engine/checks.py) names some columns without the "est_"/"_index".
_ALIASES = {
    "est_age_ref": ("est_age_ref", "age_ref"),
    "est_age_edit": ("est_age_edit", "age_edit"),
    "symmetry_index_ref": ("symmetry_index_ref", "symmetry_ref"),
    "symmetry_index_edit": ("symmetry_index_edit", "symmetry_edit"),
}


@dataclass
class AuditConfig:
    """Thresholds of the manipulation checks (defaults are the pre-registered ones).

    Attributes:
        max_blendshape_change: largest mean |change| of the 52 blendshapes (expression kept).
        max_outside_change: largest mean |pixel change| (0..1 scale) outside the edit mask.
        max_lpips_outside: largest LPIPS outside the edit mask; None: not checked.
        min_age_change: an age edit must move the judged age this many years in its direction.
        min_p_target_change: a gender edit must raise P(target gender) by this much.
        min_symmetry_change: a symmetry edit must change the asymmetry index by this fraction
            (a reduction for "more", an increase for "less").
        max_age_change_nontarget: largest |age change| in years for edits of other properties.
        max_p_male_change_nontarget: largest |P(male) change| for edits of other properties.
        max_identity_distance: largest dlib face-descriptor distance between sham and edit (0.6 is
            dlib's same-person threshold); None: not checked. Applies to every property: an edit
            should leave the same person, older or of the other gender.
    """

    max_blendshape_change: float = 0.05
    max_outside_change: float = 0.01
    max_lpips_outside: float | None = None
    min_age_change: float = 3.0
    min_p_target_change: float = 0.1
    min_symmetry_change: float = 0.2
    max_age_change_nontarget: float = 7.0
    max_p_male_change_nontarget: float = 0.15
    max_identity_distance: float | None = 0.6

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in ("max_lpips_outside", "max_identity_distance"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{f.name}={value!r}: expected a finite number")
            if value < 0:
                raise ValueError(f"{f.name}={value!r}: must be >= 0")
            setattr(self, f.name, float(value))
        if self.min_p_target_change > 1 or self.max_p_male_change_nontarget > 1:
            raise ValueError(
                f"probability thresholds must lie in [0, 1], got min_p_target_change={self.min_p_target_change}, "
                f"max_p_male_change_nontarget={self.max_p_male_change_nontarget}"
            )
        if not 0 < self.min_symmetry_change <= 1:
            raise ValueError(f"min_symmetry_change={self.min_symmetry_change!r}: must lie in (0, 1]")


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def symmetry_index(
    landmarks: torch.Tensor | np.ndarray,
    mirror_pairs: np.ndarray,
    midline_idx: np.ndarray,
    use_depth: bool = True,
) -> np.ndarray:
    """Asymmetry of each face mesh: 0 for a mirror-symmetric face, larger when less symmetric.

    The best reflection of the mesh onto itself (left point onto its right partner and back,
    midline points onto themselves) is fitted by least squares (Kabsch with determinant -1), in
    3D by default so head yaw does not count as asymmetry. The index is the mean distance between
    each reflected point and its partner, divided by the RMS distance of those points from their
    centroid, so it does not depend on face size, position or pose.

    Args:
        landmarks: (N, K, 2 or 3) meshes in pixels (NaN rows give NaN).
        mirror_pairs: (P, 2) indices of left/right partner points.
        midline_idx: (M,) indices of points on the face's midline.
        use_depth: use z when the landmarks have it.

    Returns:
        (N,) float64 asymmetry index.
    """
    lm = _numpy(landmarks)
    if lm.ndim != 3 or lm.shape[-1] not in (2, 3):
        raise ValueError(f"landmarks must have shape (N, K, 2 or 3), got {lm.shape}")
    pairs = np.asarray(mirror_pairs, dtype=np.int64).reshape(-1, 2)
    mid = np.asarray(midline_idx, dtype=np.int64).reshape(-1)
    if len(pairs) + len(mid) < 3:
        raise ValueError(f"need at least 3 mirror pairs + midline points, got {len(pairs)} + {len(mid)}")
    if (
        max(pairs.max(initial=-1), mid.max(initial=-1)) >= lm.shape[1]
        or min(pairs.min(initial=0), mid.min(initial=0)) < 0
    ):
        raise ValueError(f"mirror_pairs/midline_idx out of range for {lm.shape[1]} landmarks")
    if not use_depth:
        lm = lm[..., :2]
    src_idx = np.concatenate([pairs[:, 0], pairs[:, 1], mid])
    dst_idx = np.concatenate([pairs[:, 1], pairs[:, 0], mid])
    src, dst = lm[:, src_idx], lm[:, dst_idx]
    out = np.full(len(lm), np.nan)
    ok = np.isfinite(src).all((1, 2))
    if not ok.any():
        return out
    src, dst = src[ok], dst[ok]
    centred_src = src - src.mean(1, keepdims=True)
    centred_dst = dst - dst.mean(1, keepdims=True)
    u, _, vt = np.linalg.svd(np.einsum("nki,nkj->nij", centred_src, centred_dst))
    # Optimal orthogonal map with det -1 (a reflection): flip the weakest singular direction.
    d = np.ones((len(src), src.shape[-1]))
    d[:, -1] = -np.sign(np.linalg.det(vt.transpose(0, 2, 1) @ u.transpose(0, 2, 1)))
    rot = vt.transpose(0, 2, 1) @ (d[:, :, None] * u.transpose(0, 2, 1))
    mapped = np.einsum("nij,nkj->nki", rot, centred_src)
    residual = np.linalg.norm(mapped - centred_dst, axis=-1).mean(1)
    scale = np.sqrt((centred_src**2).sum(-1).mean(1))
    out[ok] = residual / np.maximum(scale, 1e-12)
    return out


def blendshape_change(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N,) mean absolute change between two (N, 52) blendshape arrays (NaN where unmeasured)."""
    a, b = _numpy(a), _numpy(b)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"blendshapes must both be (N, B), got {a.shape} and {b.shape}")
    diff = np.abs(a - b)
    out = np.full(len(a), np.nan)
    ok = np.isfinite(diff).all(1)
    out[ok] = diff[ok].mean(1)
    return out


def outside_mask_change(
    ref: torch.Tensor, edit: torch.Tensor, mask: torch.Tensor, threshold: float = 1e-3
) -> np.ndarray:
    """(N,) mean absolute pixel change (channel mean, 0..1 scale) where `mask <= threshold`.

    The soft rim of the mask counts as inside: the edit may blend there. NaN where the mask
    leaves nothing outside.
    """
    if ref.shape != edit.shape or ref.ndim != 4:
        raise ValueError(
            f"ref and edit must both be (N, C, H, W), got {tuple(ref.shape)} and {tuple(edit.shape)}"
        )
    if (
        mask.ndim != 4
        or mask.shape[1] != 1
        or mask.shape[0] != ref.shape[0]
        or mask.shape[-2:] != ref.shape[-2:]
    ):
        raise ValueError(f"mask must be (N, 1, H, W) matching the images, got {tuple(mask.shape)}")
    diff = (edit.float() - ref.float()).abs().mean(1, keepdim=True)
    outside = (mask.to(diff.device) <= threshold).float()
    total = outside.sum((1, 2, 3))
    change = (diff * outside).sum((1, 2, 3)) / total.clamp_min(1)
    return _numpy(torch.where(total > 0, change, torch.full_like(change, float("nan"))))


def check_direction(prop: str, direction: str | None) -> None:
    """Raise a ValueError when `direction` is not one `prop` accepts."""
    allowed = DIRECTIONS.get(prop, ())
    if direction is not None and direction not in allowed:
        choices = ", ".join(allowed) if allowed else "none (this property has no direction)"
        raise ValueError(f"direction={direction!r} for property {prop!r}: allowed: {choices} or None")


def _column(df: pd.DataFrame, name: str) -> pd.Series | None:
    for alias in _ALIASES.get(name, (name,)):
        if alias in df:
            return df[alias].astype(float)
    return None


def verdicts(df: pd.DataFrame, prop: str, direction: str | None, cfg: AuditConfig) -> pd.DataFrame:
    """Add deltas, one boolean column per check, `valid` and `reasons` to an audit table.

    `df` has one row per edited image with any of: est_age_ref/edit (or age_ref/edit),
    p_male_ref/edit, symmetry_index_ref/edit (or symmetry_ref/edit), blendshape_change,
    outside_change, lpips_out, face_found. A check whose measures are absent is skipped; a target
    measure that is NaN fails with ``face_not_found``.

    Returns:
        A copy of `df` with delta_age, delta_p_male, delta_symmetry_rel (when measurable),
        check_target, check_nontarget, check_expression, check_outside, valid and reasons.
    """
    check_direction(prop, direction)
    out = df.copy()
    n = len(out)
    reasons: list[list[str]] = [[] for _ in range(n)]

    def flag(failed: np.ndarray, reason: str) -> None:
        for i in np.flatnonzero(failed):
            if reason not in reasons[i]:
                reasons[i].append(reason)

    age_ref, age_edit = _column(out, "est_age_ref"), _column(out, "est_age_edit")
    pm_ref, pm_edit = _column(out, "p_male_ref"), _column(out, "p_male_edit")
    sym_ref, sym_edit = _column(out, "symmetry_index_ref"), _column(out, "symmetry_index_edit")
    d_age = (age_edit - age_ref).to_numpy() if age_ref is not None and age_edit is not None else None
    d_pm = (pm_edit - pm_ref).to_numpy() if pm_ref is not None and pm_edit is not None else None
    d_sym = None
    if sym_ref is not None and sym_edit is not None:
        d_sym = ((sym_edit - sym_ref) / sym_ref.where(sym_ref > 0)).to_numpy()
    d_sym_landmarks = d_sym
    img_ref, img_edit = _column(out, "image_asymmetry_ref"), _column(out, "image_asymmetry_edit")
    if img_ref is not None and img_edit is not None:
        # Symmetry has a shape facet (landmarks) and a shading/texture facet (pixels); an edit that
        # measurably moves either in the intended direction has moved the property.
        d_img = ((img_edit - img_ref) / img_ref.where(img_ref > 0)).to_numpy()
        out["delta_image_asymmetry_rel"] = d_img
        if d_sym is None:
            d_sym = d_img
        else:
            pick_lower = direction == "more"
            both = np.vstack([d_sym, d_img])
            d_sym = np.where(np.isnan(d_sym), d_img, np.where(np.isnan(d_img), d_sym,
                             both.min(axis=0) if pick_lower else both.max(axis=0)))
        out["delta_symmetry_target"] = d_sym
    for name, values in (("delta_age", d_age), ("delta_p_male", d_pm), ("delta_symmetry_rel", d_sym_landmarks)):
        if values is not None:
            out[name] = values
    if "face_found" in out:
        flag(~out["face_found"].fillna(False).astype(bool).to_numpy(), "face_not_found")
    for delta in (d_age, d_pm):  # a judge that could not measure the face cannot vouch for it
        if delta is not None:
            flag(np.isnan(delta), "face_not_found")

    # Target: the judged property moved far enough in the intended direction.
    target = {"age": (d_age, cfg.min_age_change), "gender": (d_pm, cfg.min_p_target_change)}
    target["symmetry"] = (d_sym, cfg.min_symmetry_change)
    if prop in target:
        delta, threshold = target[prop]
        if delta is None:  # unverified is not valid; say so rather than fail a finished run
            flag(np.ones(n, dtype=bool), "target_not_measured")
            out["check_target"] = False
        else:
            signed = {"younger": -delta, "female": -delta, "more": -delta}.get(direction or "", delta)
            moved = signed >= threshold if direction is not None else np.abs(delta) >= threshold
            flag(np.isnan(delta), "face_not_found")
            flag(~np.isnan(delta) & ~moved, "target_not_moved")
            out["check_target"] = np.where(np.isnan(delta), False, moved)

    # Non-target: age and gender stay put unless they are the property being edited.
    kept = np.ones(n, dtype=bool)
    if prop != "age" and d_age is not None:
        kept &= ~(np.abs(d_age) > cfg.max_age_change_nontarget)
    if prop != "gender" and d_pm is not None:
        kept &= ~(np.abs(d_pm) > cfg.max_p_male_change_nontarget)
    flag(~kept, "nontarget_moved")
    out["check_nontarget"] = kept

    if cfg.max_identity_distance is not None and "identity_distance" in out:
        distance = out["identity_distance"].astype(float).to_numpy()
        same_person = ~(distance > cfg.max_identity_distance)  # NaN (no face) is face_not_found's job
        flag(~same_person, "identity_changed")
        out["check_identity"] = same_person

    if "blendshape_change" in out:
        expression_ok = ~(out["blendshape_change"].astype(float).to_numpy() > cfg.max_blendshape_change)
        flag(~expression_ok, "expression_moved")
        out["check_expression"] = expression_ok
    outside_ok = np.ones(n, dtype=bool)
    if "outside_change" in out:
        outside_ok &= ~(out["outside_change"].astype(float).to_numpy() > cfg.max_outside_change)
    if cfg.max_lpips_outside is not None and "lpips_out" in out:
        outside_ok &= ~(out["lpips_out"].astype(float).to_numpy() > cfg.max_lpips_outside)
    flag(~outside_ok, "leak_outside_mask")
    out["check_outside"] = outside_ok

    out["reasons"] = [";".join(sorted(r, key=REASONS.index)) for r in reasons]
    out["valid"] = [not r for r in reasons]
    return out


_PER_IMAGE = {"age": "est_age", "p_male": "p_male", "symmetry_index": "symmetry_index"}
_PAIR_MEASURES = ("lpips_in", "lpips_out", "ssim_in", "ssim_out", "outside_change", "blendshape_change")


def audit_edits(
    prop: str, direction: str | None, ref: dict, edit: dict, cfg: AuditConfig | None = None
) -> pd.DataFrame:
    """One audit row per image from the reference's and the edit's measures.

    Args:
        prop: the edited property ("age", "gender", "symmetry", "semg", "none").
        direction: the intended direction (see `DIRECTIONS`) or None for either.
        ref: per-image measures of the reference (sham or original): any of "age", "p_male",
            "symmetry_index" (N,), "blendshapes" (N, 52), "face_found" (N,), "image_id".
        edit: the same measures of the edit, plus any pair measures "lpips_in", "lpips_out",
            "ssim_in", "ssim_out", "outside_change" (N,).
        cfg: thresholds; the defaults when None.

    Returns:
        DataFrame with image_id, est_age_ref/edit, p_male_ref/edit, symmetry_index_ref/edit,
        blendshape_change, the pair measures present, the deltas, the checks, valid and reasons.
    """
    cfg = cfg or AuditConfig()
    sizes = {len(v) for v in (*ref.values(), *edit.values())}
    if len(sizes) > 1:
        raise ValueError(f"all measures must have one row per image; got lengths {sorted(sizes)}")
    n = sizes.pop() if sizes else 0
    table: dict[str, object] = {"image_id": list(edit.get("image_id", ref.get("image_id", range(n))))}
    for key, column in _PER_IMAGE.items():
        if key in ref and key in edit:
            table[f"{column}_ref"] = _numpy(ref[key])
            table[f"{column}_edit"] = _numpy(edit[key])
    if "blendshapes" in ref and "blendshapes" in edit:
        table["blendshape_change"] = blendshape_change(ref["blendshapes"], edit["blendshapes"])
    for key in _PAIR_MEASURES:
        if key in edit:
            table[key] = _numpy(edit[key])
    found = [np.asarray(d["face_found"], dtype=bool) for d in (ref, edit) if "face_found" in d]
    if found:
        table["face_found"] = np.logical_and.reduce(found)
    return verdicts(pd.DataFrame(table), prop, direction, cfg)
