"""The paired comparison of two acceptance runs (`scripts/compare_acceptance.py`) on made-up audits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import load_script


def _run(folder, split: str, valid: np.ndarray, age: np.ndarray, overrides: list[str]):
    (folder / "audits").mkdir(parents=True)
    ids = [f"lfw_{i:03d}" if i < len(valid) - 4 else f"photo_x#{i}" for i in range(len(valid))]
    pd.DataFrame({"image_id": ids, "strength": 1.0, "valid": valid, "delta_est_age": age}).to_csv(
        folder / "audits" / "age.csv", index=False)
    (folder / "provenance.json").write_text(json.dumps({"split": split, "overrides": overrides}))
    return folder


def test_a_paired_gain_is_counted_face_by_face_tested_and_corrected(tmp_path):
    from statsmodels.stats.contingency_tables import mcnemar

    cmp = load_script("compare_acceptance")
    n = 30
    base_valid = np.arange(n) < 10
    new_valid = base_valid.copy()
    new_valid[10:19] = True  # 9 gained
    new_valid[0] = False  # 1 lost
    age = np.linspace(2.0, 8.0, n)
    base = _run(tmp_path / "a", "tuning", base_valid, age, [])
    new = _run(tmp_path / "b", "tuning", new_valid, age + 1.5, ["editor.sag=2"])
    table, info = cmp.compare(base, new)
    lfw, everything = (table[table["group"] == g].iloc[0] for g in ("lfw", "all"))
    assert (everything["valid_base"], everything["valid_new"], everything["gained"], everything["lost"]) == (10, 18, 9, 1)
    assert everything["p_valid"] == pytest.approx(mcnemar([[9, 1], [9, 11]], exact=True).pvalue)
    assert everything["median_change"] == pytest.approx(1.5)
    assert everything["effect_new"] == pytest.approx(everything["effect_base"] + 1.5)
    assert lfw["faces"] == 26 and set(table["group"]) == {"lfw", "sharp", "all"}
    # Holm over the whole table: never below the raw p, and the smallest raw p is multiplied by the family size.
    raw = table[["p_valid", "p_effect"]].to_numpy().ravel()
    held = table[["p_holm_valid", "p_holm_effect"]].to_numpy().ravel()
    finite = np.isfinite(raw)
    assert (held[finite] >= raw[finite]).all()
    assert np.nanmin(held) == pytest.approx(min(1.0, np.nanmin(raw) * finite.sum()))
    text = cmp.markdown(table, info)
    assert "baseline `the defaults`, candidate `editor.sag=2`" in text
    assert "| age | all | 30 | 10 → 18 (+9 / −1) |" in text


def test_runs_on_different_halves_are_refused(tmp_path):
    cmp = load_script("compare_acceptance")
    valid, age = np.ones(8, dtype=bool), np.zeros(8)
    base = _run(tmp_path / "a", "tuning", valid, age, [])
    new = _run(tmp_path / "b", "evaluation", valid, age, [])
    with pytest.raises(SystemExit, match="different halves"):
        cmp.compare(base, new)
    with pytest.raises(SystemExit, match="no provenance.json"):
        cmp.compare(base, tmp_path)


def test_two_runs_of_the_same_settings_are_named_by_their_commits(tmp_path):
    """A change of code (an editor's version) is compared at the same overrides: the header says which commits."""
    cmp = load_script("compare_acceptance")
    valid, age = np.arange(8) < 4, np.linspace(1.0, 4.0, 8)
    base, new = _run(tmp_path / "a", "tuning", valid, age, []), _run(tmp_path / "b", "tuning", valid, age, [])
    for folder, git in ((base, "aaaaaaa"), (new, "bbbbbbb")):
        prov = json.loads((folder / "provenance.json").read_text())
        (folder / "provenance.json").write_text(json.dumps({**prov, "git": git}))
    table, info = cmp.compare(base, new)
    assert "baseline `the defaults` at git aaaaaaa, candidate `the defaults` at git bbbbbbb" in cmp.markdown(table, info)
