"""Structural similarity with scikit-image's defaults: uniform 7x7 window, sample covariance
(``49/48``), ``K1 = 0.01``, ``K2 = 0.03``, mean over the windows that lie fully inside the
image (skimage filters the whole image and then crops a 3-pixel border, which is the same).

Precision matters here more than anywhere else. With the reference's ``data_range = 2`` the
stabilising constant ``C2 = 0.0036`` is far below float32's resolution of ``E[x^2]`` (about
0.001-0.002 for 8-bit data), so in flat areas the reference's float32 SSIM map is dominated
by rounding. Reproducing its numbers therefore means reproducing its arithmetic: a float32
image, scipy's ``uniform_filter`` (running sums in double along axis 0 then axis 1, each
pass rounded to float32) and the float32 formula, averaged in float64. The ``"fixed"``
preset computes in float64 (separable window sums, exact for integer images).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from emmafuse.metrics._common import Metric, Prepared, Preset, box_mean_valid, row_strips, windows_dot_t

__all__ = ["ssim", "mean_ssim", "uniform_filter_like_scipy", "SSIM_WINDOW", "SSIM"]

SSIM_WINDOW = 7
_K1, _K2 = 0.01, 0.03


def _uniform_pass(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """One ``scipy.ndimage.uniform_filter1d`` pass ('reflect' border), bit for bit.

    scipy keeps a running window sum in double (first window summed left to right, then
    ``+= new - old``), divides by ``size`` and stores in the input's dtype; a sequential
    ``cumsum`` of the same increments performs exactly those additions.
    """
    x = np.moveaxis(x, axis, -1)
    left = size // 2
    n = x.shape[-1]
    ext = np.pad(x.astype(np.float64), [(0, 0)] * (x.ndim - 1) + [(left, size - left - 1)], mode="symmetric")
    steps = np.empty(ext.shape[:-1] + (n,), np.float64)
    first = ext[..., 0].copy()
    for i in range(1, size):
        first += ext[..., i]
    steps[..., 0] = first
    np.subtract(ext[..., size : size + n - 1], ext[..., : n - 1], out=steps[..., 1:])
    out = (np.cumsum(steps, axis=-1) / size).astype(x.dtype)
    return np.moveaxis(out, -1, axis)


def uniform_filter_like_scipy(x: np.ndarray, size: int) -> np.ndarray:
    """``scipy.ndimage.uniform_filter(x, size)`` on the last two axes, same dtype and bits."""
    return _uniform_pass(_uniform_pass(x, size, -2), size, -1)


def _ssim_map_reference(
    ux: np.ndarray, uy: np.ndarray, uxx: np.ndarray, uyy: np.ndarray, uxy: np.ndarray, data_range: float
) -> np.ndarray:
    """skimage's SSIM map, operation for operation (float32 in, float32 out)."""
    n = SSIM_WINDOW * SSIM_WINDOW
    cov_norm = n / (n - 1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2
    a1 = 2 * ux * uy + c1
    a2 = 2 * vxy + c2
    b1 = ux**2 + uy**2 + c1
    b2 = vx + vy + c2
    return (a1 * a2) / (b1 * b2)


# Integer images with |x| <= this take the fast path of _box_mean_float32_valid.
_EXACT_INT_LIMIT = 1024


def _box_mean_float32_valid(stack: np.ndarray, size: int) -> np.ndarray:
    """scipy's two float32-rounded uniform passes, evaluated only on the cropped centres.

    Valid for the maps of integer images with |x| <= 1024 (so |map| <= 1024^2): every window
    sum S of the first pass is an integer of at most 7 * 1024^2 < 2^24, exact in float32, and
    ``float32(S) / 7`` equals scipy's ``float32(double(S) / 7)`` (S/7 has a period-3 binary
    expansion, so rounding via double never lands on a float32 tie); every second-pass sum
    adds seven float32 values that are multiples of 2^-26 and stays below 2^27, exact in
    double. Exact sums make the summation order irrelevant, so
    the result equals scipy's running sums bit for bit.
    """
    ones32 = np.ones(size, np.float32)
    t = windows_dot_t(stack, ones32)  # axis 0, float32, exact
    t /= np.float32(size)
    u = windows_dot_t(t.astype(np.float64), np.ones(size))  # axis 1, float64, exact
    out = np.empty(u.shape, np.float32)
    np.divide(u, size, out=out, casting="unsafe")  # double quotient rounded to float32, as scipy
    return out


def _ssim_map_fixed(
    ux: np.ndarray, uy: np.ndarray, uxx: np.ndarray, uyy: np.ndarray, uxy: np.ndarray, data_range: float
) -> np.ndarray:
    """The same SSIM map in float64 (the ``"fixed"`` preset)."""
    n = SSIM_WINDOW * SSIM_WINDOW
    cov_norm = n / (n - 1.0)
    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def _stack(x: np.ndarray, refs: list[np.ndarray], dtype: type) -> np.ndarray:
    """``[x, x^2, refs..., refs^2..., x*refs...]`` with products formed in ``dtype``."""
    k = len(refs)
    out: np.ndarray = np.empty((3 * k + 2,) + x.shape, dtype)
    out[0] = x
    np.multiply(x, x, out=out[1], dtype=dtype)
    for i, r in enumerate(refs):
        out[2 + i] = r
        np.multiply(r, r, out=out[2 + k + i], dtype=dtype)
        np.multiply(x, r, out=out[2 + 2 * k + i], dtype=dtype)
    return out


def mean_ssim(x: np.ndarray, refs: list[np.ndarray], *, data_range: float, mode: str) -> list[float]:
    """Mean SSIM(x, r) for each ``r`` in ``refs`` (x's window statistics are shared).

    ``mode``: ``"fixed"`` (float64), ``"reference32"`` (skimage's float32 arithmetic via the
    exact fast path; integer images with |x| <= 1024 only) or ``"replay"`` (skimage's float32
    arithmetic for any values, replaying scipy's running sums over whole lines).
    The image is processed in strips of rows (exact for the window means; the final mean
    is a float64 sum of strip sums).
    """
    k = len(refs)
    h, w = x.shape
    pad = SSIM_WINDOW // 2
    count = (h - 2 * pad) * (w - 2 * pad)
    totals = np.zeros(k)
    if mode == "replay":
        strips = [(0, h - 2 * pad)]
    else:
        strips = row_strips(h - 2 * pad, 2 * pad, w, 3 * k + 2)
    for r0, r1 in strips:
        rows = slice(r0, r1 + 2 * pad)
        if mode == "fixed":
            means = box_mean_valid(_stack(x[rows], [r[rows] for r in refs], np.float64), SSIM_WINDOW)
            ssim_map = _ssim_map_fixed
        elif mode == "reference32":
            means = _box_mean_float32_valid(_stack(x[rows], [r[rows] for r in refs], np.float32), SSIM_WINDOW)
            ssim_map = _ssim_map_reference
        else:
            full = uniform_filter_like_scipy(_stack(x, refs, np.float32), SSIM_WINDOW)
            means = full[..., pad:-pad, pad:-pad]
            ssim_map = _ssim_map_reference
        ux, uxx = means[0], means[1]
        for i in range(k):
            s = ssim_map(ux, means[2 + i], uxx, means[2 + k + i], means[2 + 2 * k + i], data_range)
            totals[i] += s.sum(dtype=np.float64)
    return [float(t / count) for t in totals]


def _ssim(p: Prepared) -> float:
    f, a, b = p.work()
    if p.reference:
        mode = "reference32" if p.integral(_EXACT_INT_LIMIT) else "replay"
        s_a, s_b = mean_ssim(f, [a, b], data_range=2.0, mode=mode)
        return s_a + s_b
    s_a, s_b = mean_ssim(f, [a, b], data_range=255.0, mode="fixed")
    return (s_a + s_b) / 2


SSIM = Metric("SSIM", _ssim, min_size=SSIM_WINDOW, size_reason="one complete 7x7 window")


def ssim(fused: ArrayLike, a: ArrayLike, b: ArrayLike, *, preset: Preset = "reference") -> float:
    """Structural similarity of the fused image to both sources.

    ``"reference"``: ``SSIM(F, A) + SSIM(F, B)`` with ``data_range = 2`` (what the
    evaluator's scikit-image assumed for float input, i.e. a [-1, 1] image: the stabilising
    constants are 127.5^2 times too small for 0..255 data), in float32; range [-2, 2].
    ``"fixed"``: ``(SSIM(F, A) + SSIM(F, B)) / 2`` with ``data_range = 255`` in float64;
    range [-1, 1], exactly 1 for identical images. Needs at least 7x7 pixels.
    """
    return SSIM.score(preset, fused, a, b)
