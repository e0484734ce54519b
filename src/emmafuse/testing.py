"""Seeded, architecture-independent weights: the parity fixture, the tests and the benchmarks use them.

Each tensor is drawn from its own generator seeded by the key name, so the values do not
depend on module construction order: the official network and ours receive the same numbers.
The weights are high-gain on purpose (they exercise rounding far more than trained weights).
"""

from __future__ import annotations

import zlib

import torch

__all__ = ["PARITY_SEED", "seeded_state_dict"]

PARITY_SEED = 20240617


def seeded_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """float32 tensors of the given shapes, each seeded by its key (U-Fuser state-dict names)."""
    out: dict[str, torch.Tensor] = {}
    for key in sorted(shapes):
        shape = shapes[key]
        gen = torch.Generator().manual_seed(PARITY_SEED ^ zlib.crc32(key.encode()))
        noise = torch.randn(shape, generator=gen, dtype=torch.float64)
        if key.endswith(("norm1.body.weight", "norm2.body.weight", "attn.scale")):
            value = 1.0 + 0.2 * noise
        elif key.endswith(("body.bias",)) or len(shape) == 1:
            value = 0.1 * noise
        else:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            if "up" in key.split(".")[0]:  # ConvTranspose2d: (cin, cout, k, k)
                fan_in = shape[0] * shape[2] * shape[3] // 4
            value = noise / fan_in**0.5
        out[key] = value.float()
    return out
