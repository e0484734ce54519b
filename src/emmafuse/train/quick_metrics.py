"""Fusion metrics for validation during training.

Each fused crop is quantised to 8-bit gray levels (as if saved to PNG) and scored with
:func:`emmafuse.metrics.evaluate` (reference preset): EN, SD, AG, MI, VIF, Qabf, plus the
``grid`` ratio of :func:`grid_ratio`, which catches a checkerboard that the averages hide.
"""

from __future__ import annotations

import numpy as np
import torch

from emmafuse.metrics import MIN_SIZE, evaluate

__all__ = ["VALIDATION_METRICS", "grid_ratio", "quick_metrics"]

#: The six metrics of the paper's tables, in their order.
VALIDATION_METRICS = ("EN", "SD", "AG", "MI", "VIF", "Qabf")


def grid_ratio(image: np.ndarray) -> float:
    """Largest amplitude on the Nyquist row and column of the spectrum over its median.

    A pattern locked to the pixel grid (period 2, e.g. transposed-convolution checkerboard)
    puts its energy there: natural images and classical fusion rules stay within about 10x
    on full frames, a visible checkerboard gives hundreds to thousands.
    """
    x = np.asarray(image, dtype=np.float64)
    spectrum = np.abs(np.fft.fft2(x - x.mean()))
    h, w = spectrum.shape
    nyquist = max(spectrum[h // 2, :].max() if h % 2 == 0 else 0.0, spectrum[:, w // 2].max() if w % 2 == 0 else 0.0)
    median = float(np.median(spectrum))
    return float(nyquist / median) if median > 0 else 0.0


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
