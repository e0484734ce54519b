"""Image-fusion quality metrics (numpy only), compatible with the de-facto evaluator.

>>> from emmafuse.metrics import evaluate
>>> scores = evaluate(fused, ir, vis)                  # the "reference" preset
>>> scores = evaluate(fused, ir, vis, preset="fixed")  # quirks repaired

Images are 2-D gray arrays on the 0..255 scale (any real dtype), all of one shape;
``(H, W, 1)``, ``(H, W, 3)`` RGB and ``(H, W, 4)`` RGBA arrays (a ``Fuser.fuse`` result keeps
the RGB layout of its inputs) are converted to gray as the reference evaluator converts colour
files (:mod:`emmafuse.metrics.gray`; equal channels give that channel unchanged).
``A`` is the first source (infrared / CT ...), ``B`` the second (visible / MRI ...).
Two presets (see ``docs/metrics.md``):

- ``"reference"`` reproduces MMIF-CDDFuse ``utils/Evaluator.py`` (the evaluator behind
  EMMA's and many other papers' tables) to 1e-6, quirks included;
- ``"fixed"`` repairs the quirks (MI in bits, SSIM averaged with data_range 255, ...).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable

from numpy.typing import ArrayLike

from emmafuse.metrics._common import MAX_ABS_VALUE, PRESETS, Prepared, Preset, check_preset, require_size
from emmafuse.metrics.basic import _ag, _cc, _en, _mse, _psnr, _scd, _sd, _sf, ag, cc, en, mse, psnr, scd, sd, sf
from emmafuse.metrics.edges import _qabf, qabf
from emmafuse.metrics.mutual_info import _mi, mi
from emmafuse.metrics.structural import SSIM_WINDOW, _ssim, ssim
from emmafuse.metrics.vifp import VIF_MIN_SIZE, _vif, vif

__all__ = [
    "evaluate",
    "METRICS",
    "PRESETS",
    "HIGHER_IS_BETTER",
    "MIN_SIZE",
    "MAX_ABS_VALUE",
    "Preset",
    "parse_metrics",
    "en",
    "sd",
    "sf",
    "ag",
    "mi",
    "mse",
    "cc",
    "psnr",
    "scd",
    "vif",
    "qabf",
    "ssim",
]

# name -> internal function on validated images; the order is the order of reports.
_REGISTRY: dict[str, Callable[[Prepared], float]] = {
    "EN": _en,
    "SD": _sd,
    "SF": _sf,
    "AG": _ag,
    "MI": _mi,
    "MSE": _mse,
    "CC": _cc,
    "PSNR": _psnr,
    "SCD": _scd,
    "VIF": _vif,
    "Qabf": _qabf,
    "SSIM": _ssim,
}

METRICS: tuple[str, ...] = tuple(_REGISTRY)
"""All metric names, in report order."""

HIGHER_IS_BETTER: dict[str, bool] = {name: name != "MSE" for name in METRICS}
"""Direction of each metric (only MSE is better when lower)."""

MIN_SIZE: dict[str, int] = {name: 1 for name in METRICS} | {"SF": 2, "AG": 2, "SSIM": SSIM_WINDOW, "VIF": VIF_MIN_SIZE}
"""Smallest image side each metric accepts; smaller images raise ``ValueError``."""

_SIZE_REASON = {name: "" for name in METRICS} | {
    "SF": "neighbour differences in both directions",
    "AG": "differences in both directions",
    "SSIM": "one complete 7x7 window",
    "VIF": "four scales of 'valid' Gaussian filtering",
}


def parse_metrics(metrics: str | Iterable[str] | None) -> list[str]:
    """Normalise a metric selection (names or a comma-separated string, case-insensitive)
    to canonical names in report order (:data:`METRICS` order).

    ``None`` means all of :data:`METRICS`. Unknown names raise ``ValueError``.
    """
    if metrics is None:
        return list(METRICS)
    items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    lookup = {m.lower(): m for m in METRICS}
    out: list[str] = []
    for item in items:
        key = str(item).strip().lower()
        if not key:
            continue
        if key not in lookup:
            raise ValueError(f"unknown metric {item!r}; choose from {', '.join(METRICS)}")
        if lookup[key] not in out:
            out.append(lookup[key])
    if not out:
        raise ValueError("no metrics selected")
    return [m for m in METRICS if m in out]  # report order


# VIF is about half of the work; on images at least this large it runs in a helper thread
# while the other metrics run in the caller's (numpy releases the GIL in its loops).
_THREAD_MIN_PIXELS = 256 * 256


def _default_threads() -> int:
    env = os.environ.get("EMMAFUSE_METRICS_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"EMMAFUSE_METRICS_THREADS must be an integer, got {env!r}") from None
    return 2 if (os.cpu_count() or 1) > 1 else 1


def evaluate(
    fused: ArrayLike,
    a: ArrayLike,
    b: ArrayLike,
    preset: Preset = "reference",
    metrics: str | Iterable[str] | None = None,
    *,
    threads: int | None = None,
) -> dict[str, float]:
    """Score one fused image against its two sources.

    Args:
        fused: the fused image F, 2-D, gray levels 0..255 (any real dtype); ``(H, W, 1|3|4)``
            arrays are converted to gray first (see the module doc).
        a: first source A (infrared, CT, PET, SPECT), same shape.
        b: second source B (visible, MRI), same shape.
        preset: ``"reference"`` (default; the de-facto evaluator's numbers, quirks included)
            or ``"fixed"`` (quirks repaired).
        metrics: names to compute (list or ``"EN,SSIM"``), default all of :data:`METRICS`.
        threads: 1 computes everything in the calling thread; 2 (the default when the
            machine has more than one CPU; env ``EMMAFUSE_METRICS_THREADS`` overrides)
            computes VIF in a helper thread on images of 256x256 pixels or more. The
            numbers are the same either way.

    Returns:
        ``{name: value}`` in the order of :data:`METRICS`.

    Raises:
        ValueError: unknown preset/metric; inputs not 2-D (or ``(H, W, 1|3|4)``), of different shapes, empty, with
            NaN/Inf or |values| > 1e6; an image smaller than a selected metric needs
            (:data:`MIN_SIZE`: 7 for SSIM, 41 for VIF).
    """
    check_preset(preset)
    names = parse_metrics(metrics)
    prepared = Prepared.from_images(preset, fused, a, b)
    for name in names:  # fail before computing anything
        require_size(prepared.f.shape, MIN_SIZE[name], name, _SIZE_REASON[name])
    threads = _default_threads() if threads is None else threads
    results: dict[str, float] = {}
    helper = None
    if threads > 1 and "VIF" in names and len(names) > 1 and prepared.f.size >= _THREAD_MIN_PIXELS:
        prepared.work()  # build the shared working copies before two threads want them
        errors: list[BaseException] = []

        def run_vif() -> None:
            try:
                results["VIF"] = _REGISTRY["VIF"](prepared)
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)

        helper = threading.Thread(target=run_vif, name="emmafuse-metrics-vif", daemon=True)
        helper.start()
    try:
        for name in names:
            if helper is None or name != "VIF":
                results[name] = _REGISTRY[name](prepared)
    finally:
        if helper is not None:
            helper.join()
    if helper is not None and errors:
        raise errors[0]
    return {name: results[name] for name in METRICS if name in names}
