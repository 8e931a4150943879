"""From the tidy measurements table to matrices of paired differences (one row per test)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = (
    "image_id",
    "condition",
    "strength",
    "editor",
    "property",
    "classifier",
    "output",
    "value",
    "top1",
)
CONDITIONS = ("original", "sham", "edit")
TEST_KEYS = ["editor", "property", "classifier", "output", "strength"]
UNIT_KEYS = ["editor", "property", "classifier", "output"]


@dataclass
class PairedBlock:
    """Differences ``comparison - reference`` for many tests over one shared image axis."""

    keys: pd.DataFrame  # one row per test: editor, property, classifier, output, strength
    diffs: np.ndarray  # (T, n_images), NaN where a pair is missing
    images: pd.Index
    contrast: str  # "edit" or "artefact"
    reference: str  # "sham" or "original"


def validate_measurements(df: pd.DataFrame) -> pd.DataFrame:
    """Check columns and condition/strength coding; return a copy with normalised dtypes."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"measurements must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"measurements lack columns {missing}; required: {list(REQUIRED_COLUMNS)}")
    bad = sorted(
        set(df["condition"].dropna().unique()) - set(CONDITIONS)
        | ({None} if df["condition"].isna().any() else set()),
        key=str,
    )
    if bad:
        raise ValueError(f"measurements.condition has values {bad}; allowed: {list(CONDITIONS)}")
    df = df.copy()
    df["strength"] = pd.to_numeric(df["strength"], errors="raise").astype(float)
    df["value"] = pd.to_numeric(df["value"], errors="raise").astype(float)
    for col in ("image_id", "editor", "property", "classifier", "output"):
        df[col] = df[col].astype(str)
    sham_bad = df.loc[df["condition"] == "sham", "strength"]
    if (sham_bad.fillna(0.0) != 0.0).any():
        raise ValueError(
            f"measurements.strength of sham rows must be 0 or NaN, got {sorted(sham_bad.unique())[:5]}"
        )
    df.loc[df["condition"] == "sham", "strength"] = 0.0
    edit_strength = df.loc[df["condition"] == "edit", "strength"]
    if edit_strength.isna().any() or (edit_strength <= 0).any():
        raise ValueError(
            "measurements.strength of edit rows must be > 0, got "
            f"{sorted(edit_strength[edit_strength.isna() | (edit_strength <= 0)].unique())[:5]}"
        )
    return df


def _pivot(rows: pd.DataFrame, index: list[str], what: str) -> pd.DataFrame:
    dup = rows.duplicated(index + ["image_id"], keep=False)
    if dup.any():
        example = rows.loc[dup, index + ["image_id"]].iloc[0].to_dict()
        raise ValueError(f"measurements have {int(dup.sum())} duplicated {what} rows, e.g. {example}")
    return rows.set_index(index + ["image_id"])["value"].unstack("image_id")


def reference_rows(df: pd.DataFrame, condition: str) -> pd.DataFrame:
    """Rows of ``condition`` for every (editor, property) that has edits or shams.

    Original images are often stored once, not per editor: an (editor, property) pair without its own
    original rows borrows the editor-independent ones (deduplicated by image, classifier, output).
    """
    rows = df[df["condition"] == condition]
    if condition != "original":
        return rows
    pairs = df.loc[df["condition"] != "original", ["editor", "property"]].drop_duplicates()
    own = rows.merge(pairs, on=["editor", "property"])
    lacking = pairs.merge(own[["editor", "property"]].drop_duplicates(), how="left", indicator=True)
    lacking = lacking.loc[lacking["_merge"] == "left_only", ["editor", "property"]]
    if lacking.empty or rows.empty:
        return own
    generic = rows.drop(columns=["editor", "property"])
    keys = ["image_id", "classifier", "output"]
    conflict = generic.groupby(keys)["value"].nunique() > 1
    if conflict.any():
        raise ValueError(
            f"original rows disagree across editors for {int(conflict.sum())} image x classifier x "
            f"output keys, e.g. {conflict[conflict].index[0]}"
        )
    generic = generic.drop_duplicates(keys).merge(lacking, how="cross")
    return pd.concat([own, generic], ignore_index=True)


def paired_block(df: pd.DataFrame, reference: str, contrast: str = "edit") -> PairedBlock:
    """Differences for every test of a contrast.

    Args:
        df: Validated measurements.
        reference: ``"sham"`` or ``"original"`` (the subtracted condition).
        contrast: ``"edit"`` (edit minus reference, one test per strength) or ``"artefact"`` (sham minus
            original, strength 0).
    """
    if contrast == "artefact":
        comparison = df[df["condition"] == "sham"]
        reference = "original"
    else:
        comparison = df[df["condition"] == "edit"]
    ref = reference_rows(df, reference)
    images = pd.Index(sorted(set(comparison["image_id"]) | set(ref["image_id"])), name="image_id")
    if comparison.empty or ref.empty:
        return PairedBlock(
            pd.DataFrame(columns=TEST_KEYS), np.zeros((0, len(images))), images, contrast, reference
        )
    comp_wide = _pivot(comparison, TEST_KEYS, contrast).reindex(columns=images)
    ref_wide = _pivot(ref, UNIT_KEYS, reference).reindex(columns=images)
    unit_index = comp_wide.index.droplevel("strength")
    ref_aligned = ref_wide.reindex(unit_index).to_numpy()
    diffs = comp_wide.to_numpy() - ref_aligned
    keys = comp_wide.index.to_frame(index=False)
    has_pairs = ~np.isnan(diffs).all(axis=1)
    return PairedBlock(keys[has_pairs].reset_index(drop=True), diffs[has_pairs], images, contrast, reference)


def image_metadata(df: pd.DataFrame, column: str) -> pd.Series:
    """One value of a metadata column per image: the first non-missing one (originals first)."""
    if column not in df.columns:
        raise ValueError(
            f"StatsConfig.subgroup_by={column!r} is not a measurements column; "
            f"available: {sorted(df.columns)}"
        )
    ordered = df.assign(_o=df["condition"].map({"original": 0, "sham": 1, "edit": 2}))
    ordered = ordered.sort_values("_o", kind="stable").dropna(subset=[column])
    return ordered.drop_duplicates("image_id").set_index("image_id")[column]


def apply_validity(df: pd.DataFrame, exclude: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop audit-invalid edit rows when asked; always count them.

    Returns:
        The (possibly filtered) measurements and a table per editor x property x condition x strength
        of ``n_images``, ``n_invalid`` and ``n_dropped`` images.
    """
    cols = ["editor", "property", "condition", "strength", "n_images", "n_invalid", "n_dropped"]
    conditions = df[["editor", "property", "condition", "strength", "image_id"]].drop_duplicates()
    if "valid" in df.columns:
        is_edit = df["condition"] == "edit"
        valid = df["valid"]
        if valid[is_edit].isna().any():
            raise ValueError(
                "measurements.valid is missing on some edit rows; it must be True/False on every edit"
            )
        invalid = is_edit & ~valid.fillna(True).astype(bool)
    else:
        invalid = pd.Series(False, index=df.index)
    keys = ["editor", "property", "condition", "strength"]
    bad_images = df.loc[invalid, keys + ["image_id"]].drop_duplicates()
    counts = conditions.groupby(keys, dropna=False).size().rename("n_images").reset_index()
    n_bad = bad_images.groupby(keys, dropna=False).size().rename("n_invalid").reset_index()
    table = counts.merge(n_bad, on=keys, how="left").fillna({"n_invalid": 0})
    table["n_invalid"] = table["n_invalid"].astype(int)
    table["n_dropped"] = table["n_invalid"] if exclude else 0
    if exclude:
        df = df.loc[~invalid]
    return df, table[cols]
