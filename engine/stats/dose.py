"""Dose-response across edit strengths: mixed model slope and Page's L trend test."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import special

from .corrections import adjust_pvalues, family_labels
from .paired import average_ranks
from .pairing import UNIT_KEYS, reference_rows

COLUMNS = UNIT_KEYS + ["levels", "n_images", "n_obs", "random_effects", "slope", "slope_se", "slope_ci_low",
                       "slope_ci_high", "slope_p", "converged", "model_note", "trend_test", "trend_n",
                       "trend_L", "trend_z", "trend_p"]


def dose_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Long table of value by strength, with the sham as strength 0 (the original when there is no sham)."""
    edits = df[df["condition"] == "edit"]
    base = df[df["condition"] == "sham"]
    if base.empty:
        base = reference_rows(df, "original").assign(strength=0.0)
    cols = UNIT_KEYS + ["image_id", "strength", "value"] + (["subject"] if "subject" in df.columns else [])
    return pd.concat([base[cols], edits[cols]], ignore_index=True)


def page_trend(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Page's L test for increasing or decreasing trend, for many units at once.

    Args:
        values: (U, n, k) value of unit u, image i at the k-th smallest strength; NaN rows are skipped
            (an image enters a unit's test only with all k levels).

    Returns:
        n complete images, L, z, and the two-sided normal-approximation p (scipy's ``page_trend_test``
        with ``method="asymptotic"`` gives the one-sided p for an increase from the same L and z).
    """
    units, n_images, k = values.shape
    flat = values.reshape(units * n_images, k)
    complete = ~np.isnan(flat).any(axis=1)
    ranks, _, _ = average_ranks(np.where(complete[:, None], flat, 0.0))
    weighted = (ranks * np.arange(1, k + 1)).sum(axis=1) * complete
    L = weighted.reshape(units, n_images).sum(axis=1)
    n = complete.reshape(units, n_images).sum(axis=1)
    mean = n * k * (k + 1) ** 2 / 4
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (L - mean) / np.sqrt(n * k**2 * (k + 1) * (k**2 - 1) / 144)
    p = np.where(n >= 2, 2 * special.ndtr(-np.abs(z)), np.nan)
    return n, L, z, p


def _mixed_slope(unit: pd.DataFrame) -> dict:
    """value ~ strength with a random intercept per image, nested in subject when subjects repeat."""
    nested = "subject" in unit.columns and unit["subject"].notna().any()
    if nested:
        subject = unit["subject"].astype(object).where(unit["subject"].notna(), "image:" + unit["image_id"])
        unit = unit.assign(subject=subject.astype(str))
        nested = unit.groupby("subject")["image_id"].nunique().max() > 1
    note = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if nested:
                model = smf.mixedlm("value ~ strength", unit, groups="subject", re_formula="1",
                                    vc_formula={"image": "0 + C(image_id)"})
            else:
                model = smf.mixedlm("value ~ strength", unit, groups="image_id")
            fit = model.fit(reml=True)
            ci = fit.conf_int().loc["strength"]
            out = {"slope": fit.params["strength"], "slope_se": fit.bse["strength"], "slope_ci_low": ci.iloc[0],
                   "slope_ci_high": ci.iloc[1], "slope_p": fit.pvalues["strength"], "converged": bool(fit.converged)}
        except (ValueError, np.linalg.LinAlgError) as err:
            out = {"slope": np.nan, "slope_se": np.nan, "slope_ci_low": np.nan, "slope_ci_high": np.nan,
                   "slope_p": np.nan, "converged": False}
            note = f"fit failed: {err}"
    if caught and not note:
        note = "; ".join(sorted({str(w.message).split("\n")[0][:80] for w in caught}))
    out["random_effects"] = "subject + image" if nested else "image"
    out["model_note"] = note
    return out


def dose_response(df: pd.DataFrame, family: str, correction: str, alpha: float) -> pd.DataFrame:
    """Slope and trend per editor x property x classifier x output, corrected like the paired tests.

    Units with a single edit strength still get a slope (two levels: 0 and the strength); Page's L needs
    at least three levels and is NaN otherwise.
    """
    long = dose_frame(df).dropna(subset=["value"])
    if long.empty or not (long["strength"] > 0).any():
        return pd.DataFrame(columns=COLUMNS + ["family", "correction", "slope_p_adj", "slope_reject",
                                               "trend_p_adj", "trend_reject"])
    rows = []
    for (editor, prop), block in long.groupby(["editor", "property"], sort=True):
        levels = np.sort(block["strength"].unique())
        wide = block.pivot_table(index=["classifier", "output", "image_id"], columns="strength", values="value",
                                 aggfunc="first").reindex(columns=levels)
        unit_index = wide.index.droplevel("image_id").unique()
        images = wide.index.get_level_values("image_id").unique()
        full = wide.reindex(pd.MultiIndex.from_tuples([(c, o, i) for c, o in unit_index for i in images]))
        cube = full.to_numpy().reshape(len(unit_index), len(images), len(levels))
        if len(levels) >= 3:
            n_trend, L, z, p_trend = page_trend(cube)
        else:
            n_trend = np.zeros(len(unit_index), dtype=int)
            L = z = p_trend = np.full(len(unit_index), np.nan)
        units = dict(iter(block.groupby(["classifier", "output"], sort=False)))
        for u, (classifier, output) in enumerate(unit_index):
            unit = units[(classifier, output)]
            fit = _mixed_slope(unit)
            rows.append({"editor": editor, "property": prop, "classifier": classifier, "output": output,
                         "levels": ",".join(f"{s:g}" for s in levels), "n_images": unit["image_id"].nunique(),
                         "n_obs": len(unit), **fit, "trend_test": "page_L", "trend_n": int(n_trend[u]),
                         "trend_L": L[u], "trend_z": z[u], "trend_p": p_trend[u]})
    out = pd.DataFrame(rows)[COLUMNS]
    out["family"] = family_labels(out, family, "dose")
    out["correction"] = correction
    for col in ("slope", "trend"):
        out[f"{col}_p_adj"] = adjust_pvalues(out[f"{col}_p"].to_numpy(float), out["family"].to_numpy(), correction)
        out[f"{col}_reject"] = out[f"{col}_p_adj"].to_numpy() <= alpha
    return out
