"""The public fusion API: :class:`Fuser` wraps a U-Fuser network with everything around it.

``Fuser.fuse(ir, vis)`` takes two registered images of the same size (numpy, PIL or torch),
handles colour (YCbCr: the luminance is fused, the chroma of the colour input is kept; RGB
images whose channels are equal count as gray, see :mod:`emmafuse.planes`), pads any size to
what the network needs (its :class:`~emmafuse.models.SizeRequirements`), batches, runs on CPU
or CUDA in the requested precision (:mod:`emmafuse.runner`; tiling images that would not fit in
memory, see :mod:`emmafuse.tiling`) and gives the result back in the container and dtype of the
visible input. ``Fuser.fuse_frames`` fuses two streams of frames in order and
``Fuser.fuse_video`` two video files into one; they delegate to :mod:`emmafuse.frames` and
:mod:`emmafuse.video_job`. The Fuser orchestrates; each of those steps lives in its own module.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Union, overload

import numpy as np
import torch

from emmafuse.inputs import ImageLike, is_batch, split_batch
from emmafuse.models import UFuser
from emmafuse.padding import crop, pad_to_network
from emmafuse.planes import Pair, finish, prepare_pair
from emmafuse.runner import NetworkRunner, run_pipelined
from emmafuse.tiling import (
    TileLike,
    TilePlan,
    auto_tile_size,
    bytes_per_pixel,
    check_tile_options,
    fuse_tiled,
    memory_budget,
    plan_tiles,
)

if TYPE_CHECKING:
    import PIL.Image

    from emmafuse.video_job import VideoResult

__all__ = ["Fuser", "ImageLike", "OutputRange", "PrecisionLike"]

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
        self._runner = NetworkRunner(model.eval(), torch.device("cpu"), torch.float32)
        self.info = dict(info or {})
        self.to(device if device is not None else _parse_device(None), dtype)

    # ----------------------------------------------------------------- configuration
    @property
    def model(self) -> UFuser:
        """The network (in eval mode)."""
        model = self._runner.model
        assert isinstance(model, UFuser)
        return model

    @property
    def device(self) -> torch.device:
        return self._runner.device

    @property
    def dtype(self) -> torch.dtype:
        return self._runner.dtype

    def to(self, device: str | torch.device | None = None, dtype: PrecisionLike | None = None) -> Fuser:
        """Move to ``device`` and/or switch compute precision; returns ``self``."""
        new_device = self.device if device is None else _parse_device(device)
        new_dtype = self.dtype if dtype is None else _parse_precision(dtype)
        if new_dtype == torch.float16 and new_device.type != "cuda":
            raise ValueError("dtype float16 needs a CUDA device; use 'bfloat16' or 'float32' on CPU")
        self._runner.move(new_device, new_dtype)
        return self

    def compile(self, **compile_kwargs: Any) -> Fuser:
        """Compile the network's forward with :func:`torch.compile`; returns ``self``.

        Keyword arguments go to ``torch.compile`` (e.g. ``mode="max-autotune"``, or
        ``mode="reduce-overhead"`` for CUDA graphs made by the compiler, ``dynamic=False``).
        Compilation happens on the first call of each new input shape and takes tens of seconds;
        it pays off for long runs of same-sized images on a GPU. On the CPU, inductor needs a
        C++ compiler. ``compile()`` and :meth:`use_cuda_graphs` are alternatives (the last one
        called wins). Outputs agree with the eager path to float rounding.
        """
        self._runner.compile(**compile_kwargs)
        return self

    def use_cuda_graphs(self, enabled: bool = True, *, max_shapes: int = 4) -> Fuser:
        """Replay CUDA graphs for repeated input shapes (CUDA only); returns ``self``.

        The first call with a new ``(batch, height, width)`` records a graph of the eager
        network (a few warm-up runs); later calls of that shape replay it, removing the
        per-kernel launch cost that dominates small images. Up to ``max_shapes`` graphs are
        kept (least recently used dropped); each holds its own activation memory. Graphs are
        re-recorded when the weights change. Half precision with a NaN/Inf fallback still works
        (the float32 recomputation runs eagerly).
        """
        self._runner.use_cuda_graphs(enabled, max_shapes=max_shapes)
        return self

    def __repr__(self) -> str:
        name = self.info.get("name") or self.info.get("path") or "custom"
        return f"Fuser(weights={name!r}, device='{self.device}', dtype={str(self.dtype).replace('torch.', '')})"

    # ----------------------------------------------------------------- network
    def _forward_any(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Pad, run, crop: device tensors of any size in, float32 device tensors out."""
        req = self.model.size_requirements
        ir_p, pads = pad_to_network(ir, req)
        vis_p, _ = pad_to_network(vis, req)
        return crop(self._runner.forward(ir_p, vis_p), pads)

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
        ir = ir.to(self.device, torch.float32, non_blocking=True)
        vis = vis.to(self.device, torch.float32, non_blocking=True)
        return self._forward_any(ir, vis)

    def tile_plan(
        self, height: int, width: int, tile: TileLike = None, tile_overlap: int | None = None, batch: int = 1
    ) -> TilePlan | None:
        """The tiles :meth:`fuse` would use for an image of this size (``None``: whole image).

        ``tile=None`` (default): the whole image when ``batch`` padded images fit the memory
        budget of the device (see :mod:`emmafuse.tiling`), else as ``"auto"``.
        ``tile="auto"``: square tiles of the largest side that fits the budget (at least
        :data:`~emmafuse.tiling.MIN_AUTO_TILE`). An integer: tiles of that side (rounded down to
        a multiple of 8). An image that fits in one tile is never tiled. ``tile_overlap=None``:
        :func:`~emmafuse.tiling.default_overlap` of the tile side.
        """
        req = self.model.size_requirements
        check_tile_options(tile, tile_overlap, req)
        bpp = bytes_per_pixel(self.dtype)
        if tile is None or tile == "auto":
            budget = memory_budget(self.device)
            if tile is None and req.padded(height) * req.padded(width) * bpp * max(batch, 1) <= budget:
                return None
            side = auto_tile_size(budget, self.dtype, size_req=req)
            if tile_overlap is not None:
                tile_overlap = min(tile_overlap, side // 2)
        else:
            side = int(tile)
        plan = plan_tiles(height, width, side, tile_overlap, req)
        return None if plan.is_single else plan

    def _images_per_call(self, height: int, width: int, batch_size: int) -> int:
        """Whole images per network call: ``batch_size``, fewer if they would not fit in memory."""
        req = self.model.size_requirements
        per_image = req.padded(height) * req.padded(width) * bytes_per_pixel(self.dtype)
        return max(1, min(batch_size, memory_budget(self.device) // max(per_image, 1)))

    # ----------------------------------------------------------------- public API
    @overload
    def fuse(
        self,
        ir: ImageLike,
        vis: np.ndarray,
        *,
        output_range: OutputRange = ...,
        batch_size: int = ...,
        tile: TileLike = ...,
        tile_overlap: int | None = ...,
        progress: bool = ...,
    ) -> np.ndarray: ...

    @overload
    def fuse(
        self,
        ir: ImageLike,
        vis: torch.Tensor,
        *,
        output_range: OutputRange = ...,
        batch_size: int = ...,
        tile: TileLike = ...,
        tile_overlap: int | None = ...,
        progress: bool = ...,
    ) -> torch.Tensor: ...

    @overload
    def fuse(
        self,
        ir: ImageLike,
        vis: PIL.Image.Image,
        *,
        output_range: OutputRange = ...,
        batch_size: int = ...,
        tile: TileLike = ...,
        tile_overlap: int | None = ...,
        progress: bool = ...,
    ) -> PIL.Image.Image: ...

    @overload
    def fuse(
        self,
        ir: Sequence[ImageLike],
        vis: Sequence[np.ndarray],
        *,
        output_range: OutputRange = ...,
        batch_size: int = ...,
        tile: TileLike = ...,
        tile_overlap: int | None = ...,
        progress: bool = ...,
    ) -> list[np.ndarray]: ...

    @overload
    def fuse(
        self,
        ir: Sequence[ImageLike],
        vis: Sequence[torch.Tensor],
        *,
        output_range: OutputRange = ...,
        batch_size: int = ...,
        tile: TileLike = ...,
        tile_overlap: int | None = ...,
        progress: bool = ...,
    ) -> list[torch.Tensor]: ...

    @overload
    def fuse(
        self,
        ir: Sequence[ImageLike],
        vis: Sequence[PIL.Image.Image],
        *,
        output_range: OutputRange = ...,
        batch_size: int = ...,
        tile: TileLike = ...,
        tile_overlap: int | None = ...,
        progress: bool = ...,
    ) -> list[PIL.Image.Image]: ...

    @overload
    def fuse(
        self,
        ir: Sequence[ImageLike],
        vis: Sequence[ImageLike],
        *,
        output_range: OutputRange = ...,
        batch_size: int = ...,
        tile: TileLike = ...,
        tile_overlap: int | None = ...,
        progress: bool = ...,
    ) -> list[ImageLike]: ...

    def fuse(
        self,
        ir: ImageLike | Sequence[ImageLike],
        vis: ImageLike | Sequence[ImageLike],
        *,
        output_range: OutputRange = "clamp",
        batch_size: int = 8,
        tile: TileLike = None,
        tile_overlap: int | None = None,
        progress: bool = False,
    ) -> ImageLike | list[Any]:
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
            tile_overlap: overlap of neighbouring tiles in pixels, at most half the tile side.
                ``None`` (default): a quarter of the tile side rounded down to a multiple of 8,
                at least 8 and at most 64 (:func:`emmafuse.tiling.default_overlap`). It applies
                to automatic tiling (``tile=None`` on an image too large) as well.
            progress: show a tile-count progress bar on stderr while a tiled image is fused
                (only when stderr is a terminal).

        Returns:
            The fused image in the container type (numpy / PIL / torch) and dtype of ``vis``.
            Its layout depends on the inputs' layouts only, never on pixel values: it has
            colour channels when either input has them (``(H, W, 3)``, ``(3, H, W)``, PIL
            ``RGB``), an alpha channel when either has one, and otherwise the layout of ``vis``
            (``(H, W)``, ``(H, W, 1)``, ...). The values follow the colour rule: the chroma of
            a colour input is kept (the visible image's when both carry colour), and the
            result is gray (R = G = B in a colour layout) when neither does; an RGB(A) image
            whose channels are equal (exactly for integers, within
            :data:`emmafuse.color.GRAY_TOLERANCE` for floats) counts as gray. For lists and
            batches the result is a list / batch of the same kind. A PIL ``vis`` in a 16-bit
            or float mode (``I;16``, ``I``, ``F``) gives the fused luminance in that mode: PIL
            has no colour or alpha variant of them.

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
        check_tile_options(tile, tile_overlap, self.model.size_requirements)

        ir_items, vis_items, kind = self._as_items(ir, vis)
        indexed = kind != "single"
        pairs = [prepare_pair(a, b, i if indexed else None) for i, (a, b) in enumerate(zip(ir_items, vis_items))]
        for note in dict.fromkeys(n for p in pairs for n in p.notes):  # each distinct note once
            warnings.warn(note, UserWarning, stacklevel=2)
        fused = self._run_pairs(pairs, output_range, batch_size, tile, tile_overlap, progress)
        outputs = [finish(y, p) for y, p in zip(fused, pairs)]
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
        return np.stack([o if o.ndim == 3 else o[..., None] for o in outputs])

    def _run_pairs(
        self,
        pairs: Sequence[Pair],
        output_range: OutputRange,
        batch_size: int,
        tile: TileLike = None,
        tile_overlap: int | None = None,
        progress: bool = False,
    ) -> list[torch.Tensor]:
        """Fused luminance ``(1, H, W)`` CPU tensors, same-size pairs batched together."""
        results: list[torch.Tensor | None] = [None] * len(pairs)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(pairs):
            h, w = p.ir_y.shape[-2:]
            by_size.setdefault((h, w), []).append(i)
        for (h, w), indices in by_size.items():
            plan = self.tile_plan(h, w, tile, tile_overlap)
            if plan is not None:
                # tiles in mini-batches on accelerators; the CPU gains nothing from batching
                tile_batch = self._images_per_call(plan.tile_h, plan.tile_w, batch_size) if self.device.type == "cuda" else 1
                for i in indices:
                    # views, no copies: the full image stays on the host, tiles go to the device
                    fused = fuse_tiled(
                        self._runner.forward,
                        pairs[i].ir_y[None],
                        pairs[i].vis_y[None],
                        plan,
                        device=self.device,
                        tile_batch=tile_batch,
                        size_req=self.model.size_requirements,
                        progress=progress,
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
                self.device,
                lambda res, _idx: _apply_range(res, output_range),
            )
            for chunk, fused in zip(chunks, outputs):
                for j, i in enumerate(chunk):
                    results[i] = fused[j]
        return [r for r in results if r is not None]

    # ----------------------------------------------------------------- streams and videos
    def _fuse_lists(
        self, output_range: OutputRange, batch_size: int | None, tile: TileLike, tile_overlap: int | None
    ) -> tuple[Callable[[list[Any], list[Any]], list[Any]], int]:
        """``fuse`` on lists with the options bound (checked now, not at the first frame) and
        the frames per call (``None``: 1 on the CPU, where batches gain nothing, else 8)."""
        if output_range not in ("clamp", "minmax"):
            raise ValueError(f"output_range must be 'clamp' or 'minmax', got {output_range!r}")
        if batch_size is None:
            batch_size = 1 if self.device.type == "cpu" else 8
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        check_tile_options(tile, tile_overlap, self.model.size_requirements)
        size = batch_size

        def fuse_lists(ir: list[Any], vis: list[Any]) -> list[Any]:
            return self.fuse(ir, vis, output_range=output_range, batch_size=size, tile=tile, tile_overlap=tile_overlap)

        return fuse_lists, batch_size

    def fuse_frames(
        self,
        ir_frames: Iterable[Any],
        vis_frames: Iterable[Any],
        *,
        batch_size: int | None = None,
        prefetch: int = 4,
        output_range: OutputRange = "clamp",
        tile: TileLike = None,
        tile_overlap: int | None = None,
    ) -> Generator[Any, None, None]:
        """Fuse two streams of registered frames; yields the fused frames in order.

        For live streams (two cameras) and custom pipelines: ``ir_frames`` and ``vis_frames``
        are iterables (generators, lists, a 4-D batch) of anything :meth:`fuse` accepts; the
        frames are paired by position and the pairing stops when either ends (as ``zip``).
        Each result is exactly what ``fuse(ir, vis)`` gives for the pair (container, dtype,
        layout and colour rule of :meth:`fuse`; bit-identical with a batch of one).

        Args:
            batch_size: frames per network call. ``None`` (default): 1 on the CPU (batches are
                no faster there and a frame waits for no other), 8 on CUDA. A frame is given
                out once its batch is full or the streams end.
            prefetch: frame pairs pulled ahead from the iterables in a background thread, so
                that reading (decoding, a camera) overlaps with fusing; ``0`` pulls them in the
                calling thread. The iterables are then advanced in that thread only.
            output_range, tile, tile_overlap: as for :meth:`fuse`. ``"minmax"`` stretches
                each frame by its own minimum and maximum and makes a video flicker: it warns.

        The options are checked when ``fuse_frames`` is called; an error of a frame (sizes
        differ, bad dtype) is raised when that frame is reached, and an exception of an
        iterable is raised in the consuming thread. Closing the returned generator (or leaving
        the loop that consumes it) stops the background thread.
        """
        from emmafuse.frames import fused_frames

        fuse_lists, size = self._fuse_lists(output_range, batch_size, tile, tile_overlap)
        if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0:
            raise ValueError(f"prefetch must be an integer >= 0, got {prefetch!r}")
        if output_range == "minmax":
            warnings.warn(
                "output_range='minmax' stretches each frame by its own minimum and maximum: the brightness of a "
                "video flickers from frame to frame; 'clamp' (the default) is a fixed function of each frame",
                UserWarning,
                stacklevel=2,
            )
        return fused_frames(ir_frames, vis_frames, fuse_lists, batch_size=size, prefetch=prefetch)

    def fuse_video(
        self,
        ir: str | os.PathLike[str],
        vis: str | os.PathLike[str],
        out: str | os.PathLike[str],
        *,
        frames: int | None = None,
        start: int = 0,
        side_by_side: bool = False,
        crf: int = 18,
        codec: str | None = None,
        overwrite: bool = True,
        batch_size: int | None = None,
        tile: TileLike = None,
        tile_overlap: int | None = None,
        output_range: OutputRange = "clamp",
        progress: bool = False,
        overlap: bool = True,
    ) -> VideoResult:
        """Fuse two registered video files (infrared, visible) frame by frame into ``out``.

        Needs PyAV (``pip install 'emmafuse[video]'``). Frames are paired by index; both videos
        must have the same frame size and frame rates within 1 %. A gray video is read as gray
        (also YUV video whose chroma is neutral), a colour one as RGB, and each frame pair is
        fused by :meth:`fuse` (a colour visible video keeps its chroma). The output is H.264
        (MPEG-4 part 2 when no H.264 encoder works), ``yuv420p``, at the visible video's frame
        rate; it is written under a temporary name in its folder and renamed at the end, so an
        exception or Ctrl-C leaves no file under ``out`` and no temporary file.

        Args:
            ir, vis: the input videos.
            out: the output file: ``.mp4``, ``.mkv``, ``.avi`` or ``.mov``; not an input.
            frames: fuse at most this many frame pairs (default: all).
            start: skip the first ``start`` frames of both videos.
            side_by_side: write ``ir | vis | fused`` side by side (three times as wide).
            crf: output quality on H.264's constant rate factor scale, 0 (lossless) to 51
                (worst); 18 (default) is close to visually lossless. For MPEG-4 part 2 it is
                mapped to the equivalent fixed quantiser.
            codec: an FFmpeg encoder name to use instead of the automatic choice.
            overwrite: replace an existing ``out`` (default); ``False`` refuses it.
            batch_size, tile, tile_overlap: as for :meth:`fuse_frames` / :meth:`fuse`.
            output_range: ``"clamp"`` only: ``"minmax"`` (a per-frame stretch) would flicker.
            progress: a progress bar with frames per second and time left on stderr, shown
                only when stderr is a terminal.
            overlap: decode and encode in background threads while frames are fused (default);
                ``False`` runs decode, fuse, encode one after the other in this thread.

        Returns:
            A :class:`~emmafuse.video_job.VideoResult`: the path, frames written, size, frame
            rate, encoder and the number of frames dropped.

        Warns:
            UserWarning: the videos have different frame counts: the common length is fused
                and the warning says how many frames of the longer one were dropped.

        Raises:
            MissingExtraError: PyAV is not installed (an ``ImportError``).
            OutputError: the output path (unknown suffix, an input, not writable, exists
                with ``overwrite=False``); checked before any work.
            VideoReadError: an input cannot be opened or decoded, or is truncated; the message
                names the file and the frame index.
            VideoError: frame sizes or rates differ, ``start`` is past the end, ``"minmax"``.
            ValueError: other bad options.
        """
        from emmafuse.video_job import check_video_options, prepare_video_job, run_video_job

        check_video_options(frames=frames, start=start, crf=crf, output_range=output_range)  # "minmax" refused
        fuse_lists, size = self._fuse_lists("clamp", batch_size, tile, tile_overlap)
        job = prepare_video_job(
            ir,
            vis,
            out,
            frames=frames,
            start=start,
            side_by_side=side_by_side,
            crf=crf,
            codec=codec,
            overwrite=overwrite,
            output_range=output_range,
        )
        return run_video_job(job, fuse_lists, batch_size=size, progress=progress, read_ahead=overlap, write_behind=overlap)

