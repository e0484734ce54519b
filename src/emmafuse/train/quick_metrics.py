"""Cheap no-reference fusion metrics for validation during training: EN, SD, AG.

Definitions follow the de-facto evaluator (MMIF-CDDFuse ``utils/Evaluator.py``) on 8-bit
gray levels: EN on the rounded image's 256-bin histogram (bits), SD the population
standard deviation, AG the mean of ``sqrt((gx^2 + gy^2) / 2)`` with central differences
inside and one-sided differences at the borders. Use :mod:`emmafuse.metrics` for reporting;
these exist so that training needs nothing beyond torch.
"""

from __future__ import annotations

import torch

__all__ = ["entropy", "standard_deviation", "average_gradient", "quick_metrics"]


def _to_255(img: torch.Tensor) -> torch.Tensor:
    return img.detach().double().reshape(img.shape[-2], img.shape[-1]) * 255.0


def entropy(img: torch.Tensor) -> float:
    """EN (bits) of a single ``(…, H, W)`` image in [0, 1]."""
    levels = torch.round(_to_255(img)).clamp(0, 255).long().flatten()
    p = torch.bincount(levels, minlength=256).double() / levels.numel()
    p = p[p > 0]
    return float(-(p * torch.log2(p)).sum())


def standard_deviation(img: torch.Tensor) -> float:
    """SD on the 0..255 scale."""
    return float(_to_255(img).std(unbiased=False))


def average_gradient(img: torch.Tensor) -> float:
    """AG on the 0..255 scale."""
    x = _to_255(img)
    gx = torch.zeros_like(x)
    gy = torch.zeros_like(x)
    gx[:, 0], gx[:, -1] = x[:, 1] - x[:, 0], x[:, -1] - x[:, -2]
    gx[:, 1:-1] = (x[:, 2:] - x[:, :-2]) / 2
    gy[0, :], gy[-1, :] = x[1, :] - x[0, :], x[-1, :] - x[-2, :]
    gy[1:-1, :] = (x[2:, :] - x[:-2, :]) / 2
    return float(torch.sqrt((gx**2 + gy**2) / 2).mean())


def quick_metrics(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> dict[str, float]:
    """``{"EN", "SD", "AG"}`` of one fused image ``(1, 1, H, W)`` in [0, 1].

    The image is first quantised to 8-bit gray levels, as if saved to PNG. Uses
    :func:`emmafuse.metrics.evaluate` (reference preset) when available, else the
    definitions above.
    """
    f = torch.round(fused.detach().float().clamp(0, 1) * 255) / 255
    try:
        from emmafuse.metrics import evaluate
    except ImportError:
        return {"EN": entropy(f), "SD": standard_deviation(f), "AG": average_gradient(f)}

    def gray(t: torch.Tensor):  # noqa: ANN202 - numpy array
        return _to_255(t.float()).cpu().numpy()

    return evaluate(gray(f), gray(ir), gray(vis), metrics=["EN", "SD", "AG"])
