"""`dry_run=true`: what a run would do, before it does any of it.

The plan counts images, the faces the cache already knows, conditions, classifiers and predictions;
how many faces are finished in the cache (a rerun replays them) and how many would be computed; and
an estimate of the time, from the rates this machine measured on earlier runs (`rates.json` in the
work cache, written after every run), or, before any run, from the 2-core development machine's cold
demo. Looking up the cache hashes each image's pixels (its file is read, and decoded once if never
seen); nothing is analysed, edited or classified, and the engine writes no results (Hydra still
makes its log folder).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.pipeline.record import record_key

log = logging.getLogger(__name__)

#: Seconds per unit on the development VM's 2 CPU cores (cold demo, age_shift with fer): the fallback
#: before this machine has measured its own.
DEFAULT_RATES = {"analysis_per_image": 0.12, "edit_per_face_condition": 0.03, "classify_per_prediction": 0.004,
                 "audit_per_face_condition": 0.1}
RATES_FILE = "rates.json"


@dataclass
class RunPlan:
    """What a run would do (see the module docstring)."""

    images: int = 0
    unreadable: int = 0
    analysed_images: int = 0  # images whose analysis is in the cache
    faces_known: int = 0  # faces of those images (found ones)
    skipped_known: int = 0  # images or faces the cached analysis skipped
    finished: int = 0  # faces whose whole record is cached: replayed, nothing computed
    conditions: list[str] = field(default_factory=list)
    classifiers: dict[str, int] = field(default_factory=dict)  # name -> outputs
    rates: dict[str, float] = field(default_factory=dict)
    rates_source: str = ""

    @property
    def faces_to_analyse(self) -> int:
        """Faces of images never analysed, counted as one each (a multi-face photo holds more)."""
        return self.images - self.unreadable - self.analysed_images

    @property
    def faces_to_compute(self) -> int:
        return self.faces_known - self.finished + self.faces_to_analyse

    def estimate_seconds(self) -> float:
        r = self.rates
        n, c, k = self.faces_to_compute, len(self.conditions), len(self.classifiers)
        edits = max(0, c - 1)  # the original needs no edit
        return (self.faces_to_analyse * r["analysis_per_image"] + n * edits * r["edit_per_face_condition"]
                + n * c * k * r["classify_per_prediction"] + n * edits * r["audit_per_face_condition"])

    def text(self, header: str) -> str:
        faces = self.faces_known + self.faces_to_analyse
        lines = [
            f"dry run: {header}",
            f"  images: {self.images} ({self.unreadable} unreadable); analysis cached for {self.analysed_images}: "
            f"{self.faces_known} faces, {self.skipped_known} skipped; {self.faces_to_analyse} images to analyse",
            f"  conditions per face: {len(self.conditions)} ({', '.join(self.conditions)})",
            f"  classifiers: {', '.join(f'{n} ({o} outputs)' for n, o in self.classifiers.items())}",
            f"  predictions: about {faces} faces x {len(self.conditions)} conditions x {len(self.classifiers)} "
            f"classifiers = {faces * len(self.conditions) * len(self.classifiers)}",
            f"  cache: {self.finished} of {faces} faces finished (replayed), about {self.faces_to_compute} to compute",
            f"  estimated time: about {self.estimate_seconds():.0f} s for the image work ({self.rates_source})",
        ]
        return "\n".join(lines)


def _measured(cache_root: Path) -> dict[str, float]:
    """The rates earlier runs measured on this machine (only those: no defaults mixed in)."""
    try:
        got = json.loads((cache_root / RATES_FILE).read_text())
        return {k: float(v) for k, v in got.items() if k in DEFAULT_RATES}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def load_rates(cache_root: Path) -> tuple[dict[str, float], str]:
    measured = _measured(cache_root)
    if not measured:
        return dict(DEFAULT_RATES), "rates of the 2-core development machine; a first run here measures its own"
    missing = sorted(set(DEFAULT_RATES) - set(measured))
    note = f"; development-machine rates for {', '.join(missing)}" if missing else ""
    return {**DEFAULT_RATES, **measured}, f"rates measured here: {cache_root / RATES_FILE}{note}"


def record_rates(cache_root: Path, timings: dict[str, float], cache: dict[str, dict[str, int]]) -> None:
    """After a run: this machine's seconds per unit, from what the run computed (not what it replayed)."""
    def per(stage: str, kind: str) -> float | None:
        computed = cache.get(kind, {}).get("computed", 0)
        return timings[stage] / computed if computed >= 8 and stage in timings else None

    measured = {"analysis_per_image": per("load", "analysis"), "edit_per_face_condition": per("edit", "edit"),
                "classify_per_prediction": per("classify", "pred"), "audit_per_face_condition": per("audit", "edit")}
    measured = {k: round(v, 6) for k, v in measured.items() if v is not None}
    if not measured:
        return
    try:
        (cache_root / RATES_FILE).write_text(json.dumps({**_measured(cache_root), **measured}, indent=2))
    except OSError as exc:  # a read-only cache still runs; the next dry run uses older rates
        log.warning("rates not recorded in %s: %s", cache_root, exc)


def plan(pipe: Any, records: list[Any], conditions: list[str], classifiers: dict[str, int]) -> RunPlan:
    """The plan of `pipe` (a `Pipeline`) over `records`, from cache lookups only."""
    out = RunPlan(images=len(records), conditions=conditions, classifiers=classifiers)
    out.rates, out.rates_source = load_rates(pipe.cache.root)
    for rec in records:
        pixels, _, failure = pipe.loader.pixels(rec)
        if pixels is None:
            out.unreadable += 1
            continue
        faces = pipe.analyse.faces(pipe.analyse.key(pixels), rec.image_id)
        if faces is None:
            continue
        out.analysed_images += 1
        for fkey, fa in faces:
            if not fa.ok:
                out.skipped_known += 1
                continue
            out.faces_known += 1
            face = pipe._face_record(rec, fa)
            if pipe.cache.get_arrays("finished", record_key(fkey, pipe.record_fp, face)) is not None:
                out.finished += 1
    return out
