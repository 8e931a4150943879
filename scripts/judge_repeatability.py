"""Are the faces a non-target check flags the faces its judge cannot read again? Per-face judge noise
against the acceptance run's verdicts.

`python -m engine.calibrate` measures how far each judge moves on each face when no property changes
(`calibration.csv`: one row per face and nuisance transform). The audit flags an edit when a kept judge
(judged age, p(male)) moves more than the calibrated threshold, one threshold for every face. If a
judge is much less repeatable on some faces than on others, an edit of another property is flagged
there more often whatever it did. This script joins the two on the same half of the demo: for each
study and kept reading, each face's noise (the largest |change| over the nuisance transforms), the
median noise of the flagged faces and of the others, the share flagged among the noisier and the
quieter half of the faces (by rank), and a one-sided Fisher exact test of "flagged more often where the judge
is noisier", Holm-corrected over the table.

    python scripts/judge_repeatability.py CALIBRATION_FOLDER ACCEPTANCE_FOLDER [--write-docs --section NAME]

CALIBRATION_FOLDER holds `calibration.csv` (`python -m engine.calibrate --folder ...`), ACCEPTANCE_FOLDER
the `audits/` of `python scripts/acceptance.py --out ...`, both on the same half.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import fisher_exact
from statsmodels.stats.multitest import multipletests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import acceptance  # noqa: E402 - the studies (experiment and overrides) the audits came from

DOCS = Path(__file__).resolve().parents[1] / "docs" / "EDITORS.md"


def face_noise(calibration: pd.DataFrame, column: str) -> pd.Series:
    """Each face's largest |change| of `column` over all nuisance transforms (NaN rows ignored)."""
    return calibration.assign(abs_change=calibration[column].abs()).groupby("image_id")["abs_change"].max()


def _text(column: pd.Series) -> pd.Series:
    """A ";"-joined text column with "" where it is empty (an all-NaN column reads as float)."""
    return column.astype(object).where(column.notna(), "").astype(str)


def repeatability_table(calibration: pd.DataFrame, audits: dict[str, pd.DataFrame],
                        targeted: dict[str, set[str]]) -> pd.DataFrame:
    """One row per study and kept reading that the study's audit checks (see the module docstring).

    Kept readings are the audit's own (`engine.audit.verdicts.KEPT_READINGS`); `targeted` names, per
    study, the audit columns its editor's policy targets, which are not kept (`study_targets`).
    """
    from engine.audit.verdicts import KEPT_READINGS

    rows = []
    for study, audit in audits.items():
        moved = _text(audit["nontarget_readings"]).str.split(";")
        beyond = _text(audit["reasons"]).str.contains("target_beyond_judge")
        for column in KEPT_READINGS:
            if column in targeted.get(study, set()) or column not in audit or column not in calibration:
                continue
            reading = column.removeprefix("delta_")
            flagged = moved.apply(lambda names, r=reading: r in names).to_numpy()
            noise = face_noise(calibration, column).reindex(audit["image_id"]).to_numpy()
            usable = (audit[column].notna() & ~beyond).to_numpy() & np.isfinite(noise)
            noise, flagged = noise[usable], flagged[usable]
            if len(noise) < 4:
                continue
            # The noisier half by rank (ties in a fixed order), so a judge equally noisy everywhere still splits.
            noisier = np.zeros(len(noise), dtype=bool)
            noisier[np.argsort(noise, kind="stable")[len(noise) // 2 :]] = True
            table = [[int((flagged & noisier).sum()), int((~flagged & noisier).sum())],
                     [int((flagged & ~noisier).sum()), int((~flagged & ~noisier).sum())]]
            p = fisher_exact(table, alternative="greater").pvalue if flagged.any() else 1.0
            rows.append({
                "study": study, "reading": reading, "faces": len(noise), "flagged": int(flagged.sum()),
                "noise_flagged": float(np.median(noise[flagged])) if flagged.any() else np.nan,
                "noise_others": float(np.median(noise[~flagged])),
                "share_noisier": float(flagged[noisier].mean()), "share_quieter": float(flagged[~noisier].mean()),
                "p": float(p),
            })
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = multipletests(out["p"], method="holm")[1]
    return out


def study_targets(studies: list[str], overrides: list[str]) -> dict[str, set[str]]:
    """Per acceptance study, the audit columns its editor's policy targets (as the run was configured)."""
    from engine.config import check_component, compose_config
    from engine.types import TargetCheck

    out = {}
    for name in studies:
        study = acceptance.STUDIES[name]
        cfg = compose_config([f"experiment={study.experiment}", *study.overrides, *overrides])
        target = check_component("editor", cfg.editor).audit_policy().target
        out[name] = set(target.deltas) if isinstance(target, TargetCheck) else set()
    return out


def markdown(table: pd.DataFrame, provenance: dict) -> str:
    lines = [
        f"Generated by `python scripts/judge_repeatability.py` on {provenance['made']} (git {provenance['git']}; "
        f"demo `{provenance['split']}` half; noise: `python -m engine.calibrate` on the same half, each face's "
        f"largest |change| over its {provenance['transforms']} nuisance transforms; verdicts: "
        f"`scripts/acceptance.py` at strength 1). One-sided Fisher test, Holm over the table.",
        "",
        "| study | kept reading | faces | flagged | median noise: flagged / others | flagged: noisier half / quieter half | p (Holm) |",
        "|---|---|---|---|---|---|---|",
    ]
    unit = {"est_age": " y", "est_p_male": ""}
    for r in table.itertuples():
        flagged_noise = "–" if np.isnan(r.noise_flagged) else f"{r.noise_flagged:.3g}"
        lines.append(
            f"| {r.study} | {r.reading} | {r.faces} | {r.flagged} | {flagged_noise} / {r.noise_others:.3g}{unit.get(r.reading, '')} | "
            f"{r.share_noisier:.0%} / {r.share_quieter:.0%} | {r.p_holm:.2g} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("calibration", type=Path, help="folder with calibration.csv")
    p.add_argument("acceptance", type=Path, help="acceptance --out folder (with audits/), same half")
    p.add_argument("--write-docs", action="store_true", help="write the table into docs/EDITORS.md")
    p.add_argument("--section", default=None, help="with --write-docs: the judge-repeatability:SECTION markers")
    args = p.parse_args(argv)
    calibration = pd.read_csv(args.calibration / "calibration.csv")
    audits = {f.stem: pd.read_csv(f) for f in sorted((args.acceptance / "audits").glob("*.csv"))}
    if not audits:
        raise SystemExit(f"{args.acceptance / 'audits'} holds no audit tables")
    faces = set(calibration["image_id"])
    missing = {s: int((~a["image_id"].isin(faces)).sum()) for s, a in audits.items()}
    if any(missing.values()):
        raise SystemExit(f"faces missing from {args.calibration}/calibration.csv (another half?): {missing}")
    run = json.loads((args.acceptance / "provenance.json").read_text())
    from engine.report.provenance import short_commit

    provenance = {"made": time.strftime("%Y-%m-%d"), "git": short_commit(), "split": run["split"],
                  "transforms": calibration.groupby("image_id").size().max()}
    targeted = study_targets(list(audits), [o for o in run.get("overrides", []) if o.lstrip("+").startswith("editor.")])
    text = markdown(repeatability_table(calibration, audits, targeted), provenance)
    print(text)
    if args.write_docs:
        from engine.report.files import write_between_markers

        name = f"judge-repeatability:{args.section}" if args.section else "judge-repeatability"
        write_between_markers(DOCS, f"<!-- {name}:begin -->", f"<!-- {name}:end -->", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
