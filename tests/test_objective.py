"""The search objective (engine/report/objective.py) and the Optuna study that minimises it."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from engine.report.objective import Objective, flip_rate, score


def _engine(tmp_path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """`python -m engine ARGS` in `tmp_path`, offline, with its own work cache."""
    env = {**os.environ, "FACECF_WORK_CACHE": str(tmp_path / "cache"), "FACECF_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=timeout)


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
    sweep = tmp_path / "search"
    proc = _engine(tmp_path, "-m", "study=flip_strength", "experiment=semg", "classifier=dummy", "dataset.limit=3",
                   "report.plots=false", "runner.progress=off", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = [yaml.safe_load(p.read_text()) for p in sweep.rglob("objective.json")]
    assert len(trials) == 2 and 0.05 <= best["best_params"]["strength"] <= 1.0
    assert best["best_value"] == pytest.approx(min(t["score"] for t in trials))


# -- max_valid_share: tuning an editor's knobs ------------------------------------------------------
def _audit_folder(tmp_path, valid: int, ages: list[float], n: int = 10):
    reasons = ["" if i < valid else ("expression_moved" if i % 2 else "target_not_moved;nontarget_moved")
               for i in range(n)]
    rows = [{"image_id": f"f{i}", "strength": 1.0, "valid": i < valid, "reasons": reasons[i],
             "delta_est_age": ages[i % len(ages)], "delta_image_asymmetry_rel": -0.6} for i in range(n)]
    rows += [{"image_id": f"f{i}", "strength": 0.5, "valid": False, "reasons": "target_not_moved",
              "delta_est_age": 0.0, "delta_image_asymmetry_rel": 0.0} for i in range(n)]  # other strengths ignored
    pd.DataFrame(rows).to_csv(tmp_path / "audit.csv", index=False)
    return tmp_path


def test_valid_share_scores_one_minus_the_share_when_the_effect_is_kept(tmp_path):
    obj = Objective(name="max_valid_share", effects=("delta_est_age >= 8",))
    got = score(_audit_folder(tmp_path, valid=7, ages=[9.0, 10.0]), obj, ["editor.sag=0.5"])
    assert got["valid_share"] == pytest.approx(0.7) and got["score"] == pytest.approx(0.3)
    assert got["median_delta_est_age"] == pytest.approx(9.5) and got["faces"] == 10
    assert got["reason_expression_moved"] == 2 and got["reason_target_not_moved"] == 1
    written = yaml.safe_load((tmp_path / "objective.json").read_text())
    assert written["overrides"] == ["editor.sag=0.5"] and written["objective"]["effects"] == ["delta_est_age >= 8"]


def test_valid_share_ranks_a_weaker_edit_below_any_that_keeps_its_effect(tmp_path):
    obj = Objective(name="max_valid_share", effects=("delta_est_age >= 8",))
    weak = score(_audit_folder(tmp_path, valid=10, ages=[6.0]), obj)["score"]
    assert weak == pytest.approx(1.0 + 2.0 / 8.0)  # every edit valid, but 2 y short of the median effect
    kept = score(_audit_folder(tmp_path, valid=0, ages=[8.0]), obj)["score"]
    assert kept == pytest.approx(1.0) and kept < weak
    lower = Objective(name="max_valid_share", effects=("delta_image_asymmetry_rel <= -0.5",))
    assert score(_audit_folder(tmp_path, valid=4, ages=[0.0]), lower)["score"] == pytest.approx(0.6)
    missing = Objective(name="max_valid_share", effects=("mouth_corner_drop >= 0.03",))
    assert score(_audit_folder(tmp_path, valid=4, ages=[0.0]), missing)["score"] == pytest.approx(2.0)


@pytest.mark.parametrize("effects, match", [((), "needs objective.effects"), (("delta_est_age > 8",), "column >=")])
def test_valid_share_objective_is_checked(effects, match):
    with pytest.raises(ValueError, match=match):
        Objective(name="max_valid_share", effects=effects)


def test_editors_are_tuned_on_the_tuning_half_only():
    obj = Objective(name="max_valid_share", effects=("delta_est_age >= 8",))
    obj.check_run("tuning")
    for split in ("evaluation", "all", None):
        with pytest.raises(ValueError, match="dataset.split=tuning"):
            obj.check_run(split)
    Objective().check_run("all")  # the flip search is not a tuning of defaults


@pytest.mark.parametrize("study", ["tune_age", "tune_asymmetry", "tune_symmetry"])
def test_tuning_studies_search_knobs_their_editor_has(study):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import conf
    from engine.config import compose_config

    path = os.path.join(os.path.dirname(conf.__file__), "study", f"{study}.yaml")
    raw = OmegaConf.load(path)
    cfg = compose_config([f"study={study}"])
    assert cfg.dataset.split == "tuning" and cfg.objective.name == "max_valid_share"
    Objective(**OmegaConf.to_container(cfg.objective)).check_run(cfg.dataset.split)
    assert list(cfg.classifiers) == ["dummy"]
    params = raw.hydra.sweeper.params
    assert params, study
    for key, space in params.items():
        assert OmegaConf.select(cfg, key) is not None, f"{study}: {key} is not a knob of {cfg.editor._target_}"
        low, high = (float(v) for v in space.removeprefix("interval(").removesuffix(")").split(","))
        assert low <= float(OmegaConf.select(cfg, key)) <= high, f"{study}: the default of {key} is outside its range"
        for end in (low, high):  # a trial at either end of a range must be a valid editor, or the sweep stops
            instantiate(compose_config([f"study={study}", f"{key}={end}"]).editor)


def test_a_tuning_run_on_the_evaluation_half_is_refused_before_any_work(tmp_path):
    proc = _engine(tmp_path, "study=tune_age", "dataset.split=evaluation", f"hydra.run.dir={tmp_path / 'run'}",
                   timeout=300)
    assert proc.returncode == 2 and "dataset.split=tuning" in proc.stderr
    assert not (tmp_path / "run" / "audit.csv").exists()


def test_a_tuning_sweep_runs_from_the_command_line_and_is_ranked(tmp_path):
    sweep = tmp_path / "tune"
    proc = _engine(tmp_path, "-m", "study=tune_age", "dataset.limit=3", "dataset.photos=false", "runner.progress=off",
                   "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    trials = sorted(sweep.glob("trial_*/objective.json"))
    assert len(trials) == 2
    for path in trials:
        got = yaml.safe_load(path.read_text())
        assert got["experiment"] == "age_shift" and got["faces"] >= 2
        assert sum(o.startswith("editor.") for o in got["overrides"]) == 25  # every knob of the study
        assert got["score"] == pytest.approx(1 - got["valid_share"]) or got["score"] >= 1.0
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "tuning.py")
    ranked = subprocess.run([sys.executable, script, str(sweep)], capture_output=True, text=True, timeout=300)
    assert ranked.returncode == 0, ranked.stderr[-2000:]
    assert "**tune (age_shift)**" in ranked.stdout and ranked.stdout.count("| trial_") >= 2


def test_a_trial_with_values_its_editor_refuses_is_scored_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "tune"
    proc = _engine(tmp_path, "-m", "study=tune_symmetry", "dataset.limit=3", "dataset.photos=false",
                   "runner.progress=off", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}",
                   "editor.mirror_share=interval(0.6,0.9)")  # above 0.5: refused by the symmetry editor
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stderr.count("mirror_share") >= 2  # each refused trial says why
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    from engine.report.objective import REFUSED_TRIAL_SCORE

    assert best["best_value"] == REFUSED_TRIAL_SCORE


def test_a_single_run_with_a_refused_value_still_fails(tmp_path):
    proc = _engine(tmp_path, "study=tune_symmetry", "editor.mirror_share=0.7", f"hydra.run.dir={tmp_path / 'run'}",
                   timeout=300)
    assert proc.returncode == 2 and "mirror_share" in proc.stderr  # only a sweep scores it and goes on
