"""The pipeline's stages: overlap changes nothing, replay is the same path, no MediaPipe is needed to run it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.pipeline.tables import MEASUREMENT_COLUMNS

#: A whole experiment on synthetic faces with the template analyser: no detector, no judges.
NO_MEDIAPIPE = ("dataset=synthetic", "dataset.n=10", "dataset.size=128", "faces=template", "faces.crop_size=128",
                "classifier=dummy", "audit.enabled=false")


def _tables(out):
    return {name: pd.read_parquet(out / name) if name.endswith(".parquet") else pd.read_csv(out / name)
            for name in ("measurements.parquet", "stats.csv", "edits.csv")}


def test_a_run_needs_no_mediapipe_and_overlap_changes_nothing(run_experiment):
    """Stages in threads on chunks of 3 (4 chunks in flight) against one chunk at a time: equal tables."""
    summary, out = run_experiment("experiment=age_shift", *NO_MEDIAPIPE, "runner.chunk_size=3", out_name="overlap")
    _, out_turn = run_experiment("experiment=age_shift", *NO_MEDIAPIPE, "runner.chunk_size=3",
                                 "runner.overlap=false", "cache.enabled=false", out_name="turn")
    a, b = _tables(out), _tables(out_turn)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    m = a["measurements.parquet"]
    assert list(m.columns[: len(MEASUREMENT_COLUMNS) - 2]) == MEASUREMENT_COLUMNS[:-2]
    assert m["image_id"].unique().tolist() == [f"synthetic_{i:03d}" for i in range(10)]  # dataset order
    assert summary.n_images == 10 and summary.timings["pipeline"] > 0
    assert (out / "gallery" / "index.html").read_text().count("data:image/png;base64,") >= 4 * 4


def test_a_failing_stage_stops_the_run_with_its_own_error(run_experiment, monkeypatch):
    from editors.age import AgeEditor

    def broken(self, batch, strength, seed):
        raise RuntimeError("editor exploded on purpose")

    monkeypatch.setattr(AgeEditor, "edit", broken)
    with pytest.raises(RuntimeError, match="exploded on purpose"):
        run_experiment("experiment=age_shift", *NO_MEDIAPIPE, "runner.chunk_size=2")


def test_a_rerun_is_the_same_path_with_hits(run_experiment):
    _, first = run_experiment("experiment=gender_swap", *NO_MEDIAPIPE, out_name="first")
    summary, again = run_experiment("experiment=gender_swap", *NO_MEDIAPIPE, out_name="again")
    assert summary.cache["finished"] == {"cached": 10, "computed": 0}
    assert all(v["computed"] == 0 for v in summary.cache.values()), summary.cache
    for name, table in _tables(first).items():
        pd.testing.assert_frame_equal(table, _tables(again)[name])
    # The replayed run's gallery shows the same pixels, read back from the cache by key.
    assert (first / "gallery" / "index.html").read_text() == (again / "gallery" / "index.html").read_text()


def test_the_record_holds_where_each_condition_is_cached(tmp_path):
    from engine.cache import WorkCache
    from engine.config import compose_config
    from engine.pipeline import Pipeline
    from engine.spec import RunSpec

    spec = RunSpec.from_config(compose_config(["experiment=age_shift", *NO_MEDIAPIPE, "dataset.n=3"]))
    cache = WorkCache(tmp_path)
    pipe = Pipeline(spec.faces, spec.editor, spec.strengths, dict(spec.classifiers), spec.runner, cache, 0)
    result = pipe.run(list(spec.dataset))
    assert [c.label for c in result.results[0].conditions] == ["original", "sham", "edit@1"]
    for r in result.results:
        for c in r.conditions:
            image = cache.get_image(c.image_kind, c.image_key)
            assert image is not None and image.shape == (128, 128, 3)
        assert np.array_equal(cache.get_image(r.conditions[0].image_kind, r.conditions[0].image_key),
                              cache.get_image(r.conditions[1].image_kind, r.conditions[1].image_key))  # sham = input
