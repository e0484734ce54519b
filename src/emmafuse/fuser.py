"""The public fusion API: :class:`Fuser` wraps a U-Fuser network with everything around it.

``Fuser.fuse(ir, vis)`` takes two registered images of the same size (numpy, PIL or torch),
handles colour (YCbCr: the luminance is fused, the chroma of the colour input is kept; RGB
images whose channels are equal count as gray, see :func:`emmafuse.color.is_gray_rgb`), pads
any size to what the network needs, batches, runs on CPU or CUDA in the requested precision
(tiling images that would not fit in memory, see :mod:`emmafuse.tiling`) and gives the result
back in the container and dtype of the visible input.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch

from emmafuse.color import is_gray_rgb, rgb_to_ycbcr, ycbcr_to_rgb
from emmafuse.inputs import ImageSpec, decode_image, encode_image, is_batch, split_batch
from emmafuse.models import UFuser
from emmafuse.models.ufuser import weight_version
from emmafuse.padding import crop, pad_to_network, padded_size
from emmafuse.tiling import (
    DEFAULT_OVERLAP,
    TileLike,
    TilePlan,
    auto_tile_size,
    bytes_per_pixel,
    check_tile_options,
    fuse_tiled,
    memory_budget,
    plan_tiles,
    run_pipelined,
)

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
    rgb_out: bool = False  # gray result written as R = G = B (a gray pair in a colour batch)
    notes: tuple[str, ...] = ()  # warnings about the inputs, raised by Fuser.fuse


#: Colour conversion and output encoding run in strips of this many rows, so that the float
#: temporaries of a very large image (8K and up) stay small; the result is identical.
_STRIP_ROWS = 256
_STRIP_MIN_PIXELS = 1 << 22


def _row_strips(height: int, width: int) -> list[tuple[int, int]]:
    if height * width < _STRIP_MIN_PIXELS:
        return [(0, height)]
    return [(r, min(r + _STRIP_ROWS, height)) for r in range(0, height, _STRIP_ROWS)]


def _split_planes(chw: torch.Tensor, spec: ImageSpec) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(luma, chroma or None, alpha or None) of a decoded image.

    An RGB(A) image whose channels are equal is gray: its luma is its first channel (exactly
    what the gray image would give) and it has no chroma to offer.
    """
    alpha = chw[-1:].clone() if spec.has_alpha else None
    if spec.has_color and not is_gray_rgb(chw[:3]):
        h, w = chw.shape[-2:]
        ycc = torch.empty(3, h, w, dtype=chw.dtype)
        for r0, r1 in _row_strips(h, w):
            ycc[:, r0:r1] = rgb_to_ycbcr(chw[None, :3, r0:r1])[0]
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
    # Gray-as-RGB images have no chroma here, so a real colour image in either slot keeps its colour.
    chroma = vis_chroma if vis_chroma is not None else ir_chroma
    alpha = vis_alpha if vis_alpha is not None else ir_alpha
    if vis_spec.gray_only:  # the output is the fused luminance, not the red channel of a colour result
        chroma = alpha = None
    notes = tuple(n for n in (ir_spec.note, vis_spec.note) if n)
    return _Pair(ir_y, vis_y, chroma, alpha, vis_spec, notes=notes)


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


def _finish_planes(
    fused_y: torch.Tensor, chroma: torch.Tensor | None, alpha: torch.Tensor | None, rgb_out: bool = False
) -> torch.Tensor:
    planes = fused_y
    if chroma is not None:
        rgb = ycbcr_to_rgb(torch.cat((fused_y, chroma), 0)[None])[0]
        planes = rgb.clamp(0.0, 1.0)
    elif rgb_out:  # exact copies, not a YCbCr round trip: the channels stay equal
        planes = fused_y.expand(3, -1, -1)
    if alpha is not None:
        planes = torch.cat((planes, alpha), 0)
    return planes


def _finish(fused_y: torch.Tensor, pair: _Pair) -> Any:
    """Put chroma and alpha back and encode in the visible input's container."""
    h, w = fused_y.shape[-2:]
    strips = _row_strips(h, w)
    if len(strips) == 1 or pair.out_spec.kind == "pil":
        return encode_image(_finish_planes(fused_y, pair.chroma, pair.alpha, pair.rgb_out), pair.out_spec)
    # large numpy / torch outputs: convert and encode row strips, then join them (same values)
    parts = []
    for r0, r1 in strips:
        chroma = pair.chroma[:, r0:r1] if pair.chroma is not None else None
        alpha = pair.alpha[:, r0:r1] if pair.alpha is not None else None
        parts.append(encode_image(_finish_planes(fused_y[:, r0:r1], chroma, alpha, pair.rgb_out), pair.out_spec))
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts, dim=-2 if first.ndim == 3 else 0)
    import numpy as np

    return np.concatenate(parts, axis=0)


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
        self._compiled: Any = None  # torch.compile'd forward, see compile()
        self._graphs: _CudaGraphs | None = None  # see use_cuda_graphs()
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
        if new_device != self._device and self._graphs is not None:
            self._graphs = _CudaGraphs(self._graphs.max_shapes) if new_device.type == "cuda" else None
        self.model.to(new_device)
        self._device, self._dtype = new_device, new_dtype
        return self

    def compile(self, **compile_kwargs: Any) -> "Fuser":
        """Compile the network's forward with :func:`torch.compile`; returns ``self``.

        Keyword arguments go to ``torch.compile`` (e.g. ``mode="max-autotune"``, or
        ``mode="reduce-overhead"`` for CUDA graphs made by the compiler, ``dynamic=False``).
        Compilation happens on the first call of each new input shape and takes tens of seconds;
        it pays off for long runs of same-sized images on a GPU. On the CPU, inductor needs a
        C++ compiler. ``compile()`` and :meth:`use_cuda_graphs` are alternatives (the last one
        called wins). Outputs agree with the eager path to float rounding.
        """
        self.model.prepare_inference()
        self._compiled = torch.compile(self.model, **compile_kwargs)
        self._graphs = None
        return self

    def use_cuda_graphs(self, enabled: bool = True, *, max_shapes: int = 4) -> "Fuser":
        """Replay CUDA graphs for repeated input shapes (CUDA only); returns ``self``.

        The first call with a new ``(batch, height, width)`` records a graph of the eager
        network (a few warm-up runs); later calls of that shape replay it, removing the
        per-kernel launch cost that dominates small images. Up to ``max_shapes`` graphs are
        kept (least recently used dropped); each holds its own activation memory. Graphs are
        re-recorded when the weights change. Half precision with a NaN/Inf fallback still works
        (the float32 recomputation runs eagerly).
        """
        if not enabled:
            self._graphs = None
            return self
        if self._device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device; this Fuser runs on {self._device}")
        if not isinstance(max_shapes, int) or max_shapes < 1:
            raise ValueError(f"max_shapes must be a positive integer, got {max_shapes!r}")
        self._compiled = None
        self._graphs = _CudaGraphs(max_shapes)
        return self

    def __repr__(self) -> str:
        name = self.info.get("name") or self.info.get("path") or "custom"
        return f"Fuser(weights={name!r}, device='{self._device}', dtype={str(self._dtype).replace('torch.', '')})"

    # ----------------------------------------------------------------- network
    def _autocast(self) -> Any:
        if self._dtype == torch.float32:
            return torch.autocast(self._device.type, enabled=False)
        return torch.autocast(self._device.type, dtype=self._dtype)

    def _network(self, ir_p: torch.Tensor, vis_p: torch.Tensor) -> torch.Tensor:
        """One forward in the compute precision, by the fastest runner set up."""
        if self._graphs is not None:
            return self._graphs.run(self.model, self._autocast, self._dtype, ir_p, vis_p)
        with self._autocast():
            if self._compiled is not None:
                return self._compiled(ir_p, vis_p)
            return self.model(ir_p, vis_p)

    @torch.inference_mode()
    def _forward_padded(self, ir_p: torch.Tensor, vis_p: torch.Tensor) -> torch.Tensor:
        """Network output (float32) for padded device tensors, with the float32 fallback.

        Runs under ``torch.inference_mode`` (the fast paths need autograd off); callers combine
        the results outside it, so what users get back are ordinary tensors.
        """
        out = self._network(ir_p, vis_p).float()
        if self._dtype != torch.float32 and not torch.isfinite(out).all():
            warnings.warn(
                f"{self._dtype} inference produced NaN/Inf; recomputing this batch in float32",
                RuntimeWarning,
                stacklevel=4,
            )
            out = self.model(ir_p.float(), vis_p.float()).float()
        return out

    def _forward_any(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Pad, run, crop: device tensors of any size in, float32 device tensors out."""
        ir_p, pads = pad_to_network(ir)
        vis_p, _ = pad_to_network(vis)
        return crop(self._forward_padded(ir_p, vis_p), pads)

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
        return self._forward_any(ir, vis)

    def tile_plan(
        self, height: int, width: int, tile: TileLike = None, tile_overlap: int = DEFAULT_OVERLAP, batch: int = 1
    ) -> TilePlan | None:
        """The tiles :meth:`fuse` would use for an image of this size (``None``: whole image).

        ``tile=None`` (default): the whole image when ``batch`` padded images fit the memory
        budget of the device (see :mod:`emmafuse.tiling`), else as ``"auto"``.
        ``tile="auto"``: square tiles of the largest side that fits the budget (at least
        :data:`~emmafuse.tiling.MIN_AUTO_TILE`). An integer: tiles of that side (rounded down to
        a multiple of 8). An image that fits in one tile is never tiled.
        """
        check_tile_options(tile, tile_overlap)
        bpp = bytes_per_pixel(self._dtype)
        if tile is None or tile == "auto":
            budget = memory_budget(self._device)
            if tile is None and padded_size(height) * padded_size(width) * bpp * max(batch, 1) <= budget:
                return None
            side = auto_tile_size(budget, self._dtype)
            tile_overlap = min(tile_overlap, side // 2)
        else:
            side = int(tile)
        plan = plan_tiles(height, width, side, tile_overlap)
        return None if plan.is_single else plan

    def _images_per_call(self, height: int, width: int, batch_size: int) -> int:
        """Whole images per network call: ``batch_size``, fewer if they would not fit in memory."""
        per_image = padded_size(height) * padded_size(width) * bytes_per_pixel(self._dtype)
        return max(1, min(batch_size, memory_budget(self._device) // max(per_image, 1)))

    # ----------------------------------------------------------------- public API
    def fuse(
        self,
        ir: Any,
        vis: Any,
        *,
        output_range: OutputRange = "clamp",
        batch_size: int = 8,
        tile: TileLike = None,
        tile_overlap: int = DEFAULT_OVERLAP,
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
            batch_size: how many same-sized pairs (or tiles) go through the network at once;
                fewer when they would not fit in the memory budget.
            tile: ``None`` (default): whole images, unless an image would not fit in the memory
                budget of the device (CUDA: free memory; CPU: 1.25 GiB, see
                :mod:`emmafuse.tiling`), which is then tiled as with ``"auto"``. ``"auto"``:
                tiles of the largest side that fits the budget. An integer: tiles of that side
                (rounded down to a multiple of 8, at least 16). Only tiles travel to the device;
                overlapping tiles are blended with feathered weights. The attention of the
                U-Fuser is global, so tiled output differs slightly from whole-image output
                (measured in ``benchmarks/RESULTS.md``); ``"minmax"`` is applied to the stitched
                image, never per tile.
            tile_overlap: overlap of neighbouring tiles in pixels (default 64), at most half the
                tile side.

        Returns:
            The fused image in the container type (numpy / PIL / torch) and dtype of ``vis``.
            It is colour when either input carries colour (the visible image's chroma is
            preferred), keeps the alpha channel of an RGBA input, and is gray when both are
            gray. An RGB(A) image whose channels are equal (exactly for integers, within
            :data:`emmafuse.color.GRAY_TOLERANCE` for floats) counts as gray for both
            decisions. For lists and batches the result is a list / batch of the same kind; a
            4-D batch is colour when any of its results is (gray ones then have R = G = B).
            A PIL ``vis`` in a 16-bit or float mode (``I;16``, ``I``, ``F``) gives the fused
            luminance in that mode: PIL has no colour or alpha variant of them.

        Warns:
            UserWarning: a 16-bit input whose maximum is below 256 (8-bit data in a 16-bit
                container fuses as a near-black image).

        Raises:
            TypeError: unsupported container, dtype or PIL mode.
            ValueError: mismatched sizes, empty images, NaN/Inf, floats outside [0, 1],
                unsupported channel counts, bad options.
        """
        if output_range not in ("clamp", "minmax"):
            raise ValueError(f"output_range must be 'clamp' or 'minmax', got {output_range!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        check_tile_options(tile, tile_overlap)

        ir_items, vis_items, kind = self._as_items(ir, vis)
        indexed = kind != "single"
        pairs = [_prepare_pair(a, b, i if indexed else None) for i, (a, b) in enumerate(zip(ir_items, vis_items))]
        for note in dict.fromkeys(n for p in pairs for n in p.notes):  # each distinct note once
            warnings.warn(note, UserWarning, stacklevel=2)
        if kind == "batch" and any(p.chroma is not None for p in pairs):
            for p in pairs:  # one channel count per batch: stacking needs equal shapes
                p.rgb_out = True
        fused = self._run_pairs(pairs, output_range, batch_size, tile, tile_overlap)
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

    def _run_pairs(
        self,
        pairs: Sequence[_Pair],
        output_range: OutputRange,
        batch_size: int,
        tile: TileLike = None,
        tile_overlap: int = DEFAULT_OVERLAP,
    ) -> list[torch.Tensor]:
        """Fused luminance ``(1, H, W)`` CPU tensors, same-size pairs batched together."""
        results: list[torch.Tensor | None] = [None] * len(pairs)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(pairs):
            by_size.setdefault(tuple(p.ir_y.shape[-2:]), []).append(i)
        for (h, w), indices in by_size.items():
            plan = self.tile_plan(h, w, tile, tile_overlap)
            if plan is not None:
                # tiles in mini-batches on accelerators; the CPU gains nothing from batching
                tile_batch = self._images_per_call(plan.tile_h, plan.tile_w, batch_size) if self._device.type == "cuda" else 1
                for i in indices:
                    # views, no copies: the full image stays on the host, tiles go to the device
                    fused = fuse_tiled(
                        self._forward_padded,
                        pairs[i].ir_y[None],
                        pairs[i].vis_y[None],
                        plan,
                        device=self._device,
                        tile_batch=tile_batch,
                    )
                    # the range policy sees the stitched image (global min/max), never a tile
                    results[i] = _apply_range(fused, output_range)[0]
                continue
            per_call = self._images_per_call(h, w, batch_size)
            chunks = [indices[s : s + per_call] for s in range(0, len(indices), per_call)]

            def maker(chunk: list[int]) -> Any:
                def make(pin: bool) -> tuple[torch.Tensor, torch.Tensor]:
                    ir = torch.stack([pairs[i].ir_y for i in chunk])
                    vis = torch.stack([pairs[i].vis_y for i in chunk])
                    return (ir.pin_memory(), vis.pin_memory()) if pin else (ir, vis)

                return make

            outputs = run_pipelined(
                self._forward_any,
                (maker(c) for c in chunks),
                self._device,
                lambda res, _idx: _apply_range(res, output_range),
            )
            for chunk, fused in zip(chunks, outputs):
                for j, i in enumerate(chunk):
                    results[i] = fused[j]
        return [r for r in results if r is not None]


class _CudaGraphs:
    """Recorded CUDA graphs of the eager network, one per input shape and precision (LRU)."""

    def __init__(self, max_shapes: int = 4) -> None:
        self.max_shapes = max_shapes
        self.entries: dict[tuple[Any, ...], tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @staticmethod
    def _weights_key(model: torch.nn.Module) -> tuple[Any, ...]:
        return tuple((p.data_ptr(), weight_version(p)) for p in model.parameters())

    def run(self, model: UFuser, autocast: Any, dtype: torch.dtype, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        key = (tuple(ir.shape), ir.device, dtype, self._weights_key(model))
        entry = self.entries.pop(key, None)
        if entry is None:
            entry = self._record(model, autocast, ir, vis)
            # drop graphs of stale weights and the least recently used shapes
            self.entries = {k: v for k, v in self.entries.items() if k[3] == key[3]}
            while len(self.entries) >= self.max_shapes:
                self.entries.pop(next(iter(self.entries)))
        self.entries[key] = entry  # most recently used last
        graph, static_ir, static_vis, static_out = entry
        static_ir.copy_(ir)
        static_vis.copy_(vis)
        graph.replay()
        return static_out.clone()

    @staticmethod
    def _record(model: UFuser, autocast: Any, ir: torch.Tensor, vis: torch.Tensor) -> Any:
        model.prepare_inference()
        static_ir, static_vis = ir.clone(), vis.clone()
        side = torch.cuda.Stream(ir.device)
        side.wait_stream(torch.cuda.current_stream(ir.device))
        with torch.cuda.stream(side):  # warm-up: cuDNN autotuning, folded-weight caches
            for _ in range(2):
                with autocast():
                    model(static_ir, static_vis)
        torch.cuda.current_stream(ir.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), autocast():
            static_out = model(static_ir, static_vis)
        return graph, static_ir, static_vis, static_out
