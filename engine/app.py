"""run(cfg): instantiate -> analyse faces -> edit -> classify -> audit -> test -> report."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from engine.cache import WorkCache
from engine.config import validate
from engine.faces import FaceAnalyzer
from engine.pipeline import Pipeline
from engine.types import ConfigError

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


def guard_output(out: Path, resume: bool) -> None:
    """Refuse to overwrite a finished or started run unless `resume=true`."""
    state = out / RUN_STATE
    if state.exists() and not resume:
        info = json.loads(state.read_text() or "{}")
        raise ConfigError(
            f"output folder {out} already holds a run (status: {info.get('status', '?')}); pass resume=true to "
            "continue it from the cache, or choose another hydra.run.dir"
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


def run(cfg: DictConfig, out: Path | None = None) -> RunSummary:
    """Run one experiment described by the composed config `cfg`; outputs go to Hydra's run folder.

    Under a multi-process launch each process works through its share of the images and the main
    process gathers the pieces, so the result equals a single-process run.
    """
    from engine.distributed import context

    dist = context()
    out = out or output_dir_for(cfg)
    out.mkdir(parents=True, exist_ok=True)
    if dist.is_main:
        guard_output(out, bool(cfg.resume))
    built = validate(cfg)
    dist.barrier()  # nobody starts before the main process has accepted the output folder
    if dist.is_main:
        _set_state(out, status="running", started=time.strftime("%Y-%m-%d %H:%M:%S"))
    seed_everything(int(cfg.seed))
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    from engine.checks import ManipulationChecks
    from engine.report import write_outputs
    from engine.runner import BatchRunner
    from engine.stats import analyse

    runner_cfg = OmegaConf.to_container(cfg.runner, resolve=True)
    assert isinstance(runner_cfg, dict)
    runner_cfg["device"] = dist.device(runner_cfg["device"])
    runner = BatchRunner(**runner_cfg)
    analyzer: FaceAnalyzer = built["faces"]
    classifiers = {n: runner.prepare(c) for n, c in built["classifiers"].items()}
    cache = WorkCache(cfg.cache.dir, enabled=cfg.cache.enabled)
    editor = built["editor"]
    editor_name = type(editor).__name__
    log.info("experiment=%s editor=%s property=%s strengths=%s classifiers=%s device=%s rank=%d/%d",
             cfg.experiment_name, editor_name, editor.property, built["strengths"], list(classifiers),
             runner.device, dist.rank, dist.world_size)

    t0 = time.perf_counter()
    records = list(built["dataset"])
    order = {r.image_id: i for i, r in enumerate(records)}
    timings["index"] = time.perf_counter() - t0

    obs = built["observe"]
    stage = built["audit_stage"]
    audit_stage: Any = None
    if obs.enabled:
        from engine.observe import JudgeAnnotator

        audit_stage = JudgeAnnotator() if obs.annotate else None
    elif stage["enabled"]:
        audit_stage = ManipulationChecks(built["audit"], editor.property, getattr(editor, "direction", None), cache,
                                         runner.device, symmetry_measure=stage["symmetry_measure"],
                                         perceptual=stage["perceptual"], lpips_net=stage["lpips_net"],
                                         image_symmetry_measure=stage["image_symmetry_measure"],
                                         landmarker=analyzer.landmarker, identity=stage["identity"])
    pipe = Pipeline(analyzer, editor, built["strengths"], classifiers, runner, cache, int(cfg.seed),
                    keep_for_report=built["report"].gallery_max_images if dist.is_main else 0,
                    audit_hook=audit_stage, paired=not obs.enabled)
    result = pipe.run(dist.shard(records))
    analyzer.close()
    audit_df = audit_stage.table() if audit_stage else pd.DataFrame()
    if hasattr(audit_stage, "close"):
        audit_stage.close()
    if dist.active:
        result, audit_df = _gather(dist, result, audit_df)
        if not dist.is_main:
            dist.barrier()
            return RunSummary(out, 0, 0, "", result.timings, result.cache_summary)
    timings.update(result.timings)

    measurements = _in_dataset_order(result.measurements, order)
    audit_df = _in_dataset_order(audit_df, order)
    # Replayed and freshly computed images of one chunk come out in two groups: dataset order again.
    result.edit_metadata = _in_dataset_order(result.edit_metadata, order)
    if obs.enabled:
        return _finish_observational(cfg, built, out, runner, result, measurements, audit_df, timings, t_start,
                                     len(records), dist)
    if not audit_df.empty and not measurements.empty:
        valid = audit_df[["image_id", "strength", "valid"]]
        measurements = measurements.merge(valid, on=["image_id", "strength"], how="left")

    t0 = time.perf_counter()
    stats = analyse(measurements, built["stats"]) if not measurements.empty else None
    timings["stats"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    config_plain = OmegaConf.to_container(cfg, resolve=True)
    headline = write_outputs(
        out=out,
        cfg=config_plain,  # type: ignore[arg-type]
        experiment=str(cfg.experiment_name),
        editor=editor,
        editor_name=editor_name,
        strengths=built["strengths"],
        classifiers=classifiers,
        runner=runner,
        result=result,
        measurements=measurements,
        stats=stats,
        audit=audit_df,
        report_cfg=built["report"],
        timings=timings,
        n_records=len(records),
    )
    timings["report"] = time.perf_counter() - t0
    return _finish(out, headline, timings, t_start, result, measurements, dist)


def _in_dataset_order(df: pd.DataFrame, order: dict[str, int]) -> pd.DataFrame:
    """Rows sorted by the images' dataset position (stable), so sharded runs equal single runs."""
    if df.empty:
        return df
    pos = df["image_id"].map(order)
    return df.assign(_pos=pos).sort_values("_pos", kind="stable").drop(columns="_pos").reset_index(drop=True)


def _gather(dist: Any, result: Any, audit_df: pd.DataFrame) -> tuple[Any, pd.DataFrame]:
    """Collect every process's tables on all processes; the main process keeps its gallery chunks."""
    from engine.pipeline import PipelineResult

    parts = dist.gather((result.measurements, result.skipped, result.edit_metadata, audit_df,
                         result.timings, result.cache_summary))
    timings: dict[str, float] = {}
    cache: dict[str, dict[str, int]] = {}
    for *_, t, c in parts:
        for k, v in t.items():
            timings[k] = max(timings.get(k, 0.0), v)  # processes run in parallel: wall time is the max
        for kind, counts in c.items():
            agg = cache.setdefault(kind, {"cached": 0, "computed": 0})
            agg["cached"] += counts["cached"]
            agg["computed"] += counts["computed"]

    def cat(i: int) -> pd.DataFrame:
        frames = [p[i] for p in parts if p[i] is not None and not p[i].empty]
        return pd.concat(frames, ignore_index=True) if frames else parts[0][i]

    merged = PipelineResult(cat(0), cat(1), cat(2), result.chunks_for_report, timings, cache)
    return merged, cat(3)


def _finish_observational(cfg, built, out, runner, result, measurements, judged, timings, t_start, n_records, dist):
    from engine.gallery import write_gallery
    from engine.observe import observational_frame, write_observational_report
    from engine.report import stamp
    from engine.stats import observational

    obs = built["observe"]
    measurements.to_parquet(out / "measurements.parquet", index=False)
    result.skipped.to_csv(out / "skipped.csv", index=False)
    if not judged.empty:
        judged.to_csv(out / "annotations.csv", index=False)
    t0 = time.perf_counter()
    frame = observational_frame(measurements, obs, judged if not judged.empty else None)
    try:
        stats = observational(frame, list(obs.properties), built["stats"])
    except ValueError as exc:
        raise ConfigError(f"observe: {exc}") from None
    timings["stats"] = time.perf_counter() - t0
    provenance = stamp(OmegaConf.to_container(cfg, resolve=True), runner.describe())  # type: ignore[arg-type]
    headline = write_observational_report(out, str(cfg.experiment_name), obs, stats, frame, provenance, n_records,
                                          result.skipped)
    write_gallery(out, result.chunks_for_report, built["classifiers"], built["report"],
                  f"{cfg.experiment_name}: originals (observational)")
    return _finish(out, headline, timings, t_start, result, measurements, dist)


def _finish(out: Path, headline: str, timings: dict[str, float], t_start: float, result: Any,
            measurements: pd.DataFrame, dist: Any) -> RunSummary:
    """Write the run's timings and cache counts, mark it finished, and summarise it."""
    timings["total"] = time.perf_counter() - t_start
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    (out / "run_stats.json").write_text(json.dumps({"cache": result.cache_summary,
                                                     "processes": dist.world_size}, indent=2))
    _set_state(out, status="finished", finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    dist.barrier()
    n_images = int(measurements["image_id"].nunique()) if not measurements.empty else 0
    return RunSummary(out, n_images, len(result.skipped), headline, timings, result.cache_summary)
