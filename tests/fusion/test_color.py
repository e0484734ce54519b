from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from emmafuse.color import rgb_to_ycbcr, ycbcr_to_rgb


def test_round_trip_error_is_float_rounding():
    rgb = torch.rand(2, 3, 37, 41, generator=torch.Generator().manual_seed(0))
    back = ycbcr_to_rgb(rgb_to_ycbcr(rgb))
    assert (back - rgb).abs().max().item() < 1e-6


def test_uint8_round_trip_is_exact():
    levels = torch.arange(256, dtype=torch.float32) / 255
    rgb = torch.stack(torch.meshgrid(levels[::5], levels[::3], levels[::7], indexing="ij")).reshape(1, 3, -1, 1)
    back = torch.round(ycbcr_to_rgb(rgb_to_ycbcr(rgb)).clamp(0, 1) * 255)
    assert torch.equal(back, torch.round(rgb * 255))


def test_luma_matches_bt601_and_pil():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    y = rgb_to_ycbcr(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0, 0] * 255
    pil_l = np.asarray(Image.fromarray(rgb).convert("L")).astype(np.float32)
    assert np.abs(y.numpy() - pil_l).max() <= 1.0  # PIL rounds with fixed-point weights
    expected = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.allclose(y.numpy(), expected, atol=1e-3)


def test_gray_has_neutral_chroma():
    gray = torch.full((1, 3, 4, 4), 0.4)
    ycc = rgb_to_ycbcr(gray)
    assert torch.allclose(ycc[:, 0], torch.tensor(0.4))
    assert torch.allclose(ycc[:, 1:], torch.tensor(0.5))
