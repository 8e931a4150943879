"""Acceptance of the editors: does each edit change its property, and only that, on faces it was not tuned on?

Runs every study at strength 1 through the engine itself (`engine.app.run`, the audit as configured,
calibrated thresholds by default) on one half of the demo set, then reads each run's `audit.csv`:

* per study and kind of face (`lfw`: the blurry LFW faces; `sharp`: the portraits and the faces of the
  sharp photos): analysed faces, the valid share and the median of the study's target measure (each
  with a 95 % interval), and the most frequent failure reasons;
* the targets of issue 10 (`TARGETS`), each a named check with its bound.

Writes `<out>/acceptance.csv` (one row per study and group) and `<out>/audits/<study>.csv`; with
`--write-docs`, the table between the `acceptance` markers of docs/EDITORS.md (never edit it by hand),
or with `--section NAME` too, between the `acceptance:NAME` markers (a study of settings that are not
the defaults, named in the table's header); with `--check`, exits 1 naming every missed target.

    python scripts/acceptance.py [--split evaluation] [--studies age gender_female ...]
        [--out outputs/acceptance] [--write-docs [--section NAME]] [--check] [hydra overrides ...]

Gender is judged per direction on the faces that direction is meant for: toward female on faces the
judge reads as male at the sham (p(male) >= 0.5), toward male on the others. The judge only selects
which faces a direction is scored on; it never feeds the editor.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "EDITORS.md"
BEGIN, END = "<!-- acceptance:begin -->", "<!-- acceptance:end -->"


@dataclass(frozen=True)
class Study:
    """One acceptance run: an experiment with overrides, and how its target is read from the audit."""

    experiment: str
    overrides: tuple[str, ...]
    measure: str | None  # the audit column (or derived column) whose median is the effect
    label: str  # what the effect is, for the table
    faces: str = "all"  # "all", or "male_at_sham" / "female_at_sham" (gender directions)


STUDIES: dict[str, Study] = {
    "age": Study("age_shift", (), "delta_est_age", "median Δ judged age (y)"),
    "gender_female": Study("gender_swap", ("editor.target=female",), "delta_p_target",
                           "median Δp(female), faces judged male", "male_at_sham"),
    "gender_male": Study("gender_swap", ("editor.target=male",), "delta_p_target",
                         "median Δp(male), faces judged female", "female_at_sham"),
    "symmetry": Study("symmetry", (), "delta_image_asymmetry_rel", "median rel. Δ image asymmetry"),
    "asymmetry": Study("asymmetry", (), "delta_symmetry_index_rel", "median rel. Δ symmetry index"),
    "semg": Study("semg", (), None, "every site on skin the camera sees drawn"),
}

#: Targets at strength 1 (issue 10, section 2): study -> [(check, column, op, bound)]; every group.
MIN_VALID = 0.85
TARGETS: dict[str, list[tuple[str, str, str, float]]] = {
    "age": [("age +8 y", "median_effect", ">=", 8.0)],
    "gender_female": [("Δp(female) 0.25", "median_effect", ">=", 0.25)],
    "gender_male": [("Δp(male) 0.25", "median_effect", ">=", 0.25)],
    "symmetry": [("asymmetry -50 %", "median_effect", "<=", -0.5)],
    "asymmetry": [("index +50 %", "median_effect", ">=", 0.5),
                  ("mouth corner drop 3 % IOD", "median_mouth_corner_drop", ">=", 0.03)],
    "semg": [],
}

#: Medians reported beside the effect where the audit has them: the asymmetry edit's mouth corner, and
#: the pixel asymmetry of the face's detail alone (how much of a symmetry edit's effect is the light).
SECONDARY = {"mouth_corner_drop": "median_mouth_corner_drop",
             "delta_image_asymmetry_detail_rel": "median_detail_asymmetry"}

#: Level of the intervals in the table: Wilson for the valid share, order statistics for the median.
#: With 10 sharp faces a group's valid share is known to about ±25 points, so read differences between
#: settings against them (and `scripts/compare_acceptance.py` for a paired test).
CI_LEVEL = 0.95

#: Common overrides: strength 1 only, no classifier work beyond the cheapest, no plots or gallery.
BASE_OVERRIDES = ("strength=1.0", "classifier=dummy", "report.plots=false", "report.gallery_max_images=0",
                  "runner.progress=off", "audit.enabled=true")


def group_of(image_id: str) -> str:
    return "lfw" if image_id.startswith("lfw_") else "sharp"


def run_study(name: str, split: str, out: Path, extra: list[str],
              strengths: tuple[float, ...] = (1.0,)) -> pd.DataFrame:
    """Run one study through the engine and return its audit rows at `strengths` (a float column)."""
    from engine.app import run
    from engine.config import compose_config

    study = STUDIES[name]
    dose = [] if strengths == (1.0,) else [f"strengths=[{','.join(f'{s:g}' for s in strengths)}]"]
    overrides = [f"experiment={study.experiment}", f"dataset.split={split}", *BASE_OVERRIDES, *dose,
                 *study.overrides, *extra]
    cfg = compose_config(overrides)
    run_dir = out / "runs" / name
    if run_dir.exists():  # a fresh run each time: acceptance figures must not replay stale verdicts
        import shutil

        shutil.rmtree(run_dir)
    run(cfg, out=run_dir)
    audit = pd.read_csv(run_dir / "audit.csv")
    audit["strength"] = audit["strength"].astype(float)
    audit = audit[audit["strength"].isin(strengths)].copy()
    audit["study"] = name
    audit["group"] = audit["image_id"].astype(str).map(group_of)
    if study.measure == "delta_p_target":
        sign = -1.0 if "female" in name else 1.0
        audit["delta_p_target"] = sign * audit["delta_est_p_male"].astype(float)
    return audit


def scored_faces(name: str, audit: pd.DataFrame) -> pd.DataFrame:
    """The faces a study is judged on: all, or for a gender direction the faces it is meant for."""
    study = STUDIES[name]
    if study.faces == "all" or "est_p_male_ref" not in audit:
        return audit
    male = audit["est_p_male_ref"].astype(float) >= 0.5
    return audit[male] if study.faces == "male_at_sham" else audit[~male]


def summarise(name: str, audit: pd.DataFrame) -> list[dict]:
    """Rows of the acceptance table: one per group (lfw, sharp, all)."""
    from statsmodels.stats.proportion import proportion_confint

    from engine.audit.verdicts import reason_labels
    from engine.stats.effects import median_interval

    study = STUDIES[name]
    rows = []
    for group, part in [*audit.groupby("group", sort=True), ("all", audit)]:
        scored = scored_faces(name, part)
        # A direction of the gender edit is judged on the faces it is meant for, valid share included.
        judged = scored if study.faces != "all" else part
        valid = int(judged["valid"].astype(bool).sum())
        effect = (scored[study.measure].astype(float).to_numpy() if study.measure and study.measure in scored
                  else np.array([]))
        valid_low, valid_high = (proportion_confint(valid, len(judged), alpha=1 - CI_LEVEL, method="wilson")
                                 if len(judged) else (float("nan"), float("nan")))
        median_low, median_high = median_interval(effect, CI_LEVEL)
        row = {
            "study": name, "group": group, "faces": len(judged),
            "valid": valid,
            "valid_share": valid / len(judged) if len(judged) else float("nan"),
            # Clipped: Wilson's bounds of 0 or n of n come out a rounding error beyond [0, 1].
            "valid_low": min(max(float(valid_low), 0.0), 1.0), "valid_high": min(max(float(valid_high), 0.0), 1.0),
            "scored_faces": len(scored),
            "median_effect": float(np.nanmedian(effect)) if np.isfinite(effect).any() else float("nan"),
            "median_low": median_low, "median_high": median_high,
            "top_reasons": ", ".join(reason_labels(judged, sep=" ")[:3]),
        }
        for column, key in SECONDARY.items():
            if column in part:
                row[key] = float(np.nanmedian(part[column].astype(float)))
        rows.append(row)
    return rows


def misses(table: pd.DataFrame) -> list[str]:
    """Every target the table misses, as one line each."""
    out = []
    for _, row in table[table["group"] != "all"].iterrows():
        checks = [("valid share 85 %", "valid_share", ">=", MIN_VALID), *TARGETS[row["study"]]]
        for check, column, op, bound in checks:
            value = row.get(column, float("nan"))
            if row["scored_faces"] == 0:
                continue  # no face of this group is meant for this direction
            ok = value >= bound if op == ">=" else value <= bound
            if not (isinstance(value, float) and np.isfinite(value)) or not ok:
                out.append(f"{row['study']} / {row['group']}: {check} missed ({column}={value:.3g}, needs {op} {bound}"
                           f"{_interval_verdict(row, column, op, bound)})")
    return out


#: Where a checked column's 95 % interval is in the table.
INTERVALS = {"valid_share": ("valid_low", "valid_high"), "median_effect": ("median_low", "median_high")}


def _interval_verdict(row: pd.Series, column: str, op: str, bound: float) -> str:
    """", 95 % interval [lo, hi]: clearly missed" when the whole interval misses the bound, else "could be met"."""
    low_col, high_col = INTERVALS.get(column, (None, None))
    low, high = row.get(low_col, np.nan), row.get(high_col, np.nan)
    if not (np.isfinite(low) and np.isfinite(high)):
        return ""
    clear = high < bound if op == ">=" else low > bound
    return f"; {CI_LEVEL:.0%} interval [{low:.3g}, {high:.3g}]: {'clearly missed' if clear else 'could be met'}"


def effect_cell(r: pd.Series) -> str:
    """A row's median effect with its interval, as the tables print it ("–" where there is none)."""
    effect = "–" if not np.isfinite(r["median_effect"]) else f"{r['median_effect']:+.3g}"
    if np.isfinite(r.get("median_low", np.nan)):
        effect += f" [{r['median_low']:+.3g}, {r['median_high']:+.3g}]"
    return effect


def share_cell(r: pd.Series) -> str:
    """A row's valid share, count and Wilson interval, as the tables print it."""
    share = f"{r['valid_share']:.0%} ({r['valid']})"
    if np.isfinite(r.get("valid_low", np.nan)):
        share += f" [{r['valid_low']:.0%}–{r['valid_high']:.0%}]"
    return share


def markdown(table: pd.DataFrame, provenance: dict) -> str:
    command = "python scripts/acceptance.py --write-docs"
    if provenance.get("section"):
        studies = " ".join(provenance["studies"])
        command += (f" --section {provenance['section']} --split {provenance['split']} --studies {studies} "
                    + " ".join(provenance["overrides"])).rstrip()
    lines = [f"Generated by `{command}` on {provenance['made']} "
             f"(git {provenance['git']}, demo `{provenance['split']}` half, thresholds "
             f"`{provenance['thresholds']}`). Strength 1 against the sham. Brackets: "
             f"{CI_LEVEL:.0%} confidence intervals (Wilson; order statistics for the median).",
             "",
             "| study | group | faces | valid | median effect | effect | top failure reasons |",
             "|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        effect, share = effect_cell(r), share_cell(r)
        extra = ""
        if np.isfinite(r.get("median_mouth_corner_drop", np.nan)):
            extra += f"; mouth corner drop {r['median_mouth_corner_drop']:.3f} IOD"
        if np.isfinite(r.get("median_detail_asymmetry", np.nan)):
            extra += f"; detail asymmetry (lighting out) {r['median_detail_asymmetry']:+.3g}"
        label = STUDIES[r["study"]].label + extra
        lines.append(f"| {r['study']} | {r['group']} | {r['faces']} | {share} | "
                     f"{effect} (n={r['scored_faces']}) | {label} | {r['top_reasons'] or '–'} |")
    return "\n".join(lines)


def write_docs(text: str, path: Path = DOCS, section: str | None = None, kind: str = "acceptance") -> None:
    """`text` between the `<kind>:<section>` markers of `path` (the `<kind>` markers without a section)."""
    from engine.report.files import write_between_markers

    name = f"{kind}:{section}" if section else kind
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    try:
        write_between_markers(path, begin, end, text)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def add_study_options(p: argparse.ArgumentParser, out: Path) -> None:
    """The options every script that runs the studies shares: the half, the studies, the output folder
    and `--write-docs` (each script's own markers in docs/EDITORS.md)."""
    p.add_argument("--split", default="evaluation", choices=("tuning", "evaluation", "all"))
    p.add_argument("--studies", nargs="+", default=list(STUDIES), metavar="STUDY",
                   help=f"any of {', '.join(STUDIES)}")
    p.add_argument("--out", type=Path, default=out)
    p.add_argument("--write-docs", action="store_true", help="write the table into docs/EDITORS.md")


def split_studies(p: argparse.ArgumentParser, values: list[str]) -> tuple[list[str], list[str]]:
    """`--studies` values as (study names, Hydra overrides that followed them); an unknown name is a usage error."""
    studies = [v for v in values if "=" not in v]
    unknown = [v for v in studies if v not in STUDIES]
    if unknown or not studies:
        p.error(f"--studies {' '.join(unknown)}: choose from {', '.join(STUDIES)}")
    return studies, [v for v in values if "=" in v]


def audit_thresholds(overrides: list[str]) -> Any:
    """The audit thresholds every study is judged by (editor overrides belong to one study's editor only)."""
    from engine.config import compose_config

    shared = [e for e in overrides if not e.lstrip("+").startswith("editor.")]
    return compose_config(["experiment=age_shift", *shared]).audit.thresholds


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The options and the Hydra overrides, which may also follow `--studies` (as the tables' headers
    print them: `--studies age editor.growth=0.06`)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_study_options(p, Path("outputs") / "acceptance")
    p.add_argument("--section", help="with --write-docs: write between the acceptance:SECTION markers")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args, extra = p.parse_known_args(argv)
    args.studies, overrides = split_studies(p, args.studies)
    if args.section and not args.write_docs:
        p.error("--section needs --write-docs")
    return args, [*extra, *overrides]


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    t0 = time.perf_counter()
    audits, rows = [], []
    (args.out / "audits").mkdir(parents=True, exist_ok=True)
    for name in args.studies:
        audit = run_study(name, args.split, args.out, extra)
        audit.to_csv(args.out / "audits" / f"{name}.csv", index=False)
        audits.append(audit)
        rows += summarise(name, audit)
        print(f"{name}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "acceptance.csv", index=False)
    from engine.report.provenance import short_commit

    git = short_commit()
    thresholds = audit_thresholds(extra)
    provenance = {"made": time.strftime("%Y-%m-%d"), "git": git, "split": args.split,
                  "thresholds": (thresholds.get("provenance") or {}).get("by", "default (pre-registered)")
                  if thresholds.get("provenance") else "default", "overrides": extra,
                  "section": args.section, "studies": args.studies}
    (args.out / "provenance.json").write_text(json.dumps(provenance, indent=2))
    text = markdown(table, provenance)
    print(text)
    if args.write_docs:
        write_docs(text, section=args.section)
    missed = misses(table)
    for line in missed:
        print("MISSED", line)
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
