"""Small image filters of the pseudo-GT rules (:mod:`emmafuse.train.pseudo_gt`), on ``(N, C, H, W)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["replicate_pad", "separable_conv", "gaussian_kernel_1d", "box_mean", "guided_filter"]


def replicate_pad(x: torch.Tensor, r: int) -> torch.Tensor:
    return F.pad(x, (r, r, r, r), mode="replicate")


def separable_conv(x: torch.Tensor, k1d: torch.Tensor) -> torch.Tensor:
    r = k1d.numel() // 2
    k = k1d.to(x)
    x = F.conv2d(replicate_pad(x, r), k.view(1, 1, 1, -1).expand(x.shape[1], 1, 1, -1).contiguous(), groups=x.shape[1])
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(x.shape[1], 1, -1, 1).contiguous(), groups=x.shape[1])


def gaussian_kernel_1d(radius: int, sigma: float) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return (k / k.sum()).float()


def _box_mean_1d(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Mean over a ``2r+1`` window clipped at the borders (integral image: O(1) per pixel)."""
    n = x.shape[dim]
    c = torch.cumsum(x.double(), dim)
    c = torch.cat([torch.zeros_like(c.narrow(dim, 0, 1)), c], dim)
    idx = torch.arange(n, device=x.device)
    hi = (idx + r + 1).clamp(max=n)
    lo = (idx - r).clamp(min=0)
    s = c.index_select(dim, hi) - c.index_select(dim, lo)
    shape = [1] * x.dim()
    shape[dim] = n
    return (s / (hi - lo).double().view(shape)).to(x.dtype)


def box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean filter of radius ``r`` with border-clipped windows, on ``(N, C, H, W)``."""
    return _box_mean_1d(_box_mean_1d(x, r, -2), r, -1)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, r: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter (gray guide)."""
    mean_i, mean_p = box_mean(guide, r), box_mean(src, r)
    cov = box_mean(guide * src, r) - mean_i * mean_p
    var = box_mean(guide * guide, r) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return box_mean(a, r) * guide + box_mean(b, r)
