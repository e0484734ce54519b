"""Colour arrays to the gray levels the metrics score, as the reference evaluator converts files.

The reference (MMIF-CDDFuse ``utils/Evaluator.py``) reads every image with
``round(cvtColor(imread(path).astype(float32), BGR2GRAY))``; :func:`to_gray` applies that
conversion (:func:`emmafuse.color.rgb_to_luma` with ``like_cv2=True``) to the ``(H, W, C)``
arrays that :func:`emmafuse.metrics.evaluate` accepts beside 2-D gray images (a fused result of
``Fuser.fuse`` keeps the RGB layout of its inputs).
"""

from __future__ import annotations

import numpy as np

from emmafuse.color import rgb_to_luma

__all__ = ["to_gray"]


def to_gray(arr: np.ndarray) -> np.ndarray:
    """A 2-D gray image of an ``(H, W, 1)``, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA array.

    One channel and RGB with equal channels give that channel unchanged (no rounding, exactly
    the 2-D image, in its dtype: gray stored as RGB is gray); other RGB images give the
    reference evaluator's gray levels (alpha is ignored, as the reference reader ignores it).
    Any other array is returned as it is.
    """
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        return arr
    if arr.shape[-1] == 1:
        return arr[..., 0]
    rgb = arr[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return rgb[..., 0]
    return rgb_to_luma(rgb, like_cv2=True)
