"""A period-2 pattern detector (not one of the evaluator's metrics).

Checkerboards from stride-2 transposed convolutions, and a sensor's row interlace that a
network sharpens, put their energy on the Nyquist row and column of the spectrum; averages
such as AG even reward them. :func:`grid_ratio` makes them visible as one number.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from emmafuse.errors import InputError

__all__ = ["grid_ratio"]


def grid_ratio(image: ArrayLike) -> float:
    """Largest amplitude on the Nyquist row and column of the spectrum over its median.

    Natural images and classical fusion rules mostly stay within about 10x on full frames; a
    visible checkerboard gives hundreds to thousands. Smooth images have a low median, which
    raises the ratio: look at the picture before trusting a single value.
    """
    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"grid_ratio expects a 2-D gray image, got shape {x.shape}", parameter="image")
    spectrum = np.abs(np.fft.fft2(x - x.mean()))
    h, w = spectrum.shape
    nyquist = max(spectrum[h // 2, :].max() if h % 2 == 0 else 0.0, spectrum[:, w // 2].max() if w % 2 == 0 else 0.0)
    median = float(np.median(spectrum))
    return float(nyquist / median) if median > 0 else 0.0
