"""Per-face judge noise against the audit's non-target verdicts (`scripts/judge_repeatability.py`), on made-up tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import load_script
from scipy.stats import fisher_exact


def _calibration(noise: dict[str, float]) -> pd.DataFrame:
    """Two nuisance transforms per face; the largest |change| is the face's noise."""
    rows = []
    for face, level in noise.items():
        rows += [{"image_id": face, "transform": "jpeg", "delta_est_age": -level, "delta_est_p_male": 0.01},
                 {"image_id": face, "transform": "shift", "delta_est_age": level / 2, "delta_est_p_male": -0.002}]
    return pd.DataFrame(rows)


def test_flagged_faces_are_compared_with_the_others_by_their_noise():
    rep = load_script("judge_repeatability")
    faces = [f"f{i}" for i in range(10)]
    noise = dict(zip(faces, [1.0, 1.2, 1.4, 1.6, 1.8, 5.0, 6.0, 7.0, 8.0, 9.0], strict=True))
    # Flagged by the age judge: three of the five noisiest, none of the quietest.
    readings = ["", "", "", "", "", "est_age", "est_age;est_p_male", "est_age", "", ""]
    audit = pd.DataFrame({"image_id": faces, "delta_est_age": 1.0, "delta_est_p_male": 0.0,
                          "nontarget_readings": [r or np.nan for r in readings], "reasons": np.nan})
    table = rep.repeatability_table(_calibration(noise), {"symmetry": audit, "age": audit},
                                    {"age": {"delta_est_age"}, "symmetry": set()})
    age_row = table[(table["study"] == "symmetry") & (table["reading"] == "est_age")].iloc[0]
    assert (age_row["faces"], age_row["flagged"]) == (10, 3)
    assert age_row["noise_flagged"] == pytest.approx(6.0) and age_row["noise_others"] == pytest.approx(1.6)
    assert (age_row["share_noisier"], age_row["share_quieter"]) == (pytest.approx(0.6), 0.0)
    assert age_row["p"] == pytest.approx(fisher_exact([[3, 2], [0, 5]], alternative="greater").pvalue)
    # The age study's target reading is not a kept one; its p(male) row is, flagged once.
    assert set(table.loc[table["study"] == "age", "reading"]) == {"est_p_male"}
    assert int(table.loc[table["study"] == "age", "flagged"].iloc[0]) == 1
    assert (table["p_holm"] >= table["p"]).all() and len(table) == 3


def test_a_study_s_targets_come_from_its_editor_s_audit_policy():
    rep = load_script("judge_repeatability")
    targets = rep.study_targets(["age", "gender_female", "symmetry"], [])
    assert "delta_est_age" in targets["age"] and "delta_est_p_male" not in targets["age"]
    assert "delta_est_p_male" in targets["gender_female"] and "delta_est_age" not in targets["gender_female"]
    assert not targets["symmetry"] & {"delta_est_age", "delta_est_p_male"}


def test_faces_missing_from_the_calibration_are_refused(tmp_path):
    rep = load_script("judge_repeatability")
    (tmp_path / "cal").mkdir()
    _calibration({"a": 1.0}).to_csv(tmp_path / "cal" / "calibration.csv", index=False)
    (tmp_path / "acc" / "audits").mkdir(parents=True)
    pd.DataFrame({"image_id": ["a", "b"], "delta_est_age": 1.0, "nontarget_readings": np.nan,
                  "reasons": np.nan}).to_csv(tmp_path / "acc" / "audits" / "symmetry.csv", index=False)
    with pytest.raises(SystemExit, match="another half"):
        rep.main([str(tmp_path / "cal"), str(tmp_path / "acc")])
