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

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import torch

from emmafuse.batching import OutputRange, check_fuse_options, choose_tiles, forward_padded, run_pairs, split_items, stack_like
from emmafuse.devices import PrecisionLike, parse_device, parse_precision
from emmafuse.errors import InputError
from emmafuse.fuser_streams import StreamMethods
from emmafuse.inputs import ImageLike
from emmafuse.models import UFuser
from emmafuse.planes import finish, prepare_pair
from emmafuse.runner import NetworkRunner
from emmafuse.tiling import TileLike, TilePlan, check_tile_options

if TYPE_CHECKING:
    import PIL.Image

__all__ = ["Fuser", "ImageLike", "OutputRange", "PrecisionLike"]


class Fuser(StreamMethods):
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
        self.to(device if device is not None else parse_device(None), dtype)

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
        new_device = self.device if device is None else parse_device(device)
        new_dtype = self.dtype if dtype is None else parse_precision(dtype)
        if new_dtype == torch.float16 and new_device.type != "cuda":
            raise InputError("dtype float16 needs a CUDA device; use 'bfloat16' or 'float32' on CPU", parameter="dtype")
        if self.backend == "onnxruntime" and (new_device.type != "cpu" or new_dtype != torch.float32):
            raise InputError(
                "the onnxruntime backend runs on the CPU in float32; use_onnxruntime(False) first",
                parameter="device" if new_device.type != "cpu" else "dtype",
            )
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

    @property
    def backend(self) -> str:
        """``"torch"``, or ``"onnxruntime"`` after :meth:`use_onnxruntime`."""
        return "torch" if self._runner.external is None else "onnxruntime"

    def use_onnxruntime(self, enabled: bool = True, *, threads: int | None = None) -> Fuser:
        """Run the network with onnxruntime on the CPU (float32); returns ``self``.

        Same outputs as the torch path within 1e-6 (the same graph, ``docs/onnx.md``), and faster
        on large images in a process with glibc's default allocator settings (no page faults for
        every layer output; ``docs/performance.md`` has the numbers). The graph is traced once
        per set of weights and cached in ``$EMMAFUSE_CACHE/onnx``; the session is rebuilt when
        the weights change. ``threads``: onnxruntime's threads (default: torch's). Needs the
        onnx extra (``pip install 'emmafuse[onnx]'``).
        """
        if not enabled:
            self._runner.use_external(None)
            return self
        if self.device.type != "cpu" or self.dtype != torch.float32:
            raise InputError(
                f"the onnxruntime backend runs on the CPU in float32, this Fuser on {self.device} in {self.dtype}",
                parameter="backend",
            )
        from emmafuse.onnx_graph import OnnxRuntimeForward

        self._runner.use_external(OnnxRuntimeForward(self.model, threads=threads))
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
        backend = "" if self.backend == "torch" else f", backend={self.backend!r}"
        return f"Fuser(weights={name!r}, device='{self.device}', dtype={str(self.dtype).replace('torch.', '')}{backend})"

    # ----------------------------------------------------------------- network
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
            raise InputError(
                f"fuse_tensor expects two (N, 1, H, W) tensors of one shape, got {tuple(ir.shape)} and {tuple(vis.shape)}"
            )
        ir = ir.to(self.device, torch.float32, non_blocking=True)
        vis = vis.to(self.device, torch.float32, non_blocking=True)
        return forward_padded(self._runner, self.model.size_requirements, ir, vis)

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
        return choose_tiles(self._runner, req, height, width, tile, tile_overlap, batch)

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
            InputTypeError: unsupported container, dtype or PIL mode (a ``TypeError``).
            InputError: mismatched sizes, empty images, NaN/Inf, floats outside [0, 1],
                unsupported channel counts, bad options.
        """
        check_fuse_options(output_range, batch_size)
        req = self.model.size_requirements
        check_tile_options(tile, tile_overlap, req)

        ir_items, vis_items, kind = split_items(ir, vis)
        indexed = kind != "single"
        pairs = [prepare_pair(a, b, i if indexed else None) for i, (a, b) in enumerate(zip(ir_items, vis_items))]
        for note in dict.fromkeys(n for p in pairs for n in p.notes):  # each distinct note once
            warnings.warn(note, UserWarning, stacklevel=2)
        fused = run_pairs(
            self._runner,
            req,
            pairs,
            output_range=output_range,
            batch_size=batch_size,
            tile=tile,
            tile_overlap=tile_overlap,
            progress=progress,
        )
        outputs = [finish(y, p) for y, p in zip(fused, pairs, strict=True)]
        if kind == "single":
            return outputs[0]
        if kind == "list":
            return outputs
        return stack_like(outputs, vis)
