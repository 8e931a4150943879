"""Multirun sweeps: every experiment runs under `-m experiment=glob(*)`, and a sweep aggregates."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd

from engine.config import register_experiments
from engine.report.aggregate import aggregate


def test_multirun_over_every_experiment_then_aggregate(tmp_path):
    env = {**os.environ, "FACECF_WORK_CACHE": str(tmp_path / "cache"), "FACECF_OFFLINE": "1"}
    proc = subprocess.run(
        # The diffusion experiments need model weights no test may download; tests/test_diffusion.py runs
        # age_shift_diffusion end to end on a tiny pipeline instead.
        [sys.executable, "-m", "engine", "-m", "experiment=glob(*,exclude=[observe*,*_diffusion])", "dataset.limit=2",
         "classifier=dummy", "seed=0", "audit.enabled=false", "report.plots=false", "runner.progress=off",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    stats, heads = aggregate(tmp_path / "sweep")
    expected = {n for n in register_experiments() if not n.startswith("observe") and not n.endswith("_diffusion")}
    assert set(heads["experiment"]) == expected
    assert len(heads) == len(expected)
    assert set(stats["job"]) == set(heads["job"])
    assert ((heads["n"] + heads["not_testable"]) > 0).all()
    # the placebo (identity edit) never finds a shift
    assert int(heads.loc[heads["experiment"] == "placebo", "k"].iloc[0]) == 0
    assert isinstance(stats, pd.DataFrame) and "p_adj" in stats
