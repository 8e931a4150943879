"""A re-run of a finished experiment replays each image's stored results instead of recomputing.

It must open no image it already processed (file datasets are keyed by their bytes), give tables
identical to the first run, and fall back to the step caches when anything the numbers depend on
changes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image


@pytest.fixture()
def face_folder(tmp_path):
    from engine.data import DemoDataset

    d = tmp_path / "faces"
    d.mkdir()
    for rec in DemoDataset(limit=5, photos=False):
        Image.fromarray(rec.load()).save(d / f"{rec.image_id}.png")
    Image.fromarray(np.full((120, 120, 3), 90, np.uint8)).save(d / "blank.png")  # no face: skipped
    return d


def _tables(out):
    return {
        "measurements": pd.read_parquet(out / "measurements.parquet"),
        "audit": pd.read_csv(out / "audit.csv"),
        "edits": pd.read_csv(out / "edits.csv"),
        "stats": pd.read_csv(out / "stats.csv"),
        "skipped": pd.read_csv(out / "skipped.csv"),
    }


def test_rerun_replays_without_decoding_and_matches(run_experiment, face_folder, monkeypatch):
    import engine.data

    args = ("experiment=symmetry", "dataset=folder", f"dataset.root={face_folder}",
            "dataset.labels_from_subfolders=false", "report.gallery_max_images=2", "runner.chunk_size=3")
    first, out1 = run_experiment(*args, out_name="first")
    assert first.cache["finished"] == {"cached": 0, "computed": 5}

    decoded: list[str] = []
    real = engine.data.files.load_image_file
    monkeypatch.setattr(engine.data.files, "load_image_file", lambda p: decoded.append(str(p)) or real(p))
    second, out2 = run_experiment(*args, out_name="second")
    assert decoded == [], "a finished image's file must not be decoded again"
    assert second.cache["finished"] == {"cached": 5, "computed": 0}
    assert all(v["computed"] == 0 for v in second.cache.values()), second.cache
    a, b = _tables(out1), _tables(out2)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
    # The gallery still shows pixels: its images come from the cached crops and edits.
    html = (out2 / "gallery" / "index.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 * 4

    # A stricter audit threshold applies to the replayed measures: still nothing recomputed.
    third, out3 = run_experiment(*args, "audit.thresholds.max_outside_change=0.0", out_name="third")
    assert third.cache["finished"]["cached"] == 5
    assert all(v["computed"] == 0 for v in third.cache.values()), third.cache
    pd.testing.assert_frame_equal(_tables(out3)["measurements"], a["measurements"])
    measures = ["outside_change", "ssim_in", "lpips_in"]
    pd.testing.assert_frame_equal(_tables(out3)["audit"][measures], a["audit"][measures])

    # A different classifier misses the finished entries; analyses and edits still come from the cache.
    fourth, _ = run_experiment(*args, "classifier=dummy", out_name="fourth")
    assert fourth.cache["finished"] == {"cached": 0, "computed": 5}
    assert fourth.cache["analysis"]["computed"] == 0 and fourth.cache["edit"]["computed"] == 0


def test_a_changed_file_is_decoded_again(run_experiment, face_folder, monkeypatch):
    import engine.data.files

    args = ("experiment=placebo", "dataset=folder", f"dataset.root={face_folder}",
            "dataset.labels_from_subfolders=false", "audit.enabled=false")
    run_experiment(*args, out_name="a")
    target = next(face_folder.glob("lfw_*.png"))
    Image.open(target).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target)
    decoded: list[str] = []
    real = engine.data.files.load_image_file
    monkeypatch.setattr(engine.data.files, "load_image_file", lambda p: decoded.append(str(p)) or real(p))
    summary, _ = run_experiment(*args, out_name="b")
    assert decoded == [str(target)]
    assert summary.cache["analysis"]["computed"] == 1 and summary.cache["finished"]["cached"] == 4


def test_a_copy_under_another_name_is_its_own_record(run_experiment, face_folder):
    # Editors seed their noise by image id and may read record metadata, so a copy of a photo under
    # another name shares the face analysis (pixels) but gets its own edits and its own audit rows.
    import shutil

    args = ("experiment=symmetry", "dataset=folder", f"dataset.root={face_folder}",
            "dataset.labels_from_subfolders=false", "report.gallery_max_images=0")
    run_experiment(*args, out_name="a")
    original = next(face_folder.glob("lfw_*.png"))
    shutil.copy(original, face_folder / "zz_copy.png")
    summary, out = run_experiment(*args, out_name="b")
    assert summary.cache["finished"] == {"cached": 5, "computed": 1}
    assert summary.cache["analysis"]["computed"] == 0  # the copy's pixels were analysed before
    audit = pd.read_csv(out / "audit.csv").set_index("image_id")
    assert {"zz_copy", original.stem} <= set(audit.index)


def test_an_editor_setting_recomputes_the_edits_and_a_classifier_change_does_not(run_experiment):
    """Cache keys hold exactly what an edit depends on (issue 11, tests)."""
    args = ("experiment=symmetry", "dataset.limit=2", "audit.enabled=false", "report.plots=false")
    first, _ = run_experiment(*args, out_name="first")
    assert first.cache["edit"]["computed"] == 2
    other_editor, _ = run_experiment(*args, "editor.mirror_share=0.4", out_name="editor")
    assert other_editor.cache["edit"] == {"cached": 0, "computed": 2}
    assert other_editor.cache["analysis"]["computed"] == 0, "the face analysis does not depend on the editor"
    other_classifier, _ = run_experiment(*args, "classifier=dummy", out_name="classifier")
    assert other_classifier.cache["edit"] == {"cached": 2, "computed": 0}
    assert other_classifier.cache["pred"]["computed"] > 0


def test_torn_flipped_and_garbage_cache_entries_are_recomputed_to_identical_tables(run_experiment, work_cache):
    """A damaged entry must read as missing and be recomputed, never crash or leak into results."""
    args = ("experiment=placebo", "dataset.limit=3", "audit.enabled=false", "report.plots=false")
    _, out1 = run_experiment(*args, out_name="clean")
    entries = sorted(p for p in work_cache.rglob("*.arr") if not p.name.startswith("."))
    assert len(entries) >= 6
    for i, path in enumerate(entries):
        data = bytearray(path.read_bytes())
        if i % 3 == 0:
            path.write_bytes(bytes(data[: len(data) // 2]))  # torn
        elif i % 3 == 1:
            data[len(data) // 2] ^= 0x40  # one bit flipped
            path.write_bytes(bytes(data))
        else:
            path.write_bytes(b"\x00garbage" * 7)
    summary, out2 = run_experiment(*args, out_name="damaged")
    assert summary.cache["finished"]["computed"] == 3, "every damaged record is recomputed"
    for table in ("measurements.parquet",):
        pd.testing.assert_frame_equal(pd.read_parquet(out1 / table), pd.read_parquet(out2 / table))
    pd.testing.assert_frame_equal(pd.read_csv(out1 / "stats.csv"), pd.read_csv(out2 / "stats.csv"))
