"""Pseudo sensing modules A_i, A_v: U-Nets mapping a fused image back to one source.

:class:`SensingUNet` generalises the authors' ``UNet5`` (five scales, two 3x3
conv-BatchNorm-ReLU per scale, transposed-conv upsampling, sigmoid output) to any base
width: ``base=64`` is the official network (39.4 M parameters), ``base=16`` (2.5 M) is
our default (see ``docs/training.md`` for the validation comparison).
Inputs need sides that are multiples of 16 (four 2x poolings).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SensingUNet"]


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _upsample(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.ReLU(inplace=True))


class SensingUNet(nn.Module):
    """``A(f)``: fused ``(N, 1, H, W)`` in [0, 1] -> simulated source image in (0, 1)."""

    def __init__(self, base: int = 16, in_channels: int = 1, depth: int = 5) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError("depth must be >= 2")
        self.base, self.depth = base, depth
        widths = [base * 2**k for k in range(depth)]
        self.pool = nn.MaxPool2d(2)
        self.down = nn.ModuleList(
            [_double_conv(in_channels, widths[0])] + [_double_conv(widths[k - 1], widths[k]) for k in range(1, depth)]
        )
        self.up = nn.ModuleList([_upsample(widths[k], widths[k - 1]) for k in range(depth - 1, 0, -1)])
        self.merge = nn.ModuleList([_double_conv(2 * widths[k - 1], widths[k - 1]) for k in range(depth - 1, 0, -1)])
        self.last = nn.Sequential(nn.Conv2d(widths[0], 1, 3, padding=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat((up(x), skips.pop()), 1))
        return self.last(x)
