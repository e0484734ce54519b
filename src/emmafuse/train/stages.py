"""One module per training stage whose ``forward`` returns ``(loss, parts)``, and the
:class:`StageSpec` that tells the trainer's one loop how to train it.

Wrapping the whole step in one module keeps DDP simple (one forward, one backward per
step, even though Stage III runs the U-Fuser twice) and lets the trainer treat all
stages alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from emmafuse.train.data import PatchDataset
from emmafuse.train.losses import conventional_fusion_loss, gradient_max_loss, l1_gradient_loss, sensing_loss
from emmafuse.train.transforms import Transform, apply_transforms

__all__ = [
    "SensingObjective",
    "BootstrapObjective",
    "WarmStartObjective",
    "EquivariantObjective",
    "StageSettings",
    "StageSpec",
    "freeze",
]

Parts = dict[str, torch.Tensor]
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
        name: the stage (``sensing``, ``fuser``, ``bootstrap``, ``warm_start``): its folder and seeds.
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
            raise ValueError(f"{len(transforms)} transforms for a batch of {n}")
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
