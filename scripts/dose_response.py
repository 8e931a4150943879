"""How the share of valid edits trades against the effect, strength by strength: each editor's frontier.

Issue 10 asks for both at strength 1: at least 85 % of the edits valid and an effect of a given size
(`acceptance.TARGETS`). This script runs every study at several strengths through the engine (one run
per study with `strengths=[...]`, the audit as configured, the same faces and overrides as
`scripts/acceptance.py`) and tabulates, per strength: the valid share, the median effect (each with its
95 % interval), the median expression change read by the audit, and the failure reasons. The audit
scales each edit's target threshold by its strength, so a weak edit is valid when it moves its property
by its share of the full-strength change.

Below the table, per study, the frontier in one line: the strengths at which the valid share reaches
85 %, those at which the median effect reaches its target, and those that do both. Where no strength
does both, no setting of the strength alone can meet the issue's targets; the tuning has to move the frontier, not a point on
it. `--plot` draws it (valid share against the effect as a share of its target, the target's corner
shaded).

Writes `<out>/dose_response.csv` and `<out>/audits/<study>.csv`; with `--write-docs`, the table between
the `dose-response` markers of docs/EDITORS.md (never edit it by hand).

    python scripts/dose_response.py [--split evaluation] [--strengths 0.25 0.5 0.75 1]
        [--studies age ...] [--out outputs/dose_response] [--write-docs] [--plot PNG] [hydra overrides ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import acceptance  # noqa: E402 - the studies, their measures and targets

DEFAULT_STRENGTHS = (0.25, 0.5, 0.75, 1.0)


def effect_target(name: str) -> tuple[str, float] | None:
    """The study's target on its median effect (`acceptance.TARGETS`): (op, bound), or None (sEMG)."""
    for _check, column, op, bound in acceptance.TARGETS[name]:
        if column == "median_effect":
            return op, bound
    return None


def summarise(name: str, audit: pd.DataFrame) -> list[dict]:
    """Rows per strength (all faces of the study; its acceptance groups stay in `scripts/acceptance.py`)."""
    rows = []
    for strength, part in audit.groupby("strength", sort=True):
        row = next(r for r in acceptance.summarise(name, part) if r["group"] == "all")
        judged = acceptance.scored_faces(name, part)
        change = judged["blendshape_change"].astype(float) if "blendshape_change" in judged else pd.Series([], dtype=float)
        # An occluding edit's expression is read but not checked (its policy): say so beside the reading.
        unchecked = "checks_not_applied" in judged and judged["checks_not_applied"].fillna("").astype(str).str.contains(
            "expression").all()
        row.update(strength=float(strength), expression_checked=not unchecked,
                   median_expression_change=float(np.nanmedian(change)) if change.notna().any() else float("nan"))
        rows.append(row)
    return rows


def _reaches(value: float, op: str, bound: float) -> bool:
    return bool(np.isfinite(value) and (value >= bound if op == ">=" else value <= bound))


def frontier(table: pd.DataFrame, name: str) -> dict:
    """The strengths at which the study's valid share, its effect target, and both are met."""
    part = table[table["study"] == name].sort_values("strength")
    target = effect_target(name)
    valid = part["valid_share"] >= acceptance.MIN_VALID
    effect = pd.Series([_reaches(v, *target) if target else True for v in part["median_effect"]], index=part.index)
    return {
        "valid": [float(s) for s in part.loc[valid, "strength"]],
        "effect": [float(s) for s in part.loc[effect, "strength"]],
        "both": [float(s) for s in part.loc[valid & effect, "strength"]],
        "best_valid": part.loc[part["valid_share"].idxmax()] if len(part) else None,
    }


def _strengths(values: list[float]) -> str:
    return ", ".join(f"{s:g}" for s in values)


def frontier_line(table: pd.DataFrame, name: str) -> str:
    """One sentence per study: the frontier, in the table's own numbers."""
    f = frontier(table, name)
    part = table[table["study"] == name].set_index("strength")
    target = effect_target(name)
    if f["valid"]:
        strongest = max(f["valid"])
        effect = part.loc[strongest, "median_effect"]
        valid = f"valid share ≥ 85 % at strength {_strengths(f['valid'])}" + (
            f" (effect {effect:+.3g} at {strongest:g})" if np.isfinite(effect) else "")
    else:
        best = f["best_valid"]
        valid = (f"valid share below 85 % at every strength (best {best['valid_share']:.0%} at "
                 f"{best['strength']:g})")
    if target is None:
        reach = "no effect target"
    elif f["effect"]:
        weakest = min(f["effect"])
        reach = (f"effect target ({target[0]} {target[1]:g}) met at strength {_strengths(f['effect'])} "
                 f"({part.loc[weakest, 'valid_share']:.0%} valid at {weakest:g})")
    else:
        reach = f"effect target ({target[0]} {target[1]:g}) met at no strength"
    verdict = f"both at {_strengths(f['both'])}" if f["both"] else "never both"
    return f"- **{name}**: {valid}; {reach}; {verdict}."


def markdown(table: pd.DataFrame, provenance: dict) -> str:
    command = (f"python scripts/dose_response.py --write-docs --split {provenance['split']} --strengths "
               + " ".join(f"{s:g}" for s in provenance["strengths"])
               + " " + " ".join(provenance["overrides"])).rstrip()
    lines = [f"Generated by `{command}` on {provenance['made']} (git {provenance['git']}, demo "
             f"`{provenance['split']}` half, all faces of each study; gender directions on the faces they are "
             f"meant for). Against the sham; each edit's target threshold is scaled by its strength. "
             f"Brackets: {acceptance.CI_LEVEL:.0%} confidence intervals. Expression: median mean |Δ| of the "
             f"52 blendshapes (the audit's threshold {provenance['expression_threshold']:g}).",
             "",
             "| study | strength | faces | valid | median effect | expression | top failure reasons |",
             "|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        effect, share = acceptance.effect_cell(r), acceptance.share_cell(r)
        expression = "–" if not np.isfinite(r["median_expression_change"]) else f"{r['median_expression_change']:.3f}"
        if not r.get("expression_checked", True):
            expression += " (not checked)"
        lines.append(f"| {r['study']} | {r['strength']:g} | {r['faces']} | {share} | {effect} | {expression} | "
                     f"{r['top_reasons'] or '–'} |")
    lines += ["", *(frontier_line(table, name) for name in dict.fromkeys(table["study"]))]
    return "\n".join(lines)


def plot(table: pd.DataFrame, path: Path) -> None:
    """Valid share against the median effect as a share of its target, one line per study."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=120)
    ax.axhspan(acceptance.MIN_VALID, 1.02, xmin=0, xmax=1, color="0.93", zorder=0)
    top = 1.2
    for name in dict.fromkeys(table["study"]):
        target = effect_target(name)
        if target is None:
            continue
        part = table[table["study"] == name].sort_values("strength")
        x = part["median_effect"].to_numpy(float) / target[1]  # both ops: 1 is the target
        top = max(top, float(np.nanmax(x)) + 0.1)
        ax.plot(x, part["valid_share"], marker="o", label=name)
        for xi, yi, s in zip(x, part["valid_share"], part["strength"]):
            ax.annotate(f"{s:g}", (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.axvline(1.0, color="0.5", lw=0.8, ls="--")
    ax.fill_between([1.0, top], acceptance.MIN_VALID, 1.02, color="tab:green", alpha=0.35, lw=0,
                    label="both targets")
    ax.set(xlim=(min(0.0, ax.get_xlim()[0]), top), ylim=(0, 1.02),
           xlabel="median effect / its target (1 = the target)", ylabel="share of edits valid",
           title="Valid share against effect, by strength (labels)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    acceptance.add_study_options(p, Path("outputs") / "dose_response")
    p.add_argument("--strengths", nargs="+", default=[f"{s:g}" for s in DEFAULT_STRENGTHS], metavar="S",
                   help="strengths in (0, 1]")
    p.add_argument("--plot", type=Path, help="draw the frontier into this PNG")
    args, extra = p.parse_known_args(argv)
    # Overrides may follow either list, as the generated header prints them after the strengths.
    args.studies, after_studies = acceptance.split_studies(p, args.studies)
    overrides = [v for v in args.strengths if "=" in v] + after_studies
    try:
        args.strengths = sorted({float(v) for v in args.strengths if "=" not in v})
    except ValueError as exc:
        p.error(f"--strengths: {exc}")
    if not args.strengths or any(not 0 < s <= 1 for s in args.strengths):
        p.error("--strengths: each in (0, 1]")
    return args, [*extra, *overrides]


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    t0 = time.perf_counter()
    rows = []
    (args.out / "audits").mkdir(parents=True, exist_ok=True)
    for name in args.studies:
        audit = acceptance.run_study(name, args.split, args.out, extra, tuple(args.strengths))
        audit.to_csv(args.out / "audits" / f"{name}.csv", index=False)
        rows += summarise(name, audit)
        print(f"{name}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "dose_response.csv", index=False)
    from engine.report.provenance import short_commit

    thresholds = acceptance.audit_thresholds(extra)
    provenance = {"made": time.strftime("%Y-%m-%d"), "git": short_commit(),
                  "split": args.split, "strengths": args.strengths, "overrides": extra,
                  "studies": args.studies, "expression_threshold": float(thresholds.max_blendshape_change)}
    (args.out / "provenance.json").write_text(json.dumps(provenance, indent=2))
    text = markdown(table, provenance)
    print(text)
    if args.plot:
        plot(table, args.plot)
    if args.write_docs:
        acceptance.write_docs(text, kind="dose-response")
    return 0


if __name__ == "__main__":
    sys.exit(main())
