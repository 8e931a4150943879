"""report.md stays well-formed: every table row has its header's cells, and user text stays text."""

from __future__ import annotations

import re

from engine.report.markdown import cell, markdown_table


def _tables(markdown: str) -> list[list[str]]:
    """Consecutive lines that start with `|`: one list per table."""
    tables, current = [], []
    for line in markdown.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def _cells(row: str) -> int:
    """Cells of a Markdown table row (an escaped `\\|` is text inside a cell)."""
    return len(re.split(r"(?<!\\)\|", row.strip())) - 2


def test_a_cell_escapes_pipes_html_and_newlines():
    assert cell("edit:mcnemar|fer|age") == "edit:mcnemar\\|fer\\|age"
    assert cell("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)&gt;"
    assert cell("two\nlines") == "two lines"


def test_every_table_of_a_real_report_is_well_formed(run_experiment):
    _, out = run_experiment("experiment=placebo", "dataset.limit=3")
    report = (out / "report.md").read_text()
    tables = _tables(report)
    assert len(tables) >= 3
    assert any("|" in line.replace("\\|", "") and "\\|" in line for t in tables for line in t), \
        "the test families hold a '|': at least one table must carry an escaped one"
    for table in tables:
        width = _cells(table[0])
        assert all(_cells(row) == width for row in table), table[:3]


def test_user_labels_cannot_inject_html_into_the_report():
    import pandas as pd

    text = markdown_table(pd.DataFrame({"label": ["<script>alert(1)</script>"], "n": [1]}))
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_a_write_that_fails_leaves_the_earlier_file_whole_and_no_temporary(tmp_path):
    """A full disk left a truncated gallery/index.html under its real name (issue 11, item 5)."""
    import pandas as pd
    import pytest

    from engine.report.files import atomic_path, write_table, write_text

    page = tmp_path / "index.html"
    write_text(page, "<html>complete</html>")
    with pytest.raises(OSError, match="No space left"), atomic_path(page) as tmp:
        tmp.write_text("<html>trunc")
        raise OSError(28, "No space left on device")
    assert page.read_text() == "<html>complete</html>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]
    write_table(pd.DataFrame({"a": [1, 2]}), tmp_path / "t.parquet")
    assert pd.read_parquet(tmp_path / "t.parquet")["a"].tolist() == [1, 2]


def test_the_report_counts_skipped_images_and_faces_by_kind_of_reason():
    import pandas as pd

    from engine.report.markdown import _faces_line, reason_kind

    skipped = pd.DataFrame({"image_id": ["a", "b", "c#1", "c#2", "d#3"], "stage": ["load", "face", "face", "face", "face"],
                            "reason": ["unreadable image: cannot identify image file 'a.jpg'", "no face detected",
                                       "face proposed by the detector but not fitted by the landmarker (box 1,2-3,4 px, "
                                       "detector score 0.75): a profile", "face proposed by the detector but not fitted "
                                       "by the landmarker (box 5,6-7,8 px, detector score 0.72): a profile",
                                       "face too small: 15 px between the eyes (faces.min_face_iod=16)"]})
    assert reason_kind("face too small: 15 px between the eyes") == "face too small"
    assert _faces_line(7, 5, skipped) == (
        "faces analysed: 7, from 5 images; 5 skipped: face proposed by the detector but not fitted by the "
        "landmarker ×2, face too small ×1, no face detected ×1, unreadable image ×1 (see `skipped.csv`)")
    assert _faces_line(3, 3, skipped.iloc[:0]) == "faces analysed: 3, from 3 images; 0 skipped"
