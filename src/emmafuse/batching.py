"""Prepared pairs through the network: same-size pairs batched, large images tiled, the range applied.

The :class:`~emmafuse.fuser.Fuser` decodes its inputs into :class:`~emmafuse.planes.Pair` s and
gives them here: :func:`run_pairs` groups them by size, sends whole images in batches that fit
the device's memory budget (:func:`images_per_call`) through :func:`~emmafuse.runner.run_pipelined`,
tiles an image that does not fit (:func:`choose_tiles`, :func:`~emmafuse.tiling.fuse_tiled`) and
applies the output range policy to each whole fused image (:func:`apply_range`). Results come
back in the order of the pairs, one per pair, or :class:`~emmafuse.errors.FusionError`.
:func:`split_items` and :func:`stack_like` turn ``fuse``'s arguments into pairs of items and the
results back into the caller's container.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from emmafuse.errors import FusionError, InputError, InputTypeError
from emmafuse.inputs import is_batch, split_batch
from emmafuse.models import SizeRequirements
from emmafuse.padding import crop, pad_to_network
from emmafuse.planes import Pair
from emmafuse.runner import BatchMaker, NetworkRunner, run_pipelined
from emmafuse.tiling import TileLike, TilePlan, auto_tile_size, bytes_per_pixel, fuse_tiled, memory_budget, plan_tiles

__all__ = [
    "OutputRange",
    "apply_range",
    "check_fuse_options",
    "choose_tiles",
    "forward_padded",
    "images_per_call",
    "run_pairs",
    "split_items",
    "stack_like",
]

OutputRange = Literal["clamp", "minmax"]


def check_fuse_options(output_range: object, batch_size: object) -> None:
    """Refuse an unknown ``output_range`` or a ``batch_size`` that is not a positive integer.

    Raises:
        InputError: naming the parameter.
    """
    if output_range not in ("clamp", "minmax"):
        raise InputError(f"output_range must be 'clamp' or 'minmax', got {output_range!r}", parameter="output_range")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}", parameter="batch_size")


def apply_range(fused: torch.Tensor, policy: OutputRange) -> torch.Tensor:
    """The output range policy on ``(N, 1, H, W)``: ``"minmax"`` stretches each image, then clamp."""
    if policy == "minmax":
        flat = fused.flatten(1)
        lo = flat.min(1).values.view(-1, 1, 1, 1)
        hi = flat.max(1).values.view(-1, 1, 1, 1)
        span = hi - lo
        # A constant output has nothing to stretch: keep it instead of dividing by zero.
        stretched = (fused - lo) / torch.where(span > 0, span, torch.ones_like(span))
        fused = torch.where(span > 0, stretched, fused)
    return fused.clamp(0.0, 1.0)


def split_items(ir: Any, vis: Any) -> tuple[list[Any], list[Any], str]:
    """``fuse``'s arguments as two lists of single images and their kind: ``"single"``,
    ``"list"`` (lists or tuples) or ``"batch"`` (4-D arrays or tensors).

    Raises:
        InputTypeError: one is a list and the other is not.
        InputError: the lengths differ, the lists are empty, one is a batch and the other is not.
    """
    if isinstance(ir, (list, tuple)) or isinstance(vis, (list, tuple)):
        if not (isinstance(ir, (list, tuple)) and isinstance(vis, (list, tuple))):
            raise InputTypeError("ir and vis must both be lists (or both single images)")
        if len(ir) != len(vis):
            raise InputError(f"ir has {len(ir)} images but vis has {len(vis)}")
        if not ir:
            raise InputError("ir and vis are empty lists")
        return list(ir), list(vis), "list"
    if is_batch(ir) or is_batch(vis):
        if not (is_batch(ir) and is_batch(vis)):
            raise InputError(
                f"ir and vis must both be 4-D batches or both single images, got shapes "
                f"{tuple(getattr(ir, 'shape', ()))} and {tuple(getattr(vis, 'shape', ()))}"
            )
        if ir.shape[0] != vis.shape[0]:
            raise InputError(f"ir batch has {ir.shape[0]} images but vis batch has {vis.shape[0]}")
        return split_batch(ir, "ir"), split_batch(vis, "vis"), "batch"
    return [ir], [vis], "single"


def stack_like(outputs: Sequence[Any], like: Any) -> Any:
    """Single results as one 4-D batch of the container of ``like`` (torch ``NCHW``, numpy ``NHWC``)."""
    if isinstance(like, torch.Tensor):
        return torch.stack([o if o.ndim == 3 else o.unsqueeze(0) for o in outputs])
    import numpy as np

    return np.stack([o if o.ndim == 3 else o[..., None] for o in outputs])


def forward_padded(runner: NetworkRunner, req: SizeRequirements, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """Pad, run, crop: device tensors of any size in, float32 device tensors out."""
    ir_p, pads = pad_to_network(ir, req)
    vis_p, _ = pad_to_network(vis, req)
    return crop(runner.forward(ir_p, vis_p), pads)


def images_per_call(runner: NetworkRunner, req: SizeRequirements, height: int, width: int, batch_size: int) -> int:
    """Whole images per network call: ``batch_size``, fewer if they would not fit in memory."""
    per_image = req.padded(height) * req.padded(width) * bytes_per_pixel(runner.dtype)
    return max(1, min(batch_size, memory_budget(runner.device) // max(per_image, 1)))


def choose_tiles(
    runner: NetworkRunner,
    req: SizeRequirements,
    height: int,
    width: int,
    tile: TileLike,
    tile_overlap: int | None,
    batch: int = 1,
) -> TilePlan | None:
    """The tiles for an image of this size (``None``: whole image); see :meth:`Fuser.tile_plan`.

    The options must have been checked (:func:`~emmafuse.tiling.check_tile_options`).
    """
    bpp = bytes_per_pixel(runner.dtype)
    if tile is None or tile == "auto":
        budget = memory_budget(runner.device)
        if tile is None and req.padded(height) * req.padded(width) * bpp * max(batch, 1) <= budget:
            return None
        side = auto_tile_size(budget, runner.dtype, size_req=req)
        if tile_overlap is not None:
            tile_overlap = min(tile_overlap, side // 2)
    else:
        side = int(tile)
    plan = plan_tiles(height, width, side, tile_overlap, req)
    return None if plan.is_single else plan


def _fuse_tiled_pair(
    runner: NetworkRunner, req: SizeRequirements, pair: Pair, plan: TilePlan, output_range: OutputRange, batch_size: int, progress: bool
) -> torch.Tensor:
    # tiles in mini-batches on accelerators; the CPU gains nothing from batching
    tile_batch = images_per_call(runner, req, plan.tile_h, plan.tile_w, batch_size) if runner.device.type == "cuda" else 1
    # views, no copies: the full image stays on the host, tiles go to the device
    fused = fuse_tiled(
        runner.forward,
        pair.ir_y[None],
        pair.vis_y[None],
        plan,
        device=runner.device,
        tile_batch=tile_batch,
        size_req=req,
        progress=progress,
    )
    # the range policy sees the stitched image (global min/max), never a tile
    return apply_range(fused, output_range)[0]


def _batch_maker(pairs: Sequence[Pair], chunk: list[int]) -> BatchMaker:
    def make(pin: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ir = torch.stack([pairs[i].ir_y for i in chunk])
        vis = torch.stack([pairs[i].vis_y for i in chunk])
        return (ir.pin_memory(), vis.pin_memory()) if pin else (ir, vis)

    return make


def _fuse_whole(
    runner: NetworkRunner, req: SizeRequirements, pairs: Sequence[Pair], indices: list[int], output_range: OutputRange, per_call: int
) -> dict[int, torch.Tensor]:
    """Whole same-size images in chunks of ``per_call``: pair index -> fused luminance."""
    chunks = [indices[s : s + per_call] for s in range(0, len(indices), per_call)]
    outputs = run_pipelined(
        lambda ir, vis: forward_padded(runner, req, ir, vis),
        (_batch_maker(pairs, c) for c in chunks),
        runner.device,
        lambda res, _idx: apply_range(res, output_range),
    )
    results: dict[int, torch.Tensor] = {}
    done = 0
    for chunk, fused in zip(chunks, outputs):
        if fused.shape[0] != len(chunk):
            raise FusionError(f"the network gave {fused.shape[0]} images for a batch of {len(chunk)}")
        results.update(zip(chunk, fused))
        done += 1
    if done != len(chunks):  # never a silent gap: the caller zips the results with the pairs
        raise FusionError(f"{len(chunks) - done} of {len(chunks)} batches gave no result")
    return results


def run_pairs(
    runner: NetworkRunner,
    req: SizeRequirements,
    pairs: Sequence[Pair],
    *,
    output_range: OutputRange,
    batch_size: int,
    tile: TileLike = None,
    tile_overlap: int | None = None,
    progress: bool = False,
) -> list[torch.Tensor]:
    """Fused luminance ``(1, H, W)`` CPU tensors, one per pair in the order of ``pairs``.

    Raises:
        FusionError: a pair got no result (never silently dropped: the results are zipped with
            the pairs by the caller).
    """
    results: dict[int, torch.Tensor] = {}
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(pairs):
        by_size.setdefault((int(p.ir_y.shape[-2]), int(p.ir_y.shape[-1])), []).append(i)
    for (h, w), indices in by_size.items():
        plan = choose_tiles(runner, req, h, w, tile, tile_overlap)
        if plan is not None:
            for i in indices:
                results[i] = _fuse_tiled_pair(runner, req, pairs[i], plan, output_range, batch_size, progress)
        else:
            per_call = images_per_call(runner, req, h, w, batch_size)
            results.update(_fuse_whole(runner, req, pairs, indices, output_range, per_call))
    missing = [i for i in range(len(pairs)) if i not in results]
    if missing:
        raise FusionError(f"no fused result for pair(s) {missing} of {len(pairs)}")
    return [results[i] for i in range(len(pairs))]
