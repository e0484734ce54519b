"""Pseudo sensing modules A_i, A_v: U-Nets mapping a fused image back to one source.

:class:`SensingUNet` generalises the authors' ``UNet5`` (five scales, two 3x3
conv-BatchNorm-ReLU per scale, transposed-conv upsampling, sigmoid output) to any base
width: ``base=64`` is the official network (39.4 M parameters), ``base=16`` (2.5 M) is
our default (see ``docs/training.md`` for the validation comparison).
Inputs need sides that are multiples of ``2 ** (depth - 1)`` (16 for the five scales:
four 2x poolings), :attr:`SensingUNet.size_requirements`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from emmafuse.errors import InputError
from emmafuse.models.size_req import SizeRequirements

__all__ = ["SensingUNet", "crop_requirements", "reestimate_batchnorm"]

#: Scales of the sensing U-Net (the official UNet5).
DEPTH = 5


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

    def __init__(self, base: int = 16, in_channels: int = 1, depth: int = DEPTH) -> None:
        super().__init__()
        if depth < 2:
            raise InputError("depth must be >= 2", parameter="depth")
        self.base, self.depth = base, depth
        widths = [base * 2**k for k in range(depth)]
        self.pool = nn.MaxPool2d(2)
        self.down = nn.ModuleList(
            [_double_conv(in_channels, widths[0])] + [_double_conv(widths[k - 1], widths[k]) for k in range(1, depth)]
        )
        self.up = nn.ModuleList([_upsample(widths[k], widths[k - 1]) for k in range(depth - 1, 0, -1)])
        self.merge = nn.ModuleList([_double_conv(2 * widths[k - 1], widths[k - 1]) for k in range(depth - 1, 0, -1)])
        self.last = nn.Sequential(nn.Conv2d(widths[0], 1, 3, padding=1), nn.Sigmoid())

    @staticmethod
    def requirements(depth: int = DEPTH) -> SizeRequirements:
        """Input sides a U-Net of ``depth`` scales accepts: multiples of ``2 ** (depth - 1)``."""
        side = 2 ** (depth - 1)
        return SizeRequirements(multiple=side, minimum=side)

    @property
    def size_requirements(self) -> SizeRequirements:
        """This net's input-size rules (:meth:`requirements` of its depth)."""
        return self.requirements(self.depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat((up(x), skips.pop()), 1))
        return self.last(x)


def crop_requirements(depth: int = DEPTH) -> SizeRequirements:
    """The sides every training and validation crop must have: accepted by the U-Fuser
    (:attr:`emmafuse.models.ufuser.UFuser.size_requirements`) and by the sensing U-Nets, which
    see the same crops (a common multiple, the larger minimum)."""
    from emmafuse.models.ufuser import UFuser

    fuser, sensing = UFuser.size_requirements, SensingUNet.requirements(depth)
    multiple = math.lcm(fuser.multiple, sensing.multiple)
    return SizeRequirements(multiple=multiple, minimum=-(-max(fuser.minimum, sensing.minimum) // multiple) * multiple)


@torch.no_grad()
def reestimate_batchnorm(
    nets: Sequence[nn.Module],
    batches: Iterable[torch.Tensor],
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    world: int = 1,
) -> None:
    """Re-estimate the nets' BatchNorm statistics for their final weights (cumulative average
    over ``batches`` of fused images); leaves the nets in eval mode.

    The nets are frozen and used in eval mode afterwards; running averages collected while the
    weights moved lag behind them (badly so in short runs). With ``world > 1`` (DDP) the
    statistics are averaged over the processes.
    """
    norms = [m for net in nets for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    for net in nets:
        net.train()
    for fused in batches:
        with autocast():
            for net in nets:
                net(fused)
    for m, mom in zip(norms, saved):
        m.momentum = mom
        if world > 1:
            import torch.distributed as dist

            for buf in (m.running_mean, m.running_var):
                if buf is not None:  # always, with tracked statistics
                    dist.all_reduce(buf)
                    buf /= world
    for net in nets:
        net.eval()
