"""The reference-exact reader: image files as the de-facto evaluator reads them.

The reference (MMIF-CDDFuse ``utils/Evaluator.py``) reads every image with
``round(cvtColor(imread(path).astype(float32), BGR2GRAY))``. :func:`read_gray_reference`
reproduces it in numpy, bit for bit, on the pixels of the one file reader
(:func:`emmafuse.image_io.read_image`, whose rules apply): 16-bit files are reduced to their
high byte as ``cv2.imread`` does, alpha is dropped, colour becomes OpenCV's gray
(:func:`emmafuse.metrics.gray.to_gray`). The result is float64 gray levels 0..255 (not the
float32 [0, 1] luminance of :func:`emmafuse.image_io.read_luma`, which training uses). Every
row of an ``emmafuse eval`` table, and of the model card's tables, is scored on these levels.
"""

from __future__ import annotations

import os

import numpy as np

from emmafuse.image_io import read_image
from emmafuse.metrics.gray import to_gray

__all__ = ["read_gray_reference"]


def read_gray_reference(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as float64 gray levels 0..255, exactly as the reference reader.

    Gray files (and colour files whose channels are equal) pass through unchanged; colour
    files give OpenCV's rounded ``BGR2GRAY``; alpha is ignored and 16-bit data keeps its high
    byte (both like ``cv2.imread``).

    Raises:
        ImageReadError: (a ``ValueError``) the file cannot be read (:func:`read_image`).
    """
    arr = read_image(path)
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)  # what cv2.imread(path) does with 16-bit files
    return np.asarray(to_gray(arr), dtype=np.float64)
