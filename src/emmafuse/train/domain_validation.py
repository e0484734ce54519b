"""Validation on held-out *domains*: does the model hold up on a source it never trained on?

Pairs held out from the training folders at random come from the training domain and say
little about other cameras (issue 16: the v1 model scored well there and copied the infrared
elsewhere). With ``data.holdout`` a whole source (e.g. ``ivf/LLVIP``) is kept out of training;
each validation then reports per held-out domain:

- the six metrics of the fused centre crops (``<domain>:EN`` ...), next to the teacher's
  (logged once, ``teacher`` records);
- ``<domain>:agree``: the correlation of the fused crop with the teacher's (the teacher fuses
  the *whole* image, so it sees context a crop does not);
- ``<domain>:c_ir`` / ``<domain>:c_vis``: the correlation with each source, which shows a
  shortcut such as "the infrared is the base layer" directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from emmafuse.train.data import pair_domain
from emmafuse.train.patches import PairStore, centre_crop_box
from emmafuse.train.quick_metrics import quick_metrics

__all__ = ["DomainCrop", "holdout_crops", "correlation", "score_domains"]


@dataclass(frozen=True)
class DomainCrop:
    """One held-out pair's centre crop: ``(1, 1, h, w)`` tensors in [0, 1]."""

    domain: str
    stem: str
    ir: torch.Tensor
    vis: torch.Tensor
    teacher: torch.Tensor | None


def holdout_crops(store: PairStore, size: int, per_domain: int, teacher: str | None) -> list[DomainCrop]:
    """Centre crops (:func:`~emmafuse.train.patches.centre_crop_box`) of at most
    ``per_domain`` pairs of each domain, evenly spread over the domain's pairs (sorted by name)."""
    by_domain: dict[str, list[int]] = {}
    for i, stem in enumerate(store.stems):
        by_domain.setdefault(pair_domain(stem), []).append(i)
    fused = store.fused.get(teacher) if teacher else None
    out: list[DomainCrop] = []
    for domain in sorted(by_domain):
        members = by_domain[domain]
        picks = [members[int(j)] for j in np.linspace(0, len(members) - 1, min(per_domain, len(members))).round()]
        for i in dict.fromkeys(picks):
            h, w = store.ir[i].shape
            y, x, ch, cw = centre_crop_box(h, w, size)

            def cut(arr: np.ndarray) -> torch.Tensor:
                return torch.from_numpy(arr[y : y + ch, x : x + cw].astype(np.float32))[None, None]

            out.append(DomainCrop(domain, store.stems[i], cut(store.ir[i]), cut(store.vis[i]),
                                  cut(fused[i]) if fused is not None else None))
    return out


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two images (0 when either is flat)."""
    x = a.double().flatten() - a.double().mean()
    y = b.double().flatten() - b.double().mean()
    den = float((x.square().sum() * y.square().sum()).sqrt())
    return float((x * y).sum()) / den if den > 0 else 0.0


def score_domains(
    crops: Sequence[DomainCrop],
    fuse: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    results: Sequence[torch.Tensor] | None = None,
) -> dict[str, float]:
    """Per-domain means of the six metrics, ``grid``, ``c_ir``, ``c_vis`` and ``agree``.

    The fused crop of each pair is ``fuse(ir, vis)``, or ``results[i]`` (e.g. a rule's output),
    and ``agree`` is its correlation with the crop's teacher. With neither, the teacher's own
    crops are scored (no ``agree``).
    """
    sums: dict[str, list[float]] = {}
    for i, c in enumerate(crops):
        if fuse is not None:
            fused = fuse(c.ir, c.vis).float().cpu().clamp(0, 1)
        elif results is not None:
            fused = results[i].float().cpu().clamp(0, 1)
        elif c.teacher is not None:
            fused = c.teacher
        else:
            continue
        values = quick_metrics(fused, c.ir, c.vis)
        values["c_ir"] = correlation(fused, c.ir)
        values["c_vis"] = correlation(fused, c.vis)
        if (fuse is not None or results is not None) and c.teacher is not None:
            values["agree"] = correlation(fused, c.teacher)
        for key, value in values.items():
            sums.setdefault(f"{c.domain}:{key}", []).append(value)
    return {key: float(np.mean(v)) for key, v in sums.items()}
