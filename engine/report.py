"""Run outputs: tables, stamped JSON, report.md and the self-contained HTML gallery."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

STAMPED_PACKAGES = ("facecf", "torch", "torchvision", "numpy", "scipy", "statsmodels", "pandas", "mediapipe",
                    "hydra-core", "omegaconf", "diffusers", "transformers", "onnxruntime", "pillow")


@dataclass
class ReportConfig:
    """What the report contains.

    Args:
        gallery_max_images: faces shown in the gallery (the first ones of the dataset that had a face).
        thumb_size: gallery thumbnail side in pixels (images are inlined, so this sets the file size).
        top_k: predictions listed per classifier under each thumbnail.
        plots: write forest, heatmap and dose-response plots.
    """

    gallery_max_images: int = 24
    thumb_size: int = 192
    top_k: int = 3
    plots: bool = True

    def __post_init__(self) -> None:
        if self.gallery_max_images < 0:
            raise ValueError(f"report.gallery_max_images must be >= 0, got {self.gallery_max_images}")
        if not 32 <= self.thumb_size <= 1024:
            raise ValueError(f"report.thumb_size must be in [32, 1024], got {self.thumb_size}")
        if self.top_k < 1:
            raise ValueError(f"report.top_k must be >= 1, got {self.top_k}")


def git_revision() -> dict[str, Any]:
    """The engine's git commit and whether the tree had local changes (None outside a checkout)."""
    here = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        if rev.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for p in STAMPED_PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def stamp(config: dict[str, Any], runner: dict[str, Any]) -> dict[str, Any]:
    """Provenance attached to every JSON output."""
    return {
        "config": config,
        "git": git_revision(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "runner": runner,
    }


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_jsonable, allow_nan=True))


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (pd.Timestamp, Path)):
        return str(o)
    return str(o)


# -- report.md --------------------------------------------------------------------------------------
def markdown_table(df: pd.DataFrame, floatfmt: str = ".3g", max_rows: int = 40) -> str:
    if df is None or df.empty:
        return "_(none)_\n"
    df = df.head(max_rows)
    cols = list(df.columns)

    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else format(float(v), floatfmt)
        return str(v)

    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def headline_numbers(stats: Any) -> tuple[int, int]:
    """k significant of n output shifts: the "overall" row of the analysis's own headline table."""
    head = stats.headline if stats is not None else None
    if head is None or head.empty:
        return 0, 0
    overall = head[head["scope"] == "overall"].iloc[0]
    return int(overall["k"]), int(overall["n"])


def write_outputs(
    *,
    out: Path,
    cfg: dict[str, Any],
    experiment: str,
    editor: Any,
    editor_name: str,
    strengths: list[float],
    classifiers: dict[str, Any],
    runner: Any,
    result: Any,
    measurements: pd.DataFrame,
    stats: Any,
    audit: pd.DataFrame,
    report_cfg: ReportConfig,
    timings: dict[str, float],
    n_records: int,
) -> str:
    """Write every output file of a run and return the headline sentence."""
    from engine.gallery import write_gallery

    provenance = stamp(cfg, runner.describe())
    measurements.to_parquet(out / "measurements.parquet", index=False)
    result.skipped.to_csv(out / "skipped.csv", index=False)
    if not result.edit_metadata.empty:
        result.edit_metadata.to_csv(out / "edits.csv", index=False)
    if audit is not None and not audit.empty:
        audit.to_csv(out / "audit.csv", index=False)

    frames: dict[str, pd.DataFrame] = stats.to_frames() if stats is not None else {}
    tests = frames.get("tests", pd.DataFrame())
    alpha = stats.meta.get("alpha", 0.05) if stats is not None else 0.05
    k, n = headline_numbers(stats)
    pct = 100.0 * k / n if n else float("nan")
    headline = (f"{k} of {n} output shifts significant ({pct:.1f} %) at alpha={alpha:g}, "
                f"{stats.meta.get('correction', '?')}-corrected within each "
                f"{stats.meta.get('family', '?')} family" if stats is not None else "no images with a face: no tests")
    if not tests.empty:
        tests.to_csv(out / "stats.csv", index=False)
    for name, df in frames.items():
        if name != "tests" and df is not None and not df.empty:
            df.to_csv(out / f"stats_{name}.csv", index=False)
    stats_json = {"headline": headline, "k": k, "n": n, "percent": pct, "stamp": provenance}
    if stats is not None:
        stats_json["stats"] = json.loads(stats.to_json())
    write_json(out / "stats.json", stats_json)

    plot_files: list[str] = []
    if report_cfg.plots and stats is not None and not tests.empty:
        plot_files = _plots(out, frames, measurements)
    gallery = write_gallery(out, result.chunks_for_report, classifiers, report_cfg,
                            f"{experiment}: {editor_name} ({editor.property})", audit)

    md = _markdown(experiment, editor, editor_name, strengths, classifiers, result, measurements, stats, frames,
                   audit, headline, plot_files, gallery, timings, provenance, n_records)
    (out / "report.md").write_text(md)
    return headline


def _plots(out: Path, frames: dict[str, pd.DataFrame], measurements: pd.DataFrame) -> list[str]:
    try:
        from engine import plots
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


def _markdown(experiment, editor, editor_name, strengths, classifiers, result, measurements, stats, frames, audit,
              headline, plot_files, gallery, timings, provenance, n_records) -> str:
    n_used = int(measurements["image_id"].nunique()) if not measurements.empty else 0
    ref = stats.meta.get("reference", "sham") if stats is not None else "sham"
    lines = [
        f"# {experiment}",
        "",
        f"**{headline}.**",
        "",
        f"- editor: `{editor_name}` changes **{editor.property}**; strengths {', '.join(f'{s:g}' for s in strengths)}",
        f"- reference condition: **{ref}** (same pipeline at strength 0 unless set to `original`)",
        f"- classifiers: {', '.join(f'`{c}`' for c in classifiers)}",
        f"- images: {n_used} analysed of {n_records}; {len(result.skipped)} skipped (see `skipped.csv`)",
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
            lines += [f"## Output shifts ({primary}, edit − {ref})", "", markdown_table(t[cols]), ""]
        artefact = frames.get("artefact", pd.DataFrame())
        if artefact is not None and not artefact.empty:
            a = artefact[artefact["test"] == primary] if "test" in artefact else artefact
            k_a = int(a["reject"].astype(bool).sum()) if "reject" in a else 0
            lines += ["## Processing artefact (sham − original)", "",
                      f"{k_a} of {len(a)} outputs shift significantly between sham and original "
                      "(a pure-processing effect; it is not counted in the headline).", ""]
        for name, title in (("labels", "Predicted-label shifts"), ("dose_response", "Dose-response"),
                            ("subgroups", "Subgroups (exploratory)"), ("power", "Sample size for 80 % power"),
                            ("excluded", "Edits excluded by the audit")):
            df = frames.get(name)
            if df is not None and not df.empty:
                lines += [f"## {title}", "", markdown_table(df, max_rows=30), ""]
    lines += ["## Edit audit (manipulation checks)", "", audit_summary(audit), ""]
    if plot_files:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plot_files] + [""]
    lines += ["## Files", "", f"- gallery: [{gallery.relative_to(gallery.parent.parent)}]"
              f"({gallery.relative_to(gallery.parent.parent)})",
              "- `measurements.parquet`, `stats.csv`, `stats.json`, `audit.csv`, `skipped.csv`, `edits.csv`", ""]
    lines += ["## Run", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in timings.items()]
    cache = result.cache_summary
    if cache:
        lines += ["", "| cache | reused | computed |", "|---|---|---|"]
        lines += [f"| {k} | {v['cached']} | {v['computed']} |" for k, v in cache.items()]
    git = provenance["git"]
    lines += ["", f"git {git.get('commit') or 'n/a'}{' (dirty)' if git.get('dirty') else ''}; "
              + ", ".join(f"{k} {v}" for k, v in provenance["packages"].items() if v), ""]
    return "\n".join(lines)


def audit_summary(audit: pd.DataFrame | None) -> str:
    """Per strength: how many edits passed their manipulation checks, the reasons, and the medians."""
    if audit is None or audit.empty:
        return "_Audit disabled or no edits._\n"
    rows = []
    for s, g in audit.groupby("strength"):
        row: dict[str, Any] = {"strength": s, "n": len(g), "valid": int(g["valid"].astype(bool).sum())}
        if "reasons" in g:
            reasons = g["reasons"].fillna("").str.split(";").explode()
            reasons = reasons[reasons != ""]
            row["reasons"] = ", ".join(f"{r} ×{c}" for r, c in reasons.value_counts().items()) or "-"
        for col in g.columns:
            if col.startswith("delta_") or col in ("blendshape_change", "outside_change"):
                row[f"median {col}"] = float(np.nanmedian(g[col].astype(float)))
        rows.append(row)
    table = pd.DataFrame(rows)
    flagged = table[table["valid"] < table["n"]]
    note = ""
    if not flagged.empty:
        note = (f"\n**Flagged:** {int((table['n'] - table['valid']).sum())} edits failed their manipulation "
                "check (see `audit.csv`, `valid=False`); they are kept in the statistics unless "
                "`stats.exclude_invalid_edits=true`.\n")
    return markdown_table(table) + note
