"""Process-group plumbing for data-parallel training (``torchrun``; NCCL on CUDA, gloo on CPU).

Launch with ``torchrun --nproc_per_node=N -m emmafuse.train all ...``; every process then
trains on its own slice of each step's samples and DDP averages the gradients. The batch
size in the config is *per process*.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from emmafuse.train.config import ConfigError

__all__ = ["DistContext", "setup", "resolve_device"]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available", parameter="device")
        index: int | None = device.index  # None for a plain "cuda" (torch's stubs say int)
        if index is None:
            device = torch.device("cuda", local_rank)
    return device


@dataclass
class DistContext:
    """Rank information; a single process has ``world == 1`` and no process group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (on every rank)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def mean(self, value: float) -> float:
        """Average a Python float over ranks."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t) / self.world

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def setup(device: str = "auto") -> DistContext:
    """Join the process group described by torchrun's environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=resolve_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
        owns = True
    return DistContext(rank=rank, world=world, local_rank=local_rank, device=dev, owns_group=owns)
