"""Visual information fidelity: VIF = VIFp(A, F) + VIFp(B, F) (the reference's "VIFF").

VIFp is the pixel-domain VIF of Sheikh & Bovik over 4 scales (Gaussian windows 17, 9, 5, 3,
``sd = N/5``, 'valid' filtering, dyadic downsampling, ``sigma_n^2 = 2``). The reference
evaluator runs ``scipy.signal.convolve2d`` with the full 2-D window; the window is an outer
product, so we filter separably and process F, A, B and their products as one stack,
sharing F's statistics between the two terms.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from emmafuse.metrics._common import (
    Prepared,
    Preset,
    filter_valid,
    filter_valid_down2,
    Metric,
    gaussian_taps,
    row_strips,
)

__all__ = ["vif", "vifp_pair", "VIF_MIN_SIZE", "VIF"]

_SIGMA_NSQ = 2.0
_EPS = 1e-10
_LN10 = float(np.log(10.0))
_SIZES = (17, 9, 5, 3)  # 2 ** (5 - scale) + 1 for scales 1..4
VIF_MIN_SIZE = 41  # smallest side for which all four scales still have 'valid' output


def _vifp_terms(s11: np.ndarray, s22: np.ndarray, s12: np.ndarray) -> tuple[float, float]:
    """Numerator and denominator sums of one scale, with the reference's guards.

    The reference clamps negative variances to 0, then zeroes the gain ``g`` where the
    reference image is flat (``s11 < eps``), where the distorted image is flat
    (``s22 < eps``) or where ``g < 0``, and floors the noise variance ``sv`` at ``eps``.
    A zero gain makes the numerator term ``log10(1 + 0) = 0``, so the whole sequence is
    "sum the term where none of the guards fires" (fewer passes over the maps).
    """
    s11 = np.maximum(s11, 0.0)
    s22 = np.maximum(s22, 0.0)
    g = s12 / (s11 + _EPS)
    detail = s11 >= _EPS  # else: no detail in the reference, no gain, variance counted as 0
    keep = detail & (s22 >= _EPS) & (g > 0)  # else: distorted image flat or anti-correlated
    sv = np.maximum(s22 - g * s12, _EPS)
    gain = np.where(keep, g * g * s11 / (sv + _SIGMA_NSQ), 0.0)
    # sum of log10(1 + x) as sum(log1p(x)) / ln 10: same values, log1p is far cheaper here
    num = float(np.sum(np.log1p(gain))) / _LN10
    den = float(np.sum(np.log1p(np.where(detail, s11, 0.0) / _SIGMA_NSQ))) / _LN10
    return num, den


def vifp_pair(refs: list[np.ndarray], dist: np.ndarray) -> list[float]:
    """VIFp(ref, dist) for several reference images against one distorted image.

    Float32 images get their scale-1 products (``ref*ref`` etc.) formed in float32, as the
    reference does on its float32 images (exact for 8-bit integer values either way);
    all filtering is float64, as in ``scipy.signal.convolve2d`` with a float64 window.
    Degenerate case: a reference without detail at any scale (denominator 0, e.g. a constant
    image) gives 1.0, the reference evaluator's NaN fallback.
    """
    imgs = np.stack([dist, *refs])
    k = len(refs)
    nums, dens = np.zeros(k), np.zeros(k)
    for scale, size in enumerate(_SIZES):
        taps = gaussian_taps(size)
        if scale > 0:
            imgs = filter_valid_down2(imgs, taps)
        h, w = imgs.shape[-2:]
        maps = np.empty((3 * k + 2, 0, w))
        for r0, r1 in row_strips(h - size + 1, size - 1, w, 3 * k + 2):
            sub = imgs[:, r0 : r1 + size - 1]
            rows = sub.shape[1]
            if maps.shape[1] != rows:
                maps = np.empty((3 * k + 2, rows, w))
            # [dist, refs..., dist^2, refs^2..., refs*dist...]; float32 products for float32 input
            maps[: k + 1] = sub
            np.multiply(sub, sub, out=maps[k + 1 : 2 * k + 2], casting="unsafe")
            np.multiply(sub[1:], sub[0], out=maps[2 * k + 2 :], casting="unsafe")
            stats = filter_valid(maps, taps)
            mu, sq, cross = stats[: k + 1], stats[k + 1 : 2 * k + 2], stats[2 * k + 2 :]
            s22 = sq[0] - mu[0] * mu[0]
            for i in range(k):
                s11 = sq[i + 1] - mu[i + 1] * mu[i + 1]
                s12 = cross[i] - mu[i + 1] * mu[0]
                num, den = _vifp_terms(s11, s22, s12)
                nums[i] += num
                dens[i] += den
    return [float(n / d) if d > 0 else 1.0 for n, d in zip(nums, dens, strict=True)]


def _vif(p: Prepared) -> float:
    f, a, b = p.work()  # float32 in the reference preset, as the reference's images
    va, vb = vifp_pair([a, b], f)
    return va + vb


VIF = Metric("VIF", _vif, min_size=VIF_MIN_SIZE, size_reason="four scales of 'valid' Gaussian filtering")


def vif(fused: ArrayLike, a: ArrayLike, b: ArrayLike, *, preset: Preset = "reference") -> float:
    """``VIFp(A, F) + VIFp(B, F)``; each term is ~0..1 (can exceed 1 for contrast gain).

    Same definition in both presets (the reference has no VIF quirk beyond its NaN
    fallback, which we keep only for the one case that produces it: a source without any
    detail, scored 1.0). Needs at least 41x41 pixels; smaller images raise ``InputError``
    (the reference would silently swap image and window in ``convolve2d``).
    """
    return VIF.score(preset, fused, a, b)
