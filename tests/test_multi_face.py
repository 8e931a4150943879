"""Multi-face analysis: every face of a group photo is found, in a fixed order, and becomes its own record."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.data.demo import DEMO_PHOTOS, DEMO_SPLIT, demo_split


@pytest.fixture(scope="module")
def analyzer():
    from engine.faces import FaceAnalyzer

    a = FaceAnalyzer(multi=True)
    yield a
    a.close()


def _photo(image_id: str) -> np.ndarray:
    from engine.data.demo import _load_asset

    return _load_asset(DEMO_PHOTOS[image_id][0])


def test_group_photos_give_every_face_left_to_right(analyzer):
    table = analyzer.analyse_all("photo_table", _photo("photo_table"))
    children = analyzer.analyse_all("photo_children", _photo("photo_children"))
    assert len(table) == 6 and all(fa.ok for fa, _ in table)
    assert len(children) == 5 and all(fa.ok for fa, _ in children)
    for faces in (table, children):
        # Reading order: the faces' positions in the photo (crop_from_source maps the photo into the crop).
        centres = [np.linalg.solve(fa.crop_from_source[:, :2], np.array([192.0, 161.0]) - fa.crop_from_source[:, 2])
                   for fa, _ in faces]
        xs = [c[0] for c in centres]
        assert xs == sorted(xs)
        assert all(crop.shape == (384, 384, 3) for _, crop in faces)
    again = analyzer.analyse_all("photo_table", _photo("photo_table"))
    assert all(np.array_equal(a.landmarks, b.landmarks) for (a, _), (b, _) in zip(table, again, strict=True))


def test_small_faces_are_skipped_with_the_reason_and_tight_crops_still_work(analyzer):
    bus = analyzer.analyse_all("photo_bus", _photo("photo_bus"))
    assert any(fa.ok for fa, _ in bus)
    small = [fa for fa, _ in bus if not fa.ok]
    assert small and all("face too small" in fa.reason and "min_face_iod" in fa.reason for fa in small)
    from engine.data.demo import _load_lfw

    lfw = analyzer.analyse_all("lfw_000", _load_lfw(0, 128))  # the full-range detector misses tight crops
    assert len(lfw) == 1 and lfw[0][0].ok


def test_demo_halves_are_declared_and_keep_a_photos_faces_together():
    from engine.data import DemoDataset

    tuning, evaluation = DemoDataset(split="tuning"), DemoDataset(split="evaluation")
    ids_t, ids_e = {r.image_id for r in tuning}, {r.image_id for r in evaluation}
    assert not ids_t & ids_e and len(ids_t | ids_e) == len(DemoDataset())
    assert abs(len(ids_t) - len(ids_e)) <= 4
    assert demo_split("photo_table#3") == demo_split("photo_table") == DEMO_SPLIT["photo_table"]
    assert {demo_split(i) for i in DEMO_PHOTOS} == {"tuning", "evaluation"}
    with pytest.raises(ValueError, match="dataset.split"):
        DemoDataset(split="train")


def test_a_proposal_the_landmarker_cannot_fit_is_a_skipped_face_after_the_analysed_ones(analyzer):
    """photo_pitch: the man in full profile (and a hand) are proposed but not fitted; they are not lost."""
    from engine.faces.analyzer import UNCONFIRMED_PROPOSAL

    pitch = analyzer.analyse_all("photo_pitch", _photo("photo_pitch"))
    assert [fa.ok for fa, _ in pitch] == [True, False, False]  # the analysed face keeps record #0
    skipped = [fa.reason for fa, crop in pitch[1:] if crop is None]
    assert all(r.startswith(UNCONFIRMED_PROPOSAL) and "box " in r and "score 0." in r for r in skipped)
    # Left to right, and the profile's box is where he stands (x about 550-700 px of 1280).
    x0 = [int(r.split("box ")[1].split(",")[0]) for r in skipped]
    assert x0 == sorted(x0) and 500 < x0[0] < 600
    # A photo whose every proposal is fitted has no such row.
    assert not any(fa.reason.startswith(UNCONFIRMED_PROPOSAL)
                   for fa, _ in analyzer.analyse_all("photo_couple", _photo("photo_couple")))


def test_a_run_makes_one_record_per_face(run_experiment):
    summary, out = run_experiment("experiment=placebo", "classifier=dummy", "audit.enabled=false",
                                  "dataset.portraits=false", "dataset.n_lfw=2", "dataset.limit=3", "dataset.photos=true")
    m = pd.read_parquet(out / "measurements.parquet")
    ids = list(dict.fromkeys(m["image_id"]))
    assert ids[:6] == [f"photo_table#{k}" for k in range(6)] and "photo_aligned#0" in ids
    faces = m.drop_duplicates("image_id")
    assert (faces.loc[faces["image_id"].str.startswith("photo_table"), "source_image"] == "photo_table").all()
    # The pitch's unfitted proposals are rows of skipped.csv under their own record ids, with the reason.
    pitch = pd.read_csv(out / "skipped.csv").query("image_id.str.startswith('photo_pitch')")
    assert pitch["image_id"].tolist() == ["photo_pitch#1", "photo_pitch#2"]
    assert pitch["reason"].str.startswith("face proposed by the detector but not fitted").all()
    assert "photo_pitch#0" in ids
    # Single-face analysis on request: one record per image, under the image's own id. It shows why the
    # demo analyses every face: the landmarker's own short-range detector finds none at the table.
    _, single = run_experiment("experiment=placebo", "classifier=dummy", "audit.enabled=false",
                               "dataset.portraits=false", "dataset.n_lfw=0", "dataset.limit=2", "faces.multi=false",
                               "dataset.photos=true",
                               out_name="single")
    assert list(pd.read_parquet(single / "measurements.parquet")["image_id"].unique()) == ["photo_aligned"]
    skipped = pd.read_csv(single / "skipped.csv")
    assert skipped["image_id"].tolist() == ["photo_table"] and skipped["reason"].tolist() == ["no face detected"]


def test_a_tight_crop_whose_face_the_landmarker_misses_is_found_with_a_margin(analyzer):
    """lfw_023: the short-range detector misses the face in its own aligned crop, not with a margin."""
    from engine.data.demo import _load_lfw
    from engine.faces.landmarker import CROP_MARGIN

    [(fa, crop)] = analyzer.analyse_all("lfw_023", _load_lfw(23, 128))
    lm = analyzer.landmarker
    assert lm.detect(crop) is None and lm.detect_crop(crop, margin=False) is None
    found = lm.detect_crop(crop)
    assert found is not None and found["margin"]
    # The analysis keeps the re-detected landmarks (not ones moved over from the photo) and says so.
    from engine.types import REDETECTED_WITH_MARGIN, FaceAnalysis

    assert fa.ok and fa.reason == REDETECTED_WITH_MARGIN and fa.redetected and fa.needs_margin
    # The same flags hold for the other ways a face's landmarks are found, and for a skipped face.
    assert FaceAnalysis("x", ok=True).redetected and not FaceAnalysis("x", ok=True).needs_margin
    moved = FaceAnalysis("x", ok=True, reason="landmarks transferred from the source photo")
    assert not moved.redetected and not moved.needs_margin
    assert not FaceAnalysis("x", ok=False, reason="no face detected").redetected
    np.testing.assert_array_equal(fa.landmarks, found["landmarks"])
    # Landmarks come back in the crop's pixels: the eyes sit where the aligner put them.
    eyes = (fa.landmarks[468, :2] + fa.landmarks[473, :2]) / 2
    assert abs(eyes[0] - crop.shape[1] / 2) < 0.05 * crop.shape[1]
    assert 0.0 < CROP_MARGIN < 1.0
    # A face found without the margin keeps that framing.
    [(_, plain)] = analyzer.analyse_all("lfw_000", _load_lfw(0, 128))
    assert lm.detect_crop(plain)["margin"] is False


def test_the_faces_found_table_counts_each_photo_against_what_a_person_sees(analyzer):
    from helpers import load_script

    found = load_script("faces_found")
    row, faces = found.count_photo(analyzer, "photo_pitch", _photo("photo_pitch"))
    # The man in full profile is proposed by the detector but not fitted by the landmarker: a miss,
    # counted as such, beside the proposal on his hand; both are skipped faces, not analysed ones.
    assert (row["visible"], row["analysed"], row["too_small"], row["found"]) == (2, 1, 0, 1)
    assert row["unconfirmed"] == 2 and len(faces) == 1 and row["iod_px"][0] > 48
    bus, _ = found.count_photo(analyzer, "photo_bus", _photo("photo_bus"))
    text = found.markdown([row, bus], (93, 102), "2026-12-07", "abc1234")
    assert "| photo_pitch | 2 | 1 | 0 | 1 | 2 |" in text and "unconfirmed proposals (skipped)" in text
    assert "Sharp photos: 3 of 4 visible faces found (75%), 1 of them skipped as too small." in text
    assert "<!-- faces-found:begin -->\nGenerated by `python scripts/faces_found.py --write-docs`" in found.DOCS.read_text()


def test_an_unfitted_proposal_inside_a_fitted_face_is_that_face_not_a_skipped_one(monkeypatch):
    """A tile's partial view of a face the landmarker fitted from another proposal is not reported twice,
    and two unfitted proposals of one place are one skipped face (no MediaPipe: both steps stubbed)."""
    from engine.faces import FaceAnalyzer
    from engine.faces.analyzer import UNCONFIRMED_PROPOSAL
    from engine.faces.detector import FaceDetection
    from engine.faces.template import template_landmarks
    from engine.types import FaceAnalysis

    face = template_landmarks()  # a face in the middle of a 384 px photo, eyes ~108 px apart
    fitted_box = (100.0, 60.0, 290.0, 330.0)
    partial = (150.0, 100.0, 250.0, 200.0)  # inside the fitted face: a tile's view of it
    elsewhere = (600.0, 50.0, 700.0, 150.0)  # a hand, proposed twice
    elsewhere_again = (605.0, 55.0, 698.0, 148.0)
    proposals = [FaceDetection(b, np.zeros((6, 2)), 0.8) for b in (fitted_box, partial, elsewhere, elsewhere_again)]
    analyzer = FaceAnalyzer(multi=True)
    monkeypatch.setattr(analyzer, "proposals", lambda rgb: proposals)
    monkeypatch.setattr(analyzer, "_region_landmarks", lambda rgb, box: face if box == fitted_box else None)
    monkeypatch.setattr(analyzer, "_aligned", lambda image_id, rgb, lm, det: (FaceAnalysis(image_id, ok=True), None))
    faces = analyzer.analyse_all("photo", np.zeros((384, 800, 3), np.uint8))
    assert [fa.ok for fa, _ in faces] == [True, False]
    assert faces[1][0].reason.startswith(UNCONFIRMED_PROPOSAL) and "box 600,50-700,150 px" in faces[1][0].reason
