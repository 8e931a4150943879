"""Verdicts of the edit audit, decided in one place: did each edit change its property, and only that?

The audit table has one row per image and edit strength, with the judges' columns (see
`engine.types.Judge`): `<reading>_ref`, `<reading>_edit`, `delta_<reading>[_rel]` and pair measures,
plus the editor's metadata as `edit_<key>`. `verdicts` adds one boolean column per check, `valid`
and `reasons`, reading only the editor's `AuditPolicy` and the `AuditThresholds`:

* ``target_not_moved``    the target's delta did not move far enough in the intended direction
  (or the editor's own `ReportedTarget` says so, under the reason it names);
* ``target_beyond_judge`` it did not, and it could not have: the reference already reads within the
  threshold of the judge's end of scale (an 80-year-old made older on an age judge that stops at 80,
  a face judged female at p(male) 0.05 that must lose 0.1 toward female), so the judge cannot show the
  change whatever the edit did;
* ``target_not_measured`` no judge measured the target (e.g. its judge was switched off);
* ``nontarget_moved``     a judged property other than the target moved too much
  (`nontarget_readings` names which: `est_age`, `est_p_male`, ...);
* ``expression_moved``    the re-detected blendshapes moved too much (where the policy keeps them);
* ``leak_outside_mask``   pixels (or LPIPS) changed outside the edit mask;
* ``identity_changed``    the face no longer reads as the same person;
* ``face_not_found``      a judge could not measure the reference or the edit.

An occluding policy (`AuditPolicy.occluding`: electrodes, masks, anything that covers the face) is
judged by the checks that apply to a covered face. The stage has read the edit on the reference's
landmarks, so a face the landmarker cannot re-find under the cover is not ``face_not_found`` (only a
reference it cannot find is). The judged non-target checks (age, p(male)) and the expression check
are not applied: those judges read the cover, not the face beneath, and measuring them on the edit
with the covered pixels filled from the reference would measure the reference itself (an occluder
changes nothing outside its mask), so it could never fail. Their check columns are left empty (NA),
`checks_not_applied` names them and `landmarks_of_edit` ("reference") says on which landmarks the edit
was read; their readings stay in the table. Identity is checked on the edit as drawn, cut on the
reference's landmarks, for the same reason: with the cover masked out the pair would be identical.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pandas as pd

from engine.audit.age_gender import AGE_WEIGHTS
from engine.audit.thresholds import AuditThresholds
from engine.types import AuditPolicy, ReportedTarget, TargetCheck

REASONS = (
    "target_not_moved",
    "target_beyond_judge",
    "target_not_measured",
    "nontarget_moved",
    "expression_moved",
    "leak_outside_mask",
    "identity_changed",
    "face_not_found",
)

#: Judged properties that every edit must leave alone unless they are its target: the audit column
#: of the change -> the threshold field bounding it.
KEPT_READINGS: dict[str, str] = {
    "delta_est_age": "max_age_change_nontarget",
    "delta_est_p_male": "max_p_male_change_nontarget",
}
#: The scale of a judged target: the audit column of the change -> (the reference's reading, lowest and
#: highest value the judge can give). The age judge's expected age runs over its classes (0.25 to 80
#: years); p(male) is a probability.
JUDGE_SCALES: dict[str, tuple[str, float, float]] = {
    "delta_est_age": ("est_age_ref", float(AGE_WEIGHTS.min()), float(AGE_WEIGHTS.max())),
    "delta_est_p_male": ("est_p_male_ref", 0.0, 1.0),
}
#: Readings a policy may add to the kept ones (`AuditPolicy.also_kept`), with their thresholds.
OPTIONAL_KEPT: dict[str, str] = {"delta_symmetry_index_rel": "max_symmetry_change_nontarget"}
#: Edit metadata columns carry this prefix in the audit table.
META_PREFIX = "edit_"


def reason_counts(reasons: pd.Series) -> Counter:
    """How often each failure reason occurs in a verdict table's `reasons` column (";"-joined per edit)."""
    # Not fillna(""): a table where every edit passed reads its empty column as float NaN, and pandas
    # refuses to fill a float column with a string.
    return Counter(r for rs in reasons if isinstance(rs, str) for r in rs.split(";") if r)


def reason_labels(table: pd.DataFrame, sep: str = " ×") -> list[str]:
    """Each failure reason of a verdict table with its count, most frequent first; `nontarget_moved` also
    says which judges moved (from `nontarget_readings`), e.g. "nontarget_moved ×9 (est_age ×7, est_p_male ×3)"."""
    labels = []
    for reason, count in reason_counts(table["reasons"]).most_common():
        label = f"{reason}{sep}{count}"
        if reason == "nontarget_moved" and "nontarget_readings" in table:
            which = reason_counts(table["nontarget_readings"]).most_common()
            label += " (" + ", ".join(f"{r}{sep}{c}" for r, c in which) + ")" if which else ""
        labels.append(label)
    return labels


class _Reasons:
    """Per-row reasons, written in `REASONS` order with an editor's own reasons after them."""

    def __init__(self, n: int) -> None:
        self.rows: list[list[str]] = [[] for _ in range(n)]

    def flag(self, failed: np.ndarray, reason: str) -> None:
        for i in np.flatnonzero(failed):
            if reason not in self.rows[i]:
                self.rows[i].append(reason)

    def joined(self) -> list[str]:
        def order(r: str) -> tuple[int, int]:
            return (REASONS.index(r), 0) if r in REASONS else (len(REASONS), 0)

        return [";".join(sorted(r, key=order)) for r in self.rows]


def _values(df: pd.DataFrame, column: str) -> np.ndarray | None:
    return df[column].astype(float).to_numpy() if column in df else None


def _signs(df: pd.DataFrame, target: TargetCheck) -> np.ndarray:
    if target.sign_key is None:
        return np.full(len(df), float(target.sign))
    table = dict(target.signs)
    column = META_PREFIX + target.sign_key
    if column not in df:
        raise ValueError(f"audit: the editor's metadata has no {target.sign_key!r} (its per-face direction)")
    values = df[column].astype(str)
    unknown = sorted(set(values) - set(table))
    if unknown:
        raise ValueError(f"audit: per-face directions {unknown} have no sign; known: {sorted(table)}")
    return values.map(table).astype(float).to_numpy()


def _judged_target(out: pd.DataFrame, target: TargetCheck, threshold: np.ndarray, reasons: _Reasons) -> None:
    """The target delta moved at least `threshold` (per row) in the intended direction."""
    present = [c for c in target.deltas if c in out]
    n = len(out)
    if not present:  # unverified is not valid; say so rather than fail a finished run
        reasons.flag(np.ones(n, dtype=bool), "target_not_measured")
        out["check_target"] = False
        return
    sign = _signs(out, target)
    deltas = np.vstack([out[c].astype(float).to_numpy() for c in present])
    # Signed so that "more" is "better": the most favourable facet counts (NaN facets are skipped).
    signed = np.where(sign == 0, np.abs(deltas), deltas * np.where(sign == 0, 1.0, sign))
    with np.errstate(all="ignore"):
        best = np.where(np.isnan(signed).all(axis=0), np.nan, np.nanmax(np.where(np.isnan(signed), -np.inf, signed),
                                                                       axis=0))
    if len(present) > 1:
        pick = np.argmax(np.where(np.isnan(signed), -np.inf, signed), axis=0)
        out["delta_target"] = np.where(np.isnan(best), np.nan, deltas[pick, np.arange(n)])
    moved = best >= threshold
    reachable = _reachable(out, present, sign, threshold)
    reasons.flag(np.isnan(best), "face_not_found")
    reasons.flag(~np.isnan(best) & ~moved & reachable, "target_not_moved")
    reasons.flag(~np.isnan(best) & ~moved & ~reachable, "target_beyond_judge")
    out["check_target"] = np.where(np.isnan(best), False, moved)


def _reachable(out: pd.DataFrame, present: list[str], sign: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Per row: could any facet of the target move by `threshold` in its direction within its judge's
    scale (`JUDGE_SCALES`; a facet without a known scale, or without a reference reading, always could)?"""
    n = len(out)
    reachable = np.zeros(n, dtype=bool)
    for column in present:
        scale = JUDGE_SCALES.get(column)
        if scale is None or scale[0] not in out:
            return np.ones(n, dtype=bool)
        ref = out[scale[0]].astype(float).to_numpy()
        up, down = scale[2] - ref, ref - scale[1]
        room = np.where(sign > 0, up, np.where(sign < 0, down, np.maximum(up, down)))
        reachable |= np.isnan(ref) | (room >= threshold)
    return reachable


def _reported_target(out: pd.DataFrame, target: ReportedTarget, reasons: _Reasons) -> None:
    meta_columns = [c for c in out.columns if c.startswith(META_PREFIX)]
    rows = out[meta_columns].rename(columns=lambda c: c[len(META_PREFIX):]).to_dict("records")
    reached = np.array([bool(target.reached(row)) for row in rows], dtype=bool)
    reasons.flag(~reached, target.reason)
    out["check_target"] = reached


#: The checks an occluding policy does not apply (see the module docstring).
NOT_APPLIED_WHEN_OCCLUDING = ("check_nontarget", "check_expression")


def _bounded(values: np.ndarray | None, limit: float | None) -> np.ndarray | None:
    """True where `values` do not exceed `limit` (NaN passes: a missing measure is flagged elsewhere)."""
    if values is None or limit is None:
        return None
    return ~(values > limit)


def verdicts(df: pd.DataFrame, policy: AuditPolicy, thresholds: AuditThresholds,
             target_threshold: Callable[[float], float] | None = None) -> pd.DataFrame:
    """Add the checks, `valid` and `reasons` to an audit table.

    Args:
        df: audit rows (judge columns, `edit_*` metadata, `strength`).
        policy: the editor's audit policy.
        thresholds: the audit thresholds.
        target_threshold: strength -> smallest target change; default: the policy's threshold
            field times the strength (a dose-response edit at strength s is expected to move its
            property by about s times the full-strength change).

    Returns:
        A copy of `df` with check_target (when the policy has a target), check_nontarget and
        nontarget_readings, check_identity (when measured), check_expression, check_outside, reasons and valid; an
        occluding policy's table also has checks_not_applied and landmarks_of_edit (its checks that
        do not apply are NA).
    """
    out = df.copy()
    n = len(out)
    reasons = _Reasons(n)
    occluding = policy.occluding
    # Under a cover only the reference must be found: the edit is read on its landmarks.
    found = "face_found_ref" if occluding else "face_found"
    if found in out:
        reasons.flag(~out[found].fillna(False).astype(bool).to_numpy(), "face_not_found")
    for column in () if occluding else KEPT_READINGS:  # a judge that could not measure the face cannot vouch for it
        values = _values(out, column)
        if values is not None:
            reasons.flag(np.isnan(values), "face_not_found")

    target = policy.target
    if isinstance(target, TargetCheck):
        base = getattr(thresholds, target.threshold)
        scale = target_threshold or (lambda s: max(1e-6, base * s))
        strengths = out["strength"].astype(float).to_numpy() if "strength" in out else np.ones(n)
        _judged_target(out, target, np.array([scale(s) for s in strengths]), reasons)
    elif isinstance(target, ReportedTarget):
        _reported_target(out, target, reasons)

    targeted = set(target.deltas) if isinstance(target, TargetCheck) else set()
    kept = np.ones(n, dtype=bool)
    unknown = set(policy.also_kept) - set(OPTIONAL_KEPT)
    if unknown:
        raise ValueError(f"AuditPolicy.also_kept={sorted(unknown)}: no threshold; known: {sorted(OPTIONAL_KEPT)}")
    kept_readings = {**KEPT_READINGS, **{c: OPTIONAL_KEPT[c] for c in policy.also_kept}}
    moved_readings = _Reasons(n)  # which kept readings moved, in `kept_readings` order
    for column, field in kept_readings.items():
        values = _values(out, column)
        ok = _bounded(np.abs(values), getattr(thresholds, field)) if values is not None and column not in targeted else None
        if ok is not None:
            kept &= ok
            moved_readings.flag(~ok, column.removeprefix("delta_"))
    if not occluding:
        reasons.flag(~kept, "nontarget_moved")
    out["check_nontarget"] = kept
    # Which judge moved: "nontarget_moved" alone does not say whether the age or the sex judge did.
    out["nontarget_readings"] = "" if occluding else moved_readings.joined()

    same_person = _bounded(_values(out, "identity_distance"), thresholds.max_identity_distance)
    if same_person is not None:
        reasons.flag(~same_person, "identity_changed")
        out["check_identity"] = same_person

    expression = _bounded(_values(out, "blendshape_change"), thresholds.max_blendshape_change)
    if expression is not None:
        if not policy.expression_kept:  # reported, not checked: the edit covers or replaces skin
            expression = np.ones(n, dtype=bool)
        if not occluding:
            reasons.flag(~expression, "expression_moved")
        out["check_expression"] = expression

    outside = np.ones(n, dtype=bool)
    for column, limit in (("outside_change", thresholds.max_outside_change),
                          ("lpips_out", thresholds.max_lpips_outside)):
        ok = _bounded(_values(out, column), limit)
        if ok is not None:
            outside &= ok
    reasons.flag(~outside, "leak_outside_mask")
    out["check_outside"] = outside

    if occluding:  # what was measured, and which checks do not apply
        for column in NOT_APPLIED_WHEN_OCCLUDING:
            if column in out:
                out[column] = pd.array([pd.NA] * n, dtype="boolean")
        out["checks_not_applied"] = ";".join(c.removeprefix("check_") for c in NOT_APPLIED_WHEN_OCCLUDING)
        out["landmarks_of_edit"] = "reference"
    out["reasons"] = reasons.joined()
    out["valid"] = [not r for r in reasons.rows]
    return out
