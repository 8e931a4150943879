"""Effect sizes of every editor on six real faces, through the engine and its audit (default suite).

The fast companion of `pytest -m acceptance`: the two sharp portraits and four LFW faces, strength 1,
calibrated thresholds. Each study asserts a lower bound on its median effect and on its valid share,
set a margin below what the editors measure today (a regression that halves an effect or breaks the
checks fails here, not only in the slow acceptance run). Signs alone would pass a broken editor.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

SIX_FACES = ("dataset=demo", "dataset.limit=6", "dataset.photos=false", "faces.multi=false")
COMMON = ("strength=1.0", "classifier=dummy", "audit.enabled=true", "report.plots=false",
          "report.gallery_max_images=0")

#: study -> (experiment overrides, target column (signed so that larger is better; None: the editor
#: reports its own target), lower bound of the median effect, least valid share, faces scored).
#: Bounds sit a margin below today's figures on these faces (age +5.6 y since the broad buccal hollows
#: of editor version 8 replaced blotch-like ones, +11.4 y before; p(male) +0.92 on the face
#: judged female, asymmetry index +82 % with the corner 0.13 IOD lower, symmetry -59 %, sEMG all
#: valid); valid shares are as low as they are because the editors miss their validity targets
#: (docs/EDITORS.md, Acceptance) - these bounds hold what works against regression.
#: Toward female the editor does not move the judge (a known miss), so no bound is set for it.
STUDIES = {
    "age": (("experiment=age_shift",), "delta_est_age", 4.5, 2 / 6, "all"),
    "gender_male": (("experiment=gender_swap", "editor.target=male"), "delta_est_p_male", 0.5, 1.0,
                    "judged_female"),
    "symmetry": (("experiment=symmetry",), "-delta_image_asymmetry_rel", 0.45, 2 / 6, "all"),
    "asymmetry": (("experiment=asymmetry",), "delta_symmetry_index_rel", 0.5, None, "all"),
    "semg": (("experiment=semg",), None, 0.0, 5 / 6, "all"),
}
#: The asymmetry's droop, as the mouth-corner judge sees it (inter-ocular distances).
MIN_MOUTH_CORNER_DROP = 0.07


def _effect(audit: pd.DataFrame, column: str) -> float:
    sign = -1.0 if column.startswith("-") else 1.0
    return float(np.nanmedian(sign * audit[column.lstrip("-")].astype(float)))


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_each_editor_moves_its_property_by_at_least_its_bound(run_experiment, study):
    overrides, column, bound, min_valid, scored = STUDIES[study]
    _, out = run_experiment(*overrides, *SIX_FACES, *COMMON, out_name=study)
    audit = pd.read_csv(out / "audit.csv")
    audit = audit[audit["strength"].astype(float) == 1.0]
    assert len(audit) >= 5, "the six faces should almost all be analysed"
    if scored == "judged_female":  # a direction is scored on the faces it is meant for
        audit = audit[audit["est_p_male_ref"].astype(float) < 0.5]
        assert len(audit) >= 1
    if min_valid is not None:
        valid = float(audit["valid"].astype(bool).mean())
        assert valid >= min_valid, f"{study}: valid share {valid:.2f} < {min_valid:.2f}; reasons: " \
            f"{audit['reasons'].value_counts().to_dict()}"
    if column is not None:
        effect = _effect(audit, column)
        assert effect >= bound, f"{study}: median {column} = {effect:.3f} < {bound}"
    if study == "asymmetry":
        drop = float(np.nanmedian(audit["mouth_corner_drop"].astype(float)))
        assert drop >= MIN_MOUTH_CORNER_DROP, f"mouth corner drop {drop:.3f} IOD < {MIN_MOUTH_CORNER_DROP}"
