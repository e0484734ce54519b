"""Losses: the official ``L = L1 + gradient L1`` (optionally masked) and a conventional fusion loss.

The gradient is kornia's ``SpatialGradient()`` as the authors use it: 3x3 Sobel kernels
divided by the sum of their absolute values (8), replicate padding, both directions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from emmafuse.errors import InputError

__all__ = ["sobel_gradient", "l1_gradient_loss", "sensing_loss", "gradient_max_loss", "conventional_fusion_loss"]

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
_SOBEL = torch.stack([_SOBEL_X, _SOBEL_X.t()])[:, None]  # (2, 1, 3, 3): d/dx, d/dy


def sobel_gradient(x: torch.Tensor) -> torch.Tensor:
    """Normalised Sobel gradients: ``(N, C, H, W)`` -> ``(N, C, 2, H, W)`` (x then y)."""
    n, c, h, w = x.shape
    flat = F.pad(x.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    return F.conv2d(flat, _SOBEL.to(device=x.device, dtype=x.dtype)).view(n, c, 2, h, w)


def _erode(mask: torch.Tensor) -> torch.Tensor:
    # a pixel's gradient is valid only if its 3x3 neighbourhood is (borders count as valid,
    # matching the replicate padding of the unmasked loss)
    return -F.max_pool2d(-mask, 3, stride=1, padding=1)


def l1_gradient_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mean|pred - target| + mean|grad pred - grad target|``, over ``mask`` when given.

    Without a mask (or with an all-ones mask) this equals the official ``loss_fusion``.
    """
    pred, target = pred.float(), target.float()
    diff = (pred - target).abs()
    gdiff = (sobel_gradient(pred) - sobel_gradient(target)).abs()
    if mask is None:
        return diff.mean() + gdiff.mean()
    mask = mask.float()
    c = pred.shape[1]
    inner = _erode(mask)
    l_int = (diff * mask).sum() / (mask.sum() * c).clamp_min(1)
    l_grad = (gdiff * inner[:, :, None]).sum() / (inner.sum() * c * 2).clamp_min(1)
    return l_int + l_grad


def sensing_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Stage II loss: ``l1`` (paper), ``mse`` (official code) or ``l1grad``."""
    pred, target = pred.float(), target.float()
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "l1grad":
        return l1_gradient_loss(pred, target)
    raise InputError(f"unknown sensing loss {kind!r}", parameter="kind")


def gradient_max_loss(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """``mean| |grad f| - max(|grad i|, |grad v|) |`` with ``|g| = |gx| + |gy|`` (Sobel / 8)."""
    g = sobel_gradient(torch.cat([fused.float(), ir.float(), vis.float()], 1)).abs().sum(2)
    return F.l1_loss(g[:, :1], torch.maximum(g[:, 1:2], g[:, 2:3]))


def conventional_fusion_loss(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """Intensity-max + gradient-max L1: the usual unsupervised fusion loss (bootstrap stage)."""
    l_int = F.l1_loss(fused.float(), torch.maximum(ir.float(), vis.float()))
    return l_int + gradient_max_loss(fused, ir, vis)
