"""The public fusion API: :class:`Fuser` wraps a U-Fuser network with everything around it.

``Fuser.fuse(ir, vis)`` takes two registered images of the same size (numpy, PIL or torch),
handles colour (YCbCr: the luminance is fused, the chroma of the colour input is kept), pads
any size to what the network needs, batches, runs on CPU or CUDA in the requested precision
and gives the result back in the container and dtype of the visible input.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch

from emmafuse.color import rgb_to_ycbcr, ycbcr_to_rgb
from emmafuse.inputs import ImageSpec, decode_image, encode_image, is_batch, split_batch
from emmafuse.models import UFuser
from emmafuse.padding import crop, pad_to_network

__all__ = ["Fuser", "OutputRange", "PrecisionLike"]

OutputRange = Literal["clamp", "minmax"]
PrecisionLike = Union[str, torch.dtype]

_PRECISIONS = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def _parse_precision(dtype: PrecisionLike) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        return dtype
    key = str(dtype).lower().replace("torch.", "")
    if key not in _PRECISIONS:
        raise ValueError(f"dtype must be one of 'float32', 'float16', 'bfloat16', got {dtype!r}")
    return _PRECISIONS[key]


def _parse_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: {device!r} is not a valid torch device ({exc})") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} was requested but CUDA is not available on this machine")
    return dev


@dataclass
class _Pair:
    """One decoded input pair, ready for the network."""

    ir_y: torch.Tensor  # (1, H, W)
    vis_y: torch.Tensor  # (1, H, W)
    chroma: torch.Tensor | None  # (2, H, W) Cb, Cr of the colour input
    alpha: torch.Tensor | None  # (1, H, W)
    out_spec: ImageSpec


def _split_planes(chw: torch.Tensor, spec: ImageSpec) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(luma, chroma or None, alpha or None) of a decoded image."""
    alpha = chw[-1:] if spec.has_alpha else None
    if spec.has_color:
        ycc = rgb_to_ycbcr(chw[None, :3])[0]
        return ycc[:1], ycc[1:], alpha
    return chw[:1], None, alpha


def _prepare_pair(ir: object, vis: object, index: int | None) -> _Pair:
    suffix = "" if index is None else f"[{index}]"
    ir_chw, ir_spec = decode_image(ir, f"ir{suffix}")
    vis_chw, vis_spec = decode_image(vis, f"vis{suffix}")
    if (ir_spec.height, ir_spec.width) != (vis_spec.height, vis_spec.width):
        raise ValueError(
            f"ir{suffix} and vis{suffix} must have the same height and width (registered pair): "
            f"ir is {ir_spec.height}x{ir_spec.width}, vis is {vis_spec.height}x{vis_spec.width}"
        )
    ir_y, ir_chroma, ir_alpha = _split_planes(ir_chw, ir_spec)
    vis_y, vis_chroma, vis_alpha = _split_planes(vis_chw, vis_spec)
    # The visible image's colour wins; a colour IR slot (PET/SPECT in medical pairs) is used otherwise.
    chroma = vis_chroma if vis_chroma is not None else ir_chroma
    alpha = vis_alpha if vis_alpha is not None else ir_alpha
    return _Pair(ir_y, vis_y, chroma, alpha, vis_spec)


def _apply_range(fused: torch.Tensor, policy: OutputRange) -> torch.Tensor:
    """Per-image output range policy on ``(N, 1, H, W)``."""
    if policy == "minmax":
        flat = fused.flatten(1)
        lo = flat.min(1).values.view(-1, 1, 1, 1)
        hi = flat.max(1).values.view(-1, 1, 1, 1)
        span = hi - lo
        # A constant output has nothing to stretch: keep it instead of dividing by zero.
        stretched = (fused - lo) / torch.where(span > 0, span, torch.ones_like(span))
        fused = torch.where(span > 0, stretched, fused)
    return fused.clamp(0.0, 1.0)


def _finish(fused_y: torch.Tensor, pair: _Pair) -> Any:
    """Put chroma and alpha back and encode in the visible input's container."""
    planes = fused_y
    if pair.chroma is not None:
        rgb = ycbcr_to_rgb(torch.cat((fused_y, pair.chroma), 0)[None])[0]
        planes = rgb.clamp(0.0, 1.0)
    if pair.alpha is not None:
        planes = torch.cat((planes, pair.alpha), 0)
    return encode_image(planes, pair.out_spec)


class Fuser:
    """Fuses registered image pairs with a U-Fuser network.

    Create one with :func:`emmafuse.load`. A ``Fuser`` is cheap to call repeatedly; it keeps the
    network on its device in eval mode.

    Args:
        model: the network.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available.
        dtype: compute precision, ``"float32"`` (default), ``"float16"`` or ``"bfloat16"``.
            Half precision uses autocast; any output with NaN/Inf is recomputed in float32.
        info: facts about the weights (name, file, sha256, metadata) shown by ``repr``.
    """

    def __init__(
        self,
        model: UFuser,
        *,
        device: str | torch.device | None = None,
        dtype: PrecisionLike = "float32",
        info: dict[str, Any] | None = None,
    ) -> None:
        self.model = model.eval()
        self.info = dict(info or {})
        self._device = torch.device("cpu")
        self._dtype = torch.float32
        self.to(device if device is not None else _parse_device(None), dtype)

    # ----------------------------------------------------------------- configuration
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def to(self, device: str | torch.device | None = None, dtype: PrecisionLike | None = None) -> "Fuser":
        """Move to ``device`` and/or switch compute precision; returns ``self``."""
        new_device = self._device if device is None else _parse_device(device)
        new_dtype = self._dtype if dtype is None else _parse_precision(dtype)
        if new_dtype == torch.float16 and new_device.type != "cuda":
            raise ValueError("dtype float16 needs a CUDA device; use 'bfloat16' or 'float32' on CPU")
        self.model.to(new_device)
        self._device, self._dtype = new_device, new_dtype
        return self

    def __repr__(self) -> str:
        name = self.info.get("name") or self.info.get("path") or "custom"
        return f"Fuser(weights={name!r}, device='{self._device}', dtype={str(self._dtype).replace('torch.', '')})"

    # ----------------------------------------------------------------- network
    def _autocast(self) -> Any:
        if self._dtype == torch.float32:
            return torch.autocast(self._device.type, enabled=False)
        return torch.autocast(self._device.type, dtype=self._dtype)

    @torch.inference_mode()
    def fuse_tensor(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Low-level fusion of luminance batches.

        Args:
            ir, vis: ``(N, 1, H, W)`` float tensors in [0, 1] of any size (padded internally).

        Returns:
            The raw network output ``(N, 1, H, W)`` float32 in (0, 1), on the fuser's device,
            with no range policy applied.
        """
        if ir.ndim != 4 or ir.shape[1] != 1 or ir.shape != vis.shape:
            raise ValueError(
                f"fuse_tensor expects two (N, 1, H, W) tensors of one shape, got {tuple(ir.shape)} and {tuple(vis.shape)}"
            )
        ir = ir.to(self._device, torch.float32, non_blocking=True)
        vis = vis.to(self._device, torch.float32, non_blocking=True)
        ir_p, pads = pad_to_network(ir)
        vis_p, _ = pad_to_network(vis)
        with self._autocast():
            out = self.model(ir_p, vis_p)
        out = out.float()
        if self._dtype != torch.float32 and not torch.isfinite(out).all():
            warnings.warn(
                f"{self._dtype} inference produced NaN/Inf; recomputing this batch in float32",
                RuntimeWarning,
                stacklevel=3,
            )
            out = self.model(ir_p, vis_p).float()
        return crop(out, pads)

    # ----------------------------------------------------------------- public API
    def fuse(
        self,
        ir: Any,
        vis: Any,
        *,
        output_range: OutputRange = "clamp",
        batch_size: int = 8,
    ) -> Any:
        """Fuse an infrared (or CT/PET/SPECT) image with a visible (or MRI) image.

        Args:
            ir: the first modality: a numpy array ``(H, W)``, ``(H, W, 1|3|4)``, a PIL image or
                a torch tensor ``(H, W)``/``(C, H, W)``; uint8, uint16 or float in [0, 1].
                A list, or a 4-D batch (numpy ``(N, H, W, C)``, torch ``(N, C, H, W)``) fuses
                many pairs; ``vis`` must then be a list/batch of the same length.
            vis: the second modality, same height and width as ``ir``.
            output_range: ``"clamp"`` (default) keeps the network's output as it is (it is a
                sigmoid, so already in [0, 1]): stable across frames, tiles and batches.
                ``"minmax"`` stretches each fused image to the full [0, 1] range, as the
                authors' test script does; use it to reproduce the paper's metrics.
            batch_size: how many same-sized pairs go through the network at once.

        Returns:
            The fused image in the container type (numpy / PIL / torch) and dtype of ``vis``.
            It is colour when either input is colour (the visible image's chroma is preferred),
            keeps the alpha channel of an RGBA input, and is gray when both are gray. For lists
            and batches the result is a list / batch of the same kind.

        Raises:
            TypeError: unsupported container, dtype or PIL mode.
            ValueError: mismatched sizes, empty images, NaN/Inf, floats outside [0, 1],
                unsupported channel counts, bad options.
        """
        if output_range not in ("clamp", "minmax"):
            raise ValueError(f"output_range must be 'clamp' or 'minmax', got {output_range!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

        ir_items, vis_items, kind = self._as_items(ir, vis)
        indexed = kind != "single"
        pairs = [_prepare_pair(a, b, i if indexed else None) for i, (a, b) in enumerate(zip(ir_items, vis_items))]
        fused = self._run_pairs(pairs, output_range, batch_size)
        outputs = [_finish(y, p) for y, p in zip(fused, pairs)]
        if kind == "single":
            return outputs[0]
        if kind == "list":
            return outputs
        return self._stack_batch(outputs, vis)

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _as_items(ir: Any, vis: Any) -> tuple[list[Any], list[Any], str]:
        if isinstance(ir, (list, tuple)) or isinstance(vis, (list, tuple)):
            if not (isinstance(ir, (list, tuple)) and isinstance(vis, (list, tuple))):
                raise TypeError("ir and vis must both be lists (or both single images)")
            if len(ir) != len(vis):
                raise ValueError(f"ir has {len(ir)} images but vis has {len(vis)}")
            if not ir:
                raise ValueError("ir and vis are empty lists")
            return list(ir), list(vis), "list"
        if is_batch(ir) or is_batch(vis):
            if not (is_batch(ir) and is_batch(vis)):
                raise ValueError(
                    f"ir and vis must both be 4-D batches or both single images, got shapes "
                    f"{tuple(getattr(ir, 'shape', ()))} and {tuple(getattr(vis, 'shape', ()))}"
                )
            if ir.shape[0] != vis.shape[0]:
                raise ValueError(f"ir batch has {ir.shape[0]} images but vis batch has {vis.shape[0]}")
            return split_batch(ir, "ir"), split_batch(vis, "vis"), "batch"
        return [ir], [vis], "single"

    @staticmethod
    def _stack_batch(outputs: Sequence[Any], like: Any) -> Any:
        if isinstance(like, torch.Tensor):
            return torch.stack([o if o.ndim == 3 else o.unsqueeze(0) for o in outputs])
        import numpy as np

        return np.stack([o if o.ndim == 3 else o[..., None] for o in outputs])

    def _run_pairs(self, pairs: Sequence[_Pair], output_range: OutputRange, batch_size: int) -> list[torch.Tensor]:
        """Fused luminance ``(1, H, W)`` CPU tensors, same-size pairs batched together."""
        results: list[torch.Tensor | None] = [None] * len(pairs)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(pairs):
            by_size.setdefault(tuple(p.ir_y.shape[-2:]), []).append(i)
        for indices in by_size.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                ir = torch.stack([pairs[i].ir_y for i in chunk])
                vis = torch.stack([pairs[i].vis_y for i in chunk])
                fused = _apply_range(self.fuse_tensor(ir, vis), output_range).cpu()
                for j, i in enumerate(chunk):
                    results[i] = fused[j]
        return [r for r in results if r is not None]
