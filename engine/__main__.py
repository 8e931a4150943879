"""`python -m engine experiment=NAME [key=value ...]`: run an experiment (Hydra app).

A bad config (misspelled key, unknown option, out-of-range value) is reported in one line before
any work starts. Add `-m` for a multirun sweep, e.g. `-m strength=0.5,1 seed=0,1`.
"""

from __future__ import annotations

import logging
import os
import sys

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

    try:
        summary = run(cfg)
    except ConfigError as exc:
        logging.getLogger("engine").error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # raised to `main`, which says it in one line (Hydra would print a traceback)
        raise SystemExit(_os_error_line(exc)) from None
    from engine.distributed import context

    if not context().is_main or summary.headline.startswith("dry run"):
        return None
    print(f"{summary.headline}\nreport: {summary.output_dir / 'report.md'}\n"
          f"gallery: {summary.output_dir / 'gallery' / 'index.html'}")
    if cfg.get("objective"):  # a search (Hydra's Optuna sweeper) minimises what the task returns
        from engine.report.objective import Objective, score

        got = score(summary.output_dir, Objective(**cfg.objective))
        print("objective: " + ", ".join(f"{k}={v:.4g}" for k, v in got.items()))
        return got["score"]
    return None


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
