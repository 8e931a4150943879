"""`python -m engine experiment=NAME [key=value ...]`: run an experiment (Hydra app).

A bad config (misspelled key, unknown option, out-of-range value) is reported in one line before
any work starts. Add `-m` for a multirun sweep, e.g. `-m strength=0.5,1 seed=0,1`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from engine.config import precheck, register_experiments
from engine.types import ConfigError

# MediaPipe/TFLite log through glog at import; keep the terminal for the engine's own lines.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@hydra.main(version_base=None, config_path="pkg://conf", config_name="config")
def _hydra_entry(cfg: DictConfig) -> float | None:
    from engine.app import run

    objective = None
    try:
        objective = _objective(cfg)
        summary = run(cfg)
    except ConfigError as exc:
        logging.getLogger("engine").error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        if objective is not None and _in_sweep():  # a trial drew values its component refuses: score it, go on
            from engine.report.objective import REFUSED_TRIAL_SCORE

            return REFUSED_TRIAL_SCORE
        sys.exit(2)
    except OSError as exc:  # raised to `main`, which says it in one line (Hydra would print a traceback)
        raise SystemExit(_os_error_line(exc)) from None
    from engine.distributed import context

    if not context().is_main or summary.headline.startswith("dry run"):
        return None
    print(f"{summary.headline}\nreport: {summary.output_dir / 'report.md'}\n"
          f"gallery: {summary.output_dir / 'gallery' / 'index.html'}")
    if objective is not None:  # a search (Hydra's Optuna sweeper) minimises what the task returns
        from hydra.core.hydra_config import HydraConfig

        from engine.report.objective import score

        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        got = score(summary.output_dir, objective, overrides, cfg.get("experiment_name"))
        print("objective: " + ", ".join(f"{k}={v:.4g}" for k, v in got.items()))
        return got["score"]
    return None


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _objective(cfg: DictConfig) -> Any:
    """The search objective of `cfg`, checked before any work (None: not a search)."""
    if not cfg.get("objective"):
        return None
    from omegaconf import OmegaConf

    from engine.report.objective import Objective

    try:
        objective = Objective(**OmegaConf.to_container(cfg.objective, resolve=True))
        objective.check_run(cfg.get("dataset", {}).get("split"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    return objective


def _os_error_line(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"error: cannot write {where}{exc.strerror or exc}; choose a writable hydra.run.dir (and cache.dir)"


def main() -> None:
    from engine.distributed import init_from_env

    init_from_env()  # no-op unless launched by accelerate/torchrun with several processes
    register_experiments()
    argv = sys.argv[1:]
    if not any(a in ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c", "--shell-completion") or
               a.startswith(("--cfg", "--info")) for a in argv):
        try:
            precheck(argv)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
    from engine.faces.landmarker import close_all

    try:
        _hydra_entry()
    finally:  # before interpreter shutdown: MediaPipe's own finaliser fails once its dispatcher is gone
        close_all()


if __name__ == "__main__":
    main()
