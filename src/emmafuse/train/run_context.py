"""What every part of a training run shares: the configuration, the processes, the run folder,
the log, and the device plumbing (autocast, device placement, DDP wrapping)."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
from torch import nn

from emmafuse.train.config import TrainConfig
from emmafuse.train.distributed import DistContext
from emmafuse.train.run_folder import RunFolder

__all__ = ["RunContext"]

M = TypeVar("M", bound=nn.Module)


@dataclass
class RunContext:
    """One training run's shared state.

    Attributes:
        cfg: the run's configuration.
        dist: the processes (one, or a DDP group).
        run: the run folder.
        resume: continue from the run folder's checkpoints and finished stages.
        log_fn: where messages go (default: the progress bar's ``write``, or ``print``).
    """

    cfg: TrainConfig
    dist: DistContext
    run: RunFolder
    resume: bool = False
    log_fn: Callable[[str], None] | None = None

    @property
    def device(self) -> torch.device:
        return self.dist.device

    def log(self, message: str) -> None:
        """A message from the main process (other processes stay quiet)."""
        if not self.dist.is_main:
            return
        if self.log_fn is not None:
            self.log_fn(message)
        elif self.cfg.progress:
            from tqdm import tqdm

            tqdm.write(message)
        else:
            print(message, flush=True)

    def record(self, record: dict[str, Any]) -> None:
        """One ``log.jsonl`` record, written by the main process."""
        if self.dist.is_main:
            self.run.append_log(record)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on CUDA when ``amp`` is on; nothing otherwise."""
        if self.cfg.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` on the training device (channels_last when configured)."""
        t = t.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def prep_module(self, m: M) -> M:
        """``m`` on the training device (and in channels_last memory format when configured)."""
        m = m.to(self.device)
        if self.cfg.channels_last:
            # torch's stubs for Module.to lack memory_format (the runtime takes it)
            m = cast(M, cast(Any, m).to(memory_format=torch.channels_last))
        return m

    def wrap(self, objective: nn.Module, sync_buffers: bool, static_graph: bool = False) -> nn.Module:
        """DDP-wrap the step module when running distributed.

        ``static_graph`` for the U-Fuser stages: parameters that never reach the loss (the
        attention ``scale`` of one-channel-per-head scales) are found once, not every step.
        """
        if not self.dist.enabled:
            return objective
        from torch.nn.parallel import DistributedDataParallel

        kwargs: dict[str, Any] = {"static_graph": static_graph}
        # torch >= 2.12 renames broadcast_buffers (buffers are synced at init either way)
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
            kwargs["forward_sync_buffers"] = sync_buffers
        else:
            kwargs["broadcast_buffers"] = sync_buffers
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(objective, device_ids=ids, **kwargs)

    def loader_workers(self) -> int:
        """DataLoader worker processes for this device (:meth:`DataConfig.effective_workers`)."""
        return self.cfg.data.effective_workers(self.device.type)
