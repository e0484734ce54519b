"""A straightforward implementation of the reference metrics, for the speed comparison only.

Written the way the de-facto evaluator (MMIF-CDDFuse ``utils/Evaluator.py``) computes, with
numpy alone: full 2-D convolutions evaluated tap by tap (the O(k^2) work per pixel of
``scipy.signal.convolve2d``), VIF run once per source (F's statistics recomputed), a
sort-based contingency table for MI (as sklearn), a separable 1-D box filter for SSIM (as
scipy's ``uniform_filter``), float32 wherever the reference's float32 images keep it.
It gives the same numbers as ``emmafuse.metrics.evaluate(..., preset="reference")`` to
~1e-9; it is not part of the package.
"""

from __future__ import annotations

import math

import numpy as np

NAMES = ("EN", "SD", "SF", "AG", "MI", "MSE", "CC", "PSNR", "SCD", "VIF", "Qabf", "SSIM")


def conv2d(img: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """True 2-D convolution ('valid' or zero-padded 'same'), one shifted product per tap."""
    kh, kw = kernel.shape
    k = kernel[::-1, ::-1]  # convolution = correlation with the flipped kernel
    dtype = np.result_type(img, kernel)
    if mode == "same":
        img = np.pad(img, ((kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2)))
    h, w = img.shape[0] - kh + 1, img.shape[1] - kw + 1
    out = np.zeros((h, w), dtype)
    for i in range(kh):
        for j in range(kw):
            out += k[i, j] * img[i : i + h, j : j + w]
    return out


def en(img: np.ndarray) -> float:
    a = np.uint8(np.round(img)).flatten()
    h = np.bincount(a) / a.shape[0]
    return float(-sum(h * np.log2(h + (h == 0))))


def sd(img: np.ndarray) -> float:
    return float(np.std(img))


def sf(img: np.ndarray) -> float:
    return float(np.sqrt(np.mean((img[:, 1:] - img[:, :-1]) ** 2) + np.mean((img[1:, :] - img[:-1, :]) ** 2)))


def ag(img: np.ndarray) -> float:
    gx, gy = np.zeros_like(img), np.zeros_like(img)
    gx[:, 0] = img[:, 1] - img[:, 0]
    gx[:, -1] = img[:, -1] - img[:, -2]
    gx[:, 1:-1] = (img[:, 2:] - img[:, :-2]) / 2
    gy[0, :] = img[1, :] - img[0, :]
    gy[-1, :] = img[-1, :] - img[-2, :]
    gy[1:-1, :] = (img[2:, :] - img[:-2, :]) / 2
    return float(np.mean(np.sqrt((gx**2 + gy**2) / 2)))


def _mi_pair(x: np.ndarray, y: np.ndarray) -> float:
    """sklearn.metrics.mutual_info_score: sort-based contingency table, nats."""
    xv, xi = np.unique(x.ravel(), return_inverse=True)
    yv, yi = np.unique(y.ravel(), return_inverse=True)
    cells, counts = np.unique(xi.ravel() * len(yv) + yi.ravel(), return_counts=True)
    n = counts.sum()
    pi = np.bincount(xi.ravel())
    pj = np.bincount(yi.ravel())
    outer = pi[cells // len(yv)].astype(np.int64) * pj[cells % len(yv)].astype(np.int64)
    p = counts / n
    terms = p * (np.log(counts) - math.log(n)) + p * (-np.log(outer) + math.log(pi.sum()) + math.log(pj.sum()))
    return float(max(np.sum(terms), 0.0))


def mi(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return _mi_pair(f, a) + _mi_pair(f, b)


def mse(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.floating:
    return (np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2


def _r(x: np.ndarray, y: np.ndarray) -> np.floating:
    return np.sum((x - np.mean(x)) * (y - np.mean(y))) / np.sqrt(
        np.sum((x - np.mean(x)) ** 2) * np.sum((y - np.mean(y)) ** 2)
    )


def cc(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float((_r(a, f) + _r(b, f)) / 2)


def psnr(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(np.max(f) ** 2 / mse(f, a, b)))


def scd(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float(_r(a, f - b) + _r(b, f - a))


def _gauss(n: int) -> np.ndarray:
    sd_ = n / 5.0
    m = (n - 1.0) / 2.0
    y, x = np.ogrid[-m : m + 1, -m : m + 1]
    h = np.exp(-(x * x + y * y) / (2.0 * sd_ * sd_))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    return h / h.sum()


def vifp(ref: np.ndarray, dist: np.ndarray) -> float:
    sigma_nsq, eps = 2, 1e-10
    num = den = 0.0
    for scale in range(1, 5):
        win = _gauss(2 ** (4 - scale + 1) + 1)
        if scale > 1:
            ref = conv2d(ref, win, "valid")[::2, ::2]
            dist = conv2d(dist, win, "valid")[::2, ::2]
        mu1, mu2 = conv2d(ref, win, "valid"), conv2d(dist, win, "valid")
        s11 = conv2d(ref * ref, win, "valid") - mu1 * mu1
        s22 = conv2d(dist * dist, win, "valid") - mu2 * mu2
        s12 = conv2d(ref * dist, win, "valid") - mu1 * mu2
        s11[s11 < 0] = 0
        s22[s22 < 0] = 0
        g = s12 / (s11 + eps)
        sv = s22 - g * s12
        g[s11 < eps] = 0
        sv[s11 < eps] = s22[s11 < eps]
        s11[s11 < eps] = 0
        g[s22 < eps] = 0
        sv[s22 < eps] = 0
        sv[g < 0] = s22[g < 0]
        g[g < 0] = 0
        sv[sv <= eps] = eps
        num += np.sum(np.log10(1 + g * g * s11 / (sv + sigma_nsq)))
        den += np.sum(np.log10(1 + s11 / sigma_nsq))
    v = num / den
    return 1.0 if np.isnan(v) else float(v)


def vif(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return vifp(a, f) + vifp(b, f)


def _sobel(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    sx, sy = conv2d(img, h3, "same"), conv2d(img, h1, "same")
    g = np.sqrt(sx * sx + sy * sy)
    ang = np.zeros_like(img)
    ang[sx == 0] = math.pi / 2
    ang[sx != 0] = np.arctan(sy[sx != 0] / sx[sx != 0])
    return g, ang


def _q(aa: np.ndarray, ga: np.ndarray, af: np.ndarray, gf: np.ndarray) -> np.ndarray:
    G = np.zeros_like(aa)
    G[ga > gf] = gf[ga > gf] / ga[ga > gf]
    G[ga == gf] = gf[ga == gf]
    G[ga < gf] = ga[ga < gf] / gf[ga < gf]
    A = 1 - np.abs(aa - af) / (math.pi / 2)
    return 0.9994 / (1 + np.exp(-15 * (G - 0.5))) * (0.9879 / (1 + np.exp(-22 * (A - 0.8))))


def qabf(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ga, aa = _sobel(a)
    gb, ab = _sobel(b)
    gf, af = _sobel(f)
    return float(np.sum(_q(aa, ga, af, gf) * ga + _q(ab, gb, af, gf) * gb) / np.sum(ga + gb))


def _box1d(x: np.ndarray, axis: int, size: int = 7) -> np.ndarray:
    """1-D moving average with 'reflect' borders, summed in double, stored in x's dtype."""
    x = np.moveaxis(x, axis, -1)
    r = size // 2
    ext = np.pad(x.astype(np.float64), [(0, 0), (r, size - 1 - r)], mode="symmetric")
    n = x.shape[-1]
    acc = np.zeros(x.shape, np.float64)
    for t in range(size):
        acc += ext[:, t : t + n]
    return np.moveaxis((acc / size).astype(x.dtype), -1, axis)


def _ssim(x: np.ndarray, y: np.ndarray, data_range: float = 2.0) -> float:
    def filt(v: np.ndarray) -> np.ndarray:
        return _box1d(_box1d(v, 0), 1)

    ux, uy, uxx, uyy, uxy = filt(x), filt(y), filt(x * x), filt(y * y), filt(x * y)
    cov = 49 / 48
    vx, vy, vxy = cov * (uxx - ux * ux), cov * (uyy - uy * uy), cov * (uxy - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return float(s[3:-3, 3:-3].mean(dtype=np.float64))


def ssim(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return _ssim(f, a) + _ssim(f, b)


def evaluate_naive(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """All twelve metrics, reference definitions, images taken as float32 like the reference."""
    f, a, b = (np.asarray(x, np.float32) for x in (fused, a, b))
    return {
        "EN": en(f),
        "SD": sd(f),
        "SF": sf(f),
        "AG": ag(f),
        "MI": mi(f, a, b),
        "MSE": float(mse(f, a, b)),
        "CC": cc(f, a, b),
        "PSNR": psnr(f, a, b),
        "SCD": scd(f, a, b),
        "VIF": vif(f, a, b),
        "Qabf": qabf(f, a, b),
        "SSIM": ssim(f, a, b),
    }
