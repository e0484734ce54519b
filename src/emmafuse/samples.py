"""A built-in example pair, generated (never shipped as files): a synthetic night scene.

The visible image is a dim colour street scene with textured buildings, windows and a road;
a person stands in the shadow, nearly invisible. The infrared image shows little texture but
the warm person, a warm car engine and the cold sky clearly. A good fusion keeps the texture of
the visible image *and* the warm targets of the infrared one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emmafuse.errors import InputError

__all__ = ["synthetic_pair", "smooth_noise"]


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Value noise: a coarse random grid upsampled bilinearly, in [0, 1]."""
    gh, gw = max(2, h // cells + 2), max(2, w // cells + 2)
    grid = rng.random((gh, gw))
    ys = np.linspace(0, gh - 1.001, h)
    xs = np.linspace(0, gw - 1.001, w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _box(h: int, w: int, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[max(top, 0) : max(bottom, 0), max(left, 0) : max(right, 0)] = True
    return mask


@dataclass(frozen=True)
class _Scene:
    """Where things are in the night scene (boolean masks) and its shared textures."""

    yy: np.ndarray
    xx: np.ndarray
    horizon: int
    fine: np.ndarray
    coarse: np.ndarray
    buildings: np.ndarray
    lit: np.ndarray  # lit windows
    road: np.ndarray
    person: np.ndarray
    car: np.ndarray


def _layout(rng: np.random.Generator, h: int, w: int) -> _Scene:
    yy, xx = np.mgrid[0:h, 0:w]
    horizon = int(h * 0.45)
    fine = smooth_noise(rng, h, w, 3)
    coarse = smooth_noise(rng, h, w, 24)
    buildings = np.zeros((h, w), bool)
    x = 0
    while x < w:
        bw = int(rng.integers(w // 8, w // 4))
        top = int(rng.integers(h // 8, horizon - 4))
        buildings |= _box(h, w, top, int(h * 0.75), x, x + bw - 2)
        x += bw
    windows = buildings & ((yy % 18) < 8) & ((xx % 16) < 7) & (rng.random((h, w)) < 1.0)
    lit = windows & (smooth_noise(rng, h, w, 30) > 0.55)
    cx = int(w * 0.3)  # the person stands in the shadow
    person = _ellipse(h, w, h * 0.56, cx, h * 0.035, h * 0.03) | _box(
        h, w, int(h * 0.59), int(h * 0.78), cx - int(h * 0.035), cx + int(h * 0.035)
    )
    car = _box(h, w, int(h * 0.7), int(h * 0.82), int(w * 0.6), int(w * 0.85))
    road = yy >= int(h * 0.75)
    return _Scene(yy, xx, horizon, fine, coarse, buildings, lit, road, person, car)


def _visible(sc: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Dim dusk sky, brick-textured buildings with lit windows, asphalt road, a camouflaged person."""
    (h, w), yy, xx = sc.yy.shape, sc.yy, sc.xx
    vis = np.zeros((h, w, 3))
    sky = np.clip(0.35 - 0.25 * yy / sc.horizon, 0, 1)
    vis[..., 0], vis[..., 1], vis[..., 2] = sky * 0.6, sky * 0.7, sky * 1.2
    bricks = (((yy // 4) % 2 == 0) | (((xx + 4 * ((yy // 4) % 2)) // 8) % 2 == 0)).astype(float)
    wall = 0.12 + 0.08 * bricks + 0.10 * sc.fine + 0.08 * sc.coarse
    for ch, tint in enumerate((1.0, 0.8, 0.65)):
        vis[..., ch] = np.where(sc.buildings, wall * tint, vis[..., ch])
    vis[sc.lit] = (0.75, 0.65, 0.35)
    asphalt = 0.10 + 0.06 * sc.fine + 0.05 * sc.coarse
    for ch in range(3):
        vis[..., ch] = np.where(sc.road, asphalt, vis[..., ch])
    vis[sc.road & (np.abs(xx - w // 2) < 3) & ((yy // 6) % 2 == 0)] = (0.7, 0.7, 0.6)  # lane marks
    vis[sc.person] = vis[sc.person] * 0.9  # the same colour as the wall behind it
    vis[sc.car] = (0.08, 0.08, 0.1)  # dark body, visible headlight
    vis[_ellipse(h, w, h * 0.75, w * 0.84, 3, 5)] = (1.0, 1.0, 0.85)
    return vis * 0.85 + 0.02 * rng.standard_normal((h, w, 1))  # sensor noise in low light


def _infrared(sc: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Smooth temperatures: cold sky, warm windows, a warm person and car engine."""
    (h, w), yy = sc.yy.shape, sc.yy
    ir = np.full((h, w), 0.35) + 0.06 * sc.coarse
    ir = np.where(yy < sc.horizon, 0.12 + 0.05 * yy / sc.horizon, ir)
    ir = np.where(sc.buildings, 0.30 + 0.05 * sc.coarse + 0.02 * sc.fine, ir)
    ir = np.where(sc.road, 0.40 + 0.04 * sc.coarse, ir)
    ir = np.where(sc.lit, ir + 0.08, ir)
    ir = np.where(sc.car, 0.45, ir)
    ir = np.where(_box(h, w, int(h * 0.72), int(h * 0.8), int(w * 0.78), int(w * 0.85)), 0.85, ir)  # engine
    ir = np.where(sc.person, 0.92, ir)
    return ir + 0.01 * rng.standard_normal((h, w))


def synthetic_pair(height: int = 240, width: int = 320, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Make a registered (infrared, visible) pair.

    Returns:
        ``(ir, vis)``: ``ir`` is ``(H, W)`` uint8 gray, ``vis`` is ``(H, W, 3)`` uint8 RGB.

    Raises:
        InputError: a side below 32 pixels.
    """
    if height < 32 or width < 32:
        raise InputError(f"synthetic_pair needs at least 32x32, got {height}x{width}")
    rng = np.random.default_rng(seed)
    scene = _layout(rng, height, width)
    vis = _visible(scene, rng)  # the visible image's noise is drawn before the infrared's
    return _to_u8(_infrared(scene, rng)), _to_u8(vis)


def _to_u8(a: np.ndarray) -> np.ndarray:
    return np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
