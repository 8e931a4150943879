"""Shape half of the gender editor: published sex differences in facial proportions as a landmark displacement.

The table `editors/data/gender_proportions.csv` holds the differences as data (male and female means with
their source). Each one becomes a smooth displacement of the 478 mesh landmarks in a per-face frame: origin
at the iris midpoint, x along the inter-ocular line, unit = inter-ocular distance (IOD). Which landmarks a
feature moves, and by how much, is a fixed per-landmark weight defined on MediaPipe's canonical face, so the
weights do not depend on the face being edited. A feature's ratio `r` (female / male, after normalising
by the reference measurement) is applied as `r ** amount`, so `amount = +1` turns an average male proportion
into an average female one, `-1` the reverse, and the two directions are exact inverses.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from editors.gender.masks import canonical_frame
from engine.faces.mesh import landmark_group

PROPORTIONS_PATH = Path(__file__).parent / "data" / "gender_proportions.csv"
VALUE_KINDS = ("reference", "measured", "direction_only")
#: Features the warp knows how to apply; every one must be in the table.
SHAPE_FEATURES: tuple[str, ...] = (
    "face_width", "jaw_width", "nose_height", "lower_face_height", "nose_width", "mouth_width",
    "eye_fissure", "lip_fullness", "brow_height", "brow_thickness",
)  # fmt: skip
NASION, SUBNASALE, CHIN, STOMION_UP, STOMION_DOWN = 168, 2, 152, 13, 14
RIGHT_IRIS, LEFT_IRIS = 468, 473


@dataclass(frozen=True)
class Proportion:
    """One row of the proportions table."""

    feature: str
    measure: str
    relative_to: str
    value_kind: str
    male_mm: float | None
    female_mm: float | None
    effect: float | None
    source: str
    note: str


def load_proportions(path: str | Path = PROPORTIONS_PATH) -> dict[str, Proportion]:
    """Read the proportions table (lines starting with '#' are comments); validates kinds and numbers."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"proportions path={str(path)!r} does not exist")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))

    def number(row: dict[str, str], key: str) -> float | None:
        text = (row.get(key) or "").strip()
        return float(text) if text else None

    table: dict[str, Proportion] = {}
    for row in rows:
        prop = Proportion(
            feature=row["feature"].strip(),
            measure=row["measure"].strip(),
            relative_to=(row.get("relative_to") or "").strip(),
            value_kind=row["value_kind"].strip(),
            male_mm=number(row, "male_mm"),
            female_mm=number(row, "female_mm"),
            effect=number(row, "effect"),
            source=(row.get("source") or "").strip(),
            note=(row.get("note") or "").strip(),
        )
        if prop.value_kind not in VALUE_KINDS:
            raise ValueError(
                f"proportions feature={prop.feature!r}: value_kind={prop.value_kind!r} not in {VALUE_KINDS}"
            )
        if not prop.source:
            raise ValueError(f"proportions feature={prop.feature!r} has no source")
        if prop.value_kind in ("reference", "measured") and not (prop.male_mm and prop.female_mm):
            raise ValueError(f"proportions feature={prop.feature!r} needs positive male_mm and female_mm")
        if prop.value_kind == "direction_only" and prop.effect is None:
            raise ValueError(f"proportions feature={prop.feature!r} (direction_only) needs an effect")
        table[prop.feature] = prop
    for prop in table.values():
        if prop.value_kind == "measured" and prop.relative_to not in table:
            raise ValueError(
                f"proportions feature={prop.feature!r}: relative_to={prop.relative_to!r} is not a row"
            )
    missing = [f for f in SHAPE_FEATURES if f not in table]
    if missing:
        raise ValueError(f"proportions table {path} lacks features {missing}")
    return table


def female_ratios(table: dict[str, Proportion]) -> dict[str, float]:
    """Female-over-male ratio of every size feature (measured: normalised means; direction_only: effect).

    `brow_height` is a displacement, not a ratio, and is returned as its effect in IOD units.
    """
    out: dict[str, float] = {}
    for name, prop in table.items():
        if prop.value_kind == "measured":
            ref = table[prop.relative_to]
            out[name] = (prop.female_mm / ref.female_mm) / (prop.male_mm / ref.male_mm)  # type: ignore[operator]
        elif prop.value_kind == "direction_only":
            out[name] = float(prop.effect)  # type: ignore[arg-type]
    return out


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@lru_cache(maxsize=1)
def feature_weights() -> dict[str, np.ndarray]:
    """Per-landmark `(478,)` weights of each feature, from the canonical face (x right, y down, IOD units)."""
    xy = canonical_frame()["xy"]
    cx, cy = xy[:, 0], xy[:, 1]
    eyes = list(landmark_group("right_eye")) + list(landmark_group("left_eye"))
    iris = list(range(468, 478))
    brows = list(landmark_group("right_eyebrow")) + list(landmark_group("left_eyebrow"))
    w: dict[str, np.ndarray] = {}
    # Widths: a horizontal scale profile over height; the eye line and forehead stay put.
    w["face_width"] = _smoothstep(cy, 0.05, 0.35) * (1.0 - _smoothstep(cy, 0.55, 1.1))
    w["jaw_width"] = _smoothstep(cy, 0.55, 1.25)
    nose = np.exp(-0.5 * ((cx / 0.42) ** 2 + ((cy - 0.62) / 0.2) ** 2))
    w["nose_width"] = np.clip(nose / np.exp(-0.5 * (0.25 / 0.42) ** 2), 0.0, 1.0)
    mouth = np.exp(-0.5 * ((cy - 1.12) / 0.14) ** 2) * (1.0 - _smoothstep(np.abs(cx), 0.55, 0.8))
    w["mouth_width"] = mouth
    # Lip fullness: vermilion heights about the mouth line, fading out at the corners (keeps the smile).
    w["lip_fullness"] = np.exp(-0.5 * ((cy - 1.12) / 0.2) ** 2) * (1.0 - _smoothstep(np.abs(cx), 0.2, 0.4))
    # Eye fissure: the eyelids around each eye, not the iris (iris size does not differ by sex).
    eye_d = np.minimum(np.hypot(cx + 0.5, cy), np.hypot(cx - 0.5, cy))
    eye_w = np.exp(-0.5 * (eye_d / 0.2) ** 2)
    eye_w[iris] = 0.0
    w["eye_fissure"] = eye_w
    brow_w = np.exp(-0.5 * ((cy + 0.32) / 0.16) ** 2) * (1.0 - _smoothstep(cy, -0.2, -0.07))
    brow_w *= _smoothstep(np.abs(cx), 0.05, 0.2)
    brow_w[eyes + iris] = 0.0
    w["brow_height"] = brow_w
    thick = np.zeros(478)
    thick[brows] = 1.0
    w["brow_thickness"] = thick
    return {k: v.astype(np.float32) for k, v in w.items()}


def face_frame(landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per face: centre `(N, 2)`, x axis `(N, 2)`, y axis `(N, 2)` (pointing down the face), IOD `(N,)`."""
    right, left = landmarks[:, RIGHT_IRIS, :2], landmarks[:, LEFT_IRIS, :2]
    axis = left - right
    iod = axis.norm(dim=-1).clamp(min=1e-6)
    ex = axis / iod[:, None]
    ey = torch.stack([-ex[:, 1], ex[:, 0]], dim=-1)
    return (left + right) / 2, ex, ey, iod


def target_landmarks(landmarks: torch.Tensor, amounts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Landmarks moved toward the other sex's proportions.

    Args:
        landmarks: `(N, 478, 3)` crop pixels.
        amounts: per feature, `(N,)` log-ratio to apply (`log(r) * signed strength * gain`) for size features,
            or a displacement in IOD units for `brow_height` (positive raises the brows).

    Returns:
        `(N, 478, 3)` target landmarks (z unchanged); zero amounts return the input exactly.
    """
    weights = {k: torch.as_tensor(v, device=landmarks.device) for k, v in feature_weights().items()}
    centre, ex, ey, iod = face_frame(landmarks)
    rel = landmarks[..., :2] - centre[:, None]
    u = (rel * ex[:, None]).sum(-1) / iod[:, None]
    v = (rel * ey[:, None]).sum(-1) / iod[:, None]

    def scale(name: str) -> torch.Tensor:
        return torch.exp(amounts[name])[:, None] - 1.0  # (N, 1)

    # Midline position at each height, so widths scale about the face's own midline (pose-robust).
    v_n, v_c = v[:, NASION : NASION + 1], v[:, CHIN : CHIN + 1]
    t = ((v - v_n) / (v_c - v_n).clamp(min=1e-3)).clamp(0.0, 1.0)
    u_mid = u[:, NASION : NASION + 1] + t * (u[:, CHIN : CHIN + 1] - u[:, NASION : NASION + 1])
    du = (scale("face_width") * weights["face_width"] + scale("jaw_width") * weights["jaw_width"]) * (
        u - u_mid
    )
    du = du + scale("nose_width") * weights["nose_width"] * (u - u[:, SUBNASALE : SUBNASALE + 1])
    du = du + scale("mouth_width") * weights["mouth_width"] * (u - u_mid)

    # Vertical layout: the nose (eye line to subnasale) and the lower face (subnasale to chin) are
    # rescaled; everything above the eye line stays.
    v_sn = v[:, SUBNASALE : SUBNASALE + 1].clamp(min=1e-3)
    shift_sn = scale("nose_height") * (v_sn - v_n)
    dv = torch.where(
        v <= v_sn, shift_sn * v.clamp(min=0.0) / v_sn, shift_sn + scale("lower_face_height") * (v - v_sn)
    )
    # Lip fullness is relative to the (already rescaled) lower face.
    v_sto = (v[:, STOMION_UP : STOMION_UP + 1] + v[:, STOMION_DOWN : STOMION_DOWN + 1]) / 2
    lower = 1.0 + scale("lower_face_height")
    dv = dv + scale("lip_fullness") * weights["lip_fullness"] * (v - v_sto) * lower

    # Eye fissure: grow or shrink the lids about each iris centre.
    canonical_x = torch.as_tensor(canonical_frame()["xy"][:, 0], device=landmarks.device, dtype=torch.float32)
    for iris, side in ((RIGHT_IRIS, -1.0), (LEFT_IRIS, 1.0)):
        near = weights["eye_fissure"] * (side * canonical_x > 0).float()
        du = du + scale("eye_fissure") * near * (u - u[:, iris : iris + 1])
        dv = dv + scale("eye_fissure") * near * (v - v[:, iris : iris + 1])

    # Brows: raise (positive amount) and thin/thicken about each brow's own centre line.
    dv = dv - amounts["brow_height"][:, None] * weights["brow_height"]
    for group in ("right_eyebrow", "left_eyebrow"):
        idx = torch.as_tensor(landmark_group(group), device=landmarks.device)
        v_mid = v[:, idx].mean(dim=1, keepdim=True)
        dv[:, idx] = dv[:, idx] + scale("brow_thickness") * (v[:, idx] - v_mid)

    shift = (du[..., None] * ex[:, None] + dv[..., None] * ey[:, None]) * iod[:, None, None]
    out = landmarks.clone()
    out[..., :2] = landmarks[..., :2] + shift
    return out
