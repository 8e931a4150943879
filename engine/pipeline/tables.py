"""The run's tables, built from the recorded `ImageResult`s (computed or replayed alike).

Rows come out in dataset order: image, then condition, classifier and output, so a run split over
processes, or replayed from the cache, writes the same tables as a fresh single-process run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.data import ImageRecord
from engine.pipeline.record import ImageResult
from engine.types import Classifier

MEASUREMENT_COLUMNS = ["image_id", "condition", "strength", "classifier", "output", "value", "top1",
                       "subject", "label", "editor", "property"]
RESERVED_COLUMNS = {*MEASUREMENT_COLUMNS, "valid"}
SKIPPED_COLUMNS = ["image_id", "source", "stage", "reason"]


@dataclass(frozen=True)
class SkippedImage:
    """An image the run could not use, and why (a row of skipped.csv)."""

    image_id: str
    source: str
    stage: str  # "load" | "face"
    reason: str


def metadata_columns(records: Sequence[ImageRecord]) -> dict[str, list[Any]]:
    """The records' metadata as columns; a key that clashes with a table column gets a `meta_` prefix."""
    keys: list[str] = []
    for r in records:
        keys.extend(k for k in r.metadata if k not in keys)
    return {(f"meta_{k}" if k in RESERVED_COLUMNS else k): [r.metadata.get(k) for r in records] for k in keys}


def measurements_table(results: Sequence[ImageResult], classifiers: Mapping[str, Classifier],
                       editor_name: str, property_name: str) -> pd.DataFrame:
    """Tidy rows: one per image x condition x classifier x output, built with array ops."""
    if not results:
        return pd.DataFrame(columns=MEASUREMENT_COLUMNS)
    n = len(results)
    ids = np.array([r.record.image_id for r in results], dtype=object)
    position = np.arange(n)
    blocks = []
    for j, cond in enumerate(results[0].conditions):
        strengths = np.array([r.conditions[j].strength for r in results], dtype=float)
        for name, clf in classifiers.items():
            probs = np.stack([r.predictions[(name, cond.label)] for r in results])
            k = probs.shape[1]
            labels = np.array(clf.labels, dtype=object)
            # A label only means something for class scores; "scores" outputs (e.g. blendshapes)
            # get no top-1, so label-flip tests skip them.
            top1 = (labels[np.argmax(np.nan_to_num(probs, nan=-np.inf), axis=1)]
                    if clf.output_kind != "scores" else np.full(n, None, dtype=object))
            blocks.append(pd.DataFrame({
                "_pos": np.repeat(position, k),
                "image_id": np.repeat(ids, k),
                "condition": cond.name,
                "strength": np.repeat(strengths, k) if cond.name != "original" else np.nan,
                "classifier": name,
                "output": np.tile(labels, n),
                "value": probs.reshape(-1),
                "top1": np.repeat(top1, k),
            }))
    # Image-major, keeping condition, classifier and output order within each image.
    df = pd.concat(blocks, ignore_index=True).sort_values("_pos", kind="stable").drop(columns="_pos")
    records = [r.record for r in results]
    info = pd.DataFrame({"image_id": ids, "subject": [r.subject for r in records],
                         "label": [r.label for r in records], **metadata_columns(records)})
    df = df.reset_index(drop=True).merge(info, on="image_id", how="left")
    df["editor"] = editor_name
    df["property"] = property_name
    return df


def edits_table(results: Sequence[ImageResult]) -> pd.DataFrame:
    """edits.csv: one row per image x sham/edit condition, with the editor's metadata."""
    rows = [{"image_id": r.record.image_id, "condition": c.name, "strength": c.strength, **(c.meta or {})}
            for r in results for c in r.conditions if c.name != "original"]
    return pd.DataFrame(rows)


def audit_rows(results: Sequence[ImageResult]) -> list[dict[str, Any]]:
    """Every image's audit rows, in dataset order."""
    return [row for r in results for row in r.audit_rows]


def skipped_table(skipped: Sequence[SkippedImage]) -> pd.DataFrame:
    return pd.DataFrame([s.__dict__ for s in skipped], columns=SKIPPED_COLUMNS)
