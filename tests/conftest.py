"""Shared fixtures. Tests run offline: assets come from the cache filled by `python -m engine.assets pull`."""

from __future__ import annotations

import os

import pytest

# Tests never reach the network: a missing asset must fail loudly, not download.
os.environ.setdefault("FACECF_OFFLINE", "1")
os.environ.setdefault("GLOG_minloglevel", "2")


@pytest.fixture()
def work_cache(tmp_path, monkeypatch):
    """A private work cache per test, so cache-hit assertions never see another test's entries."""
    path = tmp_path / "work-cache"
    monkeypatch.setenv("FACECF_WORK_CACHE", str(path))
    return path


@pytest.fixture()
def compose():
    """Compose the real root config with overrides (Hydra's compose API, state cleared after)."""
    from hydra.core.global_hydra import GlobalHydra

    from engine.config import compose_config

    def _compose(*overrides: str):
        return compose_config(list(overrides))

    yield _compose
    GlobalHydra.instance().clear()


FAST = ("runner.device=cpu", "runner.progress=off", "report.plots=false", "report.gallery_max_images=4")


@pytest.fixture()
def run_experiment(compose, work_cache, tmp_path):
    """Run an experiment end to end into tmp_path/<name>; returns (summary, output folder)."""
    from engine.app import run

    def _run(*overrides: str, out_name: str = "run"):
        cfg = compose(*FAST, *overrides)
        out = tmp_path / out_name
        return run(cfg, out=out), out

    return _run
