"""Colour arrays to the gray levels the metrics score, as the reference evaluator converts files.

The reference (MMIF-CDDFuse ``utils/Evaluator.py``) reads every image with
``round(cvtColor(imread(path).astype(float32), BGR2GRAY))``. :func:`bgr_to_gray_like_cv2`
reproduces that conversion bit for bit; :func:`to_gray` applies it to the ``(H, W, C)`` arrays
that :func:`emmafuse.metrics.evaluate` accepts beside 2-D gray images (a fused result of
``Fuser.fuse`` keeps the RGB layout of its inputs).
"""

from __future__ import annotations

import numpy as np

__all__ = ["bgr_to_gray_like_cv2", "to_gray"]


def bgr_to_gray_like_cv2(rgb: np.ndarray) -> np.ndarray:
    """Gray levels of an ``(H, W, 3)`` RGB image as the reference computes them.

    The reference converts a *float32* image with ``cv2.cvtColor(..., COLOR_BGR2GRAY)`` and
    rounds (``np.round``). OpenCV's float kernel evaluates ``fma(R, cr, fma(B, cb, G * cg))``
    in float32; a product of two float32 numbers is exact in float64, so computing each
    fused multiply-add in float64 and rounding to float32 gives the same bits (checked
    against cv2 on all 2^24 colours). Returns float64 integers 0..255.
    """
    from emmafuse.color import BT601_WEIGHTS  # lazily: torch is only needed for colour input

    f32 = np.float32
    cr, cg, cb = (float(f32(c)) for c in BT601_WEIGHTS)  # cv2's float32 coefficients
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    t = (g.astype(f32) * f32(cg)).astype(np.float64)
    t = (b * cb + t).astype(f32).astype(np.float64)
    y = (r * cr + t).astype(f32)
    return np.round(y).astype(np.float64)


def to_gray(arr: np.ndarray) -> np.ndarray:
    """A 2-D gray image of an ``(H, W, 1)``, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA array.

    One channel and RGB with equal channels give that channel unchanged (no rounding, exactly
    the 2-D image); other RGB images give :func:`bgr_to_gray_like_cv2` (alpha is ignored, as
    the reference reader ignores it). Any other array is returned as it is.
    """
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        return arr
    if arr.shape[-1] == 1:
        return arr[..., 0]
    rgb = arr[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return rgb[..., 0]
    return bgr_to_gray_like_cv2(rgb)
