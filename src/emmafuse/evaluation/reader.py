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

from emmafuse.image_io import read_image
from emmafuse.metrics.gray import bgr_to_gray_like_cv2

__all__ = ["read_gray_reference", "bgr_to_gray_like_cv2"]


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
