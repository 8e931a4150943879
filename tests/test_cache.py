"""The work cache under faults: a cache that cannot be written costs speed, never the run."""

def test_a_cache_that_cannot_be_written_degrades_to_computing_with_one_warning(tmp_path, caplog):
    """A full or unwritable cache aborted the run (issue 11, item 5)."""
    import logging

    import numpy as np

    from engine.cache import WorkCache

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    cache = WorkCache(blocker)
    with caplog.at_level(logging.WARNING, logger="engine.cache"):
        for i in range(3):
            cache.put_arrays("pred", f"k{i}", x=np.arange(3))
            cache.put_image("crop", f"k{i}", np.zeros((4, 4, 3), np.uint8))
    assert cache.get_arrays("pred", "k0") is None
    warnings = [r for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(warnings) == 1


def test_a_run_whose_cache_cannot_be_written_still_finishes(run_experiment, tmp_path, monkeypatch):
    blocker = tmp_path / "blocked-cache"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FACECF_WORK_CACHE", str(blocker))
    summary, out = run_experiment("experiment=placebo", "dataset.limit=2", "audit.enabled=false")
    assert (out / "report.md").exists() and summary.n_images == 2
