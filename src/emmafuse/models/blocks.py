"""The U-Fuser's units: residual blocks, the local branch and the Restormer-CNN block.

A Restormer-CNN block embeds its input with a 3x3 convolution, runs the global branch
(:class:`~emmafuse.models.restormer.GlobalBranch`) and the local branch (two residual blocks)
side by side and merges their concatenation with a 3x3 convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emmafuse.models.fast_paths import FastPaths, is_compiling, reflect_border_
from emmafuse.models.restormer import GlobalBranch, conv3x3

__all__ = ["LocalBranch", "ResBlock", "RestormerCNNBlock", "upsampler"]


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a ReLU between them, plus the input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(conv3x3(dim, dim, bias=True), nn.ReLU(), conv3x3(dim, dim, bias=True))

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        if torch.is_grad_enabled():
            y = x + self.conv(x)
            return y if out is None else out.copy_(y)
        # inference: in-place ReLU and residual sum (same values, fewer allocations)
        h = self.conv[2](self.conv[0](x).relu_())
        return torch.add(h, x, out=out) if out is not None else h.add_(x)


class LocalBranch(nn.Module):
    """The local branch: residual blocks in a row (``Extraction``, as the release names it)."""

    def __init__(self, dim: int, num_blocks: int = 2) -> None:
        super().__init__()
        self.Extraction = nn.Sequential(*[ResBlock(dim) for _ in range(num_blocks)])

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        blocks = list(self.Extraction)
        for block in blocks[:-1]:
            x = block(x)
        return blocks[-1](x, out=out)


class RestormerCNNBlock(nn.Module):
    """Embed, run the global and local branches in parallel, merge with a 3x3 conv."""

    def __init__(self, cin: int, cout: int, num_heads: int, fast: FastPaths | None = None) -> None:
        super().__init__()
        self.fast = fast if fast is not None else FastPaths()
        self.embed = conv3x3(cin, cout, bias=False)
        self.GlobalFeature = GlobalBranch(cout, num_heads, fast=self.fast)
        self.LocalFeature = LocalBranch(cout)
        self.FFN = conv3x3(cout * 2, cout, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        if torch.is_grad_enabled():  # training: the release's computation, untouched
            return self.FFN(torch.cat((self.GlobalFeature(x), self.LocalFeature(x)), 1))
        if self.fast.channels_last:
            # a 1-channel input gives an ambiguous layout: make the NHWC choice explicit
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.fast.fused_concat or is_compiling():  # the compiler fuses cat + pad itself
            return self.FFN(torch.cat((self.GlobalFeature(x), self.LocalFeature(x)), 1))
        # Both branches write straight into one reflect-padded buffer: no concatenation copy
        # and no padding copy before the merging 3x3 convolution.
        b, c, h, w = x.shape
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        buf = torch.empty((b, 2 * c, h + 2, w + 2), dtype=x.dtype, device=x.device, memory_format=fmt)
        self.GlobalFeature(x, out=buf[:, :c, 1:-1, 1:-1])
        self.LocalFeature(x, out=buf[:, c:, 1:-1, 1:-1])
        reflect_border_(buf)
        return F.conv2d(buf, self.FFN.weight, self.FFN.bias)


def upsampler(cin: int, cout: int) -> nn.Sequential:
    """A stride-2, 4x4 transposed convolution then a ReLU: the decoder's 2x upsampling."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.ReLU())

