"""report.md, stats.csv and stats.json of the observational mode (output ⟂ property | label)."""

from __future__ import annotations

import json
from typing import Any

from engine.report.files import write_table, write_text
from engine.report.html import write_html_report
from engine.report.markdown import markdown_table, skipped_summary
from engine.report.outputs import gallery, headline_numbers, write_tables
from engine.report.provenance import stamp, write_json


def write_observational_outputs(outputs: Any, frame: Any, cache: Any) -> str:
    """Tables, stats.csv, stats.json, report.md and the originals' gallery; returns the headline."""
    spec, stats, out = outputs.spec, outputs.stats, outputs.out
    obs, experiment, n_records, skipped = spec.observe, spec.experiment, outputs.n_records, outputs.skipped
    df = frame
    provenance = stamp(spec.config, outputs.runner)
    write_tables(outputs)
    if not outputs.annotations.empty:
        write_table(outputs.annotations, out / "annotations.csv")
    tests = stats.tests
    primary = stats.meta.get("primary", "ols_hc3")
    t = tests[tests["test"] == primary]
    k, n, _ = headline_numbers(stats)
    pct = 100.0 * k / n if n else float("nan")
    headline = (f"{k} of {n} output-property dependencies significant ({pct:.1f} %) given the label, "
                f"alpha={stats.meta['alpha']:g}, {stats.meta['correction']}-corrected per {stats.meta['family']}")
    write_table(tests, out / "stats.csv")
    write_table(stats.headline, out / "stats_headline.csv")
    write_json(out / "stats.json", {"headline": headline, "k": k, "n": n, "percent": pct, "stamp": provenance,
                                    "stats": json.loads(stats.to_json())})
    demo = obs.annotate or obs.label == "consensus"
    lines = [f"# {experiment} (observational)", ""]
    if demo:
        lines += ["> **Demonstration only.** "
                  + ("Properties est_age/est_p_male are the judge's *estimates*, not annotations. " if obs.annotate else "")
                  + ("Labels are the classifiers' consensus top-1, not ground truth; conditioning on a model-derived "
                     "label is circular for the models that voted. " if obs.label == "consensus" else "")
                  + "Use a dataset with real property annotations and expression labels for findings.", ""]
    n_img = int(df["image_id"].nunique())
    lines += [f"**{headline}.**", "",
              f"- tests: output ⟂ property | label for properties {', '.join(obs.properties)}; "
              f"label = `{obs.label}`",
              f"- images: {n_img} of {n_records}; {skipped_summary(skipped)}",
              f"- method: {stats.meta.get('ols', '')}; {stats.meta.get('permutation', '')}", "",
              "## Headline", "", markdown_table(stats.headline), "",
              f"## Tests ({primary})", "",
              markdown_table(t.sort_values("p_adj")[["classifier", "output", "property", "n", "estimate", "ci_low",
                                                     "ci_high", "p_raw", "p_adj", "reject"]]), ""]
    write_text(out / "report.md", "\n".join(lines))
    write_html_report(out / "report.md", headline)
    gallery(outputs, cache, f"{experiment}: originals (observational)")
    return headline
