"""Checkerboard-free upsampling (bilinear start, balanced projection) and folded training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emmafuse.models import UFuser
from emmafuse.models.upsampling import balance_upsampling_, init_upsampling_bilinear, stride2_upsamplers
from emmafuse.train.sensing import SensingUNet


def _parity_spread(conv: nn.ConvTranspose2d) -> float:
    """How much a flat input's output differs between pixel parities (0 = no checkerboard)."""
    with torch.no_grad():
        out = conv(torch.ones(1, conv.in_channels, 8, 8))[..., 2:-2, 2:-2]
    cells = out.unflatten(2, (-1, 2)).unflatten(-1, (-1, 2))  # (..., y, py, x, px)
    means = cells.mean(dim=(2, 4))
    return float((means.amax(dim=(-2, -1)) - means.amin(dim=(-2, -1))).abs().max())


def test_both_networks_have_their_upsamplers_found() -> None:
    assert len(stride2_upsamplers(UFuser())) == 3
    assert len(stride2_upsamplers(SensingUNet(4))) == 4


def test_bilinear_start_is_bilinear_upsampling() -> None:
    model = init_upsampling_bilinear(UFuser(), noise=0.0)
    conv = model.up3[0]  # 32 -> 16 channels: output j averages inputs j and j + 16
    x = torch.rand(1, 32, 6, 7)
    want = F.interpolate((x[:, :16] + x[:, 16:]) / 2, scale_factor=2, mode="bilinear", align_corners=False)
    got = conv(x)
    assert torch.allclose(got[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], atol=1e-6)
    assert _parity_spread(conv) < 1e-6


def test_balance_removes_the_checkerboard_and_is_a_projection() -> None:
    torch.manual_seed(0)
    model = SensingUNet(4)
    spread_before = max(_parity_spread(c) for c in stride2_upsamplers(model))
    balance_upsampling_(model)
    once = [c.weight.clone() for c in stride2_upsamplers(model)]
    assert spread_before > 1e-2
    assert max(_parity_spread(c) for c in stride2_upsamplers(model)) < 1e-5
    balance_upsampling_(model)  # idempotent: already on the constraint set
    assert all(torch.allclose(a, c.weight, atol=1e-7) for a, c in zip(once, stride2_upsamplers(model)))


def test_balance_keeps_what_does_not_make_a_pattern() -> None:
    model = init_upsampling_bilinear(UFuser(), noise=0.0)
    before = [c.weight.clone() for c in stride2_upsamplers(model)]
    balance_upsampling_(model)
    assert all(torch.allclose(a, c.weight, atol=1e-7) for a, c in zip(before, stride2_upsamplers(model)))


def test_folded_training_gives_the_plain_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    model = UFuser().double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # away from the init symmetries
    ir, vis = torch.rand(2, 1, 32, 32, dtype=torch.float64), torch.rand(2, 1, 32, 32, dtype=torch.float64)

    def run(folded: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.fast.train_folds = folded
        model.zero_grad()
        out = model(ir, vis)
        (out**2).mean().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    out_plain, grads_plain = run(False)
    out_fold, grads_fold = run(True)
    assert torch.allclose(out_plain, out_fold, atol=1e-12)
    assert grads_plain.keys() == grads_fold.keys()
    for name, g in grads_plain.items():
        assert torch.allclose(g, grads_fold[name], atol=1e-12, rtol=1e-9), name
