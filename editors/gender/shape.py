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
from editors.pose import LEFT_IRIS, RIGHT_IRIS, face_frame  # noqa: F401 - re-exported: the gender modules measure in it

PROPORTIONS_PATH = Path(__file__).parent / "data" / "gender_proportions.csv"
VALUE_KINDS = ("reference", "measured", "direction_only")
#: Features the warp applies; every one must be in the table. Proportions only: the table's mouth width,
#: eye fissure, lip fullness and brow height / thickness rows are documented but not warped, because the
#: face landmarker reads eyelids, brows, lips and mouth corners as expression (blendshapes), so warping
#: them changes the expression the audit must see kept.
SHAPE_FEATURES: tuple[str, ...] = ("face_width", "jaw_width", "nose_height", "lower_face_height", "nose_width")
NASION, SUBNASALE, CHIN, STOMION_UP, STOMION_DOWN = 168, 2, 152, 13, 14


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


def _rigid_zone(d: np.ndarray) -> np.ndarray:
    """1 inside the unit (elliptic) distance, fading to 0 at 1.5: a feature and a soft margin around it."""
    return 1.0 - _smoothstep(d, 1.0, 1.5)


@lru_cache(maxsize=1)
def feature_weights() -> dict[str, np.ndarray]:
    """Per-landmark `(478,)` weights of each feature, from the canonical face (x right, y down, IOD units)."""
    xy = canonical_frame()["xy"]
    cx, cy = xy[:, 0], xy[:, 1]
    w: dict[str, np.ndarray] = {}
    # Widths: a horizontal scale profile over height; the eye line and forehead stay put.
    w["face_width"] = _smoothstep(cy, 0.05, 0.35) * (1.0 - _smoothstep(cy, 0.55, 1.1))
    w["jaw_width"] = _smoothstep(cy, 0.55, 1.25)
    nose = np.exp(-0.5 * ((cx / 0.42) ** 2 + ((cy - 0.62) / 0.2) ** 2))
    w["nose_width"] = np.clip(nose / np.exp(-0.5 * (0.25 / 0.42) ** 2), 0.0, 1.0)
    # Rigid zones: each eye with its brow, and the mouth, move as one piece with their centre, so the
    # proportions change around them while their shapes (what the landmarker reads as expression) stay.
    w["rigid_right_eye"] = _rigid_zone(np.hypot((cx + 0.5) / 0.42, (cy + 0.12) / 0.4))
    w["rigid_left_eye"] = _rigid_zone(np.hypot((cx - 0.5) / 0.42, (cy + 0.12) / 0.4))
    w["rigid_mouth"] = _rigid_zone(np.hypot(cx / 0.62, (cy - 1.12) / 0.28))
    return {k: v.astype(np.float32) for k, v in w.items()}


def target_landmarks(landmarks: torch.Tensor, amounts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Landmarks moved toward the other sex's proportions.

    Args:
        landmarks: `(N, 478, 3)` crop pixels.
        amounts: per feature of `SHAPE_FEATURES`, `(N,)` log-ratio to apply (`log(r) * signed strength * gain`).

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

    # Vertical layout: the nose (eye line to subnasale) and the lower face (subnasale to chin) are
    # rescaled; everything above the eye line stays.
    v_sn = v[:, SUBNASALE : SUBNASALE + 1].clamp(min=1e-3)
    shift_sn = scale("nose_height") * (v_sn - v_n)
    dv = torch.where(
        v <= v_sn, shift_sn * v.clamp(min=0.0) / v_sn, shift_sn + scale("lower_face_height") * (v - v_sn)
    )

    # Eyes (with brows) and mouth move rigidly with their centres, so their shapes are kept exactly.
    zones = (("rigid_right_eye", (RIGHT_IRIS,)), ("rigid_left_eye", (LEFT_IRIS,)),
             ("rigid_mouth", (STOMION_UP, STOMION_DOWN)))  # fmt: skip
    total = sum(weights[name] for name, _ in zones).clamp(min=1.0)
    keep = 1.0 - sum(weights[name] for name, _ in zones) / total
    du_r, dv_r = du * keep, dv * keep
    for name, centre_idx in zones:
        w = weights[name] / total
        du_r = du_r + w * du[:, list(centre_idx)].mean(dim=1, keepdim=True)
        dv_r = dv_r + w * dv[:, list(centre_idx)].mean(dim=1, keepdim=True)
    du, dv = du_r, dv_r

    shift = (du[..., None] * ex[:, None] + dv[..., None] * ey[:, None]) * iod[:, None, None]
    out = landmarks.clone()
    out[..., :2] = landmarks[..., :2] + shift
    return out
