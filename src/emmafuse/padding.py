"""Padding any image size to what a network accepts, and cropping back.

The sizes come from the network's :class:`~emmafuse.models.SizeRequirements` (default: the
U-Fuser's, sides that are multiples of :data:`~emmafuse.models.SIZE_MULTIPLE` (three stride-2
stages) and at least :data:`~emmafuse.models.MIN_SIDE`). We pad symmetrically with reflection
(no artificial edge for the convolutions to see) and fall back to edge replication where
reflection is impossible (padding at least as wide as the image, e.g. a 1x1 input).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from emmafuse.models import UFUSER_SIZE, SizeRequirements

__all__ = ["pad_to_network", "crop"]

Pads = tuple[int, int, int, int]


def _pad_axis(x: torch.Tensor, before: int, after: int, axis: int) -> torch.Tensor:
    if before == 0 and after == 0:
        return x
    pad = (before, after, 0, 0) if axis == 3 else (0, 0, before, after)
    mode = "reflect" if max(before, after) < x.shape[axis] else "replicate"
    return F.pad(x, pad, mode=mode)


def pad_to_network(x: torch.Tensor, size_req: SizeRequirements = UFUSER_SIZE) -> tuple[torch.Tensor, Pads]:
    """Pad an ``(N, C, H, W)`` tensor to ``size_req``; returns it and the ``(top, bottom, left, right)`` pads."""
    h, w = x.shape[-2:]
    ph, pw = size_req.padded(h) - h, size_req.padded(w) - w
    top, left = ph // 2, pw // 2
    bottom, right = ph - top, pw - left
    x = _pad_axis(x, top, bottom, axis=2)
    x = _pad_axis(x, left, right, axis=3)
    return x, (top, bottom, left, right)


def crop(x: torch.Tensor, pads: Pads) -> torch.Tensor:
    """Undo :func:`pad_to_network`."""
    top, bottom, left, right = pads
    h, w = x.shape[-2:]
    return x[..., top : h - bottom, left : w - right]
