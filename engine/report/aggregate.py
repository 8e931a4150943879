"""Aggregate a Hydra multirun into one table: `python -m engine.report.aggregate multirun/DATE/TIME`.

Every job folder's `stats.csv` (and headline) is stacked with the job's overrides as columns, so a
sweep over editors, strengths, classifiers and seeds can be compared in one place. Writes
`aggregate_stats.csv` and `aggregate_headline.csv` into the sweep folder and prints the headlines.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import yaml

from engine.report.files import write_table


def job_overrides(job_dir: Path) -> dict[str, str]:
    """The job's command-line overrides (Hydra writes them to .hydra/overrides.yaml)."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    out = {}
    for item in yaml.safe_load(path.read_text()) or []:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def find_jobs(sweep_dir: Path) -> list[Path]:
    """Job folders below `sweep_dir` that finished (they hold stats.json)."""
    return sorted(p.parent for p in sweep_dir.rglob("stats.json"))


def aggregate(sweep_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stack the jobs' stats and headlines; raises FileNotFoundError when no job finished."""
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no finished jobs (stats.json) under {sweep_dir}")
    stats, heads = [], []
    for job in jobs:
        over = job_overrides(job)
        rel = str(job.relative_to(sweep_dir))
        summary = json.loads((job / "stats.json").read_text())
        heads.append({"job": rel, **over, "k": summary.get("k"), "n": summary.get("n"),
                      "not_testable": summary.get("not_testable", 0),
                      "percent": summary.get("percent"), "headline": summary.get("headline")})
        if (job / "stats.csv").exists():
            df = pd.read_csv(job / "stats.csv")
            for key, value in over.items():
                df.insert(0, f"override.{key}", value)
            df.insert(0, "job", rel)
            stats.append(df)
    stats_df = pd.concat(stats, ignore_index=True) if stats else pd.DataFrame()
    return stats_df, pd.DataFrame(heads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.report.aggregate", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the multirun folder, e.g. multirun/2026-11-28/10-00-00")
    args = parser.parse_args(argv)
    try:
        stats, heads = aggregate(args.sweep_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_table(stats, args.sweep_dir / "aggregate_stats.csv")
    write_table(heads, args.sweep_dir / "aggregate_headline.csv")
    with pd.option_context("display.max_colwidth", 120, "display.width", 200):
        print(heads.drop(columns=["headline"]).to_string(index=False))
    print(f"\n{len(heads)} jobs -> {args.sweep_dir / 'aggregate_stats.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
