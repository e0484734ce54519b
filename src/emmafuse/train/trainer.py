"""The training driver: reads the data once, then runs the stages in order and exports.

What runs where: the step loop is :func:`emmafuse.train.loop.fit`, what each stage trains is
a :class:`~emmafuse.train.stages.StageSpec` built by :mod:`emmafuse.train.stages`, validation is
:mod:`emmafuse.train.validation`, checkpoints and finished stages are
:mod:`emmafuse.train.stage_checkpoints`, and the run folder is
:class:`~emmafuse.train.run_folder.RunFolder`. The stages and their order are
:class:`~emmafuse.train.stage_names.Stage`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emmafuse.errors import EmmafuseError
from emmafuse.models import UFuser, UFuserConfig
from emmafuse.models.upsampling import init_upsampling_bilinear
from emmafuse.train import stages
from emmafuse.train.config import TrainConfig
from emmafuse.train.data import collect_pairs, describe_pairs, split_holdout, split_pairs
from emmafuse.train.distributed import DistContext, setup
from emmafuse.train.loop import StageResult, fit
from emmafuse.train.patches import PairStore, PatchDataset, make_loader, validation_crops
from emmafuse.train.preflight import preflight
from emmafuse.train.pseudo_gt import prepare_pseudo_gt
from emmafuse.train.pseudo_gt_cache import cache_dir_setting
from emmafuse.train.run_context import RunContext
from emmafuse.train.run_folder import RunFolder
from emmafuse.train.sensing import SensingUNet, reestimate_batchnorm
from emmafuse.train.stage_checkpoints import final_exists, load_sensing, reload_final, save_final
from emmafuse.train.stage_names import Stage, stage_seed
from emmafuse.train.validation import HoldoutScores, validate_sensing

__all__ = ["Trainer", "TrainingHalted"]


class TrainingHalted(EmmafuseError, RuntimeError):
    """A stage stopped early on request (``halt_after``); its checkpoint is on disk."""

    def __init__(self, stage: str, step: int) -> None:
        super().__init__(f"{stage} halted at step {step}")
        self.stage, self.step = stage, step


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
        self.rc = RunContext(config, self.ctx, self.run, resume, log)
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
        self._holdout = HoldoutScores(self.rc, self.holdout_store)
        self._pseudo_ready = False
        self._bootstrap: UFuser | None = None
        self._warm: UFuser | None = None
        self._describe_data()

    def _describe_data(self) -> None:
        """``data.json`` and the log lines about the split and the patch filter."""
        d = self.cfg.data
        # black backgrounds (medical slices) make many crops low-contrast: say how many survive
        self.filter_stats = self._dataset(Stage.FUSER, with_fused=False).filter_stats() if d.low_contrast_filter else {}
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
        """A message from the main process (the ``log`` callback, the progress bar or stdout)."""
        self.rc.log(message)

    def _adopt_init_config(self) -> None:
        from emmafuse.checkpoint import load_ufuser_file

        _, file_cfg, _ = load_ufuser_file(self._init_path())
        f = self.cfg.fuser
        if tuple(file_cfg.channels) != tuple(f.channels) or file_cfg.num_heads != f.num_heads:
            self.log(f"fuser.init: using the architecture of {f.init}: channels {file_cfg.channels}, {file_cfg.num_heads} heads")
            f.channels, f.num_heads = file_cfg.channels, file_cfg.num_heads

    def _init_path(self) -> Path:
        """``fuser.init`` as a file: a path, or a released model's name (``emma-ivf``), offline."""
        from emmafuse.weights import locate_weights

        return locate_weights(self.cfg.fuser.init, local_files_only=True).path

    def _dataset(self, stage: Stage, with_fused: bool, sources: list[str] | None = None) -> PatchDataset:
        return stages.stage_dataset(self.rc, self.train_store, stage, with_fused, sources)

    def _val_crops(self) -> list[dict[str, Any]]:
        return validation_crops(self.val_store, self.cfg.data.val_crop) if self.val_store is not None else []

    def _fit(self, spec: stages.StageSpec, halt_after: int | None) -> StageResult:
        """Run ``spec`` (:func:`~emmafuse.train.loop.fit`); raise :class:`TrainingHalted` when it stopped early."""
        result = self.results[spec.name] = fit(self.rc, spec, halt_after=halt_after)
        if result.steps < spec.settings.steps:
            raise TrainingHalted(spec.name, result.steps)
        return result

    def _new_fuser(self, stage: Stage) -> UFuser:
        """A U-Fuser for ``stage`` on the training device: ``fuser.init`` or freshly initialised."""
        torch.manual_seed(stage_seed(self.cfg.seed, stage))
        f = self.cfg.fuser
        if f.init and stage in (Stage.FUSER, Stage.WARM_START):
            from emmafuse.checkpoint import build_ufuser, load_ufuser_file

            state, ucfg, _ = load_ufuser_file(self._init_path())
            fuser = build_ufuser(state, ucfg, source=f.init).train()
        else:
            c1, c2, c3, c4 = f.channels  # a list too, when set from Python
            fuser = UFuser(UFuserConfig(channels=(c1, c2, c3, c4), num_heads=f.num_heads))
            if self.cfg.up_init == "bilinear":
                init_upsampling_bilinear(fuser, generator=torch.Generator().manual_seed(stage_seed(self.cfg.seed, stage)))
        fuser.fast.train_folds = self.cfg.folded_training
        return self.rc.prep_module(fuser)

    def _ensure_pseudo_gt(self) -> None:
        if self._pseudo_ready:
            return
        t0 = time.perf_counter()
        how = prepare_pseudo_gt(
            self.train_store, [self.val_store, self.holdout_store], list(self.cfg.sensing.pseudo_gt), self.device,
            bootstrap=self.train_bootstrap, cache_dir=cache_dir_setting(self.cfg.data.cache_dir),
            progress=self.cfg.progress and self.ctx.is_main,
        )
        detail = ", ".join(f"{name} ({src})" for name, src in how.items())
        self.log(f"pseudo ground truth {detail} ready in {time.perf_counter() - t0:.1f} s")
        self._pseudo_ready = True

    # ------------------------------------------------------------------ stages
    def train_bootstrap(self, halt_after: int | None = None) -> UFuser:
        """Train (or reload) the conventional-loss U-Fuser used by the ``bootstrap`` source."""
        if self._bootstrap is not None:
            return self._bootstrap
        fuser = self._new_fuser(Stage.BOOTSTRAP)
        if not reload_final(self.rc, Stage.BOOTSTRAP, fuser):
            dataset = self._dataset(Stage.BOOTSTRAP, with_fused=False)
            res = self._fit(stages.bootstrap_spec(self.rc, fuser, dataset, self._val_crops()), halt_after)
            save_final(self.rc, Stage.BOOTSTRAP, {"fuser": fuser}, {"stage": Stage.BOOTSTRAP, "steps": res.steps})
        self._bootstrap = stages.freeze(fuser)
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
        fuser = self._new_fuser(Stage.WARM_START)
        if reload_final(self.rc, Stage.WARM_START, fuser):
            self._warm = fuser
            return fuser
        self._ensure_pseudo_gt()
        dataset = self._dataset(Stage.WARM_START, with_fused=True, sources=[w.target])
        spec = stages.warm_start_spec(self.rc, fuser, dataset, self._val_crops(), self._holdout)
        res = self._fit(spec, halt_after)
        meta = {"stage": Stage.WARM_START, "steps": res.steps, "target": w.target}
        save_final(self.rc, Stage.WARM_START, {"fuser": fuser}, meta)
        self._warm = fuser
        return fuser

    def train_sensing(self, halt_after: int | None = None) -> tuple[SensingUNet, SensingUNet]:
        """Stage II: fit A_i, A_v on pseudo ground truth, save them to ``sensing/final``; returns them frozen."""
        if final_exists(self.rc, Stage.SENSING):
            self.log("sensing: reusing the finished stage")
            a_i, a_v = load_sensing(self.run.final_dir(Stage.SENSING), self.device)
            return self.rc.prep_module(a_i), self.rc.prep_module(a_v)
        self._ensure_pseudo_gt()
        s = self.cfg.sensing
        torch.manual_seed(stage_seed(self.cfg.seed, Stage.SENSING))
        a_i, a_v = SensingUNet(s.base), SensingUNet(s.base)
        if self.cfg.up_init == "bilinear":
            gen = torch.Generator().manual_seed(stage_seed(self.cfg.seed, Stage.SENSING))
            init_upsampling_bilinear(a_i, generator=gen)
            init_upsampling_bilinear(a_v, generator=gen)
        a_i, a_v = self.rc.prep_module(a_i), self.rc.prep_module(a_v)
        dataset = self._dataset(Stage.SENSING, with_fused=True)
        val = self._val_crops()
        res = self._fit(stages.sensing_spec(self.rc, a_i, a_v, dataset, val), halt_after)
        self._reestimate_batchnorm(a_i, a_v, dataset, res)
        if self.ctx.is_main and val:
            with torch.no_grad(), self.rc.autocast():
                after = validate_sensing(a_i, a_v, val, self.rc.to_device)
            res.validation.append({"step": res.steps, "bn_recalibrated": 1.0, **after})
            self.rc.record({"stage": Stage.SENSING, "step": res.steps, "validation": after, "bn_recalibrated": True})
            self.log("sensing after BatchNorm re-estimation: " + ", ".join(f"{k}={v:.4g}" for k, v in after.items()))
        meta = {"stage": Stage.SENSING, "steps": res.steps, "base": s.base, "loss": s.loss, "pseudo_gt": list(s.pseudo_gt)}
        save_final(self.rc, Stage.SENSING, {"a_i": a_i, "a_v": a_v}, meta)
        return stages.freeze(a_i), stages.freeze(a_v)

    def _reestimate_batchnorm(self, a_i: nn.Module, a_v: nn.Module, dataset: PatchDataset, res: StageResult) -> None:
        """BatchNorm statistics of the final sensing nets, from ``BN_BATCHES`` batches after the last step."""
        s, start = self.cfg.sensing, res.steps
        n = max(1, min(self.BN_BATCHES, s.steps))
        loader = make_loader(dataset, s.batch, start, start + n, rank=self.ctx.rank, world=self.ctx.world,
                             workers=self.rc.loader_workers())
        batches = (self.rc.to_device(b["fused"]) for b in loader)
        reestimate_batchnorm([a_i, a_v], batches, self.rc.autocast, self.ctx.world if self.ctx.enabled else 1)

    def train_fuser(
        self, sensing: tuple[nn.Module, nn.Module] | str | Path | None = None, halt_after: int | None = None
    ) -> UFuser:
        """Stage III: equivariant training of the U-Fuser with frozen A_i, A_v.

        Args:
            sensing: the sensing nets, or a sensing ``final/`` folder; default: this run's.
            halt_after: stop after this step (checkpointing first), as if interrupted.
        """
        if sensing is None:
            sensing = self.run.final_dir(Stage.SENSING)
        a_i, a_v = load_sensing(sensing, self.device) if isinstance(sensing, (str, Path)) else sensing
        a_i, a_v = self.rc.prep_module(a_i), self.rc.prep_module(a_v)
        f = self.cfg.fuser
        fuser = self._new_fuser(Stage.FUSER)
        if reload_final(self.rc, Stage.FUSER, fuser):
            return fuser.eval()
        warm = self.train_warm_start()
        if warm is not None:
            fuser.load_state_dict(warm.state_dict())
            self.log("fuser: starting from the warm-start weights")
        if f.anchor > 0:
            self._ensure_pseudo_gt()
        target = [self.cfg.warm_start.target] if f.anchor > 0 else None
        dataset = self._dataset(Stage.FUSER, with_fused=f.anchor > 0, sources=target)
        spec = stages.fuser_spec(self.rc, fuser, a_i, a_v, dataset, self._val_crops(), self._holdout)
        res = self._fit(spec, halt_after)
        meta = {"stage": Stage.FUSER, "steps": res.steps, "channels": list(fuser.config.channels)}
        save_final(self.rc, Stage.FUSER, {"fuser": fuser}, meta)
        return fuser.eval()

    # ------------------------------------------------------------------ whole run
    def run_all(self, export_path: str | Path | None = None) -> Path:
        """Bootstrap (if asked), warm start (if asked), sensing, fuser, export; returns the ``.safetensors`` path.

        With ``fuser.steps == 0`` the warm start is the result: stages II and III are skipped
        and the warm-start U-Fuser is exported (its provenance says so: fuser 0 steps).
        """
        warm = self.train_warm_start()
        if self.cfg.fuser.steps == 0 and warm is not None:
            if not final_exists(self.rc, Stage.FUSER):
                meta = {"stage": Stage.FUSER, "steps": 0, "channels": list(warm.config.channels), "from": Stage.WARM_START}
                save_final(self.rc, Stage.FUSER, {"fuser": warm}, meta)
                self.log("fuser.steps is 0: the warm-start U-Fuser is the result (stages II and III skipped)")
            return self.export(export_path)
        sensing = self.train_sensing()
        self.train_fuser(sensing)
        return self.export(export_path)

    def export(self, path: str | Path | None = None) -> Path:
        """Write the finished U-Fuser as ``.safetensors`` (default :attr:`RunFolder.export_path`)."""
        from emmafuse.train.export import export_run

        target = Path(path) if path is not None else self.run.export_path
        if self.ctx.is_main:
            export_run(self.out, target)
            self.log(f"exported {target}")
        self.ctx.barrier()
        return target

    def close(self) -> None:
        """Leave the process group when distributed."""
        self.ctx.close()
