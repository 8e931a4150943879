"""Read editor-tuning searches (`python -m engine -m study=tune_<editor>`): the trials ranked, the best
settings, and the frontier of valid share against effect size, all on the demo set's tuning half.

Every trial folder of a sweep holds `objective.json` (`engine/report/objective.py`): its valid share,
the median of each effect the study must keep, the count of each failure reason, its score and its
command-line overrides. A folder whose overrides set no `editor.` knob is the editor's defaults (run
it with `python -m engine study=tune_<editor> hydra.run.dir=<sweep dir>/defaults`).

The frontier is the trials no other trial beats on both the valid share and the (first) effect: how
many edits can pass every check at each effect size. It is the evidence of what tuning can and cannot
reach with the editor's current mechanisms; settings taken from it as defaults are then measured on
the evaluation half by `scripts/acceptance.py`, never on the faces they were chosen on.

    python scripts/tuning.py SWEEP_DIR [SWEEP_DIR ...] [--top 5] [--write-docs]

With `--write-docs`, one section per sweep between the `tuning` markers of docs/EDITORS.md (never edit
it by hand).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "EDITORS.md"
BEGIN, END = "<!-- tuning:begin -->", "<!-- tuning:end -->"


def trials(sweep: Path) -> pd.DataFrame:
    """One row per trial folder under `sweep`: its objective.json, flattened, with its editor knobs."""
    rows = []
    for path in sorted(sweep.rglob("objective.json")):
        record = json.loads(path.read_text())
        knobs = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in record.get("overrides", []) if o.startswith("editor.")}
        rows.append({"trial": path.parent.name, "defaults": not knobs, "knobs": knobs,
                     "effects": list(record["objective"].get("effects", [])),
                     **{k: v for k, v in record.items() if k not in ("objective", "overrides")}})
    if not rows:
        raise SystemExit(f"{sweep}: no objective.json (is it the folder of a tune_<editor> sweep?)")
    return pd.DataFrame(rows).sort_values(["score", "trial"]).reset_index(drop=True)


def effects(table: pd.DataFrame) -> list:
    """The study's effects (`engine.report.objective.Effect`), from its objective; each trial's median of
    one is in the column `median_<column>`."""
    from engine.report.objective import Effect

    return [Effect.parse(e) for e in table["effects"].iloc[0]]


def frontier(table: pd.DataFrame) -> pd.DataFrame:
    """The trials that no other trial beats on both the valid share and the first effect."""
    first = effects(table)[0]
    column = f"median_{first.column}"
    sign = 1.0 if first.op == ">=" else -1.0  # larger is better after the sign
    effect = sign * table[column].astype(float).to_numpy()
    valid = table["valid_share"].astype(float).to_numpy()
    keep = [i for i in range(len(table))
            if not np.any((valid >= valid[i]) & (effect >= effect[i]) & ((valid > valid[i]) | (effect > effect[i])))]
    return table.iloc[keep].sort_values(column, ascending=first.op == "<=")


def _reasons(row: pd.Series) -> str:
    counts = {k.removeprefix("reason_"): int(v) for k, v in row.items()
              if str(k).startswith("reason_") and pd.notna(v) and v > 0}
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:3]) or "–"


def _row(row: pd.Series, kept: list) -> str:
    medians = [float(row[f"median_{e.column}"]) for e in kept]
    meds = " | ".join(f"{m:+.3g}" for m in medians)
    met = all(e.shortfall(m) == 0 for e, m in zip(kept, medians))
    label = "defaults" if row["defaults"] else row["trial"]
    return f"| {label} | {row['valid_share']:.0%} | {meds} | {'yes' if met else 'no'} | {_reasons(row)} |"


def markdown(name: str, table: pd.DataFrame, top: int) -> str:
    kept = effects(table)
    faces = int(table["faces"].max())
    head = (f"| trial | valid | {' | '.join('median ' + e.column for e in kept)} | "
            f"effects kept | top failure reasons |\n|---|---|{'---|' * len(kept)}---|---|")
    keep = ", ".join(f"`{e.column} {e.op} {e.bound:g}`" for e in kept)
    lines = [f"**{name}** ({len(table)} runs on the tuning half, {faces} faces at strength 1; effects to keep: "
             f"{keep})", ""]
    best = table[table["score"] < 1.0]
    lines.append("Best settings that keep the effects: " + (
        "none found." if best.empty else
        f"`{' '.join(f'{k}={float(v):.3g}' for k, v in best.iloc[0]['knobs'].items())}` "
        f"({best.iloc[0]['valid_share']:.0%} valid)."))
    lines += ["", "Ranked (best first), with the defaults:", "", head]
    shown = pd.concat([table.head(top), table[table["defaults"]]]).drop_duplicates("trial")
    lines += [_row(r, kept) for _, r in shown.iterrows()]
    lines += ["", "Frontier (no trial has both more valid edits and a larger effect):", "", head]
    lines += [_row(r, kept) for _, r in frontier(table).iterrows()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sweeps", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=5, help="trials shown in the ranked table")
    p.add_argument("--write-docs", action="store_true", help="write the sections into docs/EDITORS.md")
    args = p.parse_args(argv)
    sections = []
    for sweep in args.sweeps:
        table = trials(sweep)
        names = sorted(set(table["experiment"].dropna())) if "experiment" in table else []
        sections.append(markdown(f"{sweep.name} ({', '.join(names)})" if names else sweep.name, table, args.top))
    from engine.report.provenance import short_commit

    git = short_commit()
    text = "\n\n".join([f"Generated by `python scripts/tuning.py --write-docs` on {time.strftime('%Y-%m-%d')} "
                         f"(git {git}). `defaults`: the editor's defaults when the sweep ran.",
                         *sections])
    print(text)
    if args.write_docs:
        from engine.report.files import write_between_markers

        write_between_markers(DOCS, BEGIN, END, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
