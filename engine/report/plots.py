"""Figures of the statistics tables: forest plot, significance heatmap, dose-response curves (PNG, Agg)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from engine.report.files import atomic_path
from engine.stats.dose import dose_frame  # noqa: E402
from engine.stats.pairing import validate_measurements  # noqa: E402

#: effect column -> its interval columns, in order of preference.
EFFECTS = {
    "median_diff": ("median_ci_low", "median_ci_high"),
    "mean_diff": ("mean_ci_low", "mean_ci_high"),
    "cohen_dz": ("dz_ci_low", "dz_ci_high"),
    "estimate": ("ci_low", "ci_high"),
}
_PREFERRED_TESTS = ("wilcoxon", "ols_hc3", "t", "permutation", "sign")


def _pick_test(tests: pd.DataFrame, test: str | None) -> tuple[pd.DataFrame, str]:
    if tests.empty:
        raise ValueError("tests table is empty: nothing to plot")
    available = list(tests["test"].unique())
    if test is None:
        test = next((t for t in _PREFERRED_TESTS if t in available), available[0])
    if test not in available:
        raise ValueError(f"test={test!r} is not in the tests table; available: {available}")
    return tests[tests["test"] == test], test


def _pick_effect(tests: pd.DataFrame, effect: str | None) -> str:
    if effect is None:
        effect = next((e for e in EFFECTS if e in tests.columns and tests[e].notna().any()), None)
    if effect not in EFFECTS or effect not in tests.columns:
        raise ValueError(f"effect={effect!r} must be one of {[e for e in EFFECTS if e in tests.columns]}")
    return effect


def _row_label(row: pd.Series) -> str:
    parts = [str(row[c]) for c in ("property", "classifier", "output") if c in row.index]
    if "strength" in row.index and pd.notna(row["strength"]):
        parts.append(f"s={row['strength']:g}")
    return " · ".join(parts)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def forest_plot(
    tests_df: pd.DataFrame,
    path: str | Path,
    test: str | None = None,
    effect: str | None = None,
    max_rows: int = 60,
) -> Path:
    """Effect sizes with confidence intervals, one row per classifier x output (x strength).

    Args:
        tests_df: ``StatsResult.tests`` (paired or observational).
        path: PNG to write.
        test: Which test's rows (default: wilcoxon, else ols_hc3, ...). Colour marks its corrected result.
        effect: Effect column (default: median_diff, else mean_diff, cohen_dz, estimate).
        max_rows: Larger tables keep the rows with the largest |effect| (said in the title).

    Returns:
        The written path.
    """
    rows, test = _pick_test(tests_df, test)
    effect = _pick_effect(rows, effect)
    low_col, high_col = EFFECTS[effect]
    sort_keys = [c for c in ("property", "classifier", "output", "strength") if c in rows.columns]
    rows = rows.sort_values(sort_keys, kind="stable")
    title = f"{effect} ({test}, {int(rows['reject'].sum())} of {len(rows)} significant after correction)"
    if len(rows) > max_rows:
        rows = rows.loc[rows[effect].abs().sort_values(ascending=False, kind="stable").index[:max_rows]]
        rows = rows.sort_values(sort_keys, kind="stable")
        title += f"\nshowing the {max_rows} largest |{effect}|"
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.28 * len(rows)))
    y = np.arange(len(rows))[::-1]
    colours = np.where(rows["reject"].to_numpy(bool), "#c0392b", "#7f8c8d")
    low, high, value = (rows[c].to_numpy(float) for c in (low_col, high_col, effect))
    ax.hlines(
        y, np.where(np.isnan(low), value, low), np.where(np.isnan(high), value, high), colors=colours, lw=1.5
    )
    ax.scatter(value, y, c=colours, zorder=3, s=18)
    ax.axvline(0, color="black", lw=0.8, ls="--")
    ax.set_yticks(y, [_row_label(r) for _, r in rows.iterrows()], fontsize=8)
    ax.set_xlabel(
        f"{effect} with confidence interval" + (" (edit - reference)" if effect != "estimate" else "")
    )
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def significance_heatmap(
    tests_df: pd.DataFrame, path: str | Path, test: str | None = None, effect: str | None = None
) -> Path:
    """Classifier x emotion grid per property: signed -log10 corrected p, '*' where significant.

    The colour is ``sign(effect) * -log10(p_adj)`` (capped at 10); with several strengths the largest one
    per property is shown.
    """
    rows, test = _pick_test(tests_df, test)
    effect = _pick_effect(rows, effect)
    if "strength" in rows.columns and rows["strength"].notna().any():
        top = rows.groupby("property")["strength"].transform("max")
        rows = rows[rows["strength"] == top]
    properties = sorted(rows["property"].unique())
    classifiers = sorted(rows["classifier"].unique())
    outputs = sorted(rows["output"].unique())
    fig, axes = plt.subplots(
        1,
        len(properties),
        figsize=(1.2 + 0.75 * len(outputs) * len(properties), 1.6 + 0.5 * len(classifiers)),
        squeeze=False,
    )
    image = None
    for ax, prop in zip(axes[0], properties, strict=True):
        sub = rows[rows["property"] == prop].drop_duplicates(["classifier", "output"])
        score = np.sign(sub[effect]) * -np.log10(sub["p_adj"].clip(lower=1e-10))
        grid = pd.Series(score.to_numpy(), index=pd.MultiIndex.from_frame(sub[["classifier", "output"]]))
        grid = grid.unstack("output").reindex(index=classifiers, columns=outputs)
        marks = (
            sub.set_index(["classifier", "output"])["reject"]
            .unstack("output")
            .reindex(index=classifiers, columns=outputs)
        )
        image = ax.imshow(grid.to_numpy(float), cmap="RdBu_r", vmin=-10, vmax=10, aspect="auto")
        for i in range(len(classifiers)):
            for j in range(len(outputs)):
                if marks.iloc[i, j] is True or marks.iloc[i, j] == 1:
                    ax.text(j, i, "*", ha="center", va="center", fontsize=14, color="black")
        ax.set_xticks(range(len(outputs)), outputs, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(classifiers)), classifiers, fontsize=8)
        strength = sub["strength"].iloc[0] if "strength" in sub.columns else np.nan
        ax.set_title(f"{prop}" + (f" (s={strength:g})" if pd.notna(strength) else ""), fontsize=10)
    cbar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    cbar.set_label("sign(effect) x -log10(p_adj)")
    fig.suptitle(f"{test}: * = significant after correction", fontsize=10, y=1.06)
    return _save(fig, path)


def _mean_ci(values: pd.Series) -> tuple[float, float]:
    v = values.dropna().to_numpy(float)
    if v.size < 2:
        return (float(v.mean()) if v.size else np.nan), np.nan
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(v.size))


def dose_response_plot(
    dose_df: pd.DataFrame, measurements: pd.DataFrame, path: str | Path, max_panels: int = 12
) -> Path:
    """Mean paired change (edit - strength 0) against strength, one panel per property x classifier.

    Args:
        dose_df: ``StatsResult.dose_response`` (for the slope p in the legend).
        measurements: The tidy measurements the analysis used.
        path: PNG to write.
        max_panels: Panels beyond this are left out (said in the title).
    """
    long = dose_frame(validate_measurements(measurements)).dropna(subset=["value"])
    if long.empty:
        raise ValueError("measurements hold no edit/sham values: nothing to plot")
    keys = ["editor", "property", "classifier", "output", "image_id"]
    zero = long[long["strength"] == 0].drop_duplicates(keys).set_index(keys)["value"]
    long = long.assign(
        change=long["value"].to_numpy() - zero.reindex(pd.MultiIndex.from_frame(long[keys])).to_numpy()
    )
    panels = (
        long[["editor", "property", "classifier"]].drop_duplicates().sort_values(["property", "classifier"])
    )
    total = len(panels)
    panels = panels.head(max_panels)
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    p_adj = (
        {}
        if dose_df is None or dose_df.empty
        else dose_df.set_index(["editor", "property", "classifier", "output"])["slope_p_adj"].to_dict()
    )
    for ax, (_, panel) in zip(axes.ravel(), panels.iterrows(), strict=False):
        sub = long[
            (long["editor"] == panel["editor"])
            & (long["property"] == panel["property"])
            & (long["classifier"] == panel["classifier"])
        ]
        for output, unit in sub.groupby("output", sort=True):
            stats_ = unit.groupby("strength")["change"].apply(_mean_ci)
            x = stats_.index.to_numpy(float)
            mean = np.array([m for m, _ in stats_])
            half = np.array([h for _, h in stats_])
            p = p_adj.get((panel["editor"], panel["property"], panel["classifier"], output), np.nan)
            line = ax.plot(x, mean, marker="o", ms=3, label=f"{output} (slope p_adj={p:.2g})")[0]
            ax.fill_between(
                x, mean - np.nan_to_num(half), mean + np.nan_to_num(half), color=line.get_color(), alpha=0.15
            )
        ax.axhline(0, color="black", lw=0.8, ls="--")
        ax.set_title(f"{panel['property']} ({panel['editor']}) · {panel['classifier']}", fontsize=10)
        ax.set_xlabel("edit strength (0 = sham)")
        ax.set_ylabel("mean change vs strength 0 (95 % CI)")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    if total > len(panels):
        fig.suptitle(f"first {len(panels)} of {total} panels", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
