"""BT.601 luma and RGB <-> YCbCr (full range, as in JPEG): the one colour arithmetic of the package.

Fusion runs on luminance only: the colour image's Y is fused with the other modality and its
chroma (Cb, Cr) is put back afterwards (:func:`rgb_to_ycbcr`, :func:`ycbcr_to_rgb` on
``(N, 3, H, W)`` torch tensors in [0, 1]; Cb and Cr are offset by 0.5 so that all three planes
lie in [0, 1] for in-gamut colours). :func:`rgb_to_luma` gives the same Y of numpy images (the
training reader, :func:`emmafuse.image_io.read_luma`) or, with ``like_cv2=True``, the gray
levels of the reference evaluator (the metrics and ``emmafuse eval``).

:func:`is_gray_rgb` decides whether an RGB image really carries colour: gray images stored as
RGB (common in medical data sets) count as gray everywhere.

Only the torch functions import torch (inside them): the numpy readers and the metrics stay
free of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from emmafuse.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["rgb_to_ycbcr", "ycbcr_to_rgb", "rgb_to_luma", "is_gray_rgb", "GRAY_TOLERANCE", "BT601_WEIGHTS"]

#: BT.601 luma weights of R, G, B (the same as PIL's "L" conversion and OpenCV's BGR2GRAY); the
#: one copy in the package.
BT601_WEIGHTS = (0.299, 0.587, 0.114)
_KR, _KG, _KB = BT601_WEIGHTS

#: Largest channel difference (on the [0, 1] scale) of an RGB image that still counts as gray.
#: One 16-bit step is 1.5e-5, so integer images must match exactly; floats may differ by rounding.
GRAY_TOLERANCE = 1e-6
#: Rows compared at a time, so an 8K image needs no full-size temporaries.
_GRAY_CHECK_ROWS = 256


def _weighted(r: Any, g: Any, b: Any) -> Any:
    """``0.299 R + 0.587 G + 0.114 B`` of three planes (numpy arrays or torch tensors), in
    their dtype: the one luma formula of fusion and training."""
    return _KR * r + _KG * g + _KB * b


def _luma_like_cv2(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's float32 ``COLOR_BGR2GRAY`` kernel, rounded half to even, as float64 integers.

    OpenCV evaluates ``fma(R, cr, fma(B, cb, G * cg))`` in float32 with float32 coefficients;
    a product of two float32 numbers is exact in float64, so each fused multiply-add computed
    in float64 and rounded to float32 gives the same bits (checked against cv2 on all 2^24
    colours).
    """
    f32 = np.float32
    cr, cg, cb = (float(f32(c)) for c in BT601_WEIGHTS)  # cv2's float32 coefficients
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    t = (g.astype(f32) * f32(cg)).astype(np.float64)
    t = (b * cb + t).astype(f32).astype(np.float64)
    y = (r * cr + t).astype(f32)
    return np.round(y).astype(np.float64)


def rgb_to_luma(rgb: np.ndarray, *, like_cv2: bool = False) -> np.ndarray:
    """BT.601 luma ``Y = 0.299 R + 0.587 G + 0.114 B`` of an ``(H, W, 3)`` RGB or ``(H, W, 4)``
    RGBA array (alpha is ignored), on the input's scale.

    Two roundings, because two callers need different bits:

    - ``like_cv2=False`` (fusion, training): float32 ``R * 0.299 + G * 0.587 + B * 0.114``,
      the arithmetic of :func:`rgb_to_ycbcr`'s Y.
    - ``like_cv2=True`` (metrics, ``emmafuse eval``): the gray levels of the reference
      evaluator, ``round(cv2.cvtColor(rgb.astype(float32), COLOR_BGR2GRAY))`` bit for bit, as
      float64 integers. OpenCV's fused multiply-adds round differently from the plain float32
      sum (one unit in the last place at times, which moves ``round`` at a half level); the
      metrics' 1e-6 parity with published tables needs OpenCV's bits.

    Raises:
        InputError: not an ``(..., 3)`` or ``(..., 4)`` array.
    """
    if rgb.ndim < 1 or rgb.shape[-1] not in (3, 4):
        raise InputError(f"rgb_to_luma expects an (H, W, 3) or (H, W, 4) array, got shape {rgb.shape}", parameter="rgb")
    if like_cv2:
        return _luma_like_cv2(rgb)
    x = rgb[..., :3].astype(np.float32)
    luma: np.ndarray = _weighted(x[..., 0], x[..., 1], x[..., 2])
    return luma


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` RGB in [0, 1] -> YCbCr with chroma offset 0.5."""
    import torch

    r, g, b = rgb.unbind(1)
    y = _weighted(r, g, b)
    cb = (b - y) / (2 * (1 - _KB)) + 0.5
    cr = (r - y) / (2 * (1 - _KR)) + 0.5
    return torch.stack((y, cb, cr), 1)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (no clipping: callers clip after all arithmetic)."""
    import torch

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

    Raises:
        InputError: not a ``(3, H, W)`` tensor.
    """
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise InputError(f"is_gray_rgb expects a (3, H, W) tensor, got {tuple(rgb.shape)}", parameter="rgb")
    for r0 in range(0, rgb.shape[1], _GRAY_CHECK_ROWS):
        strip = rgb[:, r0 : r0 + _GRAY_CHECK_ROWS]
        if (strip[0] - strip[1]).abs().max() > tolerance or (strip[1] - strip[2]).abs().max() > tolerance:
            return False
    return True
