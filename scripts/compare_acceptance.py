"""Is one setting better than another, or is the difference noise? A paired test of two acceptance runs.

Tuning compares settings on the same faces: two runs of `scripts/acceptance.py` on the same half (the
baseline and the candidate, told apart by their overrides). Each face is a pair, so the tests are
paired:

* the valid share: the faces that became valid (`gained`) against those that stopped being valid
  (`lost`), McNemar's exact test (`engine.stats.labels.mcnemar_exact`);
* the effect: the candidate's minus the baseline's target measure per face, its median, and the
  Wilcoxon signed-rank test (scipy).

Every p of the table is one family, Holm-corrected (statsmodels), because a tuning session reads them
all. On 44 LFW faces a change from 5 to 10 valid edits can be noise; read `p_holm` before adopting a
setting, and confirm on the other half.

    python scripts/compare_acceptance.py BASELINE_DIR CANDIDATE_DIR [--out comparison.csv]
        [--write-docs --section NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import acceptance  # noqa: E402 - the studies and their measures

GROUPS = ("lfw", "sharp", "all")


def _provenance(run: Path) -> dict:
    path = run / "provenance.json"
    if not path.exists():
        raise SystemExit(f"{run}: no provenance.json; pass the --out folder of a scripts/acceptance.py run")
    return json.loads(path.read_text())


def compare_study(name: str, baseline: pd.DataFrame, candidate: pd.DataFrame) -> list[dict]:
    """One row per group: paired counts, the median paired change of the effect, and raw p values."""
    from scipy import stats

    from engine.stats.labels import mcnemar_exact

    measure = acceptance.STUDIES[name].measure
    keep = ["image_id", "valid", *([measure] if measure else [])]
    base = acceptance.scored_faces(name, baseline)[keep]
    pairs = base.merge(candidate[keep], on="image_id", suffixes=("_base", "_new"))
    pairs["group"] = pairs["image_id"].astype(str).map(acceptance.group_of)
    rows = []
    for group in GROUPS:
        part = pairs if group == "all" else pairs[pairs["group"] == group]
        if not len(part):
            continue
        before, after = part["valid_base"].astype(bool), part["valid_new"].astype(bool)
        lost, gained = int((before & ~after).sum()), int((~before & after).sum())
        row = {"study": name, "group": group, "faces": len(part), "valid_base": int(before.sum()),
               "valid_new": int(after.sum()), "gained": gained, "lost": lost,
               "p_valid": float(mcnemar_exact(np.array([lost]), np.array([gained]))[0])}
        if measure:
            diff = (part[f"{measure}_new"].astype(float) - part[f"{measure}_base"].astype(float)).dropna()
            row["effect_base"] = float(np.nanmedian(part[f"{measure}_base"].astype(float)))
            row["effect_new"] = float(np.nanmedian(part[f"{measure}_new"].astype(float)))
            row["median_change"] = float(diff.median()) if len(diff) else float("nan")
            nonzero = diff[diff != 0]
            row["p_effect"] = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) >= 2 else float("nan")
        rows.append(row)
    return rows


def holm(table: pd.DataFrame) -> pd.DataFrame:
    """Holm-adjust every p of the table as one family (the groups overlap: `all` holds `lfw` and `sharp`)."""
    from statsmodels.stats.multitest import multipletests

    table = table.copy()
    cells = [(i, c) for c in ("p_valid", "p_effect") if c in table for i in table.index
             if np.isfinite(table.at[i, c])]
    for c in ("p_valid", "p_effect"):
        if c in table:
            table[c.replace("p_", "p_holm_")] = np.nan
    if cells:
        adjusted = multipletests([table.at[i, c] for i, c in cells], method="holm")[1]
        for (i, c), p in zip(cells, adjusted, strict=True):
            table.at[i, c.replace("p_", "p_holm_")] = p
    return table


def compare(baseline: Path, candidate: Path) -> tuple[pd.DataFrame, dict]:
    base_prov, new_prov = _provenance(baseline), _provenance(candidate)
    if base_prov["split"] != new_prov["split"]:
        raise SystemExit(f"the runs are on different halves ({base_prov['split']} / {new_prov['split']}): "
                         "a paired comparison needs the same faces")
    rows = []
    for name in acceptance.STUDIES:
        a, b = baseline / "audits" / f"{name}.csv", candidate / "audits" / f"{name}.csv"
        if a.exists() and b.exists():
            rows += compare_study(name, pd.read_csv(a), pd.read_csv(b))
    if not rows:
        raise SystemExit(f"no study was run in both {baseline} and {candidate}")
    info = {"split": base_prov["split"], "baseline": base_prov.get("overrides", []),
            "candidate": new_prov.get("overrides", [])}
    if info["baseline"] == info["candidate"]:  # the same settings: what differs is the code, so name it
        info["baseline_git"], info["candidate_git"] = base_prov.get("git", "?"), new_prov.get("git", "?")
    return holm(pd.DataFrame(rows)), info


def _p(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.2g}"


def markdown(table: pd.DataFrame, info: dict) -> str:
    def named(side: str) -> str:
        text = f"`{' '.join(info[side]) or 'the defaults'}`"
        return f"{text} at git {info[side + '_git']}" if side + "_git" in info else text

    lines = [f"Generated by `python scripts/compare_acceptance.py` from two `scripts/acceptance.py` runs on the "
             f"`{info['split']}` half: baseline {named('baseline')}, candidate "
             f"{named('candidate')}. Paired by face; p Holm-corrected over the table.",
             "",
             "| study | group | faces | valid: baseline → candidate (gained / lost) | p (McNemar) | "
             "median effect: baseline → candidate | median paired change | p (Wilcoxon) |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        effect = change = p_effect = "–"
        if np.isfinite(r.get("effect_base", np.nan)):
            effect = f"{r['effect_base']:+.3g} → {r['effect_new']:+.3g}"
            change = f"{r['median_change']:+.3g}"
            p_effect = _p(r.get("p_holm_effect", np.nan))
        lines.append(f"| {r['study']} | {r['group']} | {r['faces']} | {r['valid_base']} → {r['valid_new']} "
                     f"(+{r['gained']} / −{r['lost']}) | {_p(r.get('p_holm_valid', np.nan))} | {effect} | "
                     f"{change} | {p_effect} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("baseline", type=Path, help="--out folder of the baseline's acceptance run")
    p.add_argument("candidate", type=Path, help="--out folder of the candidate's acceptance run, same half")
    p.add_argument("--out", type=Path, help="write the table as CSV here")
    p.add_argument("--write-docs", action="store_true", help="write the table into docs/EDITORS.md")
    p.add_argument("--section", help="with --write-docs: write between the comparison:SECTION markers")
    args = p.parse_args(argv)
    if args.write_docs and not args.section:
        p.error("--write-docs needs --section")
    table, info = compare(args.baseline, args.candidate)
    if args.out:
        table.to_csv(args.out, index=False)
    text = markdown(table, info)
    print(text)
    if args.write_docs:
        acceptance.write_docs(text, section=args.section, kind="comparison")
    return 0


if __name__ == "__main__":
    sys.exit(main())
