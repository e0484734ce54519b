"""RGB <-> YCbCr conversion (ITU-R BT.601, full range as in JPEG), on torch tensors.

Fusion runs on luminance only: the colour image's Y is fused with the other modality and its
chroma (Cb, Cr) is put back afterwards. Tensors are ``(N, 3, H, W)`` floats in [0, 1]; Cb and Cr
are offset by 0.5 so that all three planes lie in [0, 1] for in-gamut colours.

:func:`is_gray_rgb` decides whether an RGB image really carries colour: gray images stored as
RGB (common in medical data sets) count as gray everywhere.
"""

from __future__ import annotations

import torch

__all__ = ["rgb_to_ycbcr", "ycbcr_to_rgb", "rgb_to_luma", "is_gray_rgb", "GRAY_TOLERANCE", "BT601_WEIGHTS"]

#: BT.601 luma weights of R, G, B (the same as PIL's "L" conversion and OpenCV's BGR2GRAY); the
#: one copy in the package (numpy readers and the evaluator's cv2-exact conversion use it too).
BT601_WEIGHTS = (0.299, 0.587, 0.114)
_KR, _KG, _KB = BT601_WEIGHTS

#: Largest channel difference (on the [0, 1] scale) of an RGB image that still counts as gray.
#: One 16-bit step is 1.5e-5, so integer images must match exactly; floats may differ by rounding.
GRAY_TOLERANCE = 1e-6
#: Rows compared at a time, so an 8K image needs no full-size temporaries.
_GRAY_CHECK_ROWS = 256


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


def is_gray_rgb(rgb: torch.Tensor, tolerance: float = GRAY_TOLERANCE) -> bool:
    """Whether a ``(3, H, W)`` RGB tensor in [0, 1] is gray: R, G and B equal within ``tolerance``.

    Such an image has no chroma to give, so it must not win the colour slot from a real colour
    image (a PET scan fused with an MRI stored as RGB), nor make the output colour.
    """
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"is_gray_rgb expects a (3, H, W) tensor, got {tuple(rgb.shape)}")
    for r0 in range(0, rgb.shape[1], _GRAY_CHECK_ROWS):
        strip = rgb[:, r0 : r0 + _GRAY_CHECK_ROWS]
        if (strip[0] - strip[1]).abs().max() > tolerance or (strip[1] - strip[2]).abs().max() > tolerance:
            return False
    return True
