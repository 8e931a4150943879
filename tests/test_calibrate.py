"""`python -m engine.calibrate`: nuisance transforms, thresholds from noise, and the shipped thresholds file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from engine.audit import AuditThresholds
from engine.calibrate import (
    CROP_TRANSFORMS,
    NOISE_THRESHOLDS,
    TARGETS,
    _round_up,
    main,
    noise_table,
    thresholds,
)

ROOT = Path(__file__).resolve().parents[1]


def _face(size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    base = (96 + 60 * np.sin(xx / 5.0) + 40 * np.cos(yy / 7.0))[..., None] + rng.normal(0, 4, (size, size, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def test_each_transform_keeps_the_frame_and_changes_the_pixels_a_little():
    img = _face()
    for name, fn in CROP_TRANSFORMS.items():
        out = fn(img)
        assert out.shape == img.shape and out.dtype == np.uint8, name
        diff = np.abs(out.astype(float) - img).mean()
        assert 0.0 < diff < 25.0, (name, diff)
    shifted = CROP_TRANSFORMS["shift_1px"](img)
    np.testing.assert_array_equal(shifted[:, 1:], img[:, :-1])  # content moved one pixel right
    down = CROP_TRANSFORMS["shift_2px"](img)
    np.testing.assert_array_equal(down[2:], img[:-2])
    brighter = CROP_TRANSFORMS["brighter_3pct"](img).astype(float)
    assert brighter.mean() == pytest.approx(min(255.0, img.mean() * 1.03), rel=0.01)


def test_round_up_never_falls_below_the_noise():
    assert _round_up(0.0301449) == 0.031
    assert _round_up(6.6048) == 6.7
    assert _round_up(0.17259) == 0.18
    assert _round_up(0.0) == 0.0
    for v in np.random.default_rng(1).uniform(1e-4, 50, 200):
        assert v <= _round_up(float(v)) <= v * 1.1 + 1e-12


def test_thresholds_are_the_percentile_of_absolute_noise_and_targets_stay_effect_sizes():
    n = 101
    df = pd.DataFrame({"delta_est_age": np.linspace(-10, 0, n), "delta_est_p_male": np.linspace(0, 0.5, n),
                       "blendshape_change": np.linspace(0, 0.1, n),
                       "delta_symmetry_index_rel": np.linspace(-0.5, 0.5, n)})
    got = thresholds(df, 99.0)
    assert got["max_age_change_nontarget"] == _round_up(float(np.percentile(np.abs(df["delta_est_age"]), 99)))
    assert got["max_age_change_nontarget"] == 9.9  # |-10..0|: the sign of the noise does not matter
    assert got["max_p_male_change_nontarget"] == 0.5 and got["max_blendshape_change"] == 0.099
    assert got["max_symmetry_change_nontarget"] == 0.5  # p99 of |-0.5..0.5| (0.495) rounded up
    for field, value in TARGETS.items():
        assert got[field] == value
    AuditThresholds(**got)  # a valid thresholds object


def test_the_noise_table_reports_ssim_as_its_fall_below_one():
    df = pd.DataFrame({"transform": ["a", "a", "b"], "ssim_out": [0.99, 0.98, 1.0], "delta_est_age": [1.0, -3.0, 0.5]})
    table = noise_table(df)
    ssim = table[(table["transform"] == "a") & (table["measure"] == "1-ssim_out")].iloc[0]
    assert ssim["max"] == pytest.approx(0.02)
    age = table[(table["transform"] == "all") & (table["measure"] == "delta_est_age")].iloc[0]
    assert age["n"] == 3 and age["max"] == 3.0


def test_the_shipped_thresholds_come_from_the_shipped_calibration_table():
    """conf/audit/thresholds/calibrated.yaml must be what the committed calibration data give (no hand edits)."""
    values = yaml.safe_load((ROOT / "conf" / "audit" / "thresholds" / "calibrated.yaml").read_text())
    provenance = values.pop("provenance")
    assert provenance["by"] == "python -m engine.calibrate" and "split=tuning" in provenance["data"]
    pairs = pd.read_csv(ROOT / "docs" / "calibration" / "calibration.csv")
    assert len(pairs) == provenance["pairs"] and set(pairs["transform"]) == set(provenance["transforms"])
    assert all(i.startswith(("lfw_", "astronaut", "photo_table", "photo_aligned")) for i in pairs["image_id"]), \
        "calibration must use the tuning half only"
    expected = thresholds(pairs, provenance["percentile"])
    for field in NOISE_THRESHOLDS:
        assert values[field] == expected[field], field
    AuditThresholds(**values)


@pytest.mark.slow
def test_calibrate_end_to_end_on_two_faces(tmp_path):
    out = tmp_path / "t.yaml"
    rc = main(["--out", str(out), "--folder", str(tmp_path), "dataset.n_lfw=6", "dataset.photos=false",
               "dataset.portraits=false", "faces.multi=false"])
    assert rc == 0
    pairs = pd.read_csv(tmp_path / "calibration.csv")
    assert set(pairs["transform"]) >= set(CROP_TRANSFORMS)
    assert pairs["image_id"].str.startswith("lfw_").all()
    # tuning half only: even LFW indices
    assert all(int(i[4:7]) % 2 == 0 for i in pairs["image_id"])
    written = yaml.safe_load(out.read_text())
    assert written["provenance"]["percentile"] == 99.0 and written["provenance"]["faces"] >= 2
    assert 0 < written["max_blendshape_change"] < 0.2
