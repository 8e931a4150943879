"""The symmetry slice end to end on real demo faces, the real landmarker and the real classifier."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from engine.types import ConfigError


def _stats(out):
    return pd.read_csv(out / "stats.csv")


def test_symmetry_slice_end_to_end(run_experiment):
    summary, out = run_experiment("experiment=symmetry", "dataset.limit=8")
    for name in ("measurements.parquet", "stats.csv", "stats.json", "skipped.csv", "report.md",
                 "gallery/index.html", "audit.csv"):
        assert (out / name).exists(), name
    m = pd.read_parquet(out / "measurements.parquet")
    n_img = m["image_id"].nunique()
    assert n_img == 8 - len(pd.read_csv(out / "skipped.csv"))
    assert n_img >= 6
    # one row per image x condition x classifier x output
    assert len(m) == n_img * 3 * 7
    assert set(m["condition"]) == {"original", "sham", "edit"}
    sums = m.groupby(["image_id", "condition"])["value"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-5)
    stamp = json.loads((out / "stats.json").read_text())["stamp"]
    assert stamp["config"]["experiment_name"] == "symmetry"
    assert "git" in stamp and stamp["packages"]["torch"]
    html = (out / "gallery" / "index.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 * 4  # original, sham, edit, difference per face
    assert "of" in summary.headline and "significant" in summary.headline
    report = (out / "report.md").read_text()
    assert summary.headline in report


def test_second_identical_run_recomputes_nothing(run_experiment):
    _, out1 = run_experiment("experiment=symmetry", "dataset.limit=4", out_name="a")
    summary2, out2 = run_experiment("experiment=symmetry", "dataset.limit=4", out_name="b")
    assert all(v["computed"] == 0 for v in summary2.cache.values()), summary2.cache
    a = pd.read_parquet(out1 / "measurements.parquet")
    b = pd.read_parquet(out2 / "measurements.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_refuses_to_overwrite_without_resume(run_experiment):
    run_experiment("experiment=placebo", "dataset.limit=2", out_name="same")
    with pytest.raises(ConfigError, match="resume=true"):
        run_experiment("experiment=placebo", "dataset.limit=2", out_name="same")
    summary, _ = run_experiment("experiment=placebo", "dataset.limit=2", "resume=true", out_name="same")
    assert all(v["computed"] == 0 for v in summary.cache.values())


def test_resume_refuses_a_config_whose_results_differ(run_experiment):
    """A `semg` run resumed into a `placebo` run's folder silently replaced its results (issue 11)."""
    _, out = run_experiment("experiment=placebo", "dataset.limit=2", out_name="same")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=r"another config \(differs in: .*editor.*experiment_name"):
        run_experiment("experiment=semg", "dataset.limit=2", "resume=true", out_name="same")
    with pytest.raises(ConfigError, match=r"differs in: dataset"):
        run_experiment("experiment=placebo", "dataset.limit=3", "resume=true", out_name="same")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before, "a refused run wrote"
    # How it runs and reports is not the result: such a resume is accepted.
    run_experiment("experiment=placebo", "dataset.limit=2", "resume=true", "report.plots=true", out_name="same")


def test_placebo_identity_edit_is_not_significant(run_experiment):
    _, out = run_experiment("experiment=placebo", "dataset.limit=8")
    tests = _stats(out)
    assert len(tests) > 0
    assert not tests["reject"].astype(bool).any()


def test_known_effect_symmetry_probe_is_found(run_experiment):
    # The probe's happiness output rises with left-right image symmetry; mirroring the face texture
    # (mode=texture) makes the image symmetric, so a significant rise must be detected.
    _, out = run_experiment("experiment=symmetry", "editor.mode=texture", "classifier=probe", "dataset.limit=12",
                            "audit.enabled=false")
    tests = _stats(out)
    wil = tests[(tests["test"] == "wilcoxon") & (tests["output"] == "happiness")]
    assert bool(wil["reject"].iloc[0]), wil
    assert float(wil["median_diff"].iloc[0]) > 0


def test_images_without_faces_are_skipped_with_reason(run_experiment, tmp_path):
    from PIL import Image

    d = tmp_path / "mixed"
    d.mkdir()
    import skimage.data

    Image.fromarray(skimage.data.astronaut()).save(d / "face.png")
    Image.fromarray(np.full((200, 200, 3), 127, np.uint8)).save(d / "blank.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    _, out = run_experiment("experiment=placebo", "dataset=folder", f"dataset.root={d}",
                            "dataset.labels_from_subfolders=false")
    skipped = pd.read_csv(out / "skipped.csv").set_index("image_id")
    assert skipped.loc["blank", "reason"] == "no face detected"
    assert skipped.loc["broken", "stage"] == "load"
    assert pd.read_parquet(out / "measurements.parquet")["image_id"].unique().tolist() == ["face"]
    # The gallery lists them too, with their reasons, and the report counts them by kind.
    gallery = (out / "gallery" / "index.html").read_text()
    assert "<h2>Skipped (2)</h2>" in gallery and "no face detected" in gallery and "broken" in gallery
    report = (out / "report.md").read_text()
    assert "2 skipped: " in report and "no face detected ×1" in report


def test_observational_mode_on_an_annotated_manifest(run_experiment, tmp_path):
    """The source study's analysis on user data: properties and labels from manifest columns."""
    from PIL import Image

    from engine.data import DemoDataset

    rows = []
    for i, rec in enumerate(DemoDataset(limit=8, photos=False)):
        path = tmp_path / f"{rec.image_id}.png"
        Image.fromarray(rec.load()).save(path)
        rows.append({"path": path.name, "label": ["happy", "neutral"][i % 2], "age": 20 + 7 * i,
                     "semg": ["no", "yes"][(i // 2) % 2]})
    pd.DataFrame(rows).to_csv(tmp_path / "faces.csv", index=False)
    summary, out = run_experiment("experiment=observe_properties", f"dataset.path={tmp_path / 'faces.csv'}",
                                  "observe.properties=[age,semg]", "classifier=dummy", "stats.n_permutations=999")
    tests = pd.read_csv(out / "stats.csv")
    assert set(tests["property"]) == {"age", "semg"}
    assert set(tests["test"]) == {"ols_hc3", "permutation"}
    assert tests["p_adj"].between(0, 1).all()
    assert "Demonstration" not in (out / "report.md").read_text()
    assert "output-property dependencies" in summary.headline


def test_an_empty_dataset_is_an_error_not_an_empty_run(run_experiment, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"has no images: nothing to analyse"):
        run_experiment("experiment=placebo", "dataset=folder", f"dataset.root={empty}", out_name="empty_run")
    assert not (tmp_path / "empty_run" / "run_state.json").exists(), "an empty run must not claim a folder"


def test_file_descriptor_2_is_where_it_was_after_a_run(run_experiment):
    """Landmarker threads silenced fd 2 and one could restore /dev/null: later errors were lost
    (issue 11, item 1). Several workers build landmarkers at once here."""
    import os

    before = os.fstat(2)
    for i in range(2):
        run_experiment("experiment=placebo", "dataset.limit=4", "runner.workers=4", "audit.enabled=false",
                       "report.plots=false", out_name=f"fd{i}")
        after = os.fstat(2)
        assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


def test_a_bad_checkpoint_is_one_line_before_any_face_is_analysed(run_experiment, tmp_path, monkeypatch):
    """Classifier checkpoints were first opened after face analysis (issue 11, item 6)."""
    import engine.faces.analyzer

    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    analysed = []
    real = engine.faces.analyzer.FaceAnalyzer.analyse
    monkeypatch.setattr(engine.faces.analyzer.FaceAnalyzer, "analyse",
                        lambda self, *a, **k: analysed.append(1) or real(self, *a, **k))
    with pytest.raises(ConfigError, match=r"classifier torch_model: its model cannot be loaded"):
        run_experiment("experiment=placebo", "classifier=torch", f"classifiers.torch_model.checkpoint={bad}",
                       "dataset.limit=2", out_name="badckpt")
    assert analysed == [] and not (tmp_path / "badckpt" / "run_state.json").exists()


def test_dry_run_plans_without_work_then_sees_the_finished_run(run_experiment, tmp_path, capsys, work_cache):
    args = ("experiment=symmetry", "dataset.limit=4", "classifier=dummy", "audit.enabled=false")
    summary, out = run_experiment(*args, "dry_run=true", out_name="dry")
    text = capsys.readouterr().out
    assert summary.headline.startswith("dry run") and not (out / "measurements.parquet").exists()
    assert "images: 4 (0 unreadable)" in text and "conditions per face: 3 (original, sham, edit@1)" in text
    assert "0 of 4 faces finished" in text and "rates of the 2-core development machine" in text
    assert not any(work_cache.glob("finished/*/*")), "a dry run computes nothing"
    run_experiment(*args, out_name="real")
    capsys.readouterr()
    summary, _ = run_experiment(*args, "dry_run=true", out_name="dry2")
    text = capsys.readouterr().out
    faces = summary.cache["plan"]["finished"]
    assert faces >= 4 and summary.cache["plan"]["to_compute"] == 0
    assert f"cache: {faces} of {faces} faces finished (replayed), about 0 to compute" in text
