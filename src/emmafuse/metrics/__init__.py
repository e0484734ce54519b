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

Each metric is one :class:`Metric` record (name, function, direction, minimum size and why)
defined beside its implementation; :data:`REGISTRY` collects them in report order, and
:data:`METRICS`, :data:`HIGHER_IS_BETTER` and :data:`MIN_SIZE` are views of it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from numpy.typing import ArrayLike

from emmafuse.errors import InputError
from emmafuse.metrics import basic, edges, mutual_info, structural, vifp
from emmafuse.metrics._common import MAX_ABS_VALUE, PRESETS, Metric, Prepared, Preset, check_preset
from emmafuse.metrics.basic import ag, cc, en, mse, psnr, scd, sd, sf
from emmafuse.metrics.edges import qabf
from emmafuse.metrics.mutual_info import mi
from emmafuse.metrics.structural import ssim
from emmafuse.metrics.vifp import vif

__all__ = [
    "evaluate",
    "METRICS",
    "PAPER_METRICS",
    "PRESETS",
    "REGISTRY",
    "HIGHER_IS_BETTER",
    "MIN_SIZE",
    "MAX_ABS_VALUE",
    "Metric",
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

_RECORDS = (
    basic.EN,
    basic.SD,
    basic.SF,
    basic.AG,
    mutual_info.MI,
    basic.MSE,
    basic.CC,
    basic.PSNR,
    basic.SCD,
    vifp.VIF,
    edges.QABF,
    structural.SSIM,
)

REGISTRY: Mapping[str, Metric] = MappingProxyType({m.name: m for m in _RECORDS})
"""Every metric's record by name, in report order (a new metric: one record in its module, one
entry in this tuple)."""

METRICS: tuple[str, ...] = tuple(REGISTRY)
"""All metric names, in report order."""

PAPER_METRICS: tuple[str, ...] = ("EN", "SD", "AG", "MI", "VIF", "Qabf")
"""The six metrics of the paper's tables (EMMA, CVPR 2024), in their order: what the model card,
the release scripts and training validation report."""

HIGHER_IS_BETTER: dict[str, bool] = {m.name: m.higher_is_better for m in _RECORDS}
"""Direction of each metric (only MSE is better when lower)."""

MIN_SIZE: dict[str, int] = {m.name: m.min_size for m in _RECORDS}
"""Smallest image side each metric accepts; smaller images raise ``InputError`` (a ``ValueError``)."""


def parse_metrics(metrics: str | Iterable[str] | None) -> list[str]:
    """Normalise a metric selection (names or a comma-separated string, case-insensitive)
    to canonical names in report order (:data:`METRICS` order).

    ``None`` means all of :data:`METRICS`.

    Raises:
        InputError: an unknown name, or nothing selected (``parameter="metrics"``).
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
            raise InputError(f"unknown metric {item!r}; choose from {', '.join(METRICS)}", parameter="metrics")
        if lookup[key] not in out:
            out.append(lookup[key])
    if not out:
        raise InputError("no metrics selected", parameter="metrics")
    return [m for m in METRICS if m in out]  # report order


# VIF is about half of the work; on images at least this large it runs in a helper thread
# while the other metrics run in the caller's (numpy releases the GIL in its loops).
_THREAD_MIN_PIXELS = 256 * 256
_HELPER_THREAD_METRIC = "VIF"


def _default_threads() -> int:
    env = os.environ.get("EMMAFUSE_METRICS_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise InputError(f"EMMAFUSE_METRICS_THREADS must be an integer, got {env!r}") from None
    return 2 if (os.cpu_count() or 1) > 1 else 1


def _compute_beside_helper(prepared: Prepared, records: list[Metric]) -> dict[str, float]:
    """The slow metric in a helper thread, the others in the caller's; the same numbers."""
    prepared.work()  # build the shared working copies before two threads want them
    results: dict[str, float] = {}
    errors: list[BaseException] = []
    slow = REGISTRY[_HELPER_THREAD_METRIC]

    def run_slow() -> None:
        try:
            results[slow.name] = slow.compute(prepared)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    helper = threading.Thread(target=run_slow, name="emmafuse-metrics-vif", daemon=True)
    helper.start()
    try:
        for record in records:
            if record is not slow:
                results[record.name] = record.compute(prepared)
    finally:
        helper.join()
    if errors:
        raise errors[0]
    return results


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
        InputError: (a ``ValueError``) unknown preset/metric; inputs not 2-D (or
            ``(H, W, 1|3|4)``), of different shapes, empty, with NaN/Inf or |values| > 1e6; an
            image smaller than a selected metric needs (:data:`MIN_SIZE`: 7 for SSIM, 41 for VIF).
    """
    check_preset(preset)
    records = [REGISTRY[name] for name in parse_metrics(metrics)]
    prepared = Prepared.from_images(preset, fused, a, b)
    for record in records:  # fail before computing anything
        record.check_size(prepared.f.shape)
    threads = _default_threads() if threads is None else threads
    names = [r.name for r in records]
    if threads > 1 and len(records) > 1 and _HELPER_THREAD_METRIC in names and prepared.f.size >= _THREAD_MIN_PIXELS:
        results = _compute_beside_helper(prepared, records)
    else:
        results = {r.name: r.compute(prepared) for r in records}
    return {name: results[name] for name in names}
