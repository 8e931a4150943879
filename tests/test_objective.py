"""The search objective (engine/report/objective.py) and the Optuna study that minimises it."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from engine.report.objective import Objective, flip_rate, score


def _run_folder(tmp_path, flips: int, valid: int, n: int = 10, strength: float = 0.4):
    rows = []
    for i in range(n):
        for cond, top in (("sham", "happiness"), ("edit", "sadness" if i < flips else "happiness")):
            rows.append({"image_id": f"f{i}", "condition": cond, "strength": strength if cond == "edit" else 0.0,
                         "classifier": "c", "output": "happiness", "value": 0.5, "top1": top})
            rows.append({"image_id": f"f{i}", "condition": cond, "strength": strength if cond == "edit" else 0.0,
                         "classifier": "blend", "output": "jawOpen", "value": 0.1, "top1": None})
    pd.DataFrame(rows).to_parquet(tmp_path / "measurements.parquet")
    pd.DataFrame({"valid": [i < valid for i in range(n)]}).to_csv(tmp_path / "audit.csv", index=False)
    return tmp_path


def test_meeting_both_targets_scores_the_strength(tmp_path):
    got = score(_run_folder(tmp_path, flips=3, valid=9), Objective())
    assert got == {"strength": 0.4, "flip_rate": 0.3, "valid_share": 0.9, "score": 0.4}
    assert (tmp_path / "objective.json").exists()


def test_a_shortfall_scores_worse_than_any_strength_and_is_graded(tmp_path):
    few_flips = score(_run_folder(tmp_path, flips=1, valid=10), Objective())["score"]
    assert few_flips == pytest.approx(1.1)
    invalid = score(_run_folder(tmp_path, flips=5, valid=5), Objective())["score"]
    assert invalid == pytest.approx(1.35)


def test_flip_rate_ignores_score_sets(tmp_path):
    m = pd.read_parquet(_run_folder(tmp_path, flips=4, valid=10) / "measurements.parquet")
    assert flip_rate(m, 0.4) == 0.4


def test_objective_name_is_checked():
    with pytest.raises(ValueError, match="objective.name"):
        Objective(name="max_accuracy")


def test_optuna_study_runs_trials_and_reports_the_best(tmp_path):
    env = {**os.environ, "FACECF_WORK_CACHE": str(tmp_path / "cache"), "FACECF_OFFLINE": "1"}
    sweep = tmp_path / "search"
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "-m", "study=flip_strength", "experiment=semg", "classifier=dummy",
         "dataset.limit=3", "report.plots=false", "runner.progress=off", "hydra.sweeper.n_trials=2",
         f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = [yaml.safe_load(p.read_text()) for p in sweep.rglob("objective.json")]
    assert len(trials) == 2 and 0.05 <= best["best_params"]["strength"] <= 1.0
    assert best["best_value"] == pytest.approx(min(t["score"] for t in trials))
