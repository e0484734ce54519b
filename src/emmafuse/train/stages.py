"""One module per training stage whose ``forward`` returns ``(loss, parts)``, the
:class:`StageSpec` that tells the one step loop (:func:`emmafuse.train.loop.fit`) how to train
it, and one spec builder per stage (:func:`sensing_spec` ...).

Wrapping the whole step in one module keeps DDP simple (one forward, one backward per
step, even though Stage III runs the U-Fuser twice) and lets the loop treat all
stages alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from emmafuse.errors import InputError
from emmafuse.models.upsampling import balance_upsampling_
from emmafuse.train.augment import Augment
from emmafuse.train.losses import conventional_fusion_loss, gradient_max_loss, l1_gradient_loss, sensing_loss
from emmafuse.train.patches import PairStore, PatchDataset
from emmafuse.train.run_context import RunContext
from emmafuse.train.stage_names import Stage
from emmafuse.train.transforms import Transform, TransformGroup, apply_transforms
from emmafuse.train.validation import HoldoutScores, validate_bootstrap, validate_fuser, validate_sensing

__all__ = [
    "SensingObjective",
    "BootstrapObjective",
    "WarmStartObjective",
    "EquivariantObjective",
    "StageSettings",
    "StageSpec",
    "freeze",
    "stage_dataset",
    "upsampling_constraint",
    "sensing_spec",
    "bootstrap_spec",
    "warm_start_spec",
    "fuser_spec",
]

Parts = dict[str, torch.Tensor]
Crops = Sequence[dict[str, Any]]
M = TypeVar("M", bound=nn.Module)


class StageSettings(Protocol):
    """The optimisation settings every stage section of the config has."""

    steps: int
    batch: int
    lr: float
    lr_gamma: float
    lr_step: int


@dataclass
class StageSpec:
    """Everything the trainer's loop needs to train one stage.

    Attributes:
        name: the stage (:class:`~emmafuse.train.stage_names.Stage`): its folder, seeds and log records.
        objective: the step module, ``objective(*step_args(batch, gen)) -> (loss, parts)``.
        modules: what is optimised and checkpointed, by name.
        settings: steps, batch, learning rate and its schedule (a stage section of the config).
        dataset: the training patches.
        step_args: a batch (and the stage's generator) -> the objective's arguments.
        validate: validation scores of the current weights (run under ``no_grad``).
        default_lr_step: the schedule period when ``settings.lr_step`` is 0.
        sync_buffers: DDP: broadcast buffers (BatchNorm statistics) every forward.
        static_graph: DDP: the set of used parameters never changes (the U-Fuser stages).
        after_step: called after each optimiser step (weight constraints).
    """

    name: str
    objective: nn.Module
    modules: dict[str, nn.Module]
    settings: StageSettings
    dataset: PatchDataset
    step_args: Callable[[dict[str, torch.Tensor], torch.Generator], tuple[Any, ...]]
    validate: Callable[[], dict[str, float]]
    default_lr_step: int
    sync_buffers: bool = False
    static_graph: bool = False
    after_step: Callable[[], None] | None = None


def freeze(module: M) -> M:
    """No gradients, eval mode (BatchNorm uses its running statistics)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class SensingObjective(nn.Module):
    """Stage II: ``loss(A_i(f~), i) + loss(A_v(f~), v)`` for pseudo-GT fused images ``f~``."""

    def __init__(self, a_i: nn.Module, a_v: nn.Module, loss: str = "l1") -> None:
        super().__init__()
        self.a_i, self.a_v, self.kind = a_i, a_v, loss

    def forward(self, fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, Parts]:
        l_i = sensing_loss(self.a_i(fused), ir, self.kind)
        l_v = sensing_loss(self.a_v(fused), vis, self.kind)
        return l_i + l_v, {"ir": l_i.detach(), "vis": l_v.detach()}


class BootstrapObjective(nn.Module):
    """A U-Fuser trained with the conventional intensity-max + gradient-max L1 loss."""

    def __init__(self, fuser: nn.Module) -> None:
        super().__init__()
        self.fuser = fuser

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, Parts]:
        loss = conventional_fusion_loss(self.fuser(ir, vis), ir, vis)
        return loss, {}


class WarmStartObjective(nn.Module):
    """Fit the U-Fuser to pseudo ground truth: ``L(F(i, v), f~) + grad_max * |grad F - max grad|``."""

    def __init__(self, fuser: nn.Module, grad_max: float = 0.0) -> None:
        super().__init__()
        self.fuser, self.grad_max = fuser, grad_max

    def forward(
        self, ir: torch.Tensor, vis: torch.Tensor, target: torch.Tensor,
        ir_ref: torch.Tensor | None = None, vis_ref: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Parts]:
        """``ir_ref`` / ``vis_ref``: the clean sources when the inputs carry augmentation noise
        (the gradient-max term must not ask for the noise's edges)."""
        f = self.fuser(ir, vis)
        l_fit = l1_gradient_loss(f, target)
        if not self.grad_max:
            return l_fit, {"fit": l_fit.detach()}
        l_grad = gradient_max_loss(f, ir if ir_ref is None else ir_ref, vis if vis_ref is None else vis_ref)
        return l_fit + self.grad_max * l_grad, {"fit": l_fit.detach(), "grad_max": l_grad.detach()}


class EquivariantObjective(nn.Module):
    """Stage III, Eq. (4): ``L(A_i f, i) + a1 L(A_v f, v) + a2 L(T_g f, F(A_i T_g f, A_v T_g f))``,
    plus ``anchor * L(f, f~)`` when an anchor weight and pseudo GT ``f~`` are given.

    ``L`` is L1 + Sobel-gradient L1 (official code); the equivariance term is averaged
    over the valid pixels of each transformed image. The sensing nets are frozen; both
    are run once on ``[f, T_g f]`` concatenated (their BatchNorm is in eval mode, so
    batching does not change the result, and it halves the kernel launches).
    """

    def __init__(
        self, fuser: nn.Module, a_i: nn.Module, a_v: nn.Module, alpha1: float = 1.0, alpha2: float = 0.1,
        anchor: float = 0.0,
    ) -> None:
        super().__init__()
        self.fuser = fuser
        self.a_i, self.a_v = freeze(a_i), freeze(a_v)
        self.alpha1, self.alpha2, self.anchor = alpha1, alpha2, anchor

    def train(self, mode: bool = True) -> "EquivariantObjective":
        super().train(mode)
        self.a_i.eval()
        self.a_v.eval()
        return self

    def forward(
        self, ir: torch.Tensor, vis: torch.Tensor, transforms: Sequence[Transform], target: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Parts]:
        n = ir.shape[0]
        if len(transforms) % n:
            raise InputError(f"{len(transforms)} transforms for a batch of {n}", parameter="transforms")
        f = self.fuser(ir, vis)
        reps = len(transforms) // n
        ft, mask = apply_transforms(f.repeat(reps, 1, 1, 1) if reps > 1 else f, list(transforms))
        both = torch.cat([f, ft])
        s_i, s_v = self.a_i(both), self.a_v(both)
        l_i = l1_gradient_loss(s_i[:n], ir)
        l_v = l1_gradient_loss(s_v[:n], vis)
        ft_hat = self.fuser(s_i[n:], s_v[n:])
        exact = all(t.exact for t in transforms)
        l_eq = l1_gradient_loss(ft_hat, ft, None if exact else mask)
        loss = l_i + self.alpha1 * l_v + self.alpha2 * l_eq
        parts = {"ir": l_i.detach(), "vis": l_v.detach(), "equi": l_eq.detach()}
        if self.anchor and target is not None:
            # optional tether to pseudo GT: keeps a warm-started fuser from drifting into patterns
            # that only the (weak, CPU-trained) sensing nets can read
            l_anchor = l1_gradient_loss(f, target)
            loss = loss + self.anchor * l_anchor
            parts["anchor"] = l_anchor.detach()
        return loss, parts


# ----------------------------------------------------------------------------- spec builders
def stage_dataset(rc: RunContext, store: PairStore, stage: Stage, with_fused: bool,
                  sources: list[str] | None = None) -> PatchDataset:
    """The training patches of ``stage``, with the augmentations that stage may use."""
    d = rc.cfg.data
    # swap and noise need a clean, order-free target: the warm start only; the sensing nets
    # learn real sources (no downscale either, their BatchNorm statistics follow the data)
    if stage == Stage.WARM_START:
        augment = Augment(swap=d.swap, noise=d.noise, scale_min=d.scale_min)
    elif stage == Stage.FUSER:
        augment = Augment(scale_min=d.scale_min)
    else:
        augment = Augment()
    return PatchDataset(
        store, d.crop, rc.cfg.seed, stage=stage.seed_id, flips=d.flips,
        low_contrast_filter=d.low_contrast_filter, max_tries=d.max_crop_tries, with_fused=with_fused,
        sources=sources, augment=augment, balance=d.balance,
    )


def upsampling_constraint(enabled: bool, *nets: nn.Module) -> Callable[[], None] | None:
    """After-step hook keeping the nets' transposed convolutions checkerboard-free (None when
    off); projects the starting point too (e.g. ``fuser.init`` weights)."""
    if not enabled:
        return None

    def project() -> None:
        for net in nets:
            balance_upsampling_(net)

    project()
    return project


def sensing_spec(rc: RunContext, a_i: nn.Module, a_v: nn.Module, dataset: PatchDataset, crops: Crops) -> StageSpec:
    """Stage II: A_i, A_v map pseudo-GT patches back to each source."""
    s = rc.cfg.sensing
    return StageSpec(
        Stage.SENSING, SensingObjective(a_i, a_v, s.loss), {"a_i": a_i, "a_v": a_v}, s, dataset,
        lambda b, g: (b["fused"], b["ir"], b["vis"]),
        lambda: validate_sensing(a_i, a_v, crops, rc.to_device),
        default_lr_step=s.steps // 4, sync_buffers=True,
        after_step=upsampling_constraint(rc.cfg.balanced_upsampling, a_i, a_v),
    )


def bootstrap_spec(rc: RunContext, fuser: nn.Module, dataset: PatchDataset, crops: Crops) -> StageSpec:
    """The bootstrap U-Fuser: the conventional intensity-max + gradient-max loss."""
    b = rc.cfg.bootstrap
    return StageSpec(
        Stage.BOOTSTRAP, BootstrapObjective(fuser), {"fuser": fuser}, b, dataset,
        lambda batch, g: (batch["ir"], batch["vis"]),
        lambda: validate_bootstrap(fuser, crops, rc.to_device),
        default_lr_step=b.steps, sync_buffers=False, static_graph=True,
    )


def warm_start_spec(
    rc: RunContext, fuser: nn.Module, dataset: PatchDataset, crops: Crops, holdout: HoldoutScores
) -> StageSpec:
    """The warm start: the U-Fuser fitted to pseudo GT ``warm_start.target``."""
    w = rc.cfg.warm_start
    return StageSpec(
        Stage.WARM_START, WarmStartObjective(fuser, w.grad_max), {"fuser": fuser}, w, dataset,
        lambda b, g: (b["ir"], b["vis"], b["fused"], b.get("ir_ref"), b.get("vis_ref")),
        lambda: validate_fuser(fuser, None, None, crops, rc.to_device, holdout(fuser)),
        default_lr_step=w.steps // 3, sync_buffers=False, static_graph=True,
        after_step=upsampling_constraint(rc.cfg.balanced_upsampling, fuser),
    )


def fuser_spec(
    rc: RunContext, fuser: nn.Module, a_i: nn.Module, a_v: nn.Module, dataset: PatchDataset, crops: Crops,
    holdout: HoldoutScores,
) -> StageSpec:
    """Stage III: the equivariant U-Fuser with frozen A_i, A_v (and the optional anchor)."""
    f, crop = rc.cfg.fuser, rc.cfg.data.crop
    objective = EquivariantObjective(fuser, a_i, a_v, f.alpha1, f.alpha2, anchor=f.anchor)
    if rc.cfg.compile:
        objective.fuser = torch.compile(fuser)  # type: ignore[assignment]
    group = TransformGroup(f.rotation)

    def step_args(b: dict[str, torch.Tensor], g: torch.Generator) -> tuple[Any, ...]:
        n = b["ir"].shape[0] * f.transforms_per_sample
        return b["ir"], b["vis"], group.sample(n, crop, crop, g), b.get("fused")

    return StageSpec(
        Stage.FUSER, objective, {"fuser": fuser}, f, dataset, step_args,
        lambda: validate_fuser(fuser, a_i, a_v, crops, rc.to_device, holdout(fuser)),
        default_lr_step=f.steps // 6, sync_buffers=False, static_graph=True,
        after_step=upsampling_constraint(rc.cfg.balanced_upsampling, fuser),
    )
