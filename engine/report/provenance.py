"""Provenance: the config, the git commit, package versions and the machine, stamped on every output."""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.report.files import write_text

STAMPED_PACKAGES = ("facecf", "torch", "torchvision", "numpy", "scipy", "statsmodels", "pandas", "mediapipe",
                    "hydra-core", "omegaconf", "transformers", "onnxruntime", "pillow", "lpips")


def git_revision() -> dict[str, Any]:
    """The engine's git commit and whether the tree had local changes (None outside a checkout)."""
    here = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        if rev.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def short_commit() -> str:
    """The engine's commit in seven hex digits, as the generated docs' headers print it ("unknown" outside a checkout)."""
    return (git_revision()["commit"] or "unknown")[:7]


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for p in STAMPED_PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def stamp(config: Any, runner: dict[str, Any]) -> dict[str, Any]:
    """Provenance attached to every JSON output."""
    return {
        "config": dict(config),
        "git": git_revision(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "runner": runner,
    }


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (pd.Timestamp, Path)):
        return str(o)
    return str(o)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=_jsonable, allow_nan=True))
