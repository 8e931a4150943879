"""Batch runner: device, AMP, batching with CUDA OOM back-off, and quiet-under-CI progress bars."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from engine.pipeline.backoff import BatchBackoff
from engine.types import Classifier

log = logging.getLogger(__name__)
T = TypeVar("T")

AMP_CHOICES = ("auto", "off", "bf16", "fp16")


def resolve_device(device: str) -> torch.device:
    """"auto" picks CUDA when present; an explicit "cuda" without a GPU is an error, not a fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"runner.device={device} but no CUDA device is available; use runner.device=auto or cpu")
    return dev


class BatchRunner:
    """Runs classifiers over image tensors in batches.

    Args:
        device: "auto", "cpu", "cuda" or "cuda:N".
        amp: mixed precision for torch classifiers on CUDA: "auto" (bf16 where supported), "off",
            "bf16" or "fp16". Ignored on CPU, where reduced precision is slower and less exact.
        batch_size: override every classifier's preferred batch size.
        chunk_size: images per pipeline chunk; bounds memory. Smaller chunks let the stages
            overlap sooner; larger ones batch editors and classifiers better. None: 8 on a CPU,
            128 on CUDA.
        workers: threads for decoding and face analysis.
        overlap: run the pipeline's stages in threads that overlap on different chunks (False: one
            chunk through every stage at a time; the results are identical).
        stage_threads: torch intra-op threads of each overlapping stage; None: half the CPUs (at
            least one), so the edit and audit stages, which do most of the work, each get their own
            cores instead of taking turns on all of them.
        progress: "auto" (bars on an interactive terminal, silent under CI), "on" or "off".
    """

    def __init__(
        self,
        device: str = "auto",
        amp: str = "auto",
        batch_size: int | None = None,
        chunk_size: int | None = None,
        workers: int = 2,
        progress: str = "auto",
        overlap: bool = True,
        stage_threads: int | None = None,
    ) -> None:
        if amp not in AMP_CHOICES:
            raise ValueError(f"runner.amp must be one of {AMP_CHOICES}, got {amp!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"runner.batch_size must be >= 1 or null, got {batch_size}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"runner.chunk_size must be >= 1 or null, got {chunk_size}")
        if workers < 0:
            raise ValueError(f"runner.workers must be >= 0, got {workers}")
        if progress not in ("auto", "on", "off"):
            raise ValueError(f"runner.progress must be auto, on or off, got {progress!r}")
        self.device = resolve_device(device)
        self.amp = amp
        self.batch_size = batch_size
        self.chunk_size = chunk_size or (128 if self.device.type == "cuda" else 8)
        self.workers = workers
        self.progress_mode = progress
        self.overlap = overlap
        if stage_threads is not None and stage_threads < 1:
            raise ValueError(f"runner.stage_threads must be >= 1 or null, got {stage_threads}")
        self.stage_threads = stage_threads or max(1, (os.cpu_count() or 2) // 2)
        # The largest batch that fit each classifier after a CUDA OOM, so later chunks start there
        # instead of running out of memory again (keyed by object: two configs of one class differ).
        self.backoff = BatchBackoff()  # shared with the edit step: one memory budget

    # -- precision -------------------------------------------------------------------------------
    @property
    def amp_dtype(self) -> torch.dtype | None:
        if self.device.type != "cuda" or self.amp == "off":
            return None
        if self.amp == "fp16":
            return torch.float16
        if self.amp == "bf16" or torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.amp_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=dtype)

    # -- progress --------------------------------------------------------------------------------
    @property
    def show_progress(self) -> bool:
        if self.progress_mode != "auto":
            return self.progress_mode == "on"
        return sys.stderr.isatty() and not os.environ.get("CI")

    def progress(self, iterable: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
        from tqdm.auto import tqdm

        return iter(tqdm(iterable, total=total, desc=desc, disable=not self.show_progress, leave=False))

    # -- classification --------------------------------------------------------------------------
    def prepare(self, classifier: Classifier) -> Classifier:
        classifier.to(self.device)
        return classifier

    def predict(self, classifier: Classifier, images: torch.Tensor, boxes: torch.Tensor) -> np.ndarray:
        """Score `images` (N, 3, H, W) uint8 or float [0, 1] with `classifier`; returns (N, K) float64.

        Halves the batch on CUDA out-of-memory until one image fits, then gives up loudly; later
        calls for the same classifier start from the batch that fitted.
        """
        n = images.shape[0]
        if n == 0:
            return np.zeros((0, len(classifier.labels)))

        def job(part: Sequence[int]) -> list[np.ndarray]:
            return [self._predict_batch(classifier, images[part[0]: part[-1] + 1], boxes[part[0]: part[-1] + 1])]

        out = self.backoff.run(job, range(n), self.batch_size or classifier.batch_size, id(classifier),
                               f"classifier={classifier.name}")
        return np.concatenate(out, axis=0)

    def _predict_batch(self, classifier: Classifier, images: torch.Tensor, boxes: torch.Tensor) -> np.ndarray:
        # uint8 stays uint8: the classifier crops first, so a float copy of whole images (which on a
        # CPU costs more than many models' forward pass) is never made.
        x = images.to(self.device, non_blocking=True)
        b = boxes.to(self.device).float()
        with torch.inference_mode(), self.autocast():
            probs = classifier.predict(classifier.preprocess(x, b))
        return torch.as_tensor(probs).float().cpu().numpy().astype(np.float64)

    def describe(self) -> dict[str, Any]:
        return {
            "device": str(self.device),
            "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
            "batch_size": self.batch_size,
            "chunk_size": self.chunk_size,
            "workers": self.workers,
            "overlap": self.overlap,
            "stage_threads": self.stage_threads if self.overlap else torch.get_num_threads(),
        }
