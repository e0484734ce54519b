"""The reference-exact reader: image files as the de-facto evaluator reads them.

The reference (MMIF-CDDFuse ``utils/Evaluator.py``) reads every image with
``round(cvtColor(imread(path).astype(float32), BGR2GRAY))``; this module reproduces it in numpy,
bit for bit: 16-bit files are reduced to their high byte as ``cv2.imread`` does, alpha is
dropped. The result is float64 gray levels 0..255 (not the float32 [0, 1] luminance of
:func:`emmafuse.image_io.read_luma`, which training and fusion use).
"""

from __future__ import annotations

import os

import numpy as np

from emmafuse.color import BT601_WEIGHTS
from emmafuse.image_io import read_image

__all__ = ["read_gray_reference", "bgr_to_gray_like_cv2"]

# cv2's float32 BGR2GRAY coefficients: the BT.601 weights rounded to float32.
_CR, _CG, _CB = (float(np.float32(c)) for c in BT601_WEIGHTS)


def bgr_to_gray_like_cv2(rgb: np.ndarray) -> np.ndarray:
    """Gray levels of an ``(H, W, 3)`` RGB image as the reference computes them.

    The reference converts a *float32* image with ``cv2.cvtColor(..., COLOR_BGR2GRAY)`` and
    rounds (``np.round``). OpenCV's float kernel evaluates ``fma(R, cr, fma(B, cb, G * cg))``
    in float32; a product of two float32 numbers is exact in float64, so computing each
    fused multiply-add in float64 and rounding to float32 gives the same bits (checked
    against cv2 on all 2^24 colours). Returns float64 integers 0..255.
    """
    f32 = np.float32
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    t = (g.astype(f32) * f32(_CG)).astype(np.float64)
    t = (b * _CB + t).astype(f32).astype(np.float64)
    y = (r * _CR + t).astype(f32)
    return np.round(y).astype(np.float64)


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)  # what cv2.imread(path) does with 16-bit files
    if arr.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {arr.dtype}")
    return arr


def read_gray_reference(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as float64 gray levels 0..255, exactly as the reference reader.

    Gray files pass through unchanged; colour files use :func:`bgr_to_gray_like_cv2`;
    alpha is ignored and 16-bit data keeps its high byte (both like ``cv2.imread``).

    Raises:
        ValueError: unreadable file or unsupported layout (``ImageReadError`` is one).
    """
    arr = _to_8bit(read_image(path))
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return arr.astype(np.float64)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return bgr_to_gray_like_cv2(arr[..., :3])
    raise ValueError(f"{path}: unsupported image shape {arr.shape}")
