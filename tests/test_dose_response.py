"""The strength-by-strength frontier (`scripts/dose_response.py`) on made-up audits: its rows, the
frontier sentence per study (where the valid share and the effect target are met), the plot, and the
command its generated header prints."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import load_script


def _audit(strengths: dict[float, tuple[float, float]], n: int = 20) -> pd.DataFrame:
    """Rows per strength: (valid share, judged-age change) for n faces, 4 of them sharp."""
    parts = []
    for s, (valid, age) in strengths.items():
        ok = np.arange(n) < round(valid * n)
        parts.append(pd.DataFrame({
            "image_id": [f"lfw_{i:03d}" if i < n - 4 else f"photo_x#{i}" for i in range(n)],
            "strength": s, "valid": ok, "delta_est_age": np.full(n, age) + np.linspace(-0.5, 0.5, n),
            "blendshape_change": np.full(n, 0.01 + 0.02 * s),
            "reasons": np.where(ok, "", "expression_moved")}))
    audit = pd.concat(parts, ignore_index=True)
    audit["group"] = audit["image_id"].map(load_script("acceptance").group_of)
    return audit


def test_rows_per_strength_carry_share_effect_and_expression():
    dose = load_script("dose_response")
    table = pd.DataFrame(dose.summarise("age", _audit({0.5: (0.9, 4.0), 1.0: (0.5, 9.0)})))
    assert list(table["strength"]) == [0.5, 1.0]
    assert list(table["faces"]) == [20, 20] and list(table["valid"]) == [18, 10]
    assert table["median_effect"].tolist() == pytest.approx([4.0, 9.0])
    assert table["median_expression_change"].tolist() == pytest.approx([0.02, 0.03])
    assert (table["valid_low"] < table["valid_share"]).all() and (table["valid_share"] < table["valid_high"]).all()


def test_the_frontier_says_where_each_target_is_met_and_whether_ever_both():
    dose = load_script("dose_response")
    apart = pd.DataFrame(dose.summarise("age", _audit({0.25: (0.95, 1.0), 0.5: (0.9, 4.0), 1.0: (0.5, 9.0)})))
    f = dose.frontier(apart, "age")
    assert (f["valid"], f["effect"], f["both"]) == ([0.25, 0.5], [1.0], [])
    line = dose.frontier_line(apart, "age")
    assert "valid share ≥ 85 % at strength 0.25, 0.5 (effect +4 at 0.5)" in line
    assert "effect target (>= 8) met at strength 1 (50% valid at 1)" in line and line.endswith("never both.")

    met = pd.DataFrame(dose.summarise("age", _audit({0.5: (0.9, 4.0), 0.75: (0.9, 8.5), 1.0: (0.95, 10.0)})))
    assert dose.frontier(met, "age")["both"] == [0.75, 1.0]
    assert dose.frontier_line(met, "age").endswith("both at 0.75, 1.")

    never = pd.DataFrame(dose.summarise("age", _audit({0.5: (0.4, 4.0), 1.0: (0.2, 6.0)})))
    line = dose.frontier_line(never, "age")
    assert "below 85 % at every strength (best 40% at 0.5)" in line and "met at no strength" in line
    # Not monotone: valid at 0.25 and 1 but not at 0.5, so no "up to" is claimed.
    gap = pd.DataFrame(dose.summarise("age", _audit({0.25: (0.9, 1.0), 0.5: (0.5, 4.0), 1.0: (0.9, 9.0)})))
    assert dose.frontier(gap, "age")["valid"] == [0.25, 1.0] and dose.frontier_line(gap, "age").endswith("both at 1.")
    # A target met by falling (symmetry: image asymmetry down 50 %) is read with its own sign.
    assert dose.effect_target("symmetry") == ("<=", -0.5) and dose.effect_target("semg") is None


def test_markdown_prints_a_command_that_parses_and_the_plot_is_drawn(tmp_path):
    dose = load_script("dose_response")
    table = pd.DataFrame(dose.summarise("age", _audit({0.5: (0.9, 4.0), 1.0: (0.5, 9.0)})))
    provenance = {"made": "2026-12-07", "git": "abc1234", "split": "evaluation", "strengths": [0.5, 1.0],
                  "overrides": ["editor.sag=0"], "studies": ["age"], "expression_threshold": 0.034}
    text = dose.markdown(table, provenance)
    command = text.split("`")[1]
    assert command == ("python scripts/dose_response.py --write-docs --split evaluation --strengths 0.5 1 "
                       "editor.sag=0")
    args, extra = dose.parse_args(command.split()[2:])
    assert (args.split, args.strengths, extra) == ("evaluation", [0.5, 1.0], ["editor.sag=0"])
    assert "| age | 0.5 | 20 | 90% (18)" in text and "threshold 0.034" in text
    with pytest.raises(SystemExit):
        dose.parse_args(["--strengths", "0", "1"])
    png = tmp_path / "frontier.png"
    dose.plot(table, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_occluding_edit_shows_its_expression_reading_as_not_checked_and_no_effect():
    dose = load_script("dose_response")
    audit = _audit({1.0: (1.0, 0.0)}).drop(columns="delta_est_age")
    audit["checks_not_applied"] = "nontarget;expression"
    table = pd.DataFrame(dose.summarise("semg", audit))
    provenance = {"made": "2026-12-07", "git": "abc1234", "split": "evaluation", "strengths": [1.0],
                  "overrides": [], "studies": ["semg"], "expression_threshold": 0.034}
    text = dose.markdown(table, provenance)
    assert "| semg | 1 | 20 | 100% (20) [84%–100%] | – | 0.030 (not checked) | – |" in text
    assert "- **semg**: valid share ≥ 85 % at strength 1; no effect target; both at 1." in text
    assert "nan" not in text


def test_the_command_printed_in_the_docs_runs_as_printed():
    import re
    import shlex

    dose = load_script("dose_response")
    commands = re.findall(r"`python scripts/dose_response\.py ([^`]*)`", load_script("acceptance").DOCS.read_text())
    assert commands, "docs/EDITORS.md has no generated dose-response table"
    for command in commands:
        args, overrides = dose.parse_args(shlex.split(command))
        assert args.write_docs and args.strengths and all("=" in o for o in overrides), command
