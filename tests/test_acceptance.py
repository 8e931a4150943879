"""Acceptance of the editors (issue 10, section 2) on the evaluation half, and the checker that holds it.

The checker's logic runs in the default suite on made-up audit rows, so that a checker that could
not fail is caught fast; the full acceptance run (every study through the engine on the evaluation
half, about 10 minutes on 2 cores) is `pytest -m acceptance`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import load_script


def _acceptance():
    return load_script("acceptance")


def _audit(n: int, age: float, valid: float, prefix: str) -> pd.DataFrame:
    ok = np.arange(n) < round(valid * n)
    return pd.DataFrame({"image_id": [f"{prefix}{i:03d}" for i in range(n)], "strength": 1.0,
                         "delta_est_age": np.full(n, age), "valid": ok,
                         "reasons": np.where(ok, "", "expression_moved")})


def test_the_checker_passes_what_meets_the_targets_and_names_every_miss():
    acc = _acceptance()
    good = pd.concat([_audit(20, 9.0, 0.9, "lfw_"), _audit(10, 8.5, 0.9, "photo_x#")])
    good["group"] = good["image_id"].map(acc.group_of)
    assert acc.misses(pd.DataFrame(acc.summarise("age", good))) == []

    bad = pd.concat([_audit(20, 9.0, 0.8, "lfw_"), _audit(10, 7.9, 1.0, "photo_x#")])
    bad["group"] = bad["image_id"].map(acc.group_of)
    table = pd.DataFrame(acc.summarise("age", bad))
    missed = acc.misses(table)
    assert len(missed) == 2
    assert any("age / lfw: valid share" in m for m in missed)
    assert any("age / sharp: age +8 y" in m for m in missed)
    row = table[table["group"] == "lfw"].iloc[0]
    assert row["top_reasons"] == "expression_moved 4" and row["valid"] == 16


def test_a_gender_direction_is_scored_on_the_faces_it_is_meant_for():
    acc = _acceptance()
    audit = pd.DataFrame({"image_id": ["lfw_000", "lfw_001", "lfw_002"], "strength": 1.0,
                          "est_p_male_ref": [0.9, 0.8, 0.2], "delta_est_p_male": [-0.4, -0.3, 0.0],
                          "valid": [True, True, False], "reasons": ["", "", "target_not_moved"]})
    audit["group"] = "lfw"
    audit["delta_p_target"] = -audit["delta_est_p_male"]
    lfw = next(r for r in acc.summarise("gender_female", audit) if r["group"] == "lfw")
    assert lfw["faces"] == 2 and lfw["valid_share"] == 1.0 and lfw["median_effect"] == pytest.approx(0.35)


@pytest.mark.acceptance
@pytest.mark.slow
def test_every_editor_meets_its_targets_on_the_evaluation_half(tmp_path):
    acc = _acceptance()
    assert acc.main(["--split", "evaluation", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "acceptance.csv")
    assert set(table["study"]) == set(acc.STUDIES)
    assert acc.misses(table) == []
