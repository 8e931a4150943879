"""`run(cfg)`: spec -> pipeline (load, analyse, edit, classify, audit, record) -> statistics -> report."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from engine.cache import WorkCache
from engine.data import ImageRecord
from engine.pipeline import Pipeline, PipelineResult
from engine.pipeline.plan import plan, record_rates
from engine.pipeline.tables import audit_rows, edits_table, measurements_table, skipped_table
from engine.report.files import write_text
from engine.spec import CacheSpec, RunOutputs, RunSpec
from engine.types import ConfigError, stable_hash

log = logging.getLogger("engine")

RUN_STATE = "run_state.json"


@dataclass
class RunSummary:
    output_dir: Path
    n_images: int
    n_skipped: int
    headline: str
    timings: dict[str, float]
    cache: dict[str, dict[str, int]]


def output_dir_for(cfg: DictConfig) -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    raise ConfigError("no output folder: run through `python -m engine` (Hydra sets hydra.run.dir)")


#: Config keys that do not change a run's results: how it runs, how it reports, whether it resumes.
NOT_RESULT_KEYS = ("runner", "report", "resume", "dry_run", "objective", "hydra")


def result_fingerprint(cfg: DictConfig) -> dict[str, str]:
    """Per top-level config key that shapes the results (experiment, dataset, faces, editor, strengths,
    seed, classifiers, audit, stats), a hash of its resolved value."""
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(values, dict)
    return {str(k): stable_hash(v, 16) for k, v in sorted(values.items()) if k not in NOT_RESULT_KEYS}


def _load_classifiers(spec: RunSpec) -> None:
    """Open and check every classifier's model at start-up: a bad checkpoint is one line before any
    face is analysed, not a failure after the slow stages (models load lazily otherwise)."""
    for name, classifier in spec.classifiers.items():
        try:
            getattr(classifier, "model", None)
        except Exception as exc:  # noqa: BLE001 - every loader has its own errors; all mean "unusable"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"classifier {name}: its model cannot be loaded: {first}") from None


def guard_output(out: Path, resume: bool, fingerprint: dict[str, str] | None = None) -> None:
    """Refuse to overwrite a finished or started run unless `resume=true`, and refuse to resume a
    run with a config whose results would differ (its results would silently replace the other's)."""
    state = out / RUN_STATE
    if not state.exists():
        return
    info = json.loads(state.read_text() or "{}")
    if not resume:
        raise ConfigError(
            f"output folder {out} already holds a run (status: {info.get('status', '?')}); pass resume=true to "
            "continue it from the cache, or choose another hydra.run.dir"
        )
    stored = info.get("fingerprint")
    if fingerprint is not None and stored is not None and stored != fingerprint:
        changed = sorted(k for k in set(stored) | set(fingerprint) if stored.get(k) != fingerprint.get(k))
        raise ConfigError(
            f"resume=true: output folder {out} holds a run with another config (differs in: {', '.join(changed)}); "
            "resume it with its own settings, or choose another hydra.run.dir"
        )


def _set_state(out: Path, **fields: Any) -> None:
    path = out / RUN_STATE
    state = json.loads(path.read_text()) if path.exists() else {}
    state.update(fields)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    os.replace(tmp, path)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def work_cache(spec: CacheSpec) -> Iterator[WorkCache]:
    """The shared work cache, or with `cache.enabled=false` a private one deleted after the run.

    A private cache keeps one code path: every stage still looks up its key (and misses), and the
    report still reads the gallery's images back by key.
    """
    if spec.enabled:
        yield WorkCache(spec.dir)
        return
    tmp = tempfile.mkdtemp(prefix="facecf-private-cache-")
    try:
        yield WorkCache(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _detached(rec: ImageRecord) -> ImageRecord:
    """A record that can cross processes (its loader stays behind; the report never loads)."""
    return dataclasses.replace(rec, loader=_no_loader)


def _no_loader() -> np.ndarray:
    raise RuntimeError("this record was gathered from another process; its pixels are in the work cache")


def _audit_hook(spec: RunSpec, cache: WorkCache, device: torch.device) -> Any:
    if not spec.paired:
        from engine.observe import JudgeAnnotator

        return JudgeAnnotator() if spec.observe.annotate else None
    if not spec.audit.enabled:
        return None
    from engine.audit import AuditStage
    from engine.pipeline.hooks import EditAudit

    judges = spec.audit.judges(device, getattr(spec.faces, "landmarker", None))
    return EditAudit(AuditStage(judges, spec.policy, spec.thresholds, cache))


def run_pipeline(spec: RunSpec, cache: WorkCache, records: list[ImageRecord]) -> tuple[PipelineResult, Any]:
    """The image work of `records` (this process's share): returns the result and the audit hook."""
    classifiers = {n: spec.runner.prepare(c) for n, c in spec.classifiers.items()}
    hook = _audit_hook(spec, cache, spec.runner.device)
    pipe = Pipeline(spec.faces, spec.editor, spec.strengths, classifiers, spec.runner, cache, spec.seed,
                    audit=hook, paired=spec.paired, overlap=spec.runner.overlap)
    try:
        return pipe.run(records), hook
    finally:
        spec.faces.close()
        close = getattr(getattr(hook, "stage", None), "close", None)
        if close is not None:
            close()


def _position(image_id: str, order: dict[str, int]) -> tuple[int, int]:
    """Where a record or one of its faces (`<id>#<k>`, multi-face analysis) sits in dataset order."""
    base, _, face = image_id.partition("#")
    return order[base], int(face) if face.isdigit() else -1


def _gather(dist: Any, result: PipelineResult, order: dict[str, int]) -> PipelineResult:
    """Every process's results on every process, in dataset order (so N processes equal one)."""
    mine = PipelineResult([dataclasses.replace(r, record=_detached(r.record)) for r in result.results],
                          result.skipped, result.timings, result.cache_summary)
    parts: list[PipelineResult] = dist.gather(mine)
    timings: dict[str, float] = {}
    cache: dict[str, dict[str, int]] = {}
    for p in parts:
        for k, v in p.timings.items():
            timings[k] = max(timings.get(k, 0.0), v)  # processes run in parallel: wall time is the max
        for kind, counts in p.cache_summary.items():
            agg = cache.setdefault(kind, {"cached": 0, "computed": 0})
            agg["cached"] += counts["cached"]
            agg["computed"] += counts["computed"]
    results = sorted((r for p in parts for r in p.results), key=lambda r: _position(r.record.image_id, order))
    skipped = sorted((s for p in parts for s in p.skipped), key=lambda s: _position(s.image_id, order))
    return PipelineResult(results, skipped, timings, cache)


def dry_run(spec: RunSpec, records: list[ImageRecord]) -> RunSummary:
    """Print what the run would do (`engine.pipeline.plan`) and stop before any image work."""

    with work_cache(spec.cache) as cache:
        hook = _audit_hook(spec, cache, spec.runner.device)  # the audit is part of a finished record's key
        pipe = Pipeline(spec.faces, spec.editor, spec.strengths, dict(spec.classifiers), spec.runner, cache,
                        spec.seed, audit=hook, paired=spec.paired, overlap=False)
        conditions = ["original", "sham", *(f"edit@{s:g}" for s in spec.strengths if s > 0)] if spec.paired else [
            "original"]
        got = plan(pipe, records, conditions, {n: len(c.labels) for n, c in spec.classifiers.items()})
        spec.faces.close()
    text = got.text(f"experiment={spec.experiment} editor={spec.editor.name} property={spec.policy.property} "
                    f"device={spec.runner.device}")
    print(text)
    return RunSummary(Path("."), got.images, got.unreadable + got.skipped_known, "dry run: nothing computed", {},
                      {"plan": {"finished": got.finished, "to_compute": got.faces_to_compute}})


def run(cfg: DictConfig, out: Path | None = None) -> RunSummary:
    """Run one experiment described by the composed config `cfg`; outputs go to Hydra's run folder.

    Under a multi-process launch each process works through its share of the images and the main
    process gathers the pieces, so the result equals a single-process run.
    """
    from engine.distributed import context

    dist = context()
    spec = RunSpec.from_config(cfg)
    t0 = time.perf_counter()
    records = list(spec.dataset)
    index_seconds = time.perf_counter() - t0
    if not records:  # before the folder is claimed: an empty run is a mistake, not "0 analysed of 0"
        where = next((f" at {v}" for k in ("root", "path") if (v := getattr(spec.dataset, k, None))), "")
        raise ConfigError(f"the dataset ({type(spec.dataset).__name__}{where}) has no images: nothing to analyse; "
                          "check dataset.root / dataset.path, dataset.split or dataset.limit")
    _load_classifiers(spec)
    if cfg.get("dry_run", False):
        return dry_run(spec, records)
    out = out or output_dir_for(cfg)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = result_fingerprint(cfg)
    if dist.is_main:
        guard_output(out, spec.resume, fingerprint)
    if dist.active:  # one GPU per process
        spec.runner.device = torch.device(dist.device(spec.runner.device.type))
    dist.barrier()  # nobody starts before the main process has accepted the output folder
    if dist.is_main:
        _set_state(out, status="running", started=time.strftime("%Y-%m-%d %H:%M:%S"), fingerprint=fingerprint)
    seed_everything(spec.seed)
    t_start = time.perf_counter()
    log.info("experiment=%s editor=%s property=%s strengths=%s classifiers=%s device=%s rank=%d/%d",
             spec.experiment, spec.editor.name, spec.policy.property, list(spec.strengths), list(spec.classifiers),
             spec.runner.device, dist.rank, dist.world_size)
    order = {r.image_id: i for i, r in enumerate(records)}
    with work_cache(spec.cache) as cache:
        result, hook = run_pipeline(spec, cache, dist.shard(records))
        if dist.active:
            result = _gather(dist, result, order)
            if not dist.is_main:
                dist.barrier()
                return RunSummary(out, 0, 0, "", result.timings, result.cache_summary)
        timings = {"index": index_seconds, **result.timings}
        outputs, frame = _outputs(spec, out, records, result, hook, timings)
        t0 = time.perf_counter()
        if spec.paired:
            from engine.report.outputs import write_outputs

            headline = write_outputs(outputs, cache)
        else:
            from engine.report.observational import write_observational_outputs

            headline = write_observational_outputs(outputs, frame, cache)
        timings["report"] = time.perf_counter() - t0
        record_rates(cache.root, timings, result.cache_summary)  # for later dry runs' estimates
    timings["total"] = time.perf_counter() - t_start
    write_text(out / "timings.json", json.dumps(timings, indent=2))
    write_text(out / "run_stats.json", json.dumps({"cache": result.cache_summary,
                                                     "processes": dist.world_size}, indent=2))
    _set_state(out, status="finished", finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    dist.barrier()
    n_images = int(outputs.measurements["image_id"].nunique()) if not outputs.measurements.empty else 0
    return RunSummary(out, n_images, len(outputs.skipped), headline, timings, result.cache_summary)


def _outputs(spec: RunSpec, out: Path, records: list[ImageRecord], result: PipelineResult, hook: Any,
             timings: dict[str, float]) -> tuple[RunOutputs, Any]:
    """The run's tables and statistics, assembled from the records."""
    from engine.stats import analyse, observational

    measurements = measurements_table(result.results, spec.classifiers, spec.editor.name, spec.policy.property)
    rows = audit_rows(result.results)
    audit = pd.DataFrame()
    annotations = pd.DataFrame()
    frame = None
    t0 = time.perf_counter()
    if spec.paired:
        if rows and hasattr(hook, "stage"):
            audit = hook.stage.table(rows)
        if not audit.empty and not measurements.empty:
            valid = audit[["image_id", "strength", "valid"]]
            measurements = measurements.merge(valid, on=["image_id", "strength"], how="left")
        score_sets = [name for name, c in spec.classifiers.items() if c.output_kind == "scores"]
        stats = analyse(measurements, spec.stats, score_sets) if not measurements.empty else None
    else:
        from engine.observe import annotation_table, observational_frame

        annotations = annotation_table(rows) if rows else pd.DataFrame()
        frame = observational_frame(measurements, spec.observe, annotations if not annotations.empty else None)
        try:
            stats = observational(frame, list(spec.observe.properties), spec.stats)
        except ValueError as exc:
            raise ConfigError(f"observe: {exc}") from None
    timings["stats"] = time.perf_counter() - t0
    outputs = RunOutputs(spec=spec, out=out, n_records=len(records), results=result.results,
                         skipped=skipped_table(result.skipped), measurements=measurements,
                         edits=edits_table(result.results), audit=audit, stats=stats, annotations=annotations,
                         timings=timings, cache=result.cache_summary, runner=spec.runner.describe())
    return outputs, frame
