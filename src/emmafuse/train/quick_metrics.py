"""Fusion metrics for validation during training.

Each fused crop is quantised to 8-bit gray levels (as if saved to PNG) and scored with
:func:`emmafuse.metrics.evaluate` (reference preset): EN, SD, AG, MI, VIF, Qabf, plus the
``grid`` ratio of :func:`emmafuse.metrics.grid.grid_ratio`, which catches a checkerboard that
the averages hide.
"""

from __future__ import annotations

import numpy as np
import torch

from emmafuse.metrics import MIN_SIZE, PAPER_METRICS, evaluate
from emmafuse.metrics.grid import grid_ratio

__all__ = ["VALIDATION_METRICS", "quick_metrics"]

#: What validation scores: the six metrics of the paper's tables (:data:`emmafuse.metrics.PAPER_METRICS`).
VALIDATION_METRICS = PAPER_METRICS


def _gray_255(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().reshape(t.shape[-2], t.shape[-1]).numpy().astype(np.float64) * 255.0


def quick_metrics(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> dict[str, float]:
    """EN, SD, AG, MI, VIF, Qabf and ``grid`` of one fused ``(1, 1, H, W)`` image in [0, 1].

    Metrics that need a larger image than this one (VIF: 41 pixels) are left out.
    """
    f = np.round(_gray_255(fused.clamp(0, 1)))
    names = [m for m in VALIDATION_METRICS if min(f.shape) >= MIN_SIZE[m]]
    scores = evaluate(f, _gray_255(ir), _gray_255(vis), metrics=names)
    return {**scores, "grid": grid_ratio(f)}
