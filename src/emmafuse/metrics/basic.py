"""Pixel-statistics metrics: EN, SD, SF, AG (fused image only) and MSE, PSNR, CC, SCD.

Precision: the reference evaluator receives float32 images (its reader is
``cv2.imread(...).astype('float32')``), and numpy keeps float32 through ``std``, ``mean``
and ``sum``; so the ``"reference"`` preset computes SD, SF, AG, MSE, PSNR, CC and SCD in
float32 with the same numpy reductions, which is what makes its numbers agree to 1e-6.
EN works on an integer histogram (float64 in both presets). ``"fixed"`` is float64.

Each metric is one :class:`~emmafuse.metrics._common.Metric` record (``EN``, ``SD``, ...)
whose ``compute`` takes images validated once (:class:`~emmafuse.metrics._common.Prepared`);
:func:`emmafuse.metrics.evaluate` collects them, and each public function (``en``, ``sd``,
...) validates its inputs and calls its record.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from emmafuse.metrics._common import Metric, Prepared, Preset, safe_corr

__all__ = ["en", "sd", "sf", "ag", "mse", "psnr", "cc", "scd", "gray_levels"]
__all__ += ["EN", "SD", "SF", "AG", "MSE", "PSNR", "CC", "SCD"]  # the metrics' records


def gray_levels(x: np.ndarray, preset: str) -> np.ndarray:
    """Integer gray levels 0..255 as EN sees them.

    ``"reference"``: ``uint8(round(x))`` like the reference, i.e. values outside 0..255 wrap
    around modulo 256 (-1 -> 255, 256 -> 0). ``"fixed"``: clip to 0..255, then round.
    Rounding is half-to-even (``np.round``) in both.
    """
    return _en_levels(Prepared.from_images(preset, x))


def _en_levels(p: Prepared) -> np.ndarray:
    levels = p.level(0)
    if p.reference and (levels.min() < 0 or levels.max() > 255):
        levels = levels % 256  # uint8 conversion wraps
    return levels


# --------------------------------------------------------------------------- internals
def _en(p: Prepared) -> float:
    levels = _en_levels(p)
    hist = np.bincount(levels.ravel(), minlength=256) / levels.size
    hist = hist[hist > 0]
    return float(-np.sum(hist * np.log2(hist)))


def _sd(p: Prepared) -> float:
    return float(np.std(p.work()[0]))


def _sf(p: Prepared) -> float:
    x = p.work()[0]
    dx = x[:, 1:] - x[:, :-1]
    dy = x[1:, :] - x[:-1, :]
    return float(np.sqrt(np.mean(dx * dx) + np.mean(dy * dy)))


def _gradient(x: np.ndarray, axis: int) -> np.ndarray:
    """Central differences inside, one-sided differences on the first and last line."""
    g = np.empty_like(x)
    src = np.moveaxis(x, axis, 0)
    dst = np.moveaxis(g, axis, 0)
    dst[0] = src[1] - src[0]
    dst[-1] = src[-1] - src[-2]
    dst[1:-1] = (src[2:] - src[:-2]) / 2
    return g


def _ag(p: Prepared) -> float:
    x = p.work()[0]
    gx, gy = _gradient(x, 1), _gradient(x, 0)
    return float(np.mean(np.sqrt((gx * gx + gy * gy) / 2)))


def _mse_value(p: Prepared) -> np.floating:
    f, a, b = p.work()
    da, db = a - f, b - f
    return (np.mean(da * da) + np.mean(db * db)) / 2  # float32 stays float32 (NEP 50 rules)


def _mse(p: Prepared) -> float:
    return float(_mse_value(p))


def _psnr(p: Prepared) -> float:
    err = _mse_value(p)
    if err == 0:
        return math.inf
    f = p.work()[0]
    peak = np.max(f) if p.reference else 255.0
    if peak == 0:
        return -math.inf
    # float32 in the reference: max(F)**2 / MSE and log10 stay in the images' dtype.
    return float(10 * np.log10(peak * peak / err))


def _corr(x: np.ndarray, y: np.ndarray) -> np.floating:
    xc = x - np.mean(x)
    yc = y - np.mean(y)
    return safe_corr(np.sum(xc * yc), np.sum(xc * xc), np.sum(yc * yc))


def _cc(p: Prepared) -> float:
    f, a, b = p.work()
    return float((_corr(a, f) + _corr(b, f)) / 2)


def _scd(p: Prepared) -> float:
    f, a, b = p.work()
    return float(_corr(a, f - b) + _corr(b, f - a))


# --------------------------------------------------------------------------- records
EN = Metric("EN", _en)
SD = Metric("SD", _sd)
SF = Metric("SF", _sf, min_size=2, size_reason="neighbour differences in both directions")
AG = Metric("AG", _ag, min_size=2, size_reason="differences in both directions")
MSE = Metric("MSE", _mse, higher_is_better=False)
PSNR = Metric("PSNR", _psnr)
CC = Metric("CC", _cc)
SCD = Metric("SCD", _scd)


# --------------------------------------------------------------------------- public API
def en(fused: ArrayLike, *, preset: Preset = "reference") -> float:
    """Entropy (bits) of the 256-bin gray-level histogram of ``fused``; 0 (constant) .. 8.

    See :func:`gray_levels` for how each preset turns values into levels.
    """
    return EN.score(preset, fused)


def sd(fused: ArrayLike, *, preset: Preset = "reference") -> float:
    """Standard deviation (population, ``ddof=0``) of ``fused``."""
    return SD.score(preset, fused)


def sf(fused: ArrayLike, *, preset: Preset = "reference") -> float:
    """Spatial frequency ``sqrt(mean(dx^2) + mean(dy^2))`` of neighbour differences (>= 2x2 pixels)."""
    return SF.score(preset, fused)


def ag(fused: ArrayLike, *, preset: Preset = "reference") -> float:
    """Average gradient ``mean(sqrt((gx^2 + gy^2) / 2))`` with ``np.gradient``-style
    differences (central inside, one-sided on the border); needs >= 2x2 pixels."""
    return AG.score(preset, fused)


def mse(fused: ArrayLike, a: ArrayLike, b: ArrayLike, *, preset: Preset = "reference") -> float:
    """Mean squared error to the sources, averaged: ``(MSE(A,F) + MSE(B,F)) / 2``. Lower is better."""
    return MSE.score(preset, fused, a, b)


def psnr(fused: ArrayLike, a: ArrayLike, b: ArrayLike, *, preset: Preset = "reference") -> float:
    """Peak signal-to-noise ratio (dB) of ``fused`` from the :func:`mse` of both sources.

    ``"reference"``: the peak is ``max(fused)`` (a quirk: a darker fused image scores lower
    for the same error). ``"fixed"``: the peak is 255. MSE 0 gives ``inf``; in
    ``"reference"`` an all-zero fused image with MSE > 0 gives ``-inf`` (peak 0).
    """
    return PSNR.score(preset, fused, a, b)


def cc(fused: ArrayLike, a: ArrayLike, b: ArrayLike, *, preset: Preset = "reference") -> float:
    """Correlation coefficient, averaged: ``(r(A,F) + r(B,F)) / 2``; in [-1, 1].

    A constant image has no correlation with anything: its r is defined as 0 (the
    reference evaluator would return NaN).
    """
    return CC.score(preset, fused, a, b)


def scd(fused: ArrayLike, a: ArrayLike, b: ArrayLike, *, preset: Preset = "reference") -> float:
    """Sum of the correlations of differences: ``r(A, F - B) + r(B, F - A)``; in [-2, 2].

    A zero-variance term (e.g. ``F == B`` everywhere) contributes 0 instead of NaN.
    """
    return SCD.score(preset, fused, a, b)
