"""Synthetic registered pairs for smoke tests and benchmarks (seeded numpy, no downloads).

The "infrared" image holds smooth warm blobs on a dim gradient; the "visible" image holds
textures (oriented gratings and filtered noise) plus faint blob outlines, so a good fusion
has to take intensity from one source and detail from the other.
"""

from __future__ import annotations

import os
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from emmafuse.samples import smooth_noise

if TYPE_CHECKING:
    from emmafuse.train.config import TrainConfig

__all__ = ["blob_texture_pair", "write_synthetic_pairs", "tiny_config"]


def blob_texture_pair(seed: int, h: int = 64, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One ``(ir, vis)`` pair of float32 ``(h, w)`` images in [0, 1]: warm blobs and textures.

    (The demo scene of :func:`emmafuse.samples.synthetic_pair` is another image: a uint8
    night street, at least 32x32.)
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    blobs = np.zeros((h, w))
    for _ in range(int(rng.integers(2, 5))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        sy, sx = rng.uniform(h / 16, h / 5), rng.uniform(w / 16, w / 5)
        blobs += rng.uniform(0.5, 1.0) * np.exp(-(((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2) / 2)
    ir = 0.15 + 0.2 * yy / h + 0.6 * np.clip(blobs, 0, 1) + 0.05 * smooth_noise(rng, h, w, 8)
    theta = rng.uniform(0, np.pi)
    freq = rng.uniform(0.15, 0.5)
    grating = 0.5 + 0.5 * np.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta)))
    texture = 0.5 * grating + 0.5 * smooth_noise(rng, h, w, 3)
    light = 0.3 + 0.5 * smooth_noise(rng, h, w, 16)
    edges = np.abs(np.gradient(np.clip(blobs, 0, 1))[0]) + np.abs(np.gradient(np.clip(blobs, 0, 1))[1])
    vis = light * (0.4 + 0.6 * texture) + 2.0 * edges
    return np.clip(ir, 0, 1).astype(np.float32), np.clip(vis, 0, 1).astype(np.float32)


def write_synthetic_pairs(
    folder: str | os.PathLike[str], n: int, h: int = 64, w: int = 64, seed: int = 0, colour_vis: bool = True
) -> tuple[Path, Path]:
    """Write ``n`` pairs as PNG into ``folder/ir`` and ``folder/vi``; returns both folders.

    With ``colour_vis`` the visible images are RGB whose BT.601 luma is the gray image.
    """
    root = Path(folder)
    ir_dir, vis_dir = root / "ir", root / "vi"
    ir_dir.mkdir(parents=True, exist_ok=True)
    vis_dir.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    for i in range(n):
        ir, vis = blob_texture_pair(seed * 100_003 + i, h, w)
        Image.fromarray(np.round(ir * 255).astype(np.uint8), "L").save(ir_dir / f"{i:04d}.png")
        v8 = np.round(vis * 255).astype(np.uint8)
        if colour_vis:
            tint = np.stack([v8, v8, v8], -1).astype(np.int16)
            tint[..., 0] += 6
            tint[..., 2] -= 6
            Image.fromarray(np.clip(tint, 0, 255).astype(np.uint8), "RGB").save(vis_dir / f"{i:04d}.png")
        else:
            Image.fromarray(v8, "L").save(vis_dir / f"{i:04d}.png")
    return ir_dir, vis_dir


def tiny_config(
    ir_dir: str | os.PathLike[str], vis_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> TrainConfig:
    """A seconds-long CPU configuration (tiny widths, 32-pixel crops) for smoke tests.

    Returns a :class:`~emmafuse.train.config.TrainConfig`; learning rates are raised so a
    few steps visibly lower the losses.
    """
    from emmafuse.train.config import TrainConfig

    cfg = TrainConfig(out_dir=str(out_dir), device="cpu", progress=False, log_every=2, val_every=1000, ckpt_every=1000)
    cfg.data.ir_dir, cfg.data.vis_dir = str(ir_dir), str(vis_dir)
    cfg.data.crop, cfg.data.val_crop, cfg.data.val_pairs, cfg.data.workers = 32, 32, 2, 0
    cfg.data.cache_dir = "none"  # tests never write to the user's cache
    cfg.sensing.base, cfg.sensing.steps, cfg.sensing.batch, cfg.sensing.lr = 4, 24, 8, 3e-3
    cfg.bootstrap.steps, cfg.bootstrap.batch, cfg.bootstrap.lr = 4, 4, 3e-3
    cfg.fuser.channels, cfg.fuser.steps, cfg.fuser.batch, cfg.fuser.lr = (8, 8, 8, 8), 8, 2, 3e-3
    return cfg
