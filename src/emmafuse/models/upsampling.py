"""Checkerboard-free starts and constraints for stride-2, 4x4 transposed convolutions.

Both the U-Fuser's decoder and the sensing U-Nets upsample with ``ConvTranspose2d(k=4,
stride=2, padding=1)``. Such a layer computes each output pixel from one of four 2x2
sub-kernels, chosen by the pixel's row and column parity. When the four sub-kernels of an
(input, output) channel pair sum to different totals, even a flat input comes out with a
period-2 pattern (Odena et al., "Deconvolution and checkerboard artifacts", 2016), and
training can keep or exploit it: a U-Fuser trained against sensing nets learns to write a
grid that the nets read back. These functions keep the layers (and so the state-dict
layout) and remove the pattern:

- :func:`init_upsampling_bilinear` starts every such layer as bilinear upsampling;
- :func:`balance_upsampling_` projects the weights onto "equal sub-kernel sums" (the
  Euclidean projection), to be called after each optimiser step.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["stride2_upsamplers", "init_upsampling_bilinear", "balance_upsampling_"]


def stride2_upsamplers(model: nn.Module) -> list[nn.ConvTranspose2d]:
    """The ``ConvTranspose2d(k=4, stride=2, padding=1)`` layers of ``model``."""
    return [
        m for m in model.modules()
        if isinstance(m, nn.ConvTranspose2d) and m.kernel_size == (4, 4) and m.stride == (2, 2)
        and m.padding == (1, 1) and m.groups == 1
    ]


@torch.no_grad()
def init_upsampling_bilinear(
    model: nn.Module, noise: float = 1e-3, generator: torch.Generator | None = None
) -> nn.Module:
    """Start every stride-2 upsampler of ``model`` as bilinear 2x upsampling.

    Output channel ``j`` averages the input channels ``j, j + cout, ...``; with more output
    than input channels, output ``j`` copies input ``j % cin``. A little noise breaks the
    symmetry between channels. Biases, if any, are zeroed.
    """
    k1d = torch.tensor([0.25, 0.75, 0.75, 0.25])
    kernel = k1d[:, None] * k1d[None, :]
    for conv in stride2_upsamplers(model):
        cin, cout = conv.weight.shape[:2]
        w = torch.zeros(conv.weight.shape, dtype=torch.float32)
        per_out = max(1, cin // cout)
        for i in range(max(cin, cout)):
            w[i % cin, i % cout] = kernel / per_out
        w += noise * torch.randn(w.shape, generator=generator)
        conv.weight.copy_(w.to(conv.weight))
        if conv.bias is not None:
            conv.bias.zero_()
    return model


@torch.no_grad()
def balance_upsampling_(model: nn.Module) -> nn.Module:
    """Project every stride-2 upsampler's weights onto checkerboard-free kernels, in place.

    Subtracts from each parity's 2x2 sub-kernel a quarter of its sum's excess over the mean
    of the four sums, per (input, output) channel pair: the nearest weights (in L2) for which
    a flat input gives a flat output. Everything else the layer learned is kept.
    """
    for conv in stride2_upsamplers(model):
        w = conv.weight  # (cin, cout, 4, 4); tap t = 2 * k + parity
        sub = w.unflatten(2, (2, 2)).unflatten(-1, (2, 2))  # (cin, cout, ky, py, kx, px)
        sums = sub.sum(dim=(2, 4), keepdim=True)
        sub -= (sums - sums.mean(dim=(3, 5), keepdim=True)) / 4
    return model
