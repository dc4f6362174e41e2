"""Process-group setup for torchrun + DistributedDataParallel, and the few collectives the loop needs.

torchrun describes the job through environment variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT); torch's ``env://`` rendezvous reads them, so this is the one module that looks at the
environment. A single process (no WORLD_SIZE, or WORLD_SIZE=1) gets a :class:`DistInfo` with
``world_size == 1`` and every collective below becomes a no-op.

Each rank builds its own ``BatchSource`` from ``rank`` / ``world_size``; DDP averages gradients
across ranks, so per-rank mean losses over equal-sized batches give the gradient of the global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job. ``rank == 0`` is the only one that writes files."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def single(cls, device: str | torch.device | None = None) -> DistInfo:
        """One process on ``device`` (default: CUDA when available, else CPU)."""
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(device=torch.device(device))


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the torchrun job described by the environment, or describe a single process.

    Args:
        backend: "nccl" or "gloo"; default NCCL when CUDA is available, gloo otherwise.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo.single()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup_distributed() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """DistributedDataParallel around ``model`` when distributed; ``model`` itself otherwise."""
    if not info.is_distributed:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (identity for one process) and return it."""
    if info.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]``; ``[obj]`` for one process."""
    if not info.is_distributed:
        return [obj]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for one process)."""
    if info.is_distributed:
        dist.barrier()
