"""Shared fixtures. Tests run offline: assets come from the cache filled by `python -m engine.assets pull`."""

from __future__ import annotations

import os

import pytest
from helpers import face_batch

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
        # The demo set's first records after its portraits are sharp group photos; tests that take its
        # first few images mean the portraits and LFW faces (one face each) unless they ask for photos.
        if cfg.dataset.get("_target_") == "engine.data.DemoDataset" and not any("photos" in o for o in overrides):
            from omegaconf import open_dict

            with open_dict(cfg):
                cfg.dataset.photos = False
        out = tmp_path / out_name
        return run(cfg, out=out), out

    return _run


@pytest.fixture()
def tiny_face_batch():
    """Four synthetic 128 px faces on the canonical mesh, slightly different in shape: no MediaPipe needed."""
    from engine.faces import CropSpec
    from engine.faces.template import synthetic_faces

    crops, landmarks = synthetic_faces(4, CropSpec(size=128), seed=0, jitter=0.04)
    return face_batch(crops, landmarks)


_REAL_FACES: dict = {}


@pytest.fixture(scope="session")
def real_faces():
    """`real_faces(count, size)`: the demo set's first `count` faces, analysed and aligned by the pipeline's
    own `FaceAnalyzer` at crop size `size` (astronaut and Grace Hopper first, then upscaled LFW faces)."""

    def _get(count: int, size: int = 384):
        key = (count, size)
        if key not in _REAL_FACES:
            from engine.data import DemoDataset
            from engine.faces import FaceAnalyzer
            from engine.pipeline import analyse_faces

            analyzer = FaceAnalyzer(crop_size=size)
            try:
                batch = analyse_faces(DemoDataset(n_lfw=min(100, 2 * count + 4), photos=False), analyzer, count=count)
            finally:
                analyzer.close()
            _REAL_FACES[key] = batch
        return _REAL_FACES[key]

    return _get



def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001 - pytest hook signature
    """Close landmarkers a test left open while MediaPipe's dispatchers still run (see engine.faces.landmarker)."""
    from engine.faces.landmarker import close_all

    close_all()
