"""Every output file of a run, written from one `RunOutputs` after the pipeline has finished.

Tables (`measurements.parquet`, `stats*.csv`, `audit.csv`, `edits.csv`, `skipped.csv`), the stamped
`stats.json`, plots, the gallery (images read back from the work cache) and `report.md`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from engine.cache import WorkCache
from engine.report.files import write_table, write_text
from engine.report.gallery import write_gallery
from engine.report.html import write_html_report
from engine.report.markdown import paired_report
from engine.report.provenance import stamp, write_json

log = logging.getLogger(__name__)


def headline_numbers(stats: Any) -> tuple[int, int, int]:
    """k significant of n emotion-output shifts, and how many were not testable: the "overall" row of the
    analysis's own headline table (one family, see `engine.stats.headline`)."""
    overall = _overall(stats)
    if overall is None:
        return 0, 0, 0
    return int(overall["k"]), int(overall["n"]), int(overall.get("not_testable", 0))


def _overall(stats: Any) -> Any:
    head = stats.headline if stats is not None else None
    if head is None or head.empty:
        return None
    return head[head["scope"] == "overall"].iloc[0]


def headline_sentence(stats: Any) -> str:
    """The run's one-line result: the overall headline row, with its alpha."""
    overall = _overall(stats)
    if overall is None:
        return "no images with a face: no tests" if stats is None else "no emotion output was tested"
    k, n, untestable = headline_numbers(stats)
    if n == 0 and untestable:
        return f"no testable output shift: all {untestable} have every difference exactly zero"
    return f"{overall['text']} (alpha={stats.meta.get('alpha', 0.05):g})"


def write_tables(outputs: Any) -> None:
    """The measurement tables every mode writes."""
    out = outputs.out
    write_table(outputs.measurements, out / "measurements.parquet")
    write_table(outputs.skipped, out / "skipped.csv")
    if not outputs.edits.empty:
        write_table(outputs.edits, out / "edits.csv")
    if outputs.audit is not None and not outputs.audit.empty:
        write_table(outputs.audit, out / "audit.csv")


def gallery(outputs: Any, cache: WorkCache, title: str) -> Path:
    shown = outputs.results[: outputs.spec.report.gallery_max_images]
    return write_gallery(outputs.out, shown, cache, outputs.spec.classifiers, outputs.spec.report, title,
                         outputs.audit, outputs.skipped)


def write_outputs(outputs: Any, cache: WorkCache) -> str:
    """Write every output file of a paired run; returns the headline sentence."""
    spec, stats, out = outputs.spec, outputs.stats, outputs.out
    provenance = stamp(spec.config, outputs.runner)
    write_tables(outputs)
    frames: dict[str, pd.DataFrame] = stats.to_frames() if stats is not None else {}
    tests = frames.get("tests", pd.DataFrame())
    k, n, untestable = headline_numbers(stats)
    pct = 100.0 * k / n if n else float("nan")
    headline = headline_sentence(stats)
    if not tests.empty:
        write_table(tests, out / "stats.csv")
    for name, df in frames.items():
        if name != "tests" and df is not None and not df.empty:
            write_table(df, out / f"stats_{name}.csv")
    stats_json: dict[str, Any] = {"headline": headline, "k": k, "n": n, "not_testable": untestable, "percent": pct,
                                  "edit": {"editor": spec.editor.name, "property": spec.policy.property,
                                           "direction": spec.policy.direction,
                                           "control_of": spec.editor.control_of()},
                                  "stamp": provenance}
    if stats is not None:
        stats_json["stats"] = json.loads(stats.to_json())
    write_json(out / "stats.json", stats_json)
    plot_files: list[str] = []
    if spec.report.plots and stats is not None and not tests.empty:
        plot_files = _plots(out, frames, outputs.measurements)
    page = gallery(outputs, cache, f"{spec.experiment}: {spec.editor.name} ({spec.policy.property})")
    if spec.report.thumbnails:
        from engine.report.thumbs import write_thumbnails

        write_thumbnails(out, outputs.results, cache, spec.report.thumbnails)
    write_text(out / "report.md", paired_report(outputs, frames, headline, plot_files, page, provenance))
    write_html_report(out / "report.md", f"{spec.experiment}: {headline}")
    return headline


def _plots(out: Path, frames: dict[str, pd.DataFrame], measurements: pd.DataFrame) -> list[str]:
    try:
        from engine.report import plots
    except ImportError:
        return []
    pdir = out / "plots"
    pdir.mkdir(exist_ok=True)
    made = []
    jobs = [("forest.png", lambda p: plots.forest_plot(frames["tests"], p)),
            ("significance_heatmap.png", lambda p: plots.significance_heatmap(frames["tests"], p))]
    dose = frames.get("dose_response")
    if dose is not None and not dose.empty:
        jobs.append(("dose_response.png", lambda p: plots.dose_response_plot(dose, measurements, p)))
    for name, fn in jobs:
        try:
            fn(pdir / name)
            made.append(f"plots/{name}")
        except Exception as exc:  # noqa: BLE001 - a plot must never cost the run its tables
            log.warning("plot=%s failed: %s", name, exc)
    return made
