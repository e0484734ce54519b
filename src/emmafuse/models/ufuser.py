"""The U-Fuser network of EMMA (Zhao et al., CVPR 2024).

A two-branch U-Net: one encoder per modality, a fusion unit per scale and a shared decoder.
Every unit is a *Restormer-CNN block*: an embedding convolution, then a global branch
(Restormer-style channel attention + gated MLP) and a local branch (two residual blocks)
whose outputs are concatenated and merged by a 3x3 convolution.

Module names and parameter shapes follow the authors' release exactly, so their
``state_dict`` loads with ``strict=True`` (see ``tests/models/test_model_parity.py``).
This sub-package holds networks only: no file or image I/O. The pieces: this module (the
configuration and the U-Net), :mod:`~emmafuse.models.blocks` (the Restormer-CNN block and its
local branch), :mod:`~emmafuse.models.restormer` (the global branch: LayerNorm, attention,
gated MLP) and :mod:`~emmafuse.models.fast_paths` (the switches and the folded-weight cache).

Inference fast paths (all exact rewrites of the released computation, on by default, switched
with :meth:`UFuser.set_fast_paths`; tests compare each against the plain path). They apply only
when autograd is off (``torch.no_grad`` / ``torch.inference_mode``, as :class:`emmafuse.Fuser`
runs); with gradients on, the network runs the release's computation unchanged:

- ``fold_attention``: the attention's ``qkv2(qkv1(x))`` (a bias-free 1x1 conv followed by a
  bias-free, zero-padded 3x3 conv) is one 3x3 conv with the composed weight ``W2 . W1``; it is
  computed once and cached until the weights change. With one channel per head (the 8-channel
  scale) only ``v`` matters and ``proj`` is folded in as well; with more, the ``proj`` and the
  per-image attention matrix are folded into the ``v`` convolution.
- ``fold_mlp``: the gated MLP's ``dwconv(project_in(x))`` (a bias-free 1x1 conv, then a grouped
  3x3 conv with reflect padding, which commutes with the 1x1 conv) is two dense 3x3 convs with
  composed weights, one per half of the gate, so the GELU runs on contiguous tensors. More
  multiply-adds, but dense convs run several times faster than the 2-channel grouped conv.
- ``fused_layernorm``: the channel LayerNorm runs as one ``F.layer_norm`` kernel on the NHWC
  view of a channels-last tensor instead of eight element-wise passes.
- ``fused_concat``: the global and local branches write their (in-place) residual sums straight
  into one reflect-padded buffer that the merging 3x3 conv reads: no concatenation and no
  padding copy.
- ``channels_last``: activations are kept in NHWC memory layout, which oneDNN / cuDNN run
  faster for these narrow (8-32 channel) convolutions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import nn

from emmafuse.errors import InputError, WeightsError
from emmafuse.models.blocks import RestormerCNNBlock, upsampler
from emmafuse.models.fast_paths import FastPaths
from emmafuse.models.restormer import ChannelAttention, GatedMlp, ReflectConv2d, conv3x3
from emmafuse.models.size_req import SizeRequirements

__all__ = ["UFuser", "UFuserConfig", "FastPaths", "SIZE_MULTIPLE", "MIN_SIDE", "UFUSER_SIZE"]

#: Three stride-2 stages: every side must be a multiple of 8 for the skip connections to align.
SIZE_MULTIPLE = 8
#: Reflect padding at the coarsest stage needs at least 2 pixels there (2 * 8).
MIN_SIDE = 16
#: The U-Fuser's size requirements. Its channel attention normalises over all pixels, so tiles
#: only approximate the whole-image output, and tiles below 512 pixels see too little of the
#: image for those statistics (``docs/performance.md``).
UFUSER_SIZE = SizeRequirements(multiple=SIZE_MULTIPLE, minimum=MIN_SIDE, min_tile=512, exact_tiling=False)


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
        """The JSON form stored in weights files and the manifest (``extra`` left out)."""
        data = asdict(self)
        data.pop("extra")
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UFuserConfig":
        """The inverse of :meth:`to_dict`.

        Raises:
            InputError: an unknown key, or ``channels`` without four widths.
        """
        known = {"channels", "num_heads", "in_channels"}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown U-Fuser config keys: {sorted(unknown)}", parameter="config")
        kwargs = dict(data)
        if "channels" in kwargs:
            channels = tuple(int(c) for c in kwargs["channels"])
            if len(channels) != 4:
                raise InputError(f"U-Fuser config 'channels' needs 4 widths, got {list(channels)}", parameter="config")
            kwargs["channels"] = channels
        return cls(**kwargs)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> "UFuserConfig":
        """The architecture a U-Fuser ``state_dict`` was made with, read from its tensor shapes.

        The widths come from the four visible-encoder embeddings, the input channels from the
        first one, the heads from the first attention's ``scale``. Whether every other tensor
        fits is :func:`emmafuse.checkpoint.build_ufuser`'s check.

        Raises:
            WeightsError: a tensor these are read from is missing or has an unexpected shape, or
                the widths are not multiples of the heads (not a U-Fuser state dict).
        """
        def shape(key: str, ndim: int) -> tuple[int, ...]:
            t = state.get(key)
            if not isinstance(t, torch.Tensor):
                raise WeightsError(f"cannot tell the U-Fuser architecture: the state dict has no tensor '{key}'")
            if t.ndim != ndim:
                raise WeightsError(
                    f"cannot tell the U-Fuser architecture: '{key}' has shape {tuple(t.shape)}, expected {ndim} axes"
                )
            return tuple(int(s) for s in t.shape)

        c1, c2, c3, c4 = (shape(f"V_en_{i}.embed.weight", 4)[0] for i in range(1, 5))
        in_channels = shape("V_en_1.embed.weight", 4)[1]
        num_heads = shape("V_en_1.GlobalFeature.attn.scale", 3)[0]
        if num_heads < 1 or any(c % num_heads for c in (c1, c2, c3, c4)):
            raise WeightsError(
                f"cannot tell the U-Fuser architecture: widths {(c1, c2, c3, c4)} are not multiples of {num_heads} heads"
            )
        return cls(channels=(c1, c2, c3, c4), num_heads=num_heads, in_channels=in_channels)


class UFuser(nn.Module):
    """EMMA's U-Fuser: ``fused = UFuser(ir, vis)`` on ``(N, 1, H, W)`` tensors in [0, 1].

    ``H`` and ``W`` must be multiples of :data:`SIZE_MULTIPLE` and at least :data:`MIN_SIDE`
    (:attr:`size_requirements`); :class:`emmafuse.Fuser` pads arbitrary sizes for you. The
    output is a sigmoid in (0, 1).
    """

    #: Input sizes it accepts and its tiling advice (read by padding, tiling and callers).
    size_requirements: ClassVar[SizeRequirements] = UFUSER_SIZE

    def __init__(self, config: UFuserConfig | None = None) -> None:
        super().__init__()
        self.config = config or UFuserConfig()
        self.fast = FastPaths()
        c = self.config.channels
        n = self.config.num_heads
        cin = self.config.in_channels

        def block(a: int, b: int) -> RestormerCNNBlock:
            return RestormerCNNBlock(a, b, n, fast=self.fast)

        def down(ch: int) -> nn.Conv2d:
            return conv3x3(ch, ch, bias=False, stride=2)

        self.V_en_1, self.V_en_2 = block(cin, c[0]), block(c[0], c[1])
        self.V_en_3, self.V_en_4 = block(c[1], c[2]), block(c[2], c[3])
        self.I_en_1, self.I_en_2 = block(cin, c[0]), block(c[0], c[1])
        self.I_en_3, self.I_en_4 = block(c[1], c[2]), block(c[2], c[3])

        self.f_1, self.f_2 = block(2 * c[0], c[0]), block(2 * c[1], c[1])
        self.f_3, self.f_4 = block(2 * c[2], c[2]), block(2 * c[3], c[3])

        self.V_down1, self.V_down2, self.V_down3 = down(c[0]), down(c[1]), down(c[2])
        self.I_down1, self.I_down2, self.I_down3 = down(c[0]), down(c[1]), down(c[2])

        self.up4, self.up3, self.up2 = upsampler(c[3], c[2]), upsampler(c[2], c[1]), upsampler(c[1], c[0])

        self.de_1, self.de_2 = block(2 * c[0], c[0]), block(2 * c[1], c[1])
        self.de_3, self.de_4 = block(2 * c[2], c[2]), block(c[3], c[3])

        self.last = nn.Sequential(
            ReflectConv2d(c[0], 1, 3, padding=1, padding_mode="reflect"), nn.Sigmoid()
        )

    def set_fast_paths(self, enabled: bool | None = None, **flags: bool) -> "UFuser":
        """Switch inference fast paths; ``set_fast_paths(False)`` gives the plain release path.

        Flags: ``fold_attention``, ``fold_mlp``, ``fused_layernorm``, ``fused_concat``,
        ``channels_last`` (see the module doc).
        All are exact rewrites: outputs agree with the plain path to float32 rounding.
        """
        names = {f.name for f in fields(FastPaths)}
        unknown = set(flags) - names
        if unknown:
            raise InputError(f"unknown fast paths {sorted(unknown)}; known: {sorted(names)}")
        for name in names:
            if enabled is not None:
                setattr(self.fast, name, bool(enabled))
            if name in flags:
                setattr(self.fast, name, bool(flags[name]))
        return self

    def prepare_inference(self) -> "UFuser":
        """Compute the folded weights now (they are otherwise made on first use)."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (ChannelAttention, GatedMlp)):
                    m.folded_weights()
        return self

    def _encode_and_fuse(self, ir: torch.Tensor, vis: torch.Tensor) -> list[torch.Tensor]:
        """Encoders and fusion units scale by scale (the release's operations in another order).

        Each scale's encoder features are dropped as soon as they are concatenated for fusion
        instead of living through the decoder: a lower peak memory at inference.
        """
        feats: tuple[torch.Tensor, torch.Tensor] | None = (self.I_en_1(ir), self.V_en_1(vis))
        fused = []
        for level in (1, 2, 3, 4):
            assert feats is not None
            i, v = feats
            down = None
            if level < 4:
                down = (getattr(self, f"I_down{level}")(i), getattr(self, f"V_down{level}")(v))
            pair = torch.cat((i, v), 1)
            feats = i = v = None  # type: ignore[assignment]
            fused.append(getattr(self, f"f_{level}")(pair))
            del pair
            if down is not None:
                feats = (getattr(self, f"I_en_{level + 1}")(down[0]), getattr(self, f"V_en_{level + 1}")(down[1]))
        return fused

    def _encode(self, x: torch.Tensor, prefix: str) -> list[torch.Tensor]:
        feats = [getattr(self, f"{prefix}_en_1")(x)]
        for level in (1, 2, 3):
            down = getattr(self, f"{prefix}_down{level}")
            feats.append(getattr(self, f"{prefix}_en_{level + 1}")(down(feats[-1])))
        return feats

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # training: the release's order
            i1, i2, i3, i4 = self._encode(ir, "I")
            v1, v2, v3, v4 = self._encode(vis, "V")
            f1 = self.f_1(torch.cat((i1, v1), 1))
            f2 = self.f_2(torch.cat((i2, v2), 1))
            f3 = self.f_3(torch.cat((i3, v3), 1))
            f4 = self.f_4(torch.cat((i4, v4), 1))
        else:
            f1, f2, f3, f4 = self._encode_and_fuse(ir, vis)
        out = self.up4(self.de_4(f4))
        out = self.up3(self.de_3(torch.cat((out, f3), 1)))
        out = self.up2(self.de_2(torch.cat((out, f2), 1)))
        out = self.de_1(torch.cat((out, f1), 1))
        return self.last(out).contiguous()

