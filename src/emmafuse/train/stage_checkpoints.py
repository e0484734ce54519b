"""What a stage saves and restores: resumable checkpoints and its finished weights.

Every checkpoint holds the stage's models, optimiser, scheduler, step, the CPU/CUDA RNG states
and each process's sample generator; the data pipeline is a pure function of
``(seed, stage, sample index)`` (:mod:`emmafuse.train.patches`), so a resumed run continues
bit-identically on CPU. Where the folders go is :class:`~emmafuse.train.run_folder.RunFolder`;
how they are stored is :mod:`emmafuse.train.ckpt_io`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emmafuse.train import ckpt_io
from emmafuse.train.config import ConfigError
from emmafuse.train.run_context import RunContext
from emmafuse.train.sensing import SensingUNet
from emmafuse.train.stages import freeze

__all__ = [
    "Optimisation", "save_checkpoint", "restore_checkpoint", "save_final", "final_exists", "reload_final", "load_sensing",
]


@dataclass
class Optimisation:
    """A stage's optimiser, its learning-rate schedule and its sample generator (all checkpointed)."""

    opt: torch.optim.Optimizer
    sched: Any  # torch.optim.lr_scheduler.StepLR (its stubs vary between torch versions)
    gen: torch.Generator


def save_checkpoint(rc: RunContext, stage: str, step: int, modules: dict[str, nn.Module], o: Optimisation) -> None:
    """Write ``<stage>/ckpt-<step>`` (main process; every process contributes its generator)
    and prune old checkpoints to ``keep_checkpoints``."""
    gens = rc.dist.gather_objects(o.gen.get_state())
    if rc.dist.is_main:
        state = {
            "stage": stage,
            "step": step,
            "world": rc.dist.world,
            "config": rc.cfg.to_dict(),
            "models": {k: m.state_dict() for k, m in modules.items()},
            "optimizer": o.opt.state_dict(),
            "scheduler": o.sched.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if rc.device.type == "cuda" else [],
                "generators": list(gens),
            },
        }
        path = rc.run.checkpoint_dir(stage, step)
        ckpt_io.save_state(path, state, rc.cfg.max_shard_mib << 20)
        rc.run.prune_checkpoints(stage, path, rc.cfg.keep_checkpoints)
    rc.dist.barrier()


def restore_checkpoint(rc: RunContext, path: Path, modules: dict[str, nn.Module], o: Optimisation) -> int:
    """Load a checkpoint into ``modules`` and ``o`` (and the global RNGs); returns its step.

    Raises:
        ConfigError: the checkpoint was written by another number of processes.
    """
    state = ckpt_io.load_state(path)
    if int(state["world"]) != rc.dist.world:
        raise ConfigError(
            f"{path} was written by {state['world']} processes; resume with the same number (now {rc.dist.world})"
        )
    for key, m in modules.items():
        m.load_state_dict(state["models"][key])
    o.opt.load_state_dict(state["optimizer"])
    o.sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if rc.device.type == "cuda" and state["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    o.gen.set_state(state["rng"]["generators"][rc.dist.rank])
    return int(state["step"])


def save_final(rc: RunContext, stage: str, modules: dict[str, nn.Module], meta: dict[str, Any]) -> Path:
    """Write the finished stage's weights and ``meta`` to ``<stage>/final``; returns the folder."""
    path = rc.run.final_dir(stage)
    if rc.dist.is_main:
        state = {"models": {k: m.state_dict() for k, m in modules.items()}, "meta": meta}
        ckpt_io.save_state(path, state, rc.cfg.max_shard_mib << 20)
    rc.dist.barrier()
    return path


def final_exists(rc: RunContext, stage: str) -> bool:
    """Whether a resumed run finds ``stage`` finished (a fresh run never reuses it)."""
    return rc.resume and rc.run.has_final(stage)


def reload_final(rc: RunContext, stage: str, fuser: nn.Module) -> bool:
    """Load a finished stage's U-Fuser when resuming; False when the stage must run."""
    if not final_exists(rc, stage):
        return False
    fuser.load_state_dict(ckpt_io.load_state(rc.run.final_dir(stage))["models"]["fuser"])
    rc.log(f"{stage}: reusing the finished stage")
    return True


def load_sensing(path: str | Path, device: torch.device | str = "cpu") -> tuple[SensingUNet, SensingUNet]:
    """Load the frozen A_i, A_v from a sensing ``final/`` (or ``ckpt-*``) folder."""
    state = ckpt_io.load_state(path)
    base = int(state["meta"]["base"]) if "meta" in state else int(state["config"]["sensing"]["base"])
    nets = []
    for key in ("a_i", "a_v"):
        net = SensingUNet(base)
        net.load_state_dict(state["models"][key])
        nets.append(freeze(net.to(device)))
    return nets[0], nets[1]
