"""scripts/tuning.py: reading an editor-tuning sweep's trials, ranking them and finding the frontier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_script


def _tuning():
    return load_script("tuning")


def _trial(sweep: Path, name: str, valid: float, age: float, knobs: dict[str, float], reasons: dict[str, int]):
    folder = sweep / name
    folder.mkdir(parents=True)
    met = age >= 8
    record = {"objective": {"name": "max_valid_share", "effects": ["delta_est_age >= 8"]}, "strength": 1.0,
              "faces": 20.0, "valid_share": valid, "median_delta_est_age": age,
              **{f"reason_{k}": float(v) for k, v in reasons.items()},
              "score": 1 - valid if met else 1 + (8 - age) / 8, "experiment": "age_shift",
              "overrides": ["strength=1.0", *(f"editor.{k}={v}" for k, v in knobs.items())]}
    (folder / "objective.json").write_text(json.dumps(record))


@pytest.fixture
def sweep(tmp_path):
    _trial(tmp_path, "trial_0", 0.30, 9.0, {"sag": 0.5}, {"expression_moved": 10})
    _trial(tmp_path, "trial_1", 0.20, 12.0, {"sag": 1.2}, {"nontarget_moved": 12, "expression_moved": 4})
    _trial(tmp_path, "trial_2", 0.25, 8.5, {"sag": 0.8}, {"expression_moved": 11})   # beaten by trial_0
    _trial(tmp_path, "trial_3", 0.60, 4.0, {"sag": 0.0}, {"target_not_moved": 8})   # valid, but too weak
    _trial(tmp_path, "defaults", 0.15, 10.0, {}, {"expression_moved": 15})
    return tmp_path


def test_trials_are_ranked_by_score_with_their_knobs(sweep):
    table = _tuning().trials(sweep)
    assert list(table["trial"]) == ["trial_0", "trial_2", "trial_1", "defaults", "trial_3"]
    assert table.loc[0, "knobs"] == {"editor.sag": "0.5"} and not table.loc[0, "defaults"]
    assert bool(table.set_index("trial").loc["defaults", "defaults"])


def test_the_frontier_keeps_only_trials_nothing_beats_on_both(sweep):
    tuning = _tuning()
    front = tuning.frontier(tuning.trials(sweep))
    assert list(front["trial"]) == ["trial_1", "trial_0", "trial_3"]  # by effect, largest first


def test_the_summary_names_the_best_settings_and_shows_the_defaults(sweep, tmp_path, monkeypatch):
    tuning = _tuning()
    text = tuning.markdown("age_shift", tuning.trials(sweep), top=2)
    assert "`editor.sag=0.5` (30% valid)" in text
    assert "| defaults | 15% | +10 | yes | expression_moved 15 |" in text
    assert "| trial_3 | 60% | +4 | no | target_not_moved 8 |" in text  # on the frontier, effect missed
    doc = tmp_path / "EDITORS.md"
    doc.write_text(f"intro\n{tuning.BEGIN}\nSTALE SECTION\n{tuning.END}\nrest\n")
    monkeypatch.setattr(tuning, "DOCS", doc)
    assert tuning.main([str(sweep), "--write-docs"]) == 0
    written = doc.read_text()
    assert written.startswith("intro\n") and written.endswith("\nrest\n") and "STALE" not in written
    assert f"**{sweep.name} (age_shift)**" in written and "| trial_0 | 30% | +9 | yes |" in written


def test_a_folder_without_trials_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no objective.json"):
        _tuning().trials(tmp_path)


def _review():
    return load_script("review_settings")


def test_review_takes_a_trials_editor_knobs_or_a_list(sweep):
    review = _review()
    assert review.candidate_overrides(str(sweep / "trial_1")) == ["editor.sag=1.2"]
    assert review.candidate_overrides(str(sweep / "trial_1" / "objective.json")) == ["editor.sag=1.2"]
    assert review.candidate_overrides("editor.sag=0.5, editor.texture=0") == ["editor.sag=0.5", "editor.texture=0"]
    with pytest.raises(SystemExit, match="no editor"):
        review.candidate_overrides(str(sweep / "defaults"))


def test_review_sheet_pads_the_last_row():
    import numpy as np

    tiles = [np.full((2, 6, 3), i, np.uint8) for i in range(1, 5)]
    got = _review().sheet(tiles, cols=3)
    assert got.shape == (4, 18, 3) and got[0, 0, 0] == 1 and got[2, 0, 0] == 4 and got[2, 6:].max() == 0
