"""RGB <-> YCbCr conversion (ITU-R BT.601, full range as in JPEG), on torch tensors.

Fusion runs on luminance only: the colour image's Y is fused with the other modality and its
chroma (Cb, Cr) is put back afterwards. Tensors are ``(N, 3, H, W)`` floats in [0, 1]; Cb and Cr
are offset by 0.5 so that all three planes lie in [0, 1] for in-gamut colours.
"""

from __future__ import annotations

import torch

__all__ = ["rgb_to_ycbcr", "ycbcr_to_rgb", "rgb_to_luma"]

# BT.601 luma weights (the same as PIL's "L" conversion and OpenCV's BGR2GRAY).
_KR, _KG, _KB = 0.299, 0.587, 0.114


def rgb_to_luma(rgb: torch.Tensor) -> torch.Tensor:
    """Y plane of an ``(N, 3, H, W)`` RGB tensor, shape ``(N, 1, H, W)``."""
    r, g, b = rgb.unbind(1)
    return (_KR * r + _KG * g + _KB * b).unsqueeze(1)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` RGB in [0, 1] -> YCbCr with chroma offset 0.5."""
    r, g, b = rgb.unbind(1)
    y = _KR * r + _KG * g + _KB * b
    cb = (b - y) / (2 * (1 - _KB)) + 0.5
    cr = (r - y) / (2 * (1 - _KR)) + 0.5
    return torch.stack((y, cb, cr), 1)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (no clipping: callers clip after all arithmetic)."""
    y, cb, cr = ycbcr.unbind(1)
    cb = cb - 0.5
    cr = cr - 0.5
    r = y + 2 * (1 - _KR) * cr
    b = y + 2 * (1 - _KB) * cb
    g = (y - _KR * r - _KB * b) / _KG
    return torch.stack((r, g, b), 1)
