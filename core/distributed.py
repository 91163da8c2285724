"""Several processes (``torchrun``): joining the process group, and the few values they share."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_kind: str) -> Dist:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        # NCCL moves CUDA tensors only; the small metric reductions run on CPU tensors through gloo.
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_sum(values: list[float], ctx: Dist) -> list[float]:
    if not ctx.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather_arrays(array: np.ndarray, ctx: Dist) -> list[np.ndarray]:
    if not ctx.enabled:
        return [array]
    gathered: list = [None] * ctx.world
    dist.all_gather_object(gathered, array)
    return gathered
