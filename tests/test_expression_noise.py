"""`scripts/expression_noise.py`: the steadier blendshape reading and its summary (MediaPipe itself
runs in the script; these tests hold the arithmetic that turns its readings into the table)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import load_script


def test_a_reading_is_the_mean_over_its_framings_and_needs_the_face_in_every_one():
    ex = load_script("expression_noise")
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    image[10:30, 10:30] = 200
    views = ex.framings()
    assert len(views) == 4 and views[0](image) is image
    moved = views[1](image)
    assert moved[11, 11, 0] == 200 and moved[10, 10, 0] == 0  # 1 px down and right

    def detect(view):  # a stand-in for MediaPipe: blendshapes that follow the view's brightness
        return np.full(52, view.mean() / 255.0)

    expected = np.mean([v(image).mean() / 255.0 for v in views])
    assert ex.read(detect, image, views) == pytest.approx(np.full(52, expected))
    assert ex.read(lambda view: None if view is not image else np.ones(52), image, views) is None


def test_the_summary_counts_edits_above_the_noise_percentile():
    ex = load_script("expression_noise")
    noise = list(np.linspace(0.0, 0.01, 101))  # p99 = 0.0099
    edits = [0.005, 0.0095, 0.02, 0.03, np.nan]
    row = ex.summarise("age_shift", 4, noise, edits)
    assert row["noise_p99"] == pytest.approx(0.0099)
    assert row["noise_p50"] == pytest.approx(0.005)
    # A face not found again (NaN) is left out: the audit reports it as face_not_found instead.
    assert row["edit_median"] == pytest.approx(0.01475)
    assert row["over_p99"] == pytest.approx(2 / 4)
    assert (row["edits"], row["noise_pairs"], row["views"]) == (4, 101, 4)
