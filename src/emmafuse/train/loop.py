"""The one step loop every stage runs: :func:`fit` trains a :class:`~emmafuse.train.stages.StageSpec`.

Optimiser (Adam) and step schedule, resume from the stage's last checkpoint, the steps, the
logged loss means, validation and checkpoints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from emmafuse.train.patches import make_loader
from emmafuse.train.run_context import RunContext
from emmafuse.train.stage_checkpoints import Optimisation, restore_checkpoint, save_checkpoint
from emmafuse.train.stage_names import stage_seed
from emmafuse.train.stages import StageSpec

__all__ = ["StageResult", "fit"]


@dataclass
class StageResult:
    """What a stage did: logged training losses and validation records."""

    name: str
    start_step: int = 0
    steps: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _optimisation(rc: RunContext, spec: StageSpec) -> Optimisation:
    settings = spec.settings
    params = [p for m in spec.modules.values() for p in m.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=settings.lr)
    lr_step = settings.lr_step or max(1, spec.default_lr_step)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step, gamma=settings.lr_gamma)
    gen = torch.Generator().manual_seed(stage_seed(rc.cfg.seed, spec.name, rc.dist.rank))
    return Optimisation(opt, sched, gen)


def _resume(rc: RunContext, spec: StageSpec, o: Optimisation) -> int:
    """The step to start from: the last checkpoint's when resuming, else 0."""
    ckpt = rc.run.latest_checkpoint(spec.name) if rc.resume else None
    if ckpt is None:
        return 0
    start = restore_checkpoint(rc, ckpt, spec.modules, o)
    rc.log(f"{spec.name}: resumed from {ckpt} at step {start}")
    return start


def _log_losses(rc: RunContext, spec: StageSpec, done: int, losses: list[torch.Tensor], names: list[str],
                o: Optimisation, result: StageResult) -> float:
    """Record the mean of the losses since the last record (over all processes); returns the loss."""
    values = [rc.dist.mean(v) for v in torch.stack(losses).mean(0).tolist()]
    losses.clear()
    record = {"stage": spec.name, "step": done, **dict(zip(names, values)), "lr": o.sched.get_last_lr()[0]}
    result.history.append(record)
    rc.record(record)
    return values[0]


def _validate(rc: RunContext, spec: StageSpec, done: int, result: StageResult) -> None:
    """Validation scores of the current weights, recorded and logged (main process)."""
    if not rc.dist.is_main:
        return
    spec.objective.eval()
    with torch.no_grad(), rc.autocast():
        val = spec.validate()
    spec.objective.train()
    if val:
        result.validation.append({"step": done, **val})
        rc.record({"stage": spec.name, "step": done, "validation": val})
        rc.log(f"{spec.name} step {done}: " + ", ".join(f"{k}={v:.4g}" for k, v in val.items()))


def _progress_bar(rc: RunContext, spec: StageSpec, start: int) -> Any:
    if not (rc.cfg.progress and rc.dist.is_main):
        return None
    from tqdm import tqdm

    return tqdm(total=spec.settings.steps, initial=start, desc=spec.name, unit="step", dynamic_ncols=True)


def fit(rc: RunContext, spec: StageSpec, *, halt_after: int | None = None) -> StageResult:
    """Train one stage from its last checkpoint (when resuming) to ``spec.settings.steps``.

    ``halt_after``: stop after this step (checkpointing first), as if interrupted.
    """
    cfg, steps = rc.cfg, spec.settings.steps
    o = _optimisation(rc, spec)
    result = StageResult(spec.name)
    start = result.start_step = _resume(rc, spec, o)
    wrapped = rc.wrap(spec.objective, spec.sync_buffers, spec.static_graph)
    spec.objective.train()
    loader = make_loader(spec.dataset, spec.settings.batch, start, steps, rank=rc.dist.rank, world=rc.dist.world,
                         workers=rc.loader_workers(), pin_memory=rc.device.type == "cuda")
    bar = _progress_bar(rc, spec, start)
    losses: list[torch.Tensor] = []
    names: list[str] = []
    t0 = time.perf_counter()
    done = start
    try:
        for step, batch in zip(range(start, steps), loader):
            batch = {k: rc.to_device(v) for k, v in batch.items()}
            with rc.autocast():
                loss, parts = wrapped(*spec.step_args(batch, o.gen))
            o.opt.zero_grad(set_to_none=True)
            loss.backward()
            o.opt.step()
            o.sched.step()
            if spec.after_step is not None:
                spec.after_step()
            names = ["loss", *parts]
            # no .item() here: a host sync per step would stall an overhead-bound GPU
            losses.append(torch.stack([loss.detach().float(), *(p.float() for p in parts.values())]))
            done = step + 1
            if bar is not None:
                bar.update(1)
            if done % cfg.log_every == 0 or done == steps:
                mean_loss = _log_losses(rc, spec, done, losses, names, o, result)
                if bar is not None:
                    bar.set_postfix(loss=f"{mean_loss:.4f}")
            if done % cfg.val_every == 0 or done == steps:
                _validate(rc, spec, done, result)
            halting = halt_after is not None and done >= halt_after
            if done % cfg.ckpt_every == 0 or done == steps or halting:
                save_checkpoint(rc, spec.name, done, spec.modules, o)
            if halting:
                break
    finally:
        if bar is not None:
            bar.close()
    result.steps, result.seconds = done, time.perf_counter() - t0
    return result
