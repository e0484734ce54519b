"""Sample augmentations that break the shortcut "the infrared image is the base layer".

A U-Fuser fitted to a teacher on pairs where the teacher happens to take its base from the
infrared learns to copy the infrared, and carries that into domains where the teacher (and a
person) would take the visible image (issue 16: TNO, MSRS). Three augmentations, all applied
to the *inputs* of a sample while the target stays the teacher's result on the clean pair:

- ``swap``: the two inputs exchange places. Valid only for a teacher that is symmetric in its
  inputs (the rules ``gff``, ``gff-max``, ``laplacian``): the target is unchanged, so the
  network cannot tell which slot is "the base" and must decide from content.
- ``noise``: sensor noise on each input independently (Gaussian grain plus a per-row offset,
  the interlaced-sensor pattern of TNO's infrared), while the target stays clean: grain is
  not detail.
- ``scale_min``: a random downscale in ``[scale_min, 1]`` before the crop, so a patch of the
  same size sees up to ``1 / scale_min`` times the context the teacher decided on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Augment", "SYMMETRIC_SOURCES", "add_sensor_noise", "augment_inputs"]

#: Pseudo-GT rules whose result does not change when the two inputs swap places.
SYMMETRIC_SOURCES = ("gff", "gff-max", "laplacian")


@dataclass(frozen=True)
class Augment:
    """Which augmentations a :class:`~emmafuse.train.patches.PatchDataset` applies (all off by default)."""

    swap: float = 0.0  #: probability that the two inputs swap places
    noise: float = 0.0  #: probability, per input, of sensor noise
    noise_sigma: float = 0.03  #: largest Gaussian grain (of 1)
    noise_rows: float = 0.02  #: largest per-row offset (of 1)
    scale_min: float = 1.0  #: smallest random downscale before the crop (1: none)

    @property
    def any_input_change(self) -> bool:
        """True when the inputs can differ from the clean pair (the clean pair is then kept too)."""
        return self.swap > 0 or self.noise > 0


def add_sensor_noise(patch: np.ndarray, rng: np.random.Generator, sigma_max: float, rows_max: float) -> np.ndarray:
    """Gaussian grain of a random strength plus a random offset per row, clipped to [0, 1]."""
    sigma = rng.uniform(0.0, sigma_max)
    rows = rng.uniform(0.0, rows_max)
    h, w = patch.shape
    noisy = patch + sigma * rng.standard_normal((h, w)) + rows * rng.standard_normal((h, 1))
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def augment_inputs(out: dict[str, np.ndarray], rng: np.random.Generator, aug: Augment) -> dict[str, np.ndarray]:
    """Noise and swap on the inputs ``ir`` / ``vis`` of a sample; the clean pair stays as
    ``ir_ref`` / ``vis_ref`` (in the same slots as the inputs)."""
    a, b = out["ir"], out["vis"]
    noisy = []
    for patch in (a, b):
        if aug.noise > 0 and rng.random() < aug.noise:
            patch = add_sensor_noise(patch, rng, aug.noise_sigma, aug.noise_rows)
        noisy.append(patch)
    ref = [a, b]
    if aug.swap > 0 and rng.random() < aug.swap:
        noisy.reverse()
        ref.reverse()
    return {**out, "ir": noisy[0], "vis": noisy[1], "ir_ref": ref[0], "vis_ref": ref[1]}
