"""The replication study: one command, one property x classifier table (engine/report/replicate.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from engine.report.replicate import COLUMNS, PUBLISHED_MAX_PERCENT, top_class_deltas


def test_top_class_contrast_follows_the_shams_top_class():
    rows = []
    for image, sham, edit in (("a", (0.7, 0.2, 0.1), (0.5, 0.4, 0.1)), ("b", (0.1, 0.3, 0.6), (0.1, 0.2, 0.7))):
        for cond, probs in (("sham", sham), ("edit", edit)):
            for out, v in zip(("happiness", "neutral", "sadness"), probs):
                rows.append({"image_id": image, "condition": cond, "strength": 0.0 if cond == "sham" else 1.0,
                             "classifier": "c", "output": out, "value": v})
    d = top_class_deltas(pd.DataFrame(rows), "c", 1.0).set_index("image_id")
    assert d.loc["a", "top_class"] == "happiness" and np.isclose(d.loc["a", "delta"], -0.2)
    assert d.loc["b", "top_class"] == "sadness" and np.isclose(d.loc["b", "delta"], 0.1)
    assert not d["flipped"].any()


def _study(root, *extra: str):
    """Run the study (a small slice) into root/study with its own work cache; returns the sweep folder."""
    env = {**os.environ, "FACECF_WORK_CACHE": str(root / "cache"), "FACECF_OFFLINE": "1"}
    sweep = root / "study"
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "-m", "study=replicate", "dataset.limit=2", "classifier=dummy",
         "audit.enabled=false", "report.plots=false", "runner.progress=off", f"hydra.sweep.dir={sweep}", *extra],
        capture_output=True, text=True, cwd=root, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return sweep


@pytest.fixture(scope="module")
def basic_study(tmp_path_factory):
    return _study(tmp_path_factory.mktemp("basic"))


def test_submitit_launcher_gives_the_basic_launchers_table(basic_study, tmp_path):
    """The same study through submitit's local launcher (parallel processes, as on a cluster)."""
    sweep = _study(tmp_path, "hydra/launcher=local_parallel", "hydra.launcher.timeout_min=15")
    ours = pd.read_csv(sweep / "replicate" / "replicate.csv")
    basic = pd.read_csv(basic_study / "replicate" / "replicate.csv")
    pd.testing.assert_frame_equal(ours, basic, check_exact=False, rtol=1e-9)


def test_replicate_study_is_one_command(basic_study):
    sweep = basic_study
    table = pd.read_csv(sweep / "replicate" / "replicate.csv")
    assert len(list(sweep.rglob("stats.json"))) == 9, "five properties and four matched nuisance controls"
    assert list(table.columns) == COLUMNS
    assert sorted(table["experiment"]) == ["age_shift", "asymmetry", "gender_swap", "semg", "symmetry"]
    assert set(table.loc[table["experiment"].isin(["symmetry", "asymmetry"]), "direction"]) == {"more", "less"}
    assert (table["published_max_percent"] == PUBLISHED_MAX_PERCENT).all()
    assert (sweep / "replicate" / "forest.png").stat().st_size > 1000
    assert "| asymmetry | symmetry (less) | dummy |" in (sweep / "replicate" / "replicate.md").read_text()
    paired = table[table["experiment"] != "semg"]
    assert paired["control_experiment"].eq("nuisance_" + paired["experiment"]).all()
    assert paired["did_n"].notna().all() and table.loc[table["experiment"] == "semg", "did_n"].isna().all()
    # The DiD recomputed by hand for one row: (edit - sham) - (nuisance edit - nuisance sham), per output.
    row = paired.iloc[0]
    m = pd.read_parquet(sweep / row["job"] / "measurements.parquet")
    c_job = next(p.parent for p in sweep.rglob("stats.json") if p.parent.parts[-3] == row["control_experiment"])
    c = pd.read_parquet(c_job / "measurements.parquet")

    def diffs(frame):
        f = frame[frame["classifier"] == row["classifier"]]
        wide = f.pivot_table(index=["image_id", "output"], columns="condition", values="value", aggfunc="first")
        return (wide["edit"] - wide["sham"]).unstack("output")

    did = diffs(m) - diffs(c)
    from scipy.stats import wilcoxon

    from engine.stats import adjust_pvalues

    p = [wilcoxon(did[o][did[o] != 0]).pvalue if (did[o] != 0).any() else np.nan for o in did.columns]
    expected = int((adjust_pvalues(np.array(p), None, "holm") <= 0.05).sum())
    assert (row["did_k"], row["did_n"]) == (expected, int(np.isfinite(p).sum()))
    # Each row is its job's own numbers: the headline's k/n and the flips recomputed from measurements.
    for row in table.itertuples():
        job = sweep / row.job
        head = pd.read_csv(job / "stats_headline.csv").set_index(["scope", "classifier"])
        assert (row.k, row.n) == tuple(head.loc[("classifier", row.classifier), ["k", "n"]])
        m = pd.read_parquet(job / "measurements.parquet")
        top = m[m["classifier"] == row.classifier].pivot_table(
            index="image_id", columns="condition", values="top1", aggfunc="first")
        assert np.isclose(row.label_flip_rate, (top["edit"] != top["sham"]).mean())
