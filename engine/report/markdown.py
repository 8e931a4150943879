"""report.md: the headline, the tables, the audit summary, the plots and the run's provenance."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.audit.verdicts import reason_labels


def cell(value: Any) -> str:
    """Text safe in a Markdown table cell and in the HTML a viewer renders it to: `|` would split the
    cell (a test family such as `edit:mcnemar|fer|age` added two cells to every row), and labels, ids
    and config strings come from users (`<img src=x onerror=...>` must stay text)."""
    text = html.escape(str(value), quote=False).replace("|", "\\|")
    return " ".join(text.split())  # a newline would end the table row


def markdown_table(df: pd.DataFrame, floatfmt: str = ".3g", max_rows: int = 40) -> str:
    if df is None or df.empty:
        return "_(none)_\n"
    df = df.head(max_rows)
    cols = list(df.columns)

    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else format(float(v), floatfmt)
        return cell(v)

    lines = ["| " + " | ".join(map(cell, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def sham_lpips_line(audit: pd.DataFrame | None) -> list[str]:
    """How far the sham's pipeline moves the photo by itself, where the sham is not the input."""
    if audit is None or "lpips_sham_original" not in audit:
        return []
    per_face = audit.groupby("image_id")["lpips_sham_original"].first().astype(float).dropna()
    if per_face.empty:
        return []
    q1, med, q3 = np.percentile(per_face, [25, 50, 75])
    return [f"LPIPS between sham and original (the pipeline's own change): median {med:.3g} "
            f"(IQR {q1:.3g}–{q3:.3g}, {len(per_face)} faces).", ""]


def audit_summary(audit: pd.DataFrame | None) -> str:
    """Per strength: how many edits passed their manipulation checks, the reasons, and the medians."""
    if audit is None or audit.empty:
        return "_Audit disabled or no edits._\n"
    rows = []
    for s, g in audit.groupby("strength"):
        row: dict[str, Any] = {"strength": s, "n": len(g), "valid": int(g["valid"].astype(bool).sum())}
        if "reasons" in g:
            row["reasons"] = ", ".join(reason_labels(g)) or "-"
        for col in g.columns:
            if col.startswith("delta_") or col in ("blendshape_change", "outside_change"):
                values = g[col].astype(float)
                # A judge that measured no face leaves the column empty: no median, and no warning.
                row[f"median {col}"] = float(values.median()) if values.notna().any() else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows)
    flagged = table[table["valid"] < table["n"]]
    note = ""
    if not flagged.empty:
        note = (f"\n**Flagged:** {int((table['n'] - table['valid']).sum())} edits failed their manipulation "
                "check (see `audit.csv`, `valid=False`); they are kept in the statistics unless "
                "`stats.exclude_invalid_edits=true`.\n")
    return markdown_table(table) + note


def paired_report(outputs: Any, frames: dict[str, pd.DataFrame], headline: str, plot_files: list[str],
                  gallery: Path, provenance: dict[str, Any]) -> str:
    """The paired experiment's report.md."""
    spec, stats = outputs.spec, outputs.stats
    n_used = int(outputs.measurements["image_id"].nunique()) if not outputs.measurements.empty else 0
    ref = stats.meta.get("reference", "sham") if stats is not None else "sham"
    lines = [
        f"# {cell(spec.experiment)}",
        "",
        f"**{headline}.**",
        "",
        f"- editor: `{cell(spec.editor.name)}` changes **{cell(spec.policy.property)}**; strengths "
        f"{', '.join(f'{s:g}' for s in spec.strengths)}",
        f"- reference condition: **{ref}** (same pipeline at strength 0 unless set to `original`)",
        f"- classifiers: {', '.join(f'`{cell(c)}`' for c in spec.classifiers)}",
        f"- {_faces_line(n_used, outputs.n_records, outputs.skipped)}",
        "",
    ]
    tests = frames.get("tests", pd.DataFrame())
    if stats is not None:
        lines += ["## Headline", "", markdown_table(frames.get("headline", pd.DataFrame())), ""]
        primary = stats.meta.get("primary", "wilcoxon")
        if not tests.empty:
            t = tests[tests["test"] == primary].sort_values("p_adj") if "test" in tests else tests
            cols = [c for c in ("classifier", "output", "strength", "n", "median_diff", "median_ci_low",
                                "median_ci_high", "rank_biserial", "cohen_dz", "p_raw", "p_adj", "reject")
                    if c in t.columns]
            scores = frames.get("score_shifts", pd.DataFrame())
            score_sets = set(scores["classifier"]) - {"*"} if scores is not None and "classifier" in scores else set()
            emotion = t[~t["classifier"].isin(score_sets)] if "classifier" in t else t
            lines += [f"## Output shifts ({primary}, edit − {ref})", "", markdown_table(emotion[cols]), ""]
            if score_sets:
                lines += [f"## Score-set shifts ({primary}, edit − {ref}; not emotions, not in the headline)", "",
                          markdown_table(t[t["classifier"].isin(score_sets)][cols], max_rows=30), ""]
        artefact = frames.get("artefact", pd.DataFrame())
        if artefact is not None and not artefact.empty:
            a = artefact[artefact["test"] == primary] if "test" in artefact else artefact
            k_a = int(a["reject"].astype(bool).sum()) if "reject" in a else 0
            lines += ["## Processing artefact (sham − original)", "",
                      f"{k_a} of {len(a)} outputs shift significantly between sham and original "
                      "(a pure-processing effect; it is not counted in the headline).", ""]
            lines += sham_lpips_line(outputs.audit)
        for name, title in (("labels", "Predicted-label shifts"), ("dose_response", "Dose-response"),
                            ("subgroups", "Subgroups (exploratory)"), ("power", "Sample size for 80 % power"),
                            ("excluded", "Edits excluded by the audit"),
                            ("score_shifts", "Score sets (not emotions, not in the headline)")):
            df = frames.get(name)
            if df is not None and not df.empty:
                lines += [f"## {title}", "", markdown_table(df, max_rows=30), ""]
    lines += ["## Edit audit (manipulation checks)", "", audit_summary(outputs.audit), ""]
    if plot_files:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plot_files] + [""]
    rel = gallery.relative_to(gallery.parent.parent)
    lines += ["## Files", "", f"- gallery: [{rel}]({rel})",
              "- `measurements.parquet`, `stats.csv`, `stats.json`, `audit.csv`, `skipped.csv`, `edits.csv`", ""]
    lines += run_section(outputs, provenance)
    return "\n".join(lines)


def run_section(outputs: Any, provenance: dict[str, Any]) -> list[str]:
    """Stage timings, cache counts and the provenance line."""
    lines = ["## Run", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in outputs.timings.items()]
    if outputs.cache:
        lines += ["", "| cache | reused | computed |", "|---|---|---|"]
        lines += [f"| {k} | {v['cached']} | {v['computed']} |" for k, v in outputs.cache.items()]
    git = provenance["git"]
    lines += ["", f"git {git.get('commit') or 'n/a'}{' (dirty)' if git.get('dirty') else ''}; "
              + ", ".join(f"{k} {v}" for k, v in provenance["packages"].items() if v), ""]
    return lines


def _faces_line(n_faces: int, n_records: int, skipped: pd.DataFrame) -> str:
    """How many faces were analysed from how many images (with multi-face analysis they differ), and how
    many were skipped."""
    return f"faces analysed: {n_faces}, from {n_records} images; {skipped_summary(skipped)}"


def skipped_summary(skipped: pd.DataFrame) -> str:
    """The line "N skipped: kind ×n, ...", counted by kind of reason (unreadable, no face, too small, ...)."""
    line = f"{len(skipped)} skipped"
    if len(skipped):
        kinds = skipped["reason"].astype(str).map(reason_kind).value_counts()
        ranked = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
        line += ": " + ", ".join(f"{kind} ×{n}" for kind, n in ranked) + " (see `skipped.csv`)"
    return line


def reason_kind(reason: str) -> str:
    """A skip reason without its particulars (what follows a ':' or '('), so that reasons can be counted."""
    return re.split(r"[:(]", reason, maxsplit=1)[0].strip() or reason
