"""Multi-process runs: `accelerate launch --multi_gpu --num_processes N -m engine ...` or `torchrun`.

Each process takes every N-th image, works through its share with the shared content cache, and
the main process gathers the pieces into one result. Only small Python objects cross processes
(gloo), so the same code serves CPU processes and one process per GPU.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch

RUN_STAMP_ENV = "FACECF_RUN_STAMP"


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def shard(self, items: list[Any]) -> list[Any]:
        """This process's share: every world_size-th item, so shares differ by at most one."""
        return items[self.rank :: self.world_size] if self.active else items

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order (all processes receive the list)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def device(self, requested: str) -> str:
        """One GPU per process when CUDA is present and the config says auto or cuda."""
        if self.active and requested in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return requested


_CONTEXT = DistContext()


def context() -> DistContext:
    return _CONTEXT


def init_from_env() -> DistContext:
    """Join the process group a launcher (accelerate, torchrun) described in the environment."""
    global _CONTEXT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _CONTEXT
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    _CONTEXT = DistContext(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                           int(os.environ.get("LOCAL_RANK", "0")))
    # All processes must write into one run folder: the main process picks its time stamp.
    if RUN_STAMP_ENV not in os.environ:
        os.environ[RUN_STAMP_ENV] = _CONTEXT.broadcast(time.strftime("%Y-%m-%d/%H-%M-%S"))
    return _CONTEXT
