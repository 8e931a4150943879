"""CUDA out-of-memory back-off: run a batched job in parts, halving the part on out-of-memory.

Shared by classification and editing. Every editor and classifier gives the same result for a batch
as one by one (their contract), so splitting a batch never changes an output, only its speed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")


class BatchBackoff:
    """Remembers, per job name, the largest part that fitted, so later calls start from it."""

    def __init__(self) -> None:
        self.fitted: dict[object, int] = {}

    def run(self, job: Callable[[Sequence[int]], list[T]], items: Sequence[int], start: int, name: object,
            label: str = "") -> list[T]:
        """`job(part)` over consecutive parts of `items`, starting at `start` items a part; halves the
        part on `torch.cuda.OutOfMemoryError` until one item fits, then gives up loudly."""
        n = len(items)
        size = max(1, min(start, self.fitted.get(name, n), n)) if n else 1
        out: list[T] = []
        i = 0
        while i < n:
            part = items[i: i + size]
            try:
                out.extend(job(part))
                i += len(part)
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                torch.cuda.empty_cache()
                size = max(1, size // 2)
                self.fitted[name] = size
                log.warning("%s CUDA out of memory; batch size -> %d", label or name, size)
        return out
