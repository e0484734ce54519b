"""The U-Fuser network of EMMA (Zhao et al., CVPR 2024).

A two-branch U-Net: one encoder per modality, a fusion unit per scale and a shared decoder.
Every unit is a *Restormer-CNN block*: an embedding convolution, then a global branch
(Restormer-style channel attention + gated MLP) and a local branch (two residual blocks)
whose outputs are concatenated and merged by a 3x3 convolution.

Module names and parameter shapes follow the authors' release exactly, so their
``state_dict`` loads with ``strict=True`` (see ``tests/test_model_parity.py``).
This module holds networks only: no file or image I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UFuser", "UFuserConfig", "SIZE_MULTIPLE", "MIN_SIDE"]

#: Three stride-2 stages: every side must be a multiple of 8 for the skip connections to align.
SIZE_MULTIPLE = 8
#: Reflect padding at the coarsest stage needs at least 2 pixels there (2 * 8).
MIN_SIDE = 16


@dataclass(frozen=True)
class UFuserConfig:
    """Architecture hyper-parameters.

    ``channels`` are the widths of the four scales. The released code uses ``(8, 16, 32, 32)``
    (1,517,657 parameters); the paper text mentions ``(16, 32, 64, 128)``.
    """

    channels: tuple[int, int, int, int] = (8, 16, 32, 32)
    num_heads: int = 8
    in_channels: int = 1
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UFuserConfig":
        known = {"channels", "num_heads", "in_channels"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown U-Fuser config keys: {sorted(unknown)}")
        kwargs = dict(data)
        if "channels" in kwargs:
            channels = tuple(int(c) for c in kwargs["channels"])
            if len(channels) != 4:
                raise ValueError(f"U-Fuser config 'channels' needs 4 widths, got {list(channels)}")
            kwargs["channels"] = channels
        return cls(**kwargs)


def _conv3x3(cin: int, cout: int, *, bias: bool, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        cin, cout, 3, stride=stride, padding=1, bias=bias, groups=groups, padding_mode="reflect"
    )


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor, with affine weight and bias.

    Equivalent to the release's ``to_3d -> LayerNorm -> to_4d`` without the two transposes.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.body = _AffineParams(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        w = self.body.weight.view(1, -1, 1, 1)
        b = self.body.bias.view(1, -1, 1, 1)
        return (x - mean) * torch.rsqrt(var + self.eps) * w + b


class _AffineParams(nn.Module):
    """Holds ``weight``/``bias`` under the ``body.`` prefix the released checkpoint uses."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))


class ChannelAttention(nn.Module):
    """Restormer's transposed (channel) self-attention.

    Queries and keys are L2-normalised over *all pixels*, so the attention map (per head,
    ``c_head x c_head``) is a global statistic of the image: outputs of crops differ from
    crops of the output. With one channel per head the softmax is over a single entry and
    equals 1, so the block reduces to ``proj(v)``; we use that identity as a fast path.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv1 = nn.Conv2d(dim, dim * 3, 1, bias=False)
        # Zero padding here (unlike the rest of the network) as in the release.
        self.qkv2 = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, bias=False)
        self.proj = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv2(self.qkv1(x))
        q, k, v = qkv.chunk(3, dim=1)
        heads = self.num_heads
        if c == heads:
            # softmax over a 1x1 map is exactly 1 (NaN stays NaN through v)
            return self.proj(v)
        q = F.normalize(q.reshape(b, heads, c // heads, h * w), dim=-1)
        k = F.normalize(k.reshape(b, heads, c // heads, h * w), dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        out = attn @ v.reshape(b, heads, c // heads, h * w)
        return self.proj(out.reshape(b, c, h, w))


class GatedMlp(nn.Module):
    """Restormer's gated depth-wise feed-forward network (GELU gate)."""

    def __init__(self, dim: int, expansion: float = 1.0) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.dwconv = _conv3x3(hidden * 2, hidden * 2, bias=False, groups=hidden)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class GlobalBranch(nn.Module):
    """Pre-norm transformer block: attention then gated MLP, both residual."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = ChannelAttention(dim, num_heads)
        self.norm2 = ChannelLayerNorm(dim)
        self.mlp = GatedMlp(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ResBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv3x3(dim, dim, bias=True), nn.ReLU(), _conv3x3(dim, dim, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class LocalBranch(nn.Module):
    def __init__(self, dim: int, num_blocks: int = 2) -> None:
        super().__init__()
        self.Extraction = nn.Sequential(*[ResBlock(dim) for _ in range(num_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.Extraction(x)


class RestormerCNNBlock(nn.Module):
    """Embed, run the global and local branches in parallel, merge with a 3x3 conv."""

    def __init__(self, cin: int, cout: int, num_heads: int) -> None:
        super().__init__()
        self.embed = _conv3x3(cin, cout, bias=False)
        self.GlobalFeature = GlobalBranch(cout, num_heads)
        self.LocalFeature = LocalBranch(cout)
        self.FFN = _conv3x3(cout * 2, cout, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        return self.FFN(torch.cat((self.GlobalFeature(x), self.LocalFeature(x)), 1))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.ReLU())


class UFuser(nn.Module):
    """EMMA's U-Fuser: ``fused = UFuser(ir, vis)`` on ``(N, 1, H, W)`` tensors in [0, 1].

    ``H`` and ``W`` must be multiples of :data:`SIZE_MULTIPLE` and at least :data:`MIN_SIDE`;
    :class:`emmafuse.Fuser` pads arbitrary sizes for you. The output is a sigmoid in (0, 1).
    """

    def __init__(self, config: UFuserConfig | None = None) -> None:
        super().__init__()
        self.config = config or UFuserConfig()
        c = self.config.channels
        n = self.config.num_heads
        cin = self.config.in_channels

        def block(a: int, b: int) -> RestormerCNNBlock:
            return RestormerCNNBlock(a, b, n)

        def down(ch: int) -> nn.Conv2d:
            return _conv3x3(ch, ch, bias=False, stride=2)

        self.V_en_1, self.V_en_2 = block(cin, c[0]), block(c[0], c[1])
        self.V_en_3, self.V_en_4 = block(c[1], c[2]), block(c[2], c[3])
        self.I_en_1, self.I_en_2 = block(cin, c[0]), block(c[0], c[1])
        self.I_en_3, self.I_en_4 = block(c[1], c[2]), block(c[2], c[3])

        self.f_1, self.f_2 = block(2 * c[0], c[0]), block(2 * c[1], c[1])
        self.f_3, self.f_4 = block(2 * c[2], c[2]), block(2 * c[3], c[3])

        self.V_down1, self.V_down2, self.V_down3 = down(c[0]), down(c[1]), down(c[2])
        self.I_down1, self.I_down2, self.I_down3 = down(c[0]), down(c[1]), down(c[2])

        self.up4, self.up3, self.up2 = _up(c[3], c[2]), _up(c[2], c[1]), _up(c[1], c[0])

        self.de_1, self.de_2 = block(2 * c[0], c[0]), block(2 * c[1], c[1])
        self.de_3, self.de_4 = block(2 * c[2], c[2]), block(c[3], c[3])

        self.last = nn.Sequential(
            nn.Conv2d(c[0], 1, 3, padding=1, padding_mode="reflect"), nn.Sigmoid()
        )

    def _encode(self, x: torch.Tensor, prefix: str) -> list[torch.Tensor]:
        feats = [getattr(self, f"{prefix}_en_1")(x)]
        for level in (1, 2, 3):
            down = getattr(self, f"{prefix}_down{level}")
            feats.append(getattr(self, f"{prefix}_en_{level + 1}")(down(feats[-1])))
        return feats

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        i1, i2, i3, i4 = self._encode(ir, "I")
        v1, v2, v3, v4 = self._encode(vis, "V")
        f1 = self.f_1(torch.cat((i1, v1), 1))
        f2 = self.f_2(torch.cat((i2, v2), 1))
        f3 = self.f_3(torch.cat((i3, v3), 1))
        f4 = self.f_4(torch.cat((i4, v4), 1))
        out = self.up4(self.de_4(f4))
        out = self.up3(self.de_3(torch.cat((out, f3), 1)))
        out = self.up2(self.de_2(torch.cat((out, f2), 1)))
        out = self.de_1(torch.cat((out, f1), 1))
        return self.last(out)
