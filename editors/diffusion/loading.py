"""Loading a diffusers pipeline from a Hugging Face hub id or a local folder, offline-aware.

A diffusion model is a folder of several files (`model_index.json` and one subfolder per component),
not one file, so it does not go through the engine's single-file asset registry. What the registry
gives a single file, this module gives a model folder:

* **pinning**: `revision` (a hub commit) pins a hub id; the model's digest (`model_digest`) enters the
  editor's fingerprint, so cached edits are never reused across different weights;
* **cache**: the Hugging Face cache (`HF_HOME`), or a folder written by `save_pretrained`;
* **a clear offline error**: `DiffusionModelUnavailable` says what is missing and where to put it.
  `HF_HUB_OFFLINE=1` and `FACECF_OFFLINE=1` are read at each call (huggingface_hub reads its own
  variable once, at import), so nothing is fetched while either is set.
"""

from __future__ import annotations

import hashlib
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

#: Files above this size are digested by their size and first and last MiB (a full hash of a
#: several-GB checkpoint would cost seconds at every start; a changed checkpoint changes either).
FULL_HASH_MAX_BYTES = 256 * 2**20
_TRUE = ("1", "true", "yes", "on")


class DiffusionModelUnavailable(RuntimeError):
    """The diffusion model is neither a local folder nor in the Hugging Face cache, and cannot be fetched."""


def offline() -> bool:
    """Whether fetching from the hub is forbidden now (`HF_HUB_OFFLINE` or `FACECF_OFFLINE`)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "FACECF_OFFLINE"))


def _hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def unavailable(model: str, why: str) -> DiffusionModelUnavailable:
    """The one error for a model that cannot be had, saying where to put it."""
    mode = "offline (HF_HUB_OFFLINE or FACECF_OFFLINE is set)" if offline() else "and could not be fetched"
    return DiffusionModelUnavailable(
        f"diffusion model {model!r} is not available: {why}. It is not in the Hugging Face cache "
        f"({_hub_cache()}) {mode}. Either fetch it where there is network "
        f"(`hf download {model}`, then copy the cache folder to this machine's HF_HOME), or "
        "save the pipeline as a folder (`pipe.save_pretrained(DIR)`) and pass editor.model=DIR."
    )


def is_local(model: str) -> bool:
    """A model string names a local folder when it exists or looks like a path (not `owner/name`)."""
    if Path(model).expanduser().exists():
        return True
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model


def resolve(model: str, revision: str | None = None) -> Path:
    """The folder holding the model: the local folder, or the hub cache's snapshot (never downloads)."""
    if is_local(model):
        path = Path(model).expanduser().resolve()
        if not (path / "model_index.json").is_file():
            raise unavailable(model, f"{path} is not a diffusers folder (no model_index.json)")
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        if offline():
            raise unavailable(model, type(exc).__name__) from exc
    try:  # online: fetch it once into the hub cache, then load from there
        return Path(snapshot_download(model, revision=revision))
    except Exception as exc:  # noqa: BLE001 - any network or hub failure becomes the one clear error
        raise unavailable(model, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as f:
        if size <= FULL_HASH_MAX_BYTES:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
        else:
            h.update(str(size).encode())
            h.update(f.read(2**20))
            f.seek(size - 2**20)
            h.update(f.read(2**20))
    return h.hexdigest()


@lru_cache(maxsize=16)
def _folder_digest(folder: str, stamp: tuple) -> str:  # noqa: ARG001 - stamp invalidates the cache
    root = Path(folder)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts):
        h.update(str(path.relative_to(root)).encode())
        h.update(_file_digest(path).encode())
    return h.hexdigest()


def model_digest(folder: Path) -> str:
    """sha256 over the folder's files (relative names and contents): what the fingerprint pins."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts)
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _folder_digest(str(folder), stamp)


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is float16 on CUDA and float32 elsewhere (half precision is slow or missing on CPUs)."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if name not in table:
        raise ValueError(f"dtype={name!r}: allowed: auto, {', '.join(sorted(table))}")
    return table[name]


def load_pipeline(pipeline_class: str, folder: Path, dtype: torch.dtype, scheduler: str | None = None) -> Any:
    """`diffusers.<pipeline_class>.from_pretrained(folder)` without a safety checker, quiet.

    The safety checker is dropped: it replaces images it misreads as unsafe with black ones, which
    on face crops would be silent, wrong edits rather than errors. A scheduler named by its diffusers
    class (e.g. `DPMSolverMultistepScheduler`) replaces the model's own, built from its config.
    """
    import inspect

    import diffusers

    cls = getattr(diffusers, pipeline_class, None)
    if cls is None:
        raise ValueError(f"diffusers has no pipeline {pipeline_class!r} (diffusers {diffusers.__version__})")
    diffusers.utils.logging.disable_progress_bar()  # the loading bar; the engine shows its own progress
    extra: dict[str, Any] = {}
    if "safety_checker" in inspect.signature(cls.__init__).parameters:
        extra = {"safety_checker": None, "requires_safety_checker": False}
    try:
        pipe = cls.from_pretrained(str(folder), dtype=dtype, local_files_only=True, **extra)
    except (OSError, ValueError) as exc:
        raise unavailable(str(folder), f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    if scheduler:
        sched_cls = getattr(diffusers, scheduler, None)
        if sched_cls is None:
            raise ValueError(f"diffusers has no scheduler {scheduler!r}")
        pipe.scheduler = sched_cls.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    log.info("loaded %s from %s (%s)", pipeline_class, folder, str(dtype).replace("torch.", ""))
    return pipe
