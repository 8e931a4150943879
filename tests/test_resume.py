"""Crash safety for real: SIGKILL mid-run, resume, and a 2-process accelerate run equal to 1 process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ARGS = ["experiment=symmetry", "dataset.limit=8", "dataset.photos=false", "faces.multi=false", "runner.chunk_size=2", "runner.progress=off",
        "report.plots=false", "audit.enabled=false"]


def _engine(args: list[str], run_dir: Path, cache: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "FACECF_WORK_CACHE": str(cache), "FACECF_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "engine", *args, f"hydra.run.dir={run_dir}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _entries(cache: Path, kind: str) -> int:
    d = cache / kind
    return sum(1 for _ in d.rglob("*.arr")) if d.exists() else 0


def test_sigkill_then_resume_recomputes_nothing_and_matches(tmp_path):
    cache = tmp_path / "cache"
    run_dir = tmp_path / "run"
    proc = _engine(ARGS, run_dir, cache)
    deadline = time.time() + 240
    # Kill once some, but not all, predictions are stored: a real mid-run crash.
    while _entries(cache, "pred") < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_analyses = _entries(cache, "analysis")
    done_preds = _entries(cache, "pred")
    assert 0 < done_analyses and done_preds < 24
    # The kill landed mid-write somewhere: every entry under its real name must still be whole (the
    # write is a rename), so a resume can trust what it finds; a torn entry here is a regression.
    from PIL import Image

    from engine.cache import decode_arrays

    entries = [p for p in cache.rglob("*.arr") if not p.name.startswith(".")]
    assert entries and all(decode_arrays(p.read_bytes()) is not None for p in entries)
    for png in (p for p in cache.rglob("*.png") if not p.name.startswith(".")):
        with Image.open(png) as im:
            im.load()

    refused = _engine(ARGS, run_dir, cache)
    out, _ = refused.communicate(timeout=240)
    assert refused.returncode == 2 and "resume=true" in out

    resumed = _engine([*ARGS, "resume=true"], run_dir, cache)
    out, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, out
    stats = json.loads((run_dir / "run_stats.json").read_text())["cache"]
    assert stats["analysis"]["cached"] >= done_analyses
    assert stats["analysis"]["computed"] + stats["analysis"]["cached"] == 8
    assert stats["analysis"]["computed"] == 8 - done_analyses, "finished analyses must not be recomputed"
    assert stats["pred"]["cached"] >= done_preds

    fresh_dir = tmp_path / "fresh"
    ref = _engine(ARGS, fresh_dir, tmp_path / "fresh-cache")
    out, _ = ref.communicate(timeout=400)
    assert ref.returncode == 0, out
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "measurements.parquet"),
                                  pd.read_parquet(fresh_dir / "measurements.parquet"))


@pytest.mark.skipif(shutil.which("accelerate") is None and not Path(sys.executable).with_name("accelerate").exists(),
                    reason="accelerate CLI not installed")
def test_accelerate_two_processes_equal_one(tmp_path):
    args = ["experiment=symmetry", "dataset.limit=4", "dataset.photos=false", "runner.progress=off", "report.plots=false",
            "audit.enabled=false"]
    cache = tmp_path / "cache"
    one = _engine(args, tmp_path / "one", cache)
    out1, _ = one.communicate(timeout=400)
    assert one.returncode == 0, out1
    accel = str(Path(sys.executable).with_name("accelerate"))
    env = {**os.environ, "FACECF_WORK_CACHE": str(tmp_path / "cache2"), "FACECF_OFFLINE": "1"}
    # --multi_gpu selects torchrun-style multi-process launching; on a CPU machine it runs CPU processes.
    two = subprocess.run([accel, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "engine", *args,
                          f"hydra.run.dir={tmp_path / 'two'}"], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "run_stats.json").read_text())["processes"] == 2
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one" / "measurements.parquet"),
                                  pd.read_parquet(tmp_path / "two" / "measurements.parquet"))
    assert (tmp_path / "two" / "report.md").exists()
