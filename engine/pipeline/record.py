"""The record stage: one image's finished work, stored as one cache entry.

When an image has been edited, classified and audited, the recorder stores an `ImageResult`: each
condition's pixel hash, where its pixels are cached (for the gallery) and its edit metadata, every
prediction row, and the audit rows. It is keyed by the analysis key, the record's id and metadata,
and the fingerprint of everything that produced those numbers (`finished_fingerprint`), so any
change to the editor, strengths, seed, classifiers or audit judges misses it.

The record is the pipeline's last cached step. Its key is known as soon as the face is analysed, so
the pipeline looks it up first: a hit means every later step would hit too, and the image is done
without opening a pixel. Replaying a record gives bit-identical tables, because it holds copies of
numbers computed once. It is written only after the audit, so a run killed mid-chunk has no record
for that chunk and resumes from the step caches.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.cache import key_of
from engine.data import ImageRecord
from engine.types import Classifier, stable_hash

#: Names the decoder behind the `source` index; bump it when `engine.data` decodes files differently.
DECODER_VERSION = "load_image_file-v1"
#: Bump when the record's layout changes: older records are then recomputed through the steps.
RECORD_VERSION = 2


def file_digest(path: str | Path) -> str | None:
    """sha256 of a file's bytes (the cache key of its decoded pixels), or None if it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:32]
    except OSError:
        return None


def json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (np.ndarray, torch.Tensor)):
        return np.asarray(o.tolist() if isinstance(o, torch.Tensor) else o).tolist()
    return str(o)


def to_json_array(obj: Any) -> np.ndarray:
    """A JSON document as a 0-d unicode array (what the work cache stores). NaN survives the trip."""
    return np.array(json.dumps(obj, default=json_default))  # key order kept: it is column order


def from_json_array(arr: np.ndarray) -> Any:
    return json.loads(str(arr))


def through_json(obj: Any) -> Any:
    """`obj` as the cache gives it back, so a fresh run and a replay report identical values."""
    return from_json_array(to_json_array(obj))


def record_tag(rec: ImageRecord) -> str:
    """What of a record, beyond its pixels, an edit may depend on: its id and metadata."""
    return stable_hash([rec.image_id, rec.metadata], 16)


def finished_fingerprint(editor_fp: str, strengths: list[float], seed: int, paired: bool,
                         classifiers: dict[str, Classifier], classifier_fps: dict[str, str], audit_fp: Any) -> str:
    """What a record depends on, beyond the image: editor, strengths, seed, classifiers, audit judges."""
    clfs = {
        name: {"fp": classifier_fps[name], "labels": list(c.labels), "output_kind": c.output_kind}
        for name, c in classifiers.items()
    }
    return stable_hash(
        {"v": RECORD_VERSION, "editor": editor_fp, "strengths": strengths, "seed": seed, "paired": paired,
         "classifiers": clfs, "audit": audit_fp},
        32,
    )


def record_key(analysis_key: str, fingerprint: str, rec: ImageRecord) -> str:
    return key_of("finished", analysis_key, fingerprint, record_tag(rec))


@dataclass(frozen=True)
class ConditionResult:
    """One version of one image: what it is, its pixels' hash, where they are cached, its edit metadata."""

    name: str  # "original" | "sham" | "edit"
    strength: float  # NaN for the original
    pixels: str  # hash of the uint8 pixels the classifiers saw
    image_kind: str  # work-cache kind and key of those pixels ("crop" or "edit")
    image_key: str
    meta: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return self.name if self.name != "edit" else f"edit@{self.strength:g}"


@dataclass(frozen=True)
class ImageResult:
    """Everything a run measured on one image (see the module docstring)."""

    record: ImageRecord
    analysis_key: str
    conditions: tuple[ConditionResult, ...]
    predictions: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (classifier, label) -> (K,)
    audit_rows: tuple[dict[str, Any], ...] = ()

    def to_arrays(self) -> dict[str, np.ndarray]:
        keys = list(self.predictions)
        arrays = {f"p{i}": np.asarray(self.predictions[k], dtype=np.float64) for i, k in enumerate(keys)}
        arrays["index"] = to_json_array([list(k) for k in keys])
        arrays["conditions"] = to_json_array([c.__dict__ for c in self.conditions])
        arrays["audit"] = to_json_array(list(self.audit_rows))
        return arrays

    @classmethod
    def from_arrays(cls, record: ImageRecord, analysis_key: str, arrays: dict[str, np.ndarray]) -> ImageResult | None:
        """The stored result, or None for an entry of another layout (recomputed through the steps)."""
        try:
            keys = [tuple(k) for k in from_json_array(arrays["index"])]
            predictions = {(str(c), str(lab)): arrays[f"p{i}"] for i, (c, lab) in enumerate(keys)}
            conditions = tuple(ConditionResult(**c) for c in from_json_array(arrays["conditions"]))
            return cls(record, analysis_key, conditions, predictions, tuple(from_json_array(arrays["audit"])))
        except (KeyError, ValueError, TypeError):
            return None
