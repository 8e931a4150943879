"""One image's finished work, stored as one cache entry, so a re-run need not open its images.

The pipeline caches every step (analysis, crop, edits, predictions, judge outputs). A re-run of a
finished experiment could rebuild its tables from those entries, but that means decoding the crop
and every edited image, rebuilding face masks and re-measuring perceptual distances. Instead, when
an image's chunk is done (classified and audited), the pipeline also stores a *finished* entry: the
condition list with each version's pixel hash and edit metadata, every prediction row, and the
audit rows. It is keyed by the analysis key plus the fingerprint of everything that produced those
numbers (`finished_fingerprint`), so any change to the editor, strengths, seed, classifiers or
audit stage misses it and the image goes through the normal, step-by-step cached path.

A finished entry holds copies of numbers that were computed once: replaying it gives bit-identical
tables. It is written only after the audit hook ran, so a run killed mid-chunk simply has no entry
for that chunk and resumes from the step caches.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.types import Classifier, stable_hash

#: Names the decoder behind `source_digest`; bump it when `engine.data` decodes files differently.
DECODER_VERSION = "load_image_file-v1"


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


def callable_identity(fn: Any) -> Any:
    """A JSON-able identity for a configured callable (a function or a `functools.partial`)."""
    if fn is None:
        return None
    if isinstance(fn, functools.partial):
        return {"func": callable_identity(fn.func), "args": list(fn.args), "kwargs": dict(fn.keywords)}
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    return f"{getattr(fn, '__module__', type(fn).__module__)}.{name}"


def finished_fingerprint(
    editor_fp: str,
    strengths: list[float],
    seed: int,
    paired: bool,
    classifiers: dict[str, Classifier],
    classifier_fps: dict[str, str],
    hook: Any,
) -> str | None:
    """What a finished entry depends on; None when an audit hook cannot say (then nothing is stored)."""
    hook_fp: Any = None
    if hook is not None:
        fingerprint: Callable[[], Any] | None = getattr(hook, "fingerprint", None)
        if fingerprint is None:
            return None
        hook_fp = fingerprint()
    clfs = {
        name: {"fp": classifier_fps[name], "labels": list(c.labels), "output_kind": c.output_kind}
        for name, c in classifiers.items()
    }
    return stable_hash(
        {"v": 1, "editor": editor_fp, "strengths": strengths, "seed": seed, "paired": paired,
         "classifiers": clfs, "hook": hook_fp},
        32,
    )


@dataclass
class FinishedImage:
    """One image's stored results (see the module docstring)."""

    conditions: list[dict[str, Any]]  # name, strength, hash, meta; in pipeline order
    predictions: dict[tuple[str, str], np.ndarray]  # (classifier, condition label) -> (K,)
    audit_rows: list[dict[str, Any]]

    def to_arrays(self) -> dict[str, np.ndarray]:
        keys = list(self.predictions)
        arrays = {f"p{i}": np.asarray(self.predictions[k], dtype=np.float64) for i, k in enumerate(keys)}
        arrays["index"] = to_json_array([list(k) for k in keys])
        arrays["conditions"] = to_json_array(self.conditions)
        arrays["audit"] = to_json_array(self.audit_rows)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FinishedImage | None:
        try:
            keys = [tuple(k) for k in from_json_array(arrays["index"])]
            predictions = {(str(c), str(lab)): arrays[f"p{i}"] for i, (c, lab) in enumerate(keys)}
            return cls(from_json_array(arrays["conditions"]), predictions, from_json_array(arrays["audit"]))
        except (KeyError, ValueError, TypeError):
            return None  # an entry of another layout: recompute through the step caches
