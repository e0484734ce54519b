"""Shared helpers of the metrics: input checks, presets and fast filters.

Everything here is numpy only (no scipy). The filters are separable and run as BLAS
matrix-vector products over sliding windows (2k instead of k^2 multiply-adds per pixel for
a k x k window), and large images are processed in strips of rows: that is where the speed
over the reference evaluator comes from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from emmafuse.errors import InputError, InputTypeError
from emmafuse.metrics.gray import to_gray

__all__ = [
    "Preset",
    "PRESETS",
    "MAX_ABS_VALUE",
    "check_preset",
    "as_gray",
    "Prepared",
    "Metric",
    "windows_dot_t",
    "filter_valid",
    "filter_valid_down2",
    "row_strips",
    "box_mean_valid",
    "gaussian_taps",
    "safe_corr",
]

Preset = Literal["reference", "fixed"]
PRESETS: tuple[str, ...] = ("reference", "fixed")
MAX_ABS_VALUE = 1e6


def check_preset(preset: str) -> str:
    """Return ``preset`` or raise :class:`~emmafuse.errors.InputError` for an unknown name."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}", parameter="preset")
    return preset


def _validate(image: object, name: str) -> tuple[np.ndarray, float, float, bool]:
    """``(float64 array, min, max, had an integer dtype)`` of a valid gray image."""
    arr = np.asarray(image)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputTypeError(f"{name}: expected a real-valued numeric array, got dtype {arr.dtype}", parameter=name)
    arr = to_gray(arr)  # (H, W, 1|3|4): converted as the reference reader converts colour files
    if arr.ndim != 2:
        raise InputError(f"{name}: expected a 2-D gray image, got shape {arr.shape}", parameter=name)
    if arr.size == 0:
        raise InputError(f"{name}: empty image (shape {arr.shape})", parameter=name)
    int_dtype = bool(np.issubdtype(arr.dtype, np.integer))
    arr = arr.astype(np.float64, copy=False)
    # min/max propagate NaN, so one pair of reductions checks finiteness and range.
    lo, hi = float(arr.min()), float(arr.max())
    if not (-MAX_ABS_VALUE <= lo and hi <= MAX_ABS_VALUE):
        if not np.isfinite(arr).all():
            raise InputError(f"{name}: contains NaN or infinite values", parameter=name)
        # Gray values belong on the 0..255 scale; the bound keeps float32 sums from overflowing.
        raise InputError(
            f"{name}: values beyond +-{MAX_ABS_VALUE:g}; expected gray levels on the 0..255 scale", parameter=name
        )
    return arr, lo, hi, int_dtype


def as_gray(image: object, name: str = "image") -> np.ndarray:
    """Validate one gray image and return it as a float64 array (a copy only when needed).

    ``(H, W, 1)``, ``(H, W, 3)`` RGB and ``(H, W, 4)`` RGBA arrays are converted first
    (:func:`emmafuse.metrics.gray.to_gray`). Raises :class:`~emmafuse.errors.InputError` (a
    ``ValueError``) for anything that is not a non-empty, finite, real 2-D array with
    |values| <= :data:`MAX_ABS_VALUE`.
    """
    return _validate(image, name)[0]


def _check_all(images: tuple[object, ...], names: tuple[str, ...]) -> list[tuple[np.ndarray, float, float, bool]]:
    checked = [_validate(img, name) for img, name in zip(images, names, strict=False)]
    shapes = {c[0].shape for c in checked}
    if len(shapes) > 1:
        desc = ", ".join(f"{n}{c[0].shape}" for n, c in zip(names, checked, strict=False))
        raise InputError(f"images must have the same shape, got {desc}")
    return checked


class Prepared:
    """Validated images of one evaluation plus derived arrays, each computed once.

    ``f``, ``a``, ``b`` are float64 (``a``/``b`` are ``None`` for single-image metrics);
    :meth:`work` gives them in the preset's working precision (float32 for ``"reference"``,
    because the reference evaluator's images are float32), :meth:`level` as integer gray
    levels.
    """

    def __init__(self, checked: list[tuple[np.ndarray, float, float, bool]], preset: str) -> None:
        self.preset = check_preset(preset)
        self.images = [c[0] for c in checked]
        self.f = self.images[0]
        self.a = self.images[1] if len(self.images) > 1 else None
        self.b = self.images[2] if len(self.images) > 2 else None
        self._abs_max = max(max(-c[1], c[2]) for c in checked)
        self._lo = min(c[1] for c in checked)
        self._int_dtype = all(c[3] for c in checked)
        self._work: tuple[np.ndarray, ...] | None = None
        self._levels: dict[int, np.ndarray] = {}
        self._integral: bool | None = None

    @classmethod
    def from_images(cls, preset: str, fused: object, a: object = None, b: object = None) -> Prepared:
        """Validate (``a``/``b`` optional for single-image metrics) and wrap."""
        check_preset(preset)
        if a is None and b is None:
            return cls([_validate(fused, "fused")], preset)
        return cls(_check_all((fused, a, b), ("fused", "a", "b")), preset)

    @property
    def reference(self) -> bool:
        return self.preset == "reference"

    def work(self) -> tuple[np.ndarray, ...]:
        """The images as float32 (reference) or float64 (fixed)."""
        if self._work is None:
            self._work = tuple(x.astype(np.float32) for x in self.images) if self.reference else tuple(self.images)
        return self._work

    def level(self, i: int) -> np.ndarray:
        """Integer gray levels (``intp``) of image ``i`` (0 = fused), half-to-even rounding.

        ``"reference"``: ``round`` of the float32 value, unclipped (sklearn's MI labels;
        EN then wraps them modulo 256 like ``uint8``). ``"fixed"``: clipped to 0..255 first.
        """
        if i not in self._levels:
            x = self.work()[i] if self.reference else np.clip(self.images[i], 0.0, 255.0)
            self._levels[i] = np.rint(x).astype(np.intp)
        return self._levels[i]

    @property
    def in_8bit_range(self) -> bool:
        """All values within 0..255, so every preset's levels are ``rint(x)`` in 0..255."""
        return self._lo >= 0.0 and self._abs_max <= 255.0

    def integral(self, limit: float) -> bool:
        """Whether the working images hold integers with ``|x| <= limit``."""
        if self._abs_max > limit:
            return False
        if self._integral is None:
            self._integral = self._int_dtype or all(bool(np.all(np.rint(x) == x)) for x in self.work())
        return self._integral


@dataclass(frozen=True)
class Metric:
    """One metric, defined beside its implementation and collected by the registry
    (:data:`emmafuse.metrics.REGISTRY`): everything reports, rankings and checks need to know."""

    name: str  # as in reports and ``evaluate(metrics=...)``
    compute: Callable[[Prepared], float]  # on images validated once (:class:`Prepared`)
    higher_is_better: bool = True
    min_size: int = 1  # smallest image side the metric accepts
    size_reason: str = ""  # why it needs that side (for the error message)

    def check_size(self, shape: tuple[int, ...]) -> None:
        """Raise :class:`~emmafuse.errors.InputError` for an image smaller than :attr:`min_size`."""
        if min(shape) < self.min_size:
            raise InputError(
                f"{self.name} needs images of at least {self.min_size}x{self.min_size} pixels "
                f"({self.size_reason}); got {shape[0]}x{shape[1]}"
            )

    def score(self, preset: str, fused: object, a: object = None, b: object = None) -> float:
        """Validate the images (``a``, ``b``: ``None`` for fused-only metrics) and compute."""
        p = Prepared.from_images(preset, fused, a, b)
        self.check_size(p.f.shape)
        return self.compute(p)


def gaussian_taps(size: int) -> np.ndarray:
    """1-D taps whose outer product is the reference VIF's MATLAB-style ``size x size`` window.

    The window is ``exp(-(x^2+y^2)/(2 sd^2))`` with ``sd = size/5``, normalised to sum 1; it
    factorises exactly into ``g g^T`` (no tap falls under MATLAB's ``eps * max`` cut for the
    sizes used), so a separable filter gives the same values to rounding.
    """
    sd = size / 5.0
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sd * sd))
    g2 = np.outer(g, g)
    # not for sizes 3..17: the window stays separable after MATLAB's cut-off
    assert not (g2 < np.finfo(np.float64).eps * g2.max()).any(), size
    return g / g.sum()


def windows_dot_t(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """'Valid' correlation of axis -2 with ``taps``, returned with the last two axes swapped.

    Windows along axis -2 make numpy's matmul one BLAS matrix-vector product per row
    (windows along the contiguous axis overlap and fall back to a slow loop), and writing
    through a transposed ``out`` view is cheaper than a separate transpose; so two calls
    filter both axes and give back the original orientation, contiguous.
    """
    k = taps.shape[0]
    h, w = x.shape[-2:]
    out = np.empty(x.shape[:-2] + (w, h - k + 1), np.result_type(x.dtype, taps.dtype))
    np.matmul(sliding_window_view(x, k, axis=-2), taps, out=out.swapaxes(-1, -2))
    return out


def filter_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of the last two axes with ``outer(taps, taps)``.

    Equal to ``scipy.signal.convolve2d(x, outer(taps, taps), 'valid')`` for symmetric taps,
    to rounding, with ~2k instead of k^2 multiply-adds per pixel.
    """
    x = np.asarray(x, np.float64)
    return windows_dot_t(windows_dot_t(x, taps), taps)


def filter_valid_down2(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """``filter_valid(x, taps)[..., ::2, ::2]``, computing only the kept outputs."""
    k = taps.shape[0]
    x = np.asarray(x, np.float64)
    for _ in range(2):  # each pass filters axis -2 at even positions, then swaps the axes
        win = sliding_window_view(x, k, axis=-2)[..., ::2, :, :]
        out = np.empty(x.shape[:-2] + (x.shape[-1], win.shape[-3]))
        np.matmul(win, taps, out=out.swapaxes(-1, -2))
        x = out
    return x


def row_strips(out_rows: int, halo: int, width: int, maps: int, budget: int = 2_500_000) -> list[tuple[int, int]]:
    """Split ``out_rows`` output rows of a 'valid' filter into strips whose input
    (``rows + halo`` rows of ``maps`` float64 maps) takes about ``budget`` bytes.

    Working strip by strip keeps the temporaries in cache and small enough for the
    allocator to reuse them (whole-image temporaries cost as much in page faults as in
    arithmetic); sums over strips equal sums over the image up to rounding.
    """
    rows = max(8, budget // (8 * maps * max(width, 1)) - halo)
    return [(r, min(r + rows, out_rows)) for r in range(0, out_rows, rows)]


def box_mean_valid(x: np.ndarray, size: int) -> np.ndarray:
    """Mean over every complete ``size x size`` window of the last two axes (float64).

    Equal to ``scipy.ndimage.uniform_filter`` cropped to the fully covered centres; for
    integer-valued data the window sums are exact, whatever the summation order.
    """
    return filter_valid(x, np.ones(size)) / float(size * size)


def safe_corr(num: np.floating, var_x: np.floating, var_y: np.floating) -> np.floating:
    """``num / sqrt(var_x * var_y)`` in the inputs' dtype; 0 when either variance is zero.

    A constant image carries no linear relation to anything, so we report "uncorrelated"
    instead of the 0/0 NaN that the reference evaluator returns. The result stays a numpy
    scalar so that float32 sums of correlations round like the reference's.
    """
    den = np.sqrt(var_x * var_y)
    if not den > 0:
        return type(num)(0.0)
    return num / den
