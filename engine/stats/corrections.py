"""Multiple-testing corrections applied to many families at once, in array operations."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .config import CORRECTIONS


def _grouped_accumulate(values: np.ndarray, group: np.ndarray, how: str) -> np.ndarray:
    """Running max (``"cummax"``) or min (``"cummin"``) within contiguous groups, in one pass."""
    return getattr(pd.Series(values).groupby(group, sort=False), how)().to_numpy()


def adjust_pvalues(p: np.ndarray, family: np.ndarray | None = None, method: str = "holm") -> np.ndarray:
    """Adjusted p-values, each family corrected on its own; equals statsmodels ``multipletests``.

    Args:
        p: Raw p-values. NaN entries are left out of their family (and stay NaN).
        family: Family label of each p-value (any hashable dtype); None means one family.
        method: ``"holm"``, ``"bonferroni"``, ``"fdr_bh"`` or ``"fdr_by"``.

    Returns:
        Adjusted p-values, same shape as ``p``.
    """
    if method not in CORRECTIONS:
        raise ValueError(f"correction={method!r} is not one of {list(CORRECTIONS)}")
    p = np.asarray(p, dtype=np.float64).ravel()
    if family is None:
        codes = np.zeros(p.size, dtype=np.int64)
    else:
        family = np.asarray(family).ravel()
        if family.size != p.size:
            raise ValueError(f"family has {family.size} labels for {p.size} p-values")
        codes = pd.factorize(family)[0]
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got min={np.nanmin(p)} max={np.nanmax(p)}")
    out = np.full(p.size, np.nan)
    keep = np.flatnonzero(~np.isnan(p))
    if keep.size == 0:
        return out
    pk, ck = p[keep], codes[keep]
    order = np.lexsort((pk, ck))  # by family, then ascending p
    ps, cs = pk[order], ck[order]
    m = np.bincount(cs)[cs].astype(np.float64)  # family size of each entry
    first = np.r_[0, np.flatnonzero(np.diff(cs)) + 1]
    start = np.repeat(first, np.diff(np.r_[first, cs.size]))
    rank = np.arange(cs.size) - start + 1.0  # 1-based rank within family
    group = np.repeat(np.arange(first.size), np.diff(np.r_[first, cs.size]))

    if method == "bonferroni":
        adjusted = np.minimum(1.0, ps * m)
    elif method == "holm":
        adjusted = _grouped_accumulate(np.minimum(1.0, ps * (m - rank + 1)), group, "cummax")
    else:
        scale = m / rank
        if method == "fdr_by":
            harmonic = np.cumsum(1.0 / np.arange(1, int(m.max()) + 1))
            scale = scale * harmonic[m.astype(int) - 1]
        raw = np.minimum(1.0, ps * scale)
        # Step-up: running minimum from the largest p downwards within each family.
        adjusted = _grouped_accumulate(raw[::-1], group[::-1], "cummin")[::-1]
    result = np.empty_like(adjusted)
    result[order] = adjusted
    out[keep] = result
    return out


def family_labels(frame: pd.DataFrame, family: str, prefix: pd.Series | str = "") -> pd.Series:
    """Family id per row: ``prefix|property`` etc., following ``StatsConfig.family``.

    ``classifier_property`` groups by classifier and property, ``property`` by property, and
    ``global`` puts everything (with the same prefix) in one family.
    """
    prefix = pd.Series(prefix, index=frame.index) if isinstance(prefix, str) else prefix.astype(str)
    if family == "global":
        return prefix + "|all"
    if family == "property":
        return prefix + "|" + frame["property"].astype(str)
    if family == "classifier_property":
        return prefix + "|" + frame["classifier"].astype(str) + "|" + frame["property"].astype(str)
    raise ValueError(f"family={family!r} is not one of ['classifier_property', 'property', 'global']")


def correct_frame(
    frame: pd.DataFrame,
    family: str,
    correction: str,
    alpha: float,
    prefix_columns: tuple[str, ...] = ("contrast", "test"),
) -> pd.DataFrame:
    """Add ``family``, ``correction``, ``p_adj`` and ``reject`` columns to a table with ``p_raw``."""
    frame = frame.copy()
    if frame.empty:
        for col in ("family", "correction", "p_adj", "reject"):
            frame[col] = pd.Series(dtype=object if col in ("family", "correction") else float)
        return frame
    prefix = frame[list(prefix_columns)].astype(str).agg(":".join, axis=1)
    frame["family"] = family_labels(frame, family, prefix)
    frame["correction"] = correction
    frame["p_adj"] = adjust_pvalues(frame["p_raw"].to_numpy(), frame["family"].to_numpy(), correction)
    frame["reject"] = frame["p_adj"].to_numpy() <= alpha  # NaN compares False
    return frame
