"""The replication table of a property study: property x classifier, from a multirun's job folders.

`python -m engine -m study=replicate` runs every property experiment against the zoo as one Hydra
multirun (one shared work cache); `ReplicateCallback` then calls `write_replication` on the sweep
folder, which writes `replicate/`:

* `replicate.csv`, one row per property x emotion classifier (score sets such as blendshapes are
  left out, as in the headline):
  - k of n significant emotion-output shifts at the largest strength (the job's own headline,
    corrected per classifier x property), their percentage, and the largest percentage of the
    property, beside the source study's reported maximum (`PUBLISHED_MAX_PERCENT`);
  - the label-flip rate: faces whose top-1 label differs between sham and edit;
  - the Facing-Asymmetry contrast: the change of the activation of the sham's top class (edit - sham)
    per face, its median with a bootstrap interval, the two-sided Wilcoxon p, and the one-sided p in
    the published direction (lower);
* `replicate.md`: the table, and the forest plot `forest.png` of the contrast.

The engine names no property here: properties and classifiers are read from the jobs' measurements.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.experimental.callback import Callback

from engine.report.aggregate import find_jobs
from engine.report.contrasts import edit_of, largest_strength, top_class_deltas, wilcoxon_p
from engine.report.difference import DID_COLUMNS, controls_by_target, did_row, valid_share
from engine.report.files import write_table, write_text
from engine.report.html import write_html_report
from engine.stats.effects import bootstrap_intervals

log = logging.getLogger(__name__)

#: "The Power of Properties" (ICPRAI 2024): up to 91.25 % of output changes significant.
PUBLISHED_MAX_PERCENT = 91.25
COLUMNS = ["experiment", "property", "direction", "classifier", "strength", "faces", "k", "n", "percent", "max_percent_property",
           "published_max_percent", "label_flip_rate", "top_class_delta_median", "top_class_delta_ci_low",
           "top_class_delta_ci_high", "p_two_sided", "p_lower_one_sided", *DID_COLUMNS, "job"]


def job_rows(job: Path, sweep: Path, seed: int = 0, control: Path | None = None) -> list[dict[str, Any]]:
    """The table's rows of one finished job (one property, every emotion classifier); with the job of
    its matched nuisance control, the difference-in-differences columns too."""
    m = pd.read_parquet(job / "measurements.parquet")
    c = pd.read_parquet(control / "measurements.parquet") if control is not None else None
    head_path = job / "stats_headline.csv"
    heads = pd.read_csv(head_path) if head_path.exists() else pd.DataFrame()
    if m.empty or not (m["condition"] == "edit").any():
        return []
    strength = largest_strength(m)
    prop = str(m["property"].iloc[0])
    edit = edit_of(job)
    experiment = str(edit["experiment"])
    direction = str(edit.get("direction") or "–")  # the editor's declared direction
    rows = []
    for clf, group in m.groupby("classifier", sort=True):
        if group["top1"].isna().all():  # a score set (no class labels): not an emotion classifier
            continue
        d = top_class_deltas(m, str(clf), strength)
        head = heads[(heads["scope"] == "classifier") & (heads["classifier"] == clf)] if len(heads) else heads
        k = int(head["k"].iloc[0]) if len(head) else 0
        n = int(head["n"].iloc[0]) if len(head) else 0
        ci = bootstrap_intervals(d["delta"].to_numpy()[None, :], 2000, 0.95, "percentile", seed, ("median",))
        rows.append({
            "experiment": experiment, "property": prop, "direction": direction, "classifier": clf, "strength": strength, "faces": len(d), "k": k, "n": n,
            "percent": 100.0 * k / n if n else float("nan"),
            "published_max_percent": PUBLISHED_MAX_PERCENT,
            "label_flip_rate": float(d["flipped"].mean()) if len(d) else float("nan"),
            "top_class_delta_median": float(d["delta"].median()) if len(d) else float("nan"),
            "top_class_delta_ci_low": float(ci["median_ci_low"][0]),
            "top_class_delta_ci_high": float(ci["median_ci_high"][0]),
            "p_two_sided": wilcoxon_p(d["delta"], "two-sided"),
            "p_lower_one_sided": wilcoxon_p(d["delta"], "less"),
            "job": str(job.relative_to(sweep)),
            **({"control_experiment": edit_of(control)["experiment"], "control_valid_share": valid_share(control),
                **did_row(m, c, str(clf), seed=seed)} if c is not None and (c["classifier"] == clf).any() else {}),
        })
    return rows


def replication_table(sweep: Path, seed: int = 0) -> pd.DataFrame:
    """Every finished job's rows, with the largest percentage per property."""
    jobs = [job for job in find_jobs(sweep) if (job / "measurements.parquet").exists()]
    controls = controls_by_target(jobs)
    rows = []
    for job in jobs:
        edit = edit_of(job)
        if edit.get("control_of") or edit.get("property") == "none":
            continue  # controls enter through the job they control for; a placebo has no property
        rows += job_rows(job, sweep, seed, controls.get((str(edit.get("property")), edit.get("direction"))))
    if not rows:
        raise FileNotFoundError(f"no finished paired jobs (measurements.parquet, stats.json) under {sweep}")
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    table["max_percent_property"] = table.groupby("experiment")["percent"].transform("max")
    return table[COLUMNS].sort_values(["experiment", "classifier"]).reset_index(drop=True)


def forest_plot(table: pd.DataFrame, path: Path) -> None:
    """Median change of the sham's top-class activation with its interval, per experiment x classifier;
    beside it (orange) the same contrast net of the matched nuisance control, where there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{e} · {c}" for e, c in zip(table["experiment"], table["classifier"])]
    y = np.arange(len(table))[::-1].astype(float)
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(table) + 1.4))
    series = (("top_class_delta", "edit − sham", "#1f4e79", 0.0),
              ("top_class_did", "(edit − sham) − (nuisance − sham)", "#d9822b", -0.25))
    for prefix, label, colour, shift in series:
        med = table[f"{prefix}_median"].astype(float)
        low = (med - table[f"{prefix}_ci_low"].astype(float)).clip(lower=0)
        high = (table[f"{prefix}_ci_high"].astype(float) - med).clip(lower=0)
        ax.errorbar(med, y + shift, xerr=[low, high], fmt="o", ms=4, color=colour, ecolor=colour, capsize=2,
                    label=label)
    ax.axvline(0, color="#999", lw=1)
    ax.set_yticks(y, labels)
    ax.set_xlabel("Δ activation of the sham's top class: median, 95 % CI")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "–" if np.isnan(x) else f"{x:.3g}"
    return str(x)


def _did_kn(r: Any) -> str:
    if not isinstance(r.did_n, (int, float)) or np.isnan(r.did_n):
        return "–"
    return f"{int(r.did_k)}/{int(r.did_n)}"


def replication_markdown(table: pd.DataFrame, gallery: bool = False) -> str:
    lines = ["# Replication: property × classifier", "",
             f"k/n: significant emotion-output shifts (Wilcoxon, Holm within classifier × property) at the "
             f"largest strength. The source study reports up to {PUBLISHED_MAX_PERCENT} % "
             "(\"The Power of Properties\", ICPRAI 2024); \"Facing Asymmetry\" (ACCV 2024) reports that every "
             "classifier lowers its activations when symmetry is reduced: Δ top class is that contrast, "
             "with the one-sided p in the published direction (lower) beside the two-sided p.", "",
             "DiD: (property edit − sham) − (matched nuisance edit − sham), per face; k/n of outputs whose DiD is "
             "significant (Wilcoxon, Holm within classifier), and the top-class contrast's DiD. A property effect "
             "is claimed only where it exceeds the matched nuisance effect. \"control valid\": the nuisance "
             "edits' own audit (no property moved).", "",
             "| experiment | property | classifier | faces | k/n | % | max % (experiment) | label flips | "
             "Δ top class [95 % CI] | p (two-sided) | p (lower) | control valid | DiD k/n | DiD top class "
             "[95 % CI] | DiD p (lower) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(
            f"| {r.experiment} | {r.property} ({r.direction}) | {r.classifier} | {r.faces} | {r.k}/{r.n} | {_fmt(r.percent)} | "
            f"{_fmt(r.max_percent_property)} | {_fmt(r.label_flip_rate)} | {_fmt(r.top_class_delta_median)} "
            f"[{_fmt(r.top_class_delta_ci_low)}, {_fmt(r.top_class_delta_ci_high)}] | {_fmt(r.p_two_sided)} | "
            f"{_fmt(r.p_lower_one_sided)} | {_fmt(r.control_valid_share)} | {_did_kn(r)} | "
            f"{_fmt(r.top_class_did_median)} [{_fmt(r.top_class_did_ci_low)}, {_fmt(r.top_class_did_ci_high)}] | "
            f"{_fmt(r.did_p_lower_one_sided)} |")
    lines += ["", "![forest plot](forest.png)", ""]
    if gallery:
        lines += ["Every face, sham and edit, filterable: [gallery.html](gallery.html)", ""]
    return "\n".join(lines)


def write_replication(sweep: Path, seed: int = 0) -> pd.DataFrame:
    """Write `replicate/` (csv, md, forest plot) into the sweep folder; returns the table."""
    table = replication_table(sweep, seed)
    out = sweep / "replicate"
    out.mkdir(parents=True, exist_ok=True)
    write_table(table, out / "replicate.csv")
    forest_plot(table, out / "forest.png")
    from engine.report.study_gallery import study_faces, study_gallery_page

    faces = study_faces([job for job in find_jobs(sweep) if (job / "measurements.parquet").exists()])
    if faces["faces"]:
        write_text(out / "gallery.html", study_gallery_page(faces))
    write_text(out / "replicate.md", replication_markdown(table, bool(faces["faces"])))
    write_html_report(out / "replicate.md", "Replication: property × classifier")
    log.info("replication table: %d rows -> %s", len(table), out)
    return table


class ReplicateCallback(Callback):
    """Hydra callback: after the study's multirun, write its replication table into the sweep folder."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:  # noqa: ARG002 - Hydra's signature
        sweep = Path(str(config.hydra.sweep.dir))
        try:
            table = write_replication(sweep, int(config.get("seed", 0)))
        except FileNotFoundError as exc:
            log.error("replication table not written: %s", exc)
            return
        print(replication_markdown(table).split("![forest plot]")[0])
        print(f"replication: {sweep / 'replicate' / 'replicate.md'}")
