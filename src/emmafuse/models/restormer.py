"""The global branch of a Restormer-CNN block: channel LayerNorm, channel attention, gated MLP.

Restormer (Zamir et al., CVPR 2022) pieces as EMMA's U-Fuser uses them, with the inference
fast paths described in :mod:`emmafuse.models.ufuser` (folded attention and MLP weights, the
fused LayerNorm). Module and parameter names follow the authors' release.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emmafuse.errors import InputError
from emmafuse.models.fast_paths import FastPaths, FoldCache, fold_dtype, is_nhwc, reflect_pad1

__all__ = ["ChannelAttention", "ChannelLayerNorm", "GatedMlp", "GlobalBranch", "ReflectConv2d", "conv3x3"]


class ReflectConv2d(nn.Conv2d):
    """``nn.Conv2d`` with ``padding=1, padding_mode="reflect"`` (same parameters and state dict)
    whose inference padding is :func:`~emmafuse.models.fast_paths.reflect_pad1` (same values)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # training: nn.Conv2d's own path, untouched
            return super().forward(x)
        return F.conv2d(reflect_pad1(x), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv3x3(cin: int, cout: int, *, bias: bool, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A 3x3 convolution with reflect padding (the network's default)."""
    return ReflectConv2d(cin, cout, 3, stride=stride, padding=1, bias=bias, groups=groups, padding_mode="reflect")


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
        if self.fast.fused_layernorm and is_nhwc(x) and not torch.is_grad_enabled():
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
            raise InputError(f"attention width {dim} is not divisible by {num_heads} heads", parameter="num_heads")
        self.num_heads = num_heads
        self.scale = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv1 = nn.Conv2d(dim, dim * 3, 1, bias=False)
        # Zero padding here (unlike the rest of the network) as in the release.
        self.qkv2 = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, bias=False)
        self.proj = nn.Conv2d(dim, dim, 1, bias=False)
        self.fast = fast if fast is not None else FastPaths()
        self._fold = FoldCache()

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
        Cached until one of the three weights changes (see :class:`~emmafuse.models.fast_paths.FoldCache`).
        """
        return self._fold.get((self.qkv1.weight, self.qkv2.weight, self.proj.weight), self._compute_fold)

    def _compute_fold(self, acc: torch.dtype | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        w1 = self.qkv1.weight
        w2 = self.qkv2.weight
        acc = acc or fold_dtype(w2)
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
        self.dwconv = conv3x3(hidden * 2, hidden * 2, bias=False, groups=hidden)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)
        self.fast = fast if fast is not None else FastPaths()
        self._fold = FoldCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast.fold_mlp and not torch.is_grad_enabled():
            w1, w2 = self.folded_weights()
            xp = reflect_pad1(x)
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
        acc = acc or fold_dtype(w_dw)
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
