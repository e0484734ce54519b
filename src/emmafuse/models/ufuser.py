"""The U-Fuser network of EMMA (Zhao et al., CVPR 2024).

A two-branch U-Net: one encoder per modality, a fusion unit per scale and a shared decoder.
Every unit is a *Restormer-CNN block*: an embedding convolution, then a global branch
(Restormer-style channel attention + gated MLP) and a local branch (two residual blocks)
whose outputs are concatenated and merged by a 3x3 convolution.

Module names and parameter shapes follow the authors' release exactly, so their
``state_dict`` loads with ``strict=True`` (see ``tests/test_model_parity.py``).
This module holds networks only: no file or image I/O.

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
import torch.nn.functional as F
from torch import nn

from emmafuse.models.size_req import SizeRequirements
from emmafuse.runner import weight_version

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

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> "UFuserConfig":
        """The architecture a U-Fuser ``state_dict`` was made with, read from its tensor shapes.

        The widths come from the four visible-encoder embeddings, the input channels from the
        first one, the heads from the first attention's ``scale``. Whether every other tensor
        fits is :func:`emmafuse.checkpoint.build_ufuser`'s check.

        Raises:
            ValueError: a tensor these are read from is missing or has an unexpected shape, or
                the widths are not multiples of the heads (not a U-Fuser state dict).
        """
        def shape(key: str, ndim: int) -> tuple[int, ...]:
            t = state.get(key)
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"cannot tell the U-Fuser architecture: the state dict has no tensor '{key}'")
            if t.ndim != ndim:
                raise ValueError(
                    f"cannot tell the U-Fuser architecture: '{key}' has shape {tuple(t.shape)}, expected {ndim} axes"
                )
            return tuple(int(s) for s in t.shape)

        c1, c2, c3, c4 = (shape(f"V_en_{i}.embed.weight", 4)[0] for i in range(1, 5))
        in_channels = shape("V_en_1.embed.weight", 4)[1]
        num_heads = shape("V_en_1.GlobalFeature.attn.scale", 3)[0]
        if num_heads < 1 or any(c % num_heads for c in (c1, c2, c3, c4)):
            raise ValueError(
                f"cannot tell the U-Fuser architecture: widths {(c1, c2, c3, c4)} are not multiples of {num_heads} heads"
            )
        return cls(channels=(c1, c2, c3, c4), num_heads=num_heads, in_channels=in_channels)


@dataclass
class FastPaths:
    """Switches of the inference fast paths (shared by all modules of one :class:`UFuser`)."""

    fold_attention: bool = True
    fold_mlp: bool = True
    fused_layernorm: bool = True
    fused_concat: bool = True
    channels_last: bool = True
    #: Use the two folds with gradients too (training): the composed weights are rebuilt from
    #: the parameters every call, inside autograd, so gradients reach every original weight.
    #: Off by default: training then runs the release's computation unchanged.
    train_folds: bool = False


def _conv3x3(cin: int, cout: int, *, bias: bool, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        cin, cout, 3, stride=stride, padding=1, bias=bias, groups=groups, padding_mode="reflect"
    )


def _is_nhwc(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor, with affine weight and bias.

    Equivalent to the release's ``to_3d -> LayerNorm -> to_4d`` without the two transposes.
    """

    def __init__(self, dim: int, eps: float = 1e-5, fast: FastPaths | None = None) -> None:
        super().__init__()
        self.eps = eps
        self.body = _AffineParams(dim)
        self.fast = fast if fast is not None else FastPaths()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.body.weight
        b = self.body.bias
        if self.fast.fused_layernorm and _is_nhwc(x) and not torch.is_grad_enabled():
            # the NHWC view of a channels-last tensor is contiguous: one fused kernel, no copy
            y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), w, b, self.eps)
            return y.permute(0, 3, 1, 2).to(x.dtype)
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)


class _AffineParams(nn.Module):
    """Holds ``weight``/``bias`` under the ``body.`` prefix the released checkpoint uses."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


class _FoldCache:
    """Derived inference weights, recomputed when a source weight changes.

    The key is the storage, version counter, dtype and device of every source tensor, so
    in-place updates (optimisers, ``load_state_dict``), ``.to()`` and ``.half()`` all invalidate
    it. Under ``torch.compile`` the fold is traced into the graph instead (a few tiny ops).
    """

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.value: Any = None

    def get(self, sources: tuple[torch.Tensor, ...], compute: Any) -> Any:
        device_type = sources[0].device.type
        if _is_compiling():
            with torch.autocast(device_type, enabled=False):
                return compute()
        key = tuple((t.data_ptr(), weight_version(t), t.dtype, t.device) for t in sources)
        if key != self.key or self.value is None:
            # full precision whatever the caller's autocast: the folds are tiny
            with torch.no_grad(), torch.autocast(device_type, enabled=False):
                self.value = compute()
            self.key = key
        return self.value


def _fold_dtype(t: torch.Tensor) -> torch.dtype:
    """Fold in float64 where the device has it (cheap: the tensors are tiny)."""
    return torch.float32 if t.device.type == "mps" else torch.float64


class ChannelAttention(nn.Module):
    """Restormer's transposed (channel) self-attention.

    Queries and keys are L2-normalised over *all pixels*, so the attention map (per head,
    ``c_head x c_head``) is a global statistic of the image: outputs of crops differ from
    crops of the output. With one channel per head the softmax is over a single entry and
    equals 1, so the block reduces to ``proj(v)``; we use that identity as a fast path.
    """

    def __init__(self, dim: int, num_heads: int, fast: FastPaths | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv1 = nn.Conv2d(dim, dim * 3, 1, bias=False)
        # Zero padding here (unlike the rest of the network) as in the release.
        self.qkv2 = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, bias=False)
        self.proj = nn.Conv2d(dim, dim, 1, bias=False)
        self.fast = fast if fast is not None else FastPaths()
        self._fold = _FoldCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast.fold_attention and not torch.is_grad_enabled():
            return self._forward_folded(x)
        if self.fast.train_folds and torch.is_grad_enabled():
            return self._forward_folded(x, self._compute_fold(self.qkv2.weight.dtype))
        return self._forward_plain(x)

    # ------------------------------------------------------------------ plain (release) path
    def _forward_plain(self, x: torch.Tensor) -> torch.Tensor:
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

    # ------------------------------------------------------------------ folded path
    def folded_weights(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(w_qk, w_v)``: 3x3 weights of ``qkv2 . qkv1`` split in q|k and v.

        With one channel per head ``w_qk`` is ``None`` and ``w_v`` already includes ``proj``.
        Cached until one of the three weights changes (see :class:`_FoldCache`).
        """
        return self._fold.get((self.qkv1.weight, self.qkv2.weight, self.proj.weight), self._compute_fold)

    def _compute_fold(self, acc: torch.dtype | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        w1 = self.qkv1.weight
        w2 = self.qkv2.weight
        acc = acc or _fold_dtype(w2)
        c = w1.shape[1]
        folded = torch.einsum("omyx,mi->oiyx", w2.to(acc), w1[:, :, 0, 0].to(acc))
        w_qk, w_v = folded[: 2 * c], folded[2 * c :]
        if c == self.num_heads:
            p = self.proj.weight[:, :, 0, 0].to(acc)
            w_v = torch.einsum("om,miyx->oiyx", p, w_v)
            return None, w_v.to(w2.dtype).contiguous()
        return w_qk.to(w2.dtype).contiguous(), w_v.to(w2.dtype).contiguous()

    def _forward_folded(
        self, x: torch.Tensor, weights: tuple[torch.Tensor | None, torch.Tensor] | None = None
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        w_qk, w_v = weights if weights is not None else self.folded_weights()
        if w_qk is None:
            return F.conv2d(x, w_v, padding=1)
        heads = self.num_heads
        d = c // heads
        qk = F.conv2d(x, w_qk, padding=1)
        attn = self._attention_map(qk, heads)  # (b, heads, d, d), float32 or wider
        # proj . blockdiag(attn): one (c x c) channel mix per image (tiny: full precision)
        with torch.autocast(x.device.type, enabled=False):
            p = self.proj.weight[:, :, 0, 0].to(attn.dtype).view(c, heads, d)
            mix = torch.einsum("ohi,bhij->bohj", p, attn).reshape(b, c, c)
            if b == 1:
                w_out = (mix[0] @ w_v.to(attn.dtype).reshape(c, -1)).reshape(c, c, 3, 3).to(w_v.dtype)
        if b == 1:
            return F.conv2d(x, w_out, padding=1)
        v = F.conv2d(x, w_v, padding=1)
        if v.is_contiguous(memory_format=torch.channels_last):
            flat = v.permute(0, 2, 3, 1).reshape(b, h * w, c)
            out = torch.matmul(flat, mix.transpose(1, 2).to(flat.dtype))
            return out.view(b, h, w, c).permute(0, 3, 1, 2)
        out = torch.matmul(mix.to(v.dtype), v.reshape(b, c, h * w))
        return out.view(b, c, h, w)

    def _attention_map(self, qk: torch.Tensor, heads: int) -> torch.Tensor:
        """Softmax of scaled cosine similarities per head (sums over all pixels).

        Computed in float32 at least: the squared norms overflow float16 on large images.
        """
        b, c2, h, w = qk.shape
        c = c2 // 2
        d = c // heads
        with torch.autocast(qk.device.type, enabled=False):
            x = qk.to(torch.promote_types(qk.dtype, torch.float32))
            if x.is_contiguous(memory_format=torch.channels_last):
                x = x.permute(0, 2, 3, 1).reshape(b, h * w, 2, heads, d)
                q, k = x[:, :, 0], x[:, :, 1]  # (b, hw, heads, d)
                gram = torch.einsum("bphi,bphj->bhij", q, k)
                qn = q.pow(2).sum(1)  # (b, heads, d)
                kn = k.pow(2).sum(1)
            else:
                x = x.reshape(b, 2, heads, d, h * w)
                q, k = x[:, 0], x[:, 1]  # (b, heads, d, hw)
                gram = q @ k.transpose(-2, -1)
                qn = q.pow(2).sum(-1)
                kn = k.pow(2).sum(-1)
            # F.normalize divides by max(||.||, 1e-12)
            qn = qn.sqrt().clamp_min(1e-12)
            kn = kn.sqrt().clamp_min(1e-12)
            attn = gram / (qn.unsqueeze(-1) * kn.unsqueeze(-2)) * self.scale.to(x.dtype)
            return attn.softmax(dim=-1)


class GatedMlp(nn.Module):
    """Restormer's gated depth-wise feed-forward network (GELU gate)."""

    def __init__(self, dim: int, expansion: float = 1.0, fast: FastPaths | None = None) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.dwconv = _conv3x3(hidden * 2, hidden * 2, bias=False, groups=hidden)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)
        self.fast = fast if fast is not None else FastPaths()
        self._fold = _FoldCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast.fold_mlp and not torch.is_grad_enabled():
            w1, w2 = self.folded_weights()
            xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
            return self.project_out(F.gelu(F.conv2d(xp, w1)).mul_(F.conv2d(xp, w2)))
        if self.fast.train_folds and torch.is_grad_enabled():
            w1, w2 = self._compute_fold(self.dwconv.weight.dtype)
            xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
            return self.project_out(F.gelu(F.conv2d(xp, w1)) * F.conv2d(xp, w2))
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)

    def folded_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense 3x3 weights of ``dwconv . project_in`` for the GELU half and the gate half."""
        return self._fold.get((self.project_in.weight, self.dwconv.weight), self._compute_fold)

    def _compute_fold(self, acc: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        w_in = self.project_in.weight[:, :, 0, 0]  # (2h, dim)
        w_dw = self.dwconv.weight  # (2h, 2h / groups, 3, 3)
        acc = acc or _fold_dtype(w_dw)
        out_ch, per_group = w_dw.shape[:2]
        # output channel o of the grouped conv reads input channels first(o) .. first(o)+per_group-1
        first = torch.arange(out_ch, device=w_dw.device) // per_group * per_group
        idx = first[:, None] + torch.arange(per_group, device=w_dw.device)[None, :]
        folded = torch.einsum("ojyx,oji->oiyx", w_dw.to(acc), w_in.to(acc)[idx])
        half = out_ch // 2
        return folded[:half].to(w_dw.dtype).contiguous(), folded[half:].to(w_dw.dtype).contiguous()


class GlobalBranch(nn.Module):
    """Pre-norm transformer block: attention then gated MLP, both residual."""

    def __init__(self, dim: int, num_heads: int, fast: FastPaths | None = None) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim, fast=fast)
        self.attn = ChannelAttention(dim, num_heads, fast=fast)
        self.norm2 = ChannelLayerNorm(dim, fast=fast)
        self.mlp = GatedMlp(dim, fast=fast)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        if torch.is_grad_enabled():
            x = x + self.attn(self.norm1(x))
            y = x + self.mlp(self.norm2(x))
            return y if out is None else out.copy_(y)
        # inference: residual sums in place (same values), the last one written into ``out``
        x = self.attn(self.norm1(x)).add_(x)
        return torch.add(self.mlp(self.norm2(x)), x, out=out) if out is not None else self.mlp(self.norm2(x)).add_(x)


class ResBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv3x3(dim, dim, bias=True), nn.ReLU(), _conv3x3(dim, dim, bias=True))

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        if torch.is_grad_enabled():
            y = x + self.conv(x)
            return y if out is None else out.copy_(y)
        # inference: in-place ReLU and residual sum (same values, fewer allocations)
        h = self.conv[2](self.conv[0](x).relu_())
        return torch.add(h, x, out=out) if out is not None else h.add_(x)


class LocalBranch(nn.Module):
    def __init__(self, dim: int, num_blocks: int = 2) -> None:
        super().__init__()
        self.Extraction = nn.Sequential(*[ResBlock(dim) for _ in range(num_blocks)])

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        blocks = list(self.Extraction)
        for block in blocks[:-1]:
            x = block(x)
        return blocks[-1](x, out=out)


class RestormerCNNBlock(nn.Module):
    """Embed, run the global and local branches in parallel, merge with a 3x3 conv."""

    def __init__(self, cin: int, cout: int, num_heads: int, fast: FastPaths | None = None) -> None:
        super().__init__()
        self.fast = fast if fast is not None else FastPaths()
        self.embed = _conv3x3(cin, cout, bias=False)
        self.GlobalFeature = GlobalBranch(cout, num_heads, fast=self.fast)
        self.LocalFeature = LocalBranch(cout)
        self.FFN = _conv3x3(cout * 2, cout, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        if torch.is_grad_enabled():  # training: the release's computation, untouched
            return self.FFN(torch.cat((self.GlobalFeature(x), self.LocalFeature(x)), 1))
        if self.fast.channels_last:
            # a 1-channel input gives an ambiguous layout: make the NHWC choice explicit
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.fast.fused_concat or _is_compiling():  # the compiler fuses cat + pad itself
            return self.FFN(torch.cat((self.GlobalFeature(x), self.LocalFeature(x)), 1))
        # Both branches write straight into one reflect-padded buffer: no concatenation copy
        # and no padding copy before the merging 3x3 convolution.
        b, c, h, w = x.shape
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        buf = torch.empty((b, 2 * c, h + 2, w + 2), dtype=x.dtype, device=x.device, memory_format=fmt)
        self.GlobalFeature(x, out=buf[:, :c, 1:-1, 1:-1])
        self.LocalFeature(x, out=buf[:, c:, 1:-1, 1:-1])
        _reflect_border_(buf)
        return F.conv2d(buf, self.FFN.weight, self.FFN.bias)


def _reflect_border_(buf: torch.Tensor) -> torch.Tensor:
    """Fill the 1-pixel border of ``buf`` by reflection of its interior (like ``F.pad``)."""
    buf[:, :, 0, 1:-1] = buf[:, :, 2, 1:-1]
    buf[:, :, -1, 1:-1] = buf[:, :, -3, 1:-1]
    buf[:, :, :, 0] = buf[:, :, :, 2]
    buf[:, :, :, -1] = buf[:, :, :, -3]
    return buf


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.ReLU())


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

    def set_fast_paths(self, enabled: bool | None = None, **flags: bool) -> "UFuser":
        """Switch inference fast paths; ``set_fast_paths(False)`` gives the plain release path.

        Flags: ``fold_attention``, ``fold_mlp``, ``fused_layernorm``, ``fused_concat``,
        ``channels_last`` (see the module doc).
        All are exact rewrites: outputs agree with the plain path to float32 rounding.
        """
        names = {f.name for f in fields(FastPaths)}
        unknown = set(flags) - names
        if unknown:
            raise ValueError(f"unknown fast paths {sorted(unknown)}; known: {sorted(names)}")
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

