"""Mutual information MI = MI(F, A) + MI(F, B) from joint gray-level histograms."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from emmafuse.metrics._common import Metric, Prepared, Preset, row_strips

__all__ = ["mi", "mutual_information", "MI"]

_MAX_DENSE = 1 << 24  # joint histogram cells for the bincount path (128 MiB of int64)


def _dense(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer labels as 0..K-1 (unchanged for gray levels 0..255, offset when the range is
    small, ``np.unique`` otherwise) and K."""
    labels = np.asarray(labels).ravel()
    lo, hi = int(labels.min()), int(labels.max())
    if lo >= 0 and hi < 256:
        return labels.astype(np.intp, copy=False), 256
    labels = labels.astype(np.int64)
    if hi - lo < 4096:
        return labels - lo, hi - lo + 1
    uniq, inv = np.unique(labels, return_inverse=True)
    return inv.ravel(), int(uniq.size)


def _mi_from_joint(joint: np.ndarray, base: float) -> float:
    """MI of a ``(kx, ky)`` contingency table of counts."""
    n = joint.sum()
    ky = joint.shape[1]
    nz = np.flatnonzero(joint)
    cij = joint.ravel()[nz].astype(np.float64)
    ci = joint.sum(axis=1)[nz // ky].astype(np.float64)
    cj = joint.sum(axis=0)[nz % ky].astype(np.float64)
    # sum p_ij log(p_ij / (p_i p_j)) with counts: p_ij = c_ij / n, ratio = c_ij n / (c_i c_j)
    value = float(np.sum(cij / n * np.log(cij * n / (ci * cj))))
    value = max(value, 0.0)  # rounding may give -1e-17 for independent images; MI >= 0
    return value / float(np.log(base))


def _joint_mi(x: tuple[np.ndarray, int], y: tuple[np.ndarray, int], base: float) -> float:
    (xs, kx), (ys, ky) = x, y
    if kx * ky > _MAX_DENSE:  # pragma: no cover - needs > 4096 distinct levels in both images
        keys, counts = np.unique(np.multiply(xs, ky, dtype=np.int64) + ys, return_counts=True)
        xi, yi = keys // ky, keys % ky
        ux, xi = np.unique(xi, return_inverse=True)
        uy, yi = np.unique(yi, return_inverse=True)
        joint = np.zeros((ux.size, uy.size), np.int64)
        joint[xi, yi] = counts
        return _mi_from_joint(joint, base)
    key = np.multiply(xs, ky, dtype=np.intp)
    key += ys
    return _mi_from_joint(np.bincount(key, minlength=kx * ky).reshape(kx, ky), base)


def _joint_tables_8bit(p: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Joint 256x256 histograms (F, A) and (F, B) of 8-bit-range images, strip by strip
    (small temporaries; the counts are exact whatever the order)."""
    f, a, b = p.work()
    h, w = f.shape
    joint_a = np.zeros(256 * 256, np.intp)
    joint_b = np.zeros(256 * 256, np.intp)
    for r0, r1 in row_strips(h, 0, w, 16):
        key_f = np.rint(f[r0:r1]).astype(np.intp)
        key_f *= 256
        joint_a += np.bincount((key_f + np.rint(a[r0:r1]).astype(np.intp)).ravel(), minlength=256 * 256)
        joint_b += np.bincount((key_f + np.rint(b[r0:r1]).astype(np.intp)).ravel(), minlength=256 * 256)
    return joint_a.reshape(256, 256), joint_b.reshape(256, 256)


def mutual_information(x: np.ndarray, y: np.ndarray, *, base: float = np.e) -> float:
    """Mutual information of two integer label images, from their joint histogram.

    ``base`` e gives nats (what ``sklearn.metrics.mutual_info_score`` returns), 2 gives bits.
    A ``bincount`` over ``K_y * x + y`` replaces sklearn's sort-based contingency table.
    """
    return _joint_mi(_dense(x), _dense(y), base)


def _mi(p: Prepared) -> float:
    base = np.e if p.reference else 2.0
    if p.in_8bit_range:  # the usual case: rint(x) in 0..255 for both presets
        joint_a, joint_b = _joint_tables_8bit(p)
        return _mi_from_joint(joint_a, base) + _mi_from_joint(joint_b, base)
    f, a, b = (_dense(p.level(i)) for i in range(3))
    return _joint_mi(f, a, base) + _joint_mi(f, b, base)


MI = Metric("MI", _mi)


def mi(fused: ArrayLike, a: ArrayLike, b: ArrayLike, *, preset: Preset = "reference") -> float:
    """Mutual information ``MI(F, A) + MI(F, B)`` on rounded gray levels.

    ``"reference"``: natural log (nats), as the reference's ``sklearn.metrics.mutual_info_score``;
    the literature usually quotes bits, so these values are ``ln 2 = 0.693`` times the bits.
    Levels are ``round(x)`` without any clipping (sklearn treats every distinct value as a
    label). ``"fixed"``: bits, on levels clipped to 0..255 before rounding.
    """
    return MI.score(preset, fused, a, b)
