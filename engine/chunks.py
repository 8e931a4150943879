"""What a chunk of the pipeline is: its conditions, results and audit rows, and how it becomes tables.

`engine.pipeline` produces `ChunkOutput`s (computed, or replayed from finished entries); the
functions here turn them into tidy measurement rows and edits.csv rows, trim and merge them for the
report, and stack crops into the `FaceBatch` editors work on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from engine.data import ImageRecord
from engine.faces import face_masks
from engine.types import Classifier, Editor, FaceAnalysis, FaceBatch


@dataclass
class Condition:
    """One version of every image in a chunk: the original, the sham, or an edit at a strength."""

    name: str  # "original" | "sham" | "edit"
    strength: float  # NaN for the original
    images: torch.Tensor | None  # (N, 3, H, W) uint8 on the runner's device; None when replayed
    hashes: list[str]
    metadata: list[dict[str, Any]] = field(default_factory=list)
    mask: torch.Tensor | None = None  # (N, 1, H, W) float, the edit mask

    @property
    def label(self) -> str:
        return self.name if self.name != "edit" else f"edit@{self.strength:g}"


@dataclass
class ChunkOutput:
    """A chunk's images and results. A replayed chunk (every image finished earlier) has no
    `batch` and no condition images, only hashes, metadata, predictions and the audit rows."""

    records: list[ImageRecord]
    analyses: list[FaceAnalysis]
    batch: FaceBatch | None
    conditions: list[Condition]
    predictions: dict[tuple[str, str], np.ndarray]  # (classifier, condition label) -> (N, K)
    audit_rows: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # analysis keys, for the finished entries


class AuditHook(Protocol):
    """A stage that measures each computed chunk (e.g. `engine.checks.ManipulationChecks`).

    `observe` returns the rows it recorded (each with "image_id"); they are stored with the image's
    finished entry, and `restore` hands them back on a re-run that replays the image instead.
    `fingerprint` names everything the rows depend on; a hook without one disables replay.
    """

    def observe(self, chunk: ChunkOutput) -> list[dict[str, Any]]: ...

    def restore(self, rows: list[dict[str, Any]]) -> None: ...

    def fingerprint(self) -> Any: ...




def tidy_rows(chunk: ChunkOutput, classifiers: dict[str, Classifier], editor: Editor) -> pd.DataFrame:
    """Tidy rows: one per image x condition x classifier x output, built with array ops."""
    n = len(chunk.records)
    ids = np.array([r.image_id for r in chunk.records], dtype=object)
    parts = []
    for cond in chunk.conditions:
        for name, clf in classifiers.items():
            probs = chunk.predictions[(name, cond.label)]
            k = probs.shape[1]
            labels = np.array(clf.labels, dtype=object)
            # A label only means something for class scores; "scores" outputs (e.g. blendshapes)
            # get no top-1, so label-flip tests skip them.
            top1 = (labels[np.argmax(np.nan_to_num(probs, nan=-np.inf), axis=1)]
                    if clf.output_kind != "scores" else np.full(n, None, dtype=object))
            parts.append(
                pd.DataFrame(
                    {
                        "image_id": np.repeat(ids, k),
                        "condition": cond.name,
                        "strength": cond.strength if cond.name != "original" else np.nan,
                        "classifier": name,
                        "output": np.tile(labels, n),
                        "value": probs.reshape(-1),
                        "top1": np.repeat(top1, k),
                    }
                )
            )
    df = pd.concat(parts, ignore_index=True)
    info = pd.DataFrame(
        {
            "image_id": ids,
            "subject": [r.subject for r in chunk.records],
            "label": [r.label for r in chunk.records],
            **metadata_columns(chunk.records),
        }
    )
    df = df.merge(info, on="image_id", how="left")
    df["editor"] = editor.name
    df["property"] = editor.property
    return df



RESERVED_COLUMNS = {"image_id", "condition", "strength", "classifier", "output", "value", "top1",
                    "subject", "label", "editor", "property", "valid"}


def metadata_columns(records: Sequence[ImageRecord]) -> dict[str, list[Any]]:
    keys: list[str] = []
    for r in records:
        keys.extend(k for k in r.metadata if k not in keys)
    return {(f"meta_{k}" if k in RESERVED_COLUMNS else k): [r.metadata.get(k) for r in records] for k in keys}


def make_face_batch(
    records: Sequence[ImageRecord], analyses: Sequence[FaceAnalysis], crops: Sequence[np.ndarray], device: torch.device
) -> FaceBatch:
    """Stack aligned crops and their analyses into a `FaceBatch` on `device`."""
    images = torch.from_numpy(np.stack(crops)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    landmarks = torch.from_numpy(np.stack([a.landmarks for a in analyses])).to(device)
    return FaceBatch(
        ids=[r.image_id for r in records],
        images=images,
        landmarks=landmarks,
        blendshapes=torch.from_numpy(np.stack([a.blendshapes for a in analyses])).to(device),
        boxes=torch.from_numpy(np.stack([a.box for a in analyses])).to(device),
        face_mask=face_masks(landmarks, images.shape[-2:]),
        pose=torch.from_numpy(np.stack([a.pose for a in analyses])).to(device),
        metadata=[dict(r.metadata) for r in records],
    )


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Quantise (N, 3, H, W) [0, 1] to uint8 (N, H, W, 3): what is cached is what classifiers see."""
    x = images.detach().clamp(0, 1).mul(255.0).round_().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def edit_rows(chunk: ChunkOutput) -> list[dict[str, Any]]:
    """edits.csv rows: one per image x sham/edit condition, with the editor's metadata."""
    return [
        {"image_id": rec.image_id, "condition": cond.name, "strength": cond.strength, **meta}
        for cond in chunk.conditions[1:]
        for rec, meta in zip(chunk.records, cond.metadata)
    ]


def select(chunk: ChunkOutput, idx: list[int]) -> ChunkOutput:
    """The chunk restricted to the images at positions `idx` (in that order)."""
    if idx == list(range(len(chunk.records))):
        return chunk
    index = torch.as_tensor(idx, dtype=torch.long)

    def rows(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.index_select(0, index.to(t.device))

    return ChunkOutput(
        [chunk.records[i] for i in idx],
        [chunk.analyses[i] for i in idx],
        chunk.batch.select(idx) if chunk.batch is not None else None,
        [
            Condition(c.name, c.strength, rows(c.images), [c.hashes[i] for i in idx],
                      [c.metadata[i] for i in idx] if c.metadata else [], rows(c.mask))
            for c in chunk.conditions
        ],
        {k: v[idx] for k, v in chunk.predictions.items()},
        [r for r in chunk.audit_rows if r.get("image_id") in {chunk.records[i].image_id for i in idx}],
        keys=[chunk.keys[i] for i in idx] if chunk.keys else [],
    )


def in_record_order(parts: list[ChunkOutput], records: list[ImageRecord]) -> ChunkOutput:
    """Computed and replayed parts of one chunk as one, in dataset order (what the report shows)."""
    if len(parts) == 1:
        return parts[0]
    position = {id(r): i for i, r in enumerate(records)}
    recs = [r for p in parts for r in p.records]
    order = sorted(range(len(recs)), key=lambda i: position[id(recs[i])])
    index = torch.as_tensor(order)
    conditions = []
    for j, cond in enumerate(parts[0].conditions):
        same = [p.conditions[j] for p in parts]
        images = torch.cat([c.images.cpu() for c in same])[index]  # type: ignore[union-attr]
        hashes = [h for c in same for h in c.hashes]
        metadata = [m for c in same for m in c.metadata]
        conditions.append(Condition(cond.name, cond.strength, images, [hashes[i] for i in order],
                                    [metadata[i] for i in order] if metadata else []))
    predictions = {k: np.concatenate([p.predictions[k] for p in parts])[order] for k in parts[0].predictions}
    analyses = [a for p in parts for a in p.analyses]
    keys = [k for p in parts for k in p.keys]
    return ChunkOutput([recs[i] for i in order], [analyses[i] for i in order], None, conditions, predictions,
                       keys=[keys[i] for i in order])


def empty_measurements() -> pd.DataFrame:
    return pd.DataFrame(
        columns=["image_id", "condition", "strength", "classifier", "output", "value", "top1",
                 "subject", "label", "editor", "property"]
    )
