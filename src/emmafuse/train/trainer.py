"""The training driver: stages, validation, checkpoint/resume, DDP, export.

The run folder (its layout, the start/resume/overwrite rules) is
:class:`~emmafuse.train.run_folder.RunFolder`; what each stage trains is a
:class:`~emmafuse.train.stages.StageSpec` run by one loop, :meth:`Trainer._fit`.

Every checkpoint holds models, optimiser, scheduler, step, the CPU/CUDA RNG states and
each process's transform generator; the data pipeline is a pure function of
``(seed, stage, sample index)`` (see :mod:`emmafuse.train.data`), so a resumed run continues
bit-identically on CPU.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from torch import nn

from emmafuse.errors import EmmafuseError
from emmafuse.models import UFuser, UFuserConfig
from emmafuse.models.upsampling import balance_upsampling_, init_upsampling_bilinear
from emmafuse.train import ckpt_io
from emmafuse.train.config import ConfigError, TrainConfig
from emmafuse.train.data import (
    PairStore,
    PatchDataset,
    collect_pairs,
    describe_pairs,
    make_loader,
    split_holdout,
    split_pairs,
    validation_crops,
)
from emmafuse.train.augment import Augment
from emmafuse.train.domain_validation import DomainCrop, holdout_crops, score_domains
from emmafuse.train.distributed import DistContext, setup
from emmafuse.train.losses import conventional_fusion_loss, l1_gradient_loss
from emmafuse.train.preflight import preflight
from emmafuse.train.pseudo_gt import default_cache_dir, fill_pseudo_gt, parse_sources
from emmafuse.train.quick_metrics import quick_metrics
from emmafuse.train.run_folder import RunFolder, RunFolderError
from emmafuse.train.sensing import SensingUNet
from emmafuse.train.stage_names import STAGE_SEED_IDS
from emmafuse.train.stages import (
    BootstrapObjective,
    EquivariantObjective,
    SensingObjective,
    StageSpec,
    WarmStartObjective,
    freeze,
)
from emmafuse.train.transforms import Transform, TransformGroup, apply_transforms

__all__ = ["Trainer", "StageResult", "RunFolderError", "TrainingHalted", "load_sensing", "VALIDATION_TRANSFORMS"]

M = TypeVar("M", bound=nn.Module)


#: Fixed elements for the validation equivariance term (one per kind, official angle).
VALIDATION_TRANSFORMS = (
    Transform("shift", dy=37, dx=-53),
    Transform("rotate", angle=130.0),
    Transform("flip", flip=1),
)


@dataclass
class StageResult:
    """What a stage did: logged training losses and validation records."""

    name: str
    start_step: int = 0
    steps: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _stage_seed(seed: int, stage: str, rank: int = 0) -> int:
    return (seed * 1_000_003 + STAGE_SEED_IDS[stage] * 7919 + rank * 104_729) % (2**63)


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


class Trainer:
    """Runs the EMMA stages on a pair of folders.

    ``BN_BATCHES`` batches re-estimate the sensing nets' BatchNorm statistics after stage II.

    Example::

        cfg = TrainConfig()
        cfg.data.ir_dir, cfg.data.vis_dir = "pairs/ir", "pairs/vi"
        cfg.out_dir = "runs/mine"
        weights = Trainer(cfg).run_all()     # -> runs/mine/fuser.safetensors
    """

    BN_BATCHES = 20

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: bool = False,
        overwrite: bool = False,
        dist: DistContext | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        config.validate()
        self.cfg = config
        self.ctx = dist if dist is not None else setup(config.device)
        self.device = self.ctx.device
        self.run = RunFolder(config.out_dir)
        self.out = self.run.path
        self.resume = resume
        self._log_fn = log
        self.results: dict[str, StageResult] = {}
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        if config.fuser.init:
            self._adopt_init_config()
        # data, sources and outputs are checked and the images read before the run folder is written
        preflight(config)
        d = config.data
        pairs, self.holdout_pairs = split_holdout(collect_pairs(d.folder_pairs()), d.holdout)
        self.train_pairs, self.val_pairs = split_pairs(pairs, d.val_pairs, config.seed)
        self.train_store = PairStore(self.train_pairs, min_side=d.crop)
        self.val_store = PairStore(self.val_pairs) if self.val_pairs else None
        self.holdout_store = PairStore(self.holdout_pairs) if self.holdout_pairs else None
        self.run.prepare(config, self.ctx, resume=resume, overwrite=overwrite, log=self.log)
        self._holdout: list[DomainCrop] | None = None
        self._pseudo_ready = False
        self._bootstrap: UFuser | None = None
        self._warm: UFuser | None = None
        # black backgrounds (medical slices) make many crops low-contrast: say how many survive
        self.filter_stats = self._dataset("fuser", with_fused=False).filter_stats() if d.low_contrast_filter else {}
        if self.ctx.is_main:
            described = {
                **describe_pairs(self.train_pairs, self.val_pairs),
                "holdout_patterns": list(d.holdout),
                "holdout_stems": [p.stem for p in self.holdout_pairs],
                "patch_filter": self.filter_stats,
            }
            self.run.write_data(described)
        self.log(
            f"{len(self.train_pairs)} training pairs, {len(self.val_pairs)} held out for validation, "
            f"{len(self.holdout_pairs)} in held-out domains; "
            f"device {self.device}, {self.ctx.world} process(es)"
        )
        if self.filter_stats:
            self.log(
                f"low-contrast patch filter: {self.filter_stats['crops_kept']:.0%} of candidate crops kept, "
                f"{self.filter_stats['samples_low_contrast']:.1%} of samples fall back to a low-contrast crop, "
                f"patches {self.filter_stats['foreground']:.0%} foreground on average"
            )

    # ------------------------------------------------------------------ plumbing
    def log(self, message: str) -> None:
        if not self.ctx.is_main:
            return
        if self._log_fn is not None:
            self._log_fn(message)
        elif self.cfg.progress:
            from tqdm import tqdm

            tqdm.write(message)
        else:
            print(message, flush=True)

    def _record(self, record: dict[str, Any]) -> None:
        if self.ctx.is_main:
            self.run.append_log(record)

    def _adopt_init_config(self) -> None:
        from emmafuse.checkpoint import load_ufuser_file

        _, file_cfg, _ = load_ufuser_file(self._init_path())
        f = self.cfg.fuser
        if tuple(file_cfg.channels) != tuple(f.channels) or file_cfg.num_heads != f.num_heads:
            self.log(f"--init: using the architecture of {f.init}: channels {file_cfg.channels}, {file_cfg.num_heads} heads")
            f.channels, f.num_heads = file_cfg.channels, file_cfg.num_heads

    def _init_path(self) -> Path:
        """``fuser.init`` as a file: a path, or a released model's name (``emma-ivf``), offline."""
        from emmafuse.weights import locate_weights

        return locate_weights(self.cfg.fuser.init, local_files_only=True).path

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.cfg.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def _prep_module(self, m: M) -> M:
        """``m`` on the training device (and in channels_last memory format when configured)."""
        m = m.to(self.device)
        if self.cfg.channels_last:
            # torch's stubs for Module.to lack memory_format (the runtime takes it)
            m = cast(M, cast(Any, m).to(memory_format=torch.channels_last))
        return m

    def _wrap(self, objective: nn.Module, sync_buffers: bool, static_graph: bool = False) -> nn.Module:
        """DDP-wrap the step module when running distributed.

        ``static_graph`` for the U-Fuser stages: parameters that never reach the loss (the
        attention ``scale`` of one-channel-per-head scales) are found once, not every step.
        """
        if not self.ctx.enabled:
            return objective
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        kwargs: dict[str, Any] = {"static_graph": static_graph}
        # torch >= 2.12 renames broadcast_buffers (buffers are synced at init either way)
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
            kwargs["forward_sync_buffers"] = sync_buffers
        else:
            kwargs["broadcast_buffers"] = sync_buffers
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(objective, device_ids=ids, **kwargs)

    # ------------------------------------------------------------ checkpoints
    def stage_dir(self, stage: str) -> Path:
        return self.run.stage_dir(stage)

    def latest_checkpoint(self, stage: str) -> Path | None:
        return self.run.latest_checkpoint(stage)

    def _save_checkpoint(
        self, stage: str, step: int, modules: dict[str, nn.Module], opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator
    ) -> None:
        gens = self.ctx.gather_objects(gen.get_state())
        if self.ctx.is_main:
            state = {
                "stage": stage,
                "step": step,
                "world": self.ctx.world,
                "config": self.cfg.to_dict(),
                "models": {k: m.state_dict() for k, m in modules.items()},
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "rng": {
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
                    "generators": list(gens),
                },
            }
            path = self.run.checkpoint_dir(stage, step)
            ckpt_io.save_state(path, state, self.cfg.max_shard_mib << 20)
            self.run.prune_checkpoints(stage, path, self.cfg.keep_checkpoints)
        self.ctx.barrier()

    def _restore(
        self, path: Path, modules: dict[str, nn.Module], opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator
    ) -> int:
        state = ckpt_io.load_state(path)
        if int(state["world"]) != self.ctx.world:
            raise ConfigError(
                f"{path} was written by {state['world']} processes; resume with the same number (now {self.ctx.world})"
            )
        for key, m in modules.items():
            m.load_state_dict(state["models"][key])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        gen.set_state(state["rng"]["generators"][self.ctx.rank])
        return int(state["step"])

    def _save_final(self, stage: str, modules: dict[str, nn.Module], meta: dict[str, Any]) -> Path:
        path = self.run.final_dir(stage)
        if self.ctx.is_main:
            state = {"models": {k: m.state_dict() for k, m in modules.items()}, "meta": meta}
            ckpt_io.save_state(path, state, self.cfg.max_shard_mib << 20)
        self.ctx.barrier()
        return path

    # ------------------------------------------------------------------ loop
    def _fit(self, spec: StageSpec, *, halt_after: int | None = None) -> StageResult:
        """Train one stage: optimiser, schedule, resume, the step loop, logs, validation, checkpoints.

        ``halt_after``: stop after this step (checkpointing first), as if interrupted.
        """
        cfg = self.cfg
        stage, objective, modules, settings = spec.name, spec.objective, spec.modules, spec.settings
        steps = settings.steps
        params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=settings.lr)
        lr_step = settings.lr_step or max(1, spec.default_lr_step)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step, gamma=settings.lr_gamma)
        gen = torch.Generator().manual_seed(_stage_seed(cfg.seed, stage, self.ctx.rank))
        result = StageResult(stage)
        start = 0
        ckpt = self.latest_checkpoint(stage) if self.resume else None
        if ckpt is not None:
            start = self._restore(ckpt, modules, opt, sched, gen)
            self.log(f"{stage}: resumed from {ckpt} at step {start}")
        result.start_step = start
        wrapped = self._wrap(objective, spec.sync_buffers, spec.static_graph)
        objective.train()
        loader = make_loader(
            spec.dataset,
            settings.batch,
            start,
            steps,
            rank=self.ctx.rank,
            world=self.ctx.world,
            workers=cfg.data.effective_workers(self.device.type),
            pin_memory=self.device.type == "cuda",
        )
        bar = None
        if cfg.progress and self.ctx.is_main:
            from tqdm import tqdm

            bar = tqdm(total=steps, initial=start, desc=stage, unit="step", dynamic_ncols=True)
        running: list[torch.Tensor] = []
        names: list[str] = []
        t0 = time.perf_counter()
        done = start
        try:
            for step, batch in zip(range(start, steps), loader):
                batch = {k: self._to_device(v) for k, v in batch.items()}
                with self._autocast():
                    loss, parts = wrapped(*spec.step_args(batch, gen))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if spec.after_step is not None:
                    spec.after_step()
                names = ["loss", *parts]
                # no .item() here: a host sync per step would stall an overhead-bound GPU
                running.append(torch.stack([loss.detach().float(), *(p.float() for p in parts.values())]))
                done = step + 1
                if bar is not None:
                    bar.update(1)
                if done % cfg.log_every == 0 or done == steps:
                    values = torch.stack(running).mean(0).tolist()
                    running.clear()
                    values = [self.ctx.mean(v) for v in values]
                    record = {"stage": stage, "step": done, **dict(zip(names, values)), "lr": sched.get_last_lr()[0]}
                    result.history.append(record)
                    self._record(record)
                    if bar is not None:
                        bar.set_postfix(loss=f"{values[0]:.4f}")
                if done % cfg.val_every == 0 or done == steps:
                    if self.ctx.is_main:
                        objective.eval()
                        with torch.no_grad(), self._autocast():
                            val = spec.validate()
                        objective.train()
                        if val:
                            record = {"stage": stage, "step": done, "validation": val}
                            result.validation.append({"step": done, **val})
                            self._record(record)
                            self.log(f"{stage} step {done}: " + ", ".join(f"{k}={v:.4g}" for k, v in val.items()))
                halting = halt_after is not None and done >= halt_after
                if done % cfg.ckpt_every == 0 or done == steps or halting:
                    self._save_checkpoint(stage, done, modules, opt, sched, gen)
                if halting:
                    break
        finally:
            if bar is not None:
                bar.close()
        result.steps = done
        result.seconds = time.perf_counter() - t0
        self.results[stage] = result
        return result

    # ------------------------------------------------------------------ stages
    def _ensure_pseudo_gt(self) -> None:
        if self._pseudo_ready:
            return
        specs = list(self.cfg.sensing.pseudo_gt)
        bootstrap = None
        if "bootstrap" in specs:
            bootstrap = self.train_bootstrap()
        sources = parse_sources(specs, bootstrap=bootstrap)
        t0 = time.perf_counter()
        cache = self._pseudo_gt_cache_dir()
        how = fill_pseudo_gt(
            self.train_store, sources, self.device, progress=self.cfg.progress and self.ctx.is_main, cache_dir=cache
        )
        for store in (self.val_store, self.holdout_store):
            if store is not None:
                fill_pseudo_gt(store, sources, self.device, cache_dir=cache)
        detail = ", ".join(f"{name} ({src})" for name, src in how.items())
        self.log(f"pseudo ground truth {detail} ready in {time.perf_counter() - t0:.1f} s")
        self._pseudo_ready = True

    def _pseudo_gt_cache_dir(self) -> Path | None:
        raw = self.cfg.data.cache_dir
        if raw.lower() == "none":
            return None
        return Path(raw) if raw else default_cache_dir()

    def _new_fuser(self, stage: str) -> UFuser:
        torch.manual_seed(_stage_seed(self.cfg.seed, stage))
        f = self.cfg.fuser
        if f.init and stage in ("fuser", "warm_start"):
            from emmafuse.checkpoint import build_ufuser, load_ufuser_file

            state, ucfg, _ = load_ufuser_file(self._init_path())
            fuser = build_ufuser(state, ucfg, source=f.init).train()
        else:
            c1, c2, c3, c4 = f.channels  # a list too, when set from Python
            fuser = UFuser(UFuserConfig(channels=(c1, c2, c3, c4), num_heads=f.num_heads))
            if self.cfg.up_init == "bilinear":
                init_upsampling_bilinear(fuser, generator=torch.Generator().manual_seed(_stage_seed(self.cfg.seed, stage)))
        fuser.fast.train_folds = self.cfg.folded_training
        return fuser

    def _final_exists(self, stage: str) -> bool:
        return self.resume and self.run.has_final(stage)

    def _reload_final(self, stage: str, fuser: UFuser) -> bool:
        """Load a finished stage's U-Fuser when resuming; False when the stage must run."""
        if not self._final_exists(stage):
            return False
        fuser.load_state_dict(ckpt_io.load_state(self.run.final_dir(stage))["models"]["fuser"])
        self.log(f"{stage}: reusing the finished stage")
        return True

    def train_bootstrap(self, halt_after: int | None = None) -> UFuser:
        """Train (or reload) the conventional-loss U-Fuser used by the ``bootstrap`` source."""
        if self._bootstrap is not None:
            return self._bootstrap
        fuser = self._prep_module(self._new_fuser("bootstrap"))
        if not self._reload_final("bootstrap", fuser):
            objective = BootstrapObjective(fuser)
            dataset = self._dataset("bootstrap", with_fused=False)
            val = self._val_crops()

            def validate() -> dict[str, float]:
                if not val:
                    return {}
                total = 0.0
                for v in val:
                    ir, vis = self._to_device(v["ir"]), self._to_device(v["vis"])
                    total += conventional_fusion_loss(fuser(ir, vis), ir, vis).item()
                return {"val_loss": total / len(val)}

            spec = StageSpec(
                "bootstrap", objective, {"fuser": fuser}, self.cfg.bootstrap, dataset,
                lambda b, g: (b["ir"], b["vis"]), validate,
                default_lr_step=self.cfg.bootstrap.steps, sync_buffers=False, static_graph=True,
            )
            res = self._fit(spec, halt_after=halt_after)
            if res.steps < self.cfg.bootstrap.steps:
                raise TrainingHalted("bootstrap", res.steps)
            self._save_final("bootstrap", {"fuser": fuser}, {"stage": "bootstrap", "steps": res.steps})
        self._bootstrap = freeze(fuser)
        return self._bootstrap

    def train_warm_start(self, halt_after: int | None = None) -> UFuser | None:
        """Fit a U-Fuser to pseudo GT ``warm_start.target`` (None when ``warm_start.steps`` is 0).

        Stage III starts from the result; reloaded when the stage has finished before.
        """
        w = self.cfg.warm_start
        if w.steps == 0:
            return None
        if self._warm is not None:
            return self._warm
        fuser = self._prep_module(self._new_fuser("warm_start"))
        if self._reload_final("warm_start", fuser):
            self._warm = fuser
            return fuser
        self._ensure_pseudo_gt()
        objective = WarmStartObjective(fuser, w.grad_max)
        dataset = self._dataset("warm_start", with_fused=True, sources=[w.target])
        val = self._val_crops()

        def validate() -> dict[str, float]:
            return self._validate_fuser(fuser, None, None, val)

        spec = StageSpec(
            "warm_start", objective, {"fuser": fuser}, w, dataset,
            lambda b, g: (b["ir"], b["vis"], b["fused"], b.get("ir_ref"), b.get("vis_ref")), validate,
            default_lr_step=w.steps // 3, sync_buffers=False, static_graph=True,
            after_step=self._upsampling_constraint(fuser),
        )
        res = self._fit(spec, halt_after=halt_after)
        if res.steps < w.steps:
            raise TrainingHalted("warm_start", res.steps)
        self._save_final("warm_start", {"fuser": fuser}, {"stage": "warm_start", "steps": res.steps, "target": w.target})
        self._warm = fuser
        return fuser

    def _upsampling_constraint(self, *nets: nn.Module) -> Callable[[], None] | None:
        """After-step hook keeping the nets' transposed convolutions checkerboard-free."""
        if not self.cfg.balanced_upsampling:
            return None

        def project() -> None:
            for net in nets:
                balance_upsampling_(net)

        project()  # the starting point too (e.g. --init weights)
        return project

    def _dataset(self, stage: str, with_fused: bool, sources: list[str] | None = None) -> PatchDataset:
        d = self.cfg.data
        # swap and noise need a clean, order-free target: the warm start only; the sensing nets
        # learn real sources (no downscale either, their BatchNorm statistics follow the data)
        if stage == "warm_start":
            augment = Augment(swap=d.swap, noise=d.noise, scale_min=d.scale_min)
        elif stage == "fuser":
            augment = Augment(scale_min=d.scale_min)
        else:
            augment = Augment()
        return PatchDataset(
            self.train_store, d.crop, self.cfg.seed, stage=STAGE_SEED_IDS[stage], flips=d.flips,
            low_contrast_filter=d.low_contrast_filter, max_tries=d.max_crop_tries, with_fused=with_fused,
            sources=sources, augment=augment, balance=d.balance,
        )

    def _holdout_scores(self, fuser: nn.Module) -> dict[str, float]:
        """Per held-out domain scores of ``fuser`` (:mod:`emmafuse.train.domain_validation`);
        the teacher's are logged once, the first time."""
        if self.holdout_store is None:
            return {}
        if self._holdout is None:
            d, w = self.cfg.data, self.cfg.warm_start
            teacher = w.target if w.target in self.holdout_store.fused else None
            self._holdout = holdout_crops(self.holdout_store, d.holdout_crop, d.holdout_pairs, teacher)
            if teacher is not None:
                scores = score_domains(self._holdout)
                self._record({"teacher": teacher, "holdout": scores})
                self.log(f"teacher {teacher} on held-out domains: " + ", ".join(f"{k}={v:.4g}" for k, v in scores.items()))

        def run(ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
            return fuser(self._to_device(ir), self._to_device(vis))

        return score_domains(self._holdout, run)

    def _val_crops(self) -> list[dict[str, Any]]:
        return validation_crops(self.val_store, self.cfg.data.val_crop) if self.val_store is not None else []

    def train_sensing(self, halt_after: int | None = None) -> tuple[SensingUNet, SensingUNet]:
        """Stage II: fit A_i, A_v on pseudo ground truth, save them to ``sensing/final``; returns them frozen."""
        final = self.run.final_dir("sensing")
        if self._final_exists("sensing"):
            self.log("sensing: reusing the finished stage")
            a_i, a_v = load_sensing(final, self.device)
            return self._prep_module(a_i), self._prep_module(a_v)
        self._ensure_pseudo_gt()
        s = self.cfg.sensing
        torch.manual_seed(_stage_seed(self.cfg.seed, "sensing"))
        a_i, a_v = SensingUNet(s.base), SensingUNet(s.base)
        if self.cfg.up_init == "bilinear":
            gen = torch.Generator().manual_seed(_stage_seed(self.cfg.seed, "sensing"))
            init_upsampling_bilinear(a_i, generator=gen)
            init_upsampling_bilinear(a_v, generator=gen)
        a_i, a_v = self._prep_module(a_i), self._prep_module(a_v)
        objective = SensingObjective(a_i, a_v, s.loss)
        dataset = self._dataset("sensing", with_fused=True)
        val = self._val_crops()

        def validate() -> dict[str, float]:
            if not val:
                return {}
            li = lv = 0.0
            count = 0
            for v in val:
                ir, vis = self._to_device(v["ir"]), self._to_device(v["vis"])
                for key in v:
                    if key.startswith("fused:"):
                        f = self._to_device(v[key])
                        li += (a_i(f).float() - ir).abs().mean().item()
                        lv += (a_v(f).float() - vis).abs().mean().item()
                        count += 1
            return {"val_l1_ir": li / count, "val_l1_vis": lv / count, "val_l1": (li + lv) / count}

        spec = StageSpec(
            "sensing", objective, {"a_i": a_i, "a_v": a_v}, s, dataset,
            lambda b, g: (b["fused"], b["ir"], b["vis"]), validate,
            default_lr_step=s.steps // 4, sync_buffers=True,
            after_step=self._upsampling_constraint(a_i, a_v),
        )
        res = self._fit(spec, halt_after=halt_after)
        if res.steps < s.steps:
            raise TrainingHalted("sensing", res.steps)
        self._recalibrate_batchnorm(objective, dataset, s.batch, start=s.steps)
        if self.ctx.is_main and val:
            with torch.no_grad(), self._autocast():
                after = validate()
            res.validation.append({"step": res.steps, "bn_recalibrated": 1.0, **after})
            self._record({"stage": "sensing", "step": res.steps, "validation": after, "bn_recalibrated": True})
            self.log("sensing after BatchNorm re-estimation: " + ", ".join(f"{k}={v:.4g}" for k, v in after.items()))
        meta = {"stage": "sensing", "steps": res.steps, "base": s.base, "loss": s.loss, "pseudo_gt": list(s.pseudo_gt)}
        self._save_final("sensing", {"a_i": a_i, "a_v": a_v}, meta)
        return freeze(a_i), freeze(a_v)

    @torch.no_grad()
    def _recalibrate_batchnorm(self, objective: SensingObjective, dataset: PatchDataset, batch: int, start: int) -> None:
        """Re-estimate BatchNorm statistics of the final weights (cumulative average).

        The nets are frozen and used in eval mode afterwards; running averages collected
        while the weights moved lag behind them (badly so in short runs).
        """
        nets = [objective.a_i, objective.a_v]
        norms = [m for net in nets for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        if not norms:
            return
        saved = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average
        for net in nets:
            net.train()
        n = max(1, min(self.BN_BATCHES, self.cfg.sensing.steps))
        loader = make_loader(dataset, batch, start, start + n, rank=self.ctx.rank, world=self.ctx.world,
                             workers=self.cfg.data.effective_workers(self.device.type))
        for b in loader:
            fused = self._to_device(b["fused"])
            with self._autocast():
                for net in nets:
                    net(fused)
        for m, mom in zip(norms, saved):
            m.momentum = mom
            if self.ctx.enabled:
                import torch.distributed as dist

                for buf in (m.running_mean, m.running_var):
                    if buf is not None:  # always, with tracked statistics
                        dist.all_reduce(buf)
                        buf /= self.ctx.world
        for net in nets:
            net.eval()

    def train_fuser(
        self, sensing: tuple[nn.Module, nn.Module] | str | Path | None = None, halt_after: int | None = None
    ) -> UFuser:
        """Stage III: equivariant training of the U-Fuser with frozen A_i, A_v.

        Args:
            sensing: the sensing nets, or a sensing ``final/`` folder; default: this run's.
            halt_after: stop after this step (checkpointing first), as if interrupted.
        """
        if sensing is None:
            sensing = self.run.final_dir("sensing")
        a_i: nn.Module
        a_v: nn.Module
        if isinstance(sensing, (str, Path)):
            a_i, a_v = load_sensing(sensing, self.device)
        else:
            a_i, a_v = sensing
        a_i, a_v = self._prep_module(a_i), self._prep_module(a_v)
        f = self.cfg.fuser
        fuser = self._prep_module(self._new_fuser("fuser"))
        if self._reload_final("fuser", fuser):
            return fuser.eval()
        warm = self.train_warm_start()
        if warm is not None:
            fuser.load_state_dict(warm.state_dict())
            self.log("fuser: starting from the warm-start weights")
        if f.anchor > 0:
            self._ensure_pseudo_gt()
        objective = EquivariantObjective(fuser, a_i, a_v, f.alpha1, f.alpha2, anchor=f.anchor)
        if self.cfg.compile:
            objective.fuser = torch.compile(fuser)  # type: ignore[assignment]
        group = TransformGroup(f.rotation)
        crop = self.cfg.data.crop
        anchored = f.anchor > 0
        target = [self.cfg.warm_start.target] if anchored else None
        dataset = self._dataset("fuser", with_fused=anchored, sources=target)
        val = self._val_crops()

        def step_args(b: dict[str, torch.Tensor], g: torch.Generator) -> tuple[Any, ...]:
            n = b["ir"].shape[0] * f.transforms_per_sample
            return b["ir"], b["vis"], group.sample(n, crop, crop, g), b.get("fused")

        def validate() -> dict[str, float]:
            return self._validate_fuser(fuser, a_i, a_v, val)

        spec = StageSpec(
            "fuser", objective, {"fuser": fuser}, f, dataset, step_args, validate,
            default_lr_step=f.steps // 6, sync_buffers=False, static_graph=True,
            after_step=self._upsampling_constraint(fuser),
        )
        res = self._fit(spec, halt_after=halt_after)
        if res.steps < f.steps:
            raise TrainingHalted("fuser", res.steps)
        meta = {"stage": "fuser", "steps": res.steps, "channels": list(fuser.config.channels)}
        self._save_final("fuser", {"fuser": fuser}, meta)
        return fuser.eval()

    def _validate_fuser(
        self, fuser: nn.Module, a_i: nn.Module | None, a_v: nn.Module | None, val: list[dict[str, Any]]
    ) -> dict[str, float]:
        """EN, SD, AG, MI, VIF, Qabf and the grid ratio of the fused crops; with sensing nets also
        their L1s, the equivariance L1 for fixed transforms and the unweighted total."""
        sums: dict[str, float] = {}
        holdout = self._holdout_scores(fuser)
        if not val:
            return holdout
        for v in val:
            ir, vis = self._to_device(v["ir"]), self._to_device(v["vis"])
            f = fuser(ir, vis).float()
            if a_i is None or a_v is None:
                for k, x in quick_metrics(f, ir, vis).items():
                    sums[k] = sums.get(k, 0.0) + x
                continue
            ts = list(VALIDATION_TRANSFORMS)
            ft, mask = apply_transforms(f.expand(len(ts), -1, -1, -1).contiguous(), ts)
            both = torch.cat([f, ft])
            s_i, s_v = a_i(both).float(), a_v(both).float()
            ft_hat = fuser(s_i[1:], s_v[1:]).float()
            vals = {
                "val_l1_ir": (s_i[:1] - ir).abs().mean().item(),
                "val_l1_vis": (s_v[:1] - vis).abs().mean().item(),
                "val_l1_equi": ((ft_hat - ft).abs() * mask).sum().item() / mask.sum().clamp_min(1).item(),
                "val_total": (
                    l1_gradient_loss(s_i[:1], ir) + l1_gradient_loss(s_v[:1], vis) + l1_gradient_loss(ft_hat, ft, mask)
                ).item(),
                **quick_metrics(f, ir, vis),
            }
            for k, x in vals.items():
                sums[k] = sums.get(k, 0.0) + x
        return {**{k: x / len(val) for k, x in sums.items()}, **holdout}

    # ------------------------------------------------------------------ whole run
    def run_all(self, export_path: str | Path | None = None) -> Path:
        """Bootstrap (if asked), warm start (if asked), sensing, fuser, export; returns the ``.safetensors`` path.

        With ``fuser.steps == 0`` the warm start is the result: stages II and III are skipped
        and the warm-start U-Fuser is exported (its provenance says so: fuser 0 steps).
        """
        warm = self.train_warm_start()
        if self.cfg.fuser.steps == 0 and warm is not None:
            if not self._final_exists("fuser"):
                meta = {"stage": "fuser", "steps": 0, "channels": list(warm.config.channels), "from": "warm_start"}
                self._save_final("fuser", {"fuser": warm}, meta)
                self.log("fuser.steps is 0: the warm-start U-Fuser is the result (stages II and III skipped)")
            return self.export(export_path)
        sensing = self.train_sensing()
        self.train_fuser(sensing)
        return self.export(export_path)

    def export(self, path: str | Path | None = None) -> Path:
        """Write the finished U-Fuser as ``.safetensors`` (default ``<out_dir>/fuser.safetensors``)."""
        from emmafuse.train.export import export_run

        target = Path(path) if path is not None else self.out / "fuser.safetensors"
        if self.ctx.is_main:
            export_run(self.out, target)
            self.log(f"exported {target}")
        self.ctx.barrier()
        return target

    def close(self) -> None:
        self.ctx.close()


class TrainingHalted(EmmafuseError, RuntimeError):
    """A stage stopped early on request (``halt_after``); its checkpoint is on disk."""

    def __init__(self, stage: str, step: int) -> None:
        super().__init__(f"{stage} halted at step {step}")
        self.stage, self.step = stage, step
