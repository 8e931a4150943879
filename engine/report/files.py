"""Atomic output files: every table, report, gallery and JSON of a run is written to a temporary file
in the same folder and renamed over its real name, so a full disk or a crash never leaves a truncated
file under a name a reader trusts (the earlier `gallery/index.html` was cut short on a full disk)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, so writers that read it still work); renamed
    onto `path` when the block succeeds, removed when it fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_table(df: pd.DataFrame, path: Path) -> None:
    """CSV, or Parquet for a `.parquet` path, without the index."""
    with atomic_path(path) as tmp:
        if Path(path).suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)


def write_between_markers(path: Path, begin: str, end: str, text: str) -> None:
    """Replace what lies between the `begin` and `end` markers of a text file (a generated section
    of a hand-written document) with `text`; raises ValueError when the markers are missing."""
    doc = Path(path).read_text()
    if begin not in doc or end not in doc:
        raise ValueError(f"{path} has no {begin} ... {end} markers")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    write_text(path, f"{head}{begin}\n{text}\n{end}{tail}")
