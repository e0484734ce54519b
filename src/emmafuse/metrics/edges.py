"""Qabf (Xydeas & Petrovic): how much of the sources' Sobel edge strength and orientation
survives in the fused image, weighted by the sources' edge strength (L = 1)."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from emmafuse.metrics._common import Metric, Prepared, Preset, row_strips

__all__ = ["qabf", "sobel", "QABF"]

# Sigmoid constants of the standard definition.
_TG, _KG, _DG = 0.9994, -15.0, 0.5
_TA, _KA, _DA = 0.9879, -22.0, 0.8


def _sobel_padded(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel responses of the interior of an already zero-padded block."""
    vert = p[:-2] + 2 * p[1:-1] + p[2:]  # [1,2,1] down the columns: (H, W+2)
    horz = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]  # [1,2,1] along the rows: (H+2, W)
    return vert[:, :-2] - vert[:, 2:], horz[2:] - horz[:-2]


def sobel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel responses ``(sx, sy)`` with zero padding, in ``x``'s dtype.

    Equal to ``convolve2d(x, [[-1,0,1],[-2,0,2],[-1,0,1]], 'same')`` and
    ``convolve2d(x, [[1,2,1],[0,0,0],[-1,-2,-1]], 'same')`` (true convolution, so the signs
    are left-minus-right and below-minus-above); exact for integer images.
    """
    return _sobel_padded(np.pad(x, 1))


def _strength_orientation(padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sx, sy = _sobel_padded(padded)
    g = np.sqrt(sx * sx + sy * sy)
    nz = sx != 0
    ratio = np.divide(sy, sx, out=np.zeros_like(sx), where=nz)
    alpha = np.where(nz, np.arctan(ratio), sx.dtype.type(math.pi / 2))  # pi/2 where sx == 0
    return g, alpha


def _preservation(g_s: np.ndarray, a_s: np.ndarray, g_f: np.ndarray, a_f: np.ndarray, quirk: bool) -> np.ndarray:
    """Per-pixel edge preservation Q^{SF} of one source S in F."""
    # min/max is the smaller strength over the larger, computed only where they differ.
    lo, hi = np.minimum(g_s, g_f), np.maximum(g_s, g_f)
    ne = g_s != g_f
    # Equal strengths preserve strength fully (ratio 1); the reference writes g_F there.
    ratio = np.divide(lo, hi, out=(g_f.copy() if quirk else np.ones_like(g_s)), where=ne)
    orient = 1 - np.abs(a_s - a_f) / (math.pi / 2)
    q_g = _TG / (1 + np.exp(_KG * (ratio - _DG)))
    q_a = _TA / (1 + np.exp(_KA * (orient - _DA)))
    return q_g * q_a


def _qabf(p: Prepared) -> float:
    f, a, b = p.work()  # float32 in the reference preset, as the reference's images
    pf, pa, pb = (np.pad(x, 1) for x in (f, a, b))
    h, w = f.shape
    # Per-pixel terms go strip by strip (cache-sized temporaries) into full-size arrays,
    # which are then summed whole: the same float32 pairwise sums as the reference.
    weighted = np.empty_like(f)
    strength = np.empty_like(f)
    for r0, r1 in row_strips(h, 2, w, 16):  # ~16 float64-sized temporaries per strip row
        rows = slice(r0, r1 + 2)
        g_a, al_a = _strength_orientation(pa[rows])
        g_b, al_b = _strength_orientation(pb[rows])
        g_f, al_f = _strength_orientation(pf[rows])
        q_af = _preservation(g_a, al_a, g_f, al_f, p.reference)
        q_bf = _preservation(g_b, al_b, g_f, al_f, p.reference)
        np.add(g_a, g_b, out=strength[r0:r1])
        np.add(q_af * g_a, q_bf * g_b, out=weighted[r0:r1])
    den = np.sum(strength)
    if not den > 0:
        return 1.0
    return float(np.sum(weighted) / den)


QABF = Metric("Qabf", _qabf)


def qabf(fused: ArrayLike, a: ArrayLike, b: ArrayLike, *, preset: Preset = "reference") -> float:
    """Edge-information transfer Qabf in [0, 1] (1: all source edges kept).

    ``"reference"``: float32 as the reference, and where a source's edge strength equals
    F's (flat areas included) the strength ratio is set to F's strength instead of 1 (its
    quirk; harmless at strength 0, wrong elsewhere). ``"fixed"``: float64, ratio 1 there.
    When neither source has any edge the metric has nothing to measure and returns 1.0
    (the reference evaluator returns NaN). With the zero padding of the Sobel filter that
    happens only for all-zero sources: other constant images have edges on their border.
    """
    return QABF.score(preset, fused, a, b)
