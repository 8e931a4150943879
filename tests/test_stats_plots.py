"""The three figures are written as readable PNGs from real analysis tables."""

from __future__ import annotations

import matplotlib.image as mpimg
import pytest
from synthetic import synthetic_measurements

from engine.report.plots import dose_response_plot, forest_plot, significance_heatmap
from engine.stats import StatsConfig, analyse


@pytest.fixture(scope="module")
def analysed():
    df = synthetic_measurements(
        n_images=20,
        classifiers=("clf_a", "clf_b"),
        outputs=("anger", "happiness"),
        strengths=(0.5, 1.0),
        properties={"warp": "age", "tex": "gender"},
        shift={("clf_a", "happiness"): 0.2},
        seed=1,
    )
    return df, analyse(df, StatsConfig(tests=("wilcoxon", "t"), n_bootstrap=200))


def _check_png(path, min_height):
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] >= min_height and image.std() > 0.01


def test_all_three_figures(analysed, tmp_path):
    df, res = analysed
    _check_png(forest_plot(res.tests, tmp_path / "forest.png"), 300)
    _check_png(significance_heatmap(res.tests, tmp_path / "heat.png", test="t"), 150)
    _check_png(dose_response_plot(res.dose_response, df, tmp_path / "plots" / "dose.png"), 200)


def test_forest_plot_caps_rows_and_rejects_unknown_test(analysed, tmp_path):
    _, res = analysed
    _check_png(forest_plot(res.tests, tmp_path / "few.png", effect="cohen_dz", max_rows=5), 100)
    with pytest.raises(ValueError, match="test='sign'"):
        forest_plot(res.tests, tmp_path / "x.png", test="sign")
