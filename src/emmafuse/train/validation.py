"""Validation of each stage's current weights, as plain functions of the nets and the crops.

The crops are :func:`emmafuse.train.patches.validation_crops` (pairs held out at random);
:class:`HoldoutScores` adds the per-domain scores of :mod:`emmafuse.train.domain_validation`.
Run under ``torch.no_grad()`` (the step loop does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from emmafuse.train.domain_validation import DomainCrop, holdout_crops, score_domains
from emmafuse.train.losses import conventional_fusion_loss, l1_gradient_loss
from emmafuse.train.patches import PairStore
from emmafuse.train.quick_metrics import quick_metrics
from emmafuse.train.run_context import RunContext
from emmafuse.train.transforms import Transform, apply_transforms

__all__ = ["VALIDATION_TRANSFORMS", "HoldoutScores", "validate_sensing", "validate_bootstrap", "validate_fuser"]

Crops = Sequence[dict[str, Any]]
ToDevice = Callable[[torch.Tensor], torch.Tensor]

#: Fixed elements for the validation equivariance term (one per kind, official angle).
VALIDATION_TRANSFORMS = (
    Transform("shift", dy=37, dx=-53),
    Transform("rotate", angle=130.0),
    Transform("flip", flip=1),
)


def validate_sensing(a_i: nn.Module, a_v: nn.Module, crops: Crops, to_device: ToDevice) -> dict[str, float]:
    """Stage II: the L1 of ``A_i(f~)`` to the infrared and ``A_v(f~)`` to the visible crop,
    over every pseudo-GT source ``f~``."""
    if not crops:
        return {}
    li = lv = 0.0
    count = 0
    for v in crops:
        ir, vis = to_device(v["ir"]), to_device(v["vis"])
        for key in v:
            if key.startswith("fused:"):
                f = to_device(v[key])
                li += (a_i(f).float() - ir).abs().mean().item()
                lv += (a_v(f).float() - vis).abs().mean().item()
                count += 1
    return {"val_l1_ir": li / count, "val_l1_vis": lv / count, "val_l1": (li + lv) / count}


def validate_bootstrap(fuser: nn.Module, crops: Crops, to_device: ToDevice) -> dict[str, float]:
    """The bootstrap U-Fuser: its conventional fusion loss on the crops."""
    if not crops:
        return {}
    total = 0.0
    for v in crops:
        ir, vis = to_device(v["ir"]), to_device(v["vis"])
        total += conventional_fusion_loss(fuser(ir, vis), ir, vis).item()
    return {"val_loss": total / len(crops)}


def _sensing_terms(
    fuser: nn.Module, a_i: nn.Module, a_v: nn.Module, f: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor
) -> dict[str, float]:
    """Stage III's loss terms for the fused crop ``f``, with :data:`VALIDATION_TRANSFORMS`."""
    ts = list(VALIDATION_TRANSFORMS)
    ft, mask = apply_transforms(f.expand(len(ts), -1, -1, -1).contiguous(), ts)
    both = torch.cat([f, ft])
    s_i, s_v = a_i(both).float(), a_v(both).float()
    ft_hat = fuser(s_i[1:], s_v[1:]).float()
    return {
        "val_l1_ir": (s_i[:1] - ir).abs().mean().item(),
        "val_l1_vis": (s_v[:1] - vis).abs().mean().item(),
        "val_l1_equi": ((ft_hat - ft).abs() * mask).sum().item() / mask.sum().clamp_min(1).item(),
        "val_total": (
            l1_gradient_loss(s_i[:1], ir) + l1_gradient_loss(s_v[:1], vis) + l1_gradient_loss(ft_hat, ft, mask)
        ).item(),
    }


def validate_fuser(
    fuser: nn.Module, a_i: nn.Module | None, a_v: nn.Module | None, crops: Crops, to_device: ToDevice,
    holdout: dict[str, float] | None = None,
) -> dict[str, float]:
    """EN, SD, AG, MI, VIF, Qabf and the grid ratio of the fused crops; with sensing nets also
    their L1s, the equivariance L1 for fixed transforms and the unweighted total; then the
    ``holdout`` scores (per held-out domain), unchanged."""
    holdout = holdout or {}
    if not crops:
        return holdout
    sums: dict[str, float] = {}
    for v in crops:
        ir, vis = to_device(v["ir"]), to_device(v["vis"])
        f = fuser(ir, vis).float()
        vals = {} if a_i is None or a_v is None else _sensing_terms(fuser, a_i, a_v, f, ir, vis)
        vals.update(quick_metrics(f, ir, vis))
        for k, x in vals.items():
            sums[k] = sums.get(k, 0.0) + x
    return {**{k: x / len(crops) for k, x in sums.items()}, **holdout}


class HoldoutScores:
    """Per held-out domain scores of a U-Fuser (:mod:`emmafuse.train.domain_validation`).

    The crops are cut the first time; the teacher's own scores are then recorded and logged once.
    """

    def __init__(self, rc: RunContext, store: PairStore | None) -> None:
        self.rc, self.store = rc, store
        self._crops: list[DomainCrop] | None = None

    def _first_crops(self, store: PairStore) -> list[DomainCrop]:
        d, w = self.rc.cfg.data, self.rc.cfg.warm_start
        teacher = w.target if w.target in store.fused else None
        crops = holdout_crops(store, d.holdout_crop, d.holdout_pairs, teacher)
        if teacher is not None:
            scores = score_domains(crops)
            self.rc.record({"teacher": teacher, "holdout": scores})
            self.rc.log(f"teacher {teacher} on held-out domains: " + ", ".join(f"{k}={v:.4g}" for k, v in scores.items()))
        return crops

    def __call__(self, fuser: nn.Module) -> dict[str, float]:
        """``{"<domain>:<score>": value}``; empty without held-out domains."""
        if self.store is None:
            return {}
        if self._crops is None:
            self._crops = self._first_crops(self.store)

        def run(ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
            return fuser(self.rc.to_device(ir), self.rc.to_device(vis))

        return score_domains(self._crops, run)
