"""Tiled inference: fuse images of any size with bounded device memory.

The full image stays on the host. It is padded once to the network's size multiple (exactly as
the untiled path pads it), cut into overlapping tiles whose sides and offsets are multiples of
that multiple (the network's :class:`~emmafuse.models.SizeRequirements`; default the U-Fuser's,
so each tile sees the same stride-2 sampling grid as the whole image would), and only tiles
travel to the device, a mini-batch at a time (:func:`emmafuse.runner.run_pipelined`). Tile outputs
are blended back with separable raised-cosine ("feathered") weights normalised by their sum, so
there is no seam and every pixel is a convex combination of the tiles that cover it.

Tiling is *not* exact for the U-Fuser: its channel attention normalises queries and keys over
all pixels of the image, so a tile sees slightly different attention statistics than the whole
image. ``docs/performance.md`` and ``benchmarks/RESULTS.md`` give the measured differences and
the reasons for the defaults below.

Overlap: ``tile_overlap=None`` (the default) derives it from the tile side with
:func:`default_overlap`: a quarter of the side rounded down to the network's multiple, at least
one multiple and at most :data:`DEFAULT_OVERLAP` (so ``tile=100`` works: 96-pixel tiles, 24-pixel
overlap). An explicit overlap must be at most half the tile side.

Automatic tile size (``tile="auto"``, and the default ``tile=None`` for images that do not fit):
the largest square tile whose estimated peak memory (:data:`BYTES_PER_PIXEL` times the padded
tile area) fits the memory budget: on CUDA a fraction of the free device memory
(``torch.cuda.mem_get_info``), on the CPU a fixed budget (:data:`CPU_MEMORY_BUDGET`, overridable
with the ``EMMAFUSE_CPU_MEMORY_BUDGET`` environment variable, e.g. ``"1G"`` or ``"800M"``).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from emmafuse.errors import InputError, InputTypeError
from emmafuse.models import SIZE_MULTIPLE, UFUSER_SIZE, SizeRequirements
from emmafuse.padding import Pads, crop, pad_to_network
from emmafuse.runner import BatchMaker, ForwardFn, run_pipelined

__all__ = [
    "BYTES_PER_PIXEL",
    "CPU_MEMORY_BUDGET",
    "DEFAULT_OVERLAP",
    "MIN_AUTO_TILE",
    "TileLike",
    "TilePlan",
    "auto_tile_size",
    "axis_starts",
    "check_tile_options",
    "default_overlap",
    "feather_ramp",
    "fuse_tiled",
    "memory_budget",
    "plan_tiles",
]

TileLike = int | str | None

#: Largest overlap :func:`default_overlap` picks, in pixels (the blending ramp's length); the
#: overlap of tiles of 256 pixels and more.
DEFAULT_OVERLAP = 64
#: ``"auto"`` never picks tiles smaller than this: smaller tiles see too little of the image
#: for the global attention statistics (and cost more overlap). The U-Fuser's tiling advice
#: (``UFuser.size_requirements.min_tile``).
MIN_AUTO_TILE = UFUSER_SIZE.min_tile
#: Largest tile ``"auto"`` picks (bounds a single device call; CUDA may fit far more).
MAX_AUTO_TILE = 8192
#: Host-memory budget of one network call on the CPU, in bytes (see the module doc): 1.25 GiB
#: lets a 1920x1080 image run whole (1.16 GiB estimated) and keeps an 8K fusion under 3 GB RSS.
CPU_MEMORY_BUDGET = 5 << 28
#: Fraction of the free CUDA memory ``"auto"`` plans to use.
CUDA_MEMORY_FRACTION = 0.6
#: Estimated peak bytes per (padded) pixel of one U-Fuser forward, by compute dtype. Measured
#: on the CPU with ``ru_maxrss`` (fp32, fast paths, 1024x1024 and 2048x1024: 460-490 B/px), plus
#: a margin for allocator slack; half precision is an estimate (activations halve, the fp32
#: attention statistics do not).
BYTES_PER_PIXEL = {torch.float32: 600, torch.float16: 360, torch.bfloat16: 360}


def _parse_bytes(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    s = text.strip().lower().rstrip("b").rstrip("i")
    scale = 1
    if s and s[-1] in units:
        scale = units[s[-1]]
        s = s[:-1]
    try:
        value = float(s) * scale
    except ValueError as exc:
        raise InputError(f"EMMAFUSE_CPU_MEMORY_BUDGET={text!r} is not a size such as '1G' or '800M'") from exc
    if value <= 0:
        raise InputError(f"EMMAFUSE_CPU_MEMORY_BUDGET={text!r} must be positive")
    return int(value)


def memory_budget(device: torch.device) -> int:
    """Bytes one network call may use on ``device`` (see the module doc)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # memory the caching allocator holds but does not use is free for us as well
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int((free + max(cached, 0)) * CUDA_MEMORY_FRACTION)
    env = os.environ.get("EMMAFUSE_CPU_MEMORY_BUDGET")
    return _parse_bytes(env) if env else CPU_MEMORY_BUDGET


def bytes_per_pixel(dtype: torch.dtype) -> int:
    return BYTES_PER_PIXEL.get(dtype, BYTES_PER_PIXEL[torch.float32])


def auto_tile_size(budget: int, dtype: torch.dtype, batch: int = 1, size_req: SizeRequirements = UFUSER_SIZE) -> int:
    """Largest square tile side (a multiple of the network's) whose forward fits ``budget`` bytes.

    Never below the network's ``min_tile`` advice, never above :data:`MAX_AUTO_TILE`.
    """
    side = math.isqrt(max(budget // (bytes_per_pixel(dtype) * max(batch, 1)), 1))
    side = size_req.round_down(side)
    return int(min(max(side, size_req.min_tile, size_req.minimum), MAX_AUTO_TILE))


def default_overlap(tile: int, size_req: SizeRequirements = UFUSER_SIZE) -> int:
    """The overlap used when none is given: a quarter of the tile side (rounded down to the
    network's multiple), at least one multiple, at most :data:`DEFAULT_OVERLAP`, never more than
    half the side (U-Fuser: 16 -> 8, 100 -> 24, 256 and up -> 64)."""
    side = size_req.round_down(tile)
    quarter = size_req.round_down(side // 4)
    return min(max(quarter, size_req.multiple), DEFAULT_OVERLAP, side // 2)


_OVERLAP_MESSAGE = "tile_overlap must be a non-negative integer number of pixels, got {!r}"


def check_tile_options(tile: TileLike, overlap: int | None, size_req: SizeRequirements = UFUSER_SIZE) -> None:
    """Validate ``tile`` / ``tile_overlap`` (``overlap=None``: derived).

    Raises:
        InputTypeError: a value of the wrong type (an :class:`InputError`, so a ``ValueError``).
        InputError: a value out of range; ``parameter`` names the one at fault.
    """
    if isinstance(tile, bool) or not (tile is None or tile == "auto" or isinstance(tile, int)):
        raise InputTypeError(
            f"tile must be None, 'auto' or an integer tile side in pixels, got {tile!r}", parameter="tile"
        )
    if isinstance(tile, int) and tile < size_req.minimum:
        raise InputError(
            f"tile must be at least {size_req.minimum} pixels (the network's minimum side), got {tile}",
            parameter="tile",
        )
    if overlap is None:
        return
    if isinstance(overlap, bool) or not isinstance(overlap, int):
        raise InputTypeError(_OVERLAP_MESSAGE.format(overlap), parameter="tile_overlap")
    if overlap < 0:
        raise InputError(_OVERLAP_MESSAGE.format(overlap), parameter="tile_overlap")
    if isinstance(tile, int) and overlap > size_req.round_down(tile) // 2:
        raise InputError(
            f"tile_overlap={overlap} is too large for tile={tile}: it must be at most half the "
            f"tile side ({size_req.round_down(tile) // 2}), or tiles would advance by less than the overlap",
            parameter="tile_overlap",
        )


def feather_ramp(length: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Raised-cosine ramp rising over ``length`` samples, strictly inside (0, 1).

    ``ramp[k] + ramp[length - 1 - k] == 1``: two tiles meeting over an overlap of ``length``
    pixels get weights that already sum to one.
    """
    k = torch.arange(length, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(math.pi * (k + 0.5) / length)).to(dtype)


def axis_starts(length: int, tile: int, overlap: int, multiple: int = SIZE_MULTIPLE) -> list[int]:
    """Tile offsets along one padded axis: multiples of ``multiple``, first 0, last ``length - tile``.

    Tiles are spread evenly; neighbours overlap by at least ``overlap`` pixels.
    """
    if length <= tile:
        return [0]
    m = multiple
    units = (length - tile) // m  # both are multiples of m
    max_step = max((tile - overlap) // m, 1)
    n = 2
    while math.ceil(units / (n - 1)) > max_step:
        n += 1
    return [m * round(i * units / (n - 1)) for i in range(n)]


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one padded ``height x width`` image go and how they are blended."""

    height: int  # padded image size (multiples of 8)
    width: int
    tile_h: int
    tile_w: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    overlap: int

    @property
    def num_tiles(self) -> int:
        return len(self.ys) * len(self.xs)

    @property
    def is_single(self) -> bool:
        return self.num_tiles == 1

    def boxes(self) -> Iterator[tuple[int, int, int, int]]:
        """``(y0, y1, x0, x1)`` of every tile, row by row."""
        for y in self.ys:
            for x in self.xs:
                yield y, y + self.tile_h, x, x + self.tile_w

    def _raw_axis_weights(self, starts: Sequence[int], size: int) -> list[torch.Tensor]:
        raw = []
        for i, s in enumerate(starts):
            w = torch.ones(size, dtype=torch.float64)
            if i > 0:  # rising over the overlap with the previous tile
                ov = starts[i - 1] + size - s
                w[:ov] *= feather_ramp(ov, torch.float64)
            if i + 1 < len(starts):  # falling over the overlap with the next tile
                ov = s + size - starts[i + 1]
                w[size - ov :] *= feather_ramp(ov, torch.float64).flip(0)
            raw.append(w)
        return raw

    def _axis_weights(self, starts: Sequence[int], size: int, length: int) -> list[torch.Tensor]:
        raw = self._raw_axis_weights(starts, size)
        total = torch.zeros(length, dtype=torch.float64)
        for s, w in zip(starts, raw):
            total[s : s + size] += w
        return [w / total[s : s + size] for s, w in zip(starts, raw)]

    def axis_weights(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-tile 1-D weights along y and x, already normalised by their sums (float64).

        The 2-D weight of tile ``(i, j)`` is the outer product ``wy[i] x wx[j]``. The tile grid is
        a Cartesian product, so the sum of the 2-D weights is the outer product of the 1-D sums:
        normalising each axis normalises the blend, and no full-size weight image is needed.
        """
        return (
            self._axis_weights(self.ys, self.tile_h, self.height),
            self._axis_weights(self.xs, self.tile_w, self.width),
        )


def plan_tiles(
    height: int, width: int, tile: int, overlap: int | None = None, size_req: SizeRequirements = UFUSER_SIZE
) -> TilePlan:
    """Plan tiles of side ``tile`` (rounded down to the network's multiple) for an image of this size.

    ``height``/``width`` are the *unpadded* image size; the plan covers the padded image that
    :func:`~emmafuse.padding.pad_to_network` makes. A side not larger than the tile is one tile.
    ``overlap=None``: :func:`default_overlap` of the tile.
    """
    check_tile_options(tile, overlap, size_req)
    if overlap is None:
        overlap = default_overlap(tile, size_req)
    hp, wp = size_req.padded(height), size_req.padded(width)
    side = size_req.round_down(tile)
    th, tw = _balanced_side(hp, side, overlap, size_req), _balanced_side(wp, side, overlap, size_req)
    m = size_req.multiple
    return TilePlan(
        height=hp,
        width=wp,
        tile_h=th,
        tile_w=tw,
        ys=tuple(axis_starts(hp, th, overlap, m)),
        xs=tuple(axis_starts(wp, tw, overlap, m)),
        overlap=overlap,
    )


def _balanced_side(length: int, side: int, overlap: int, size_req: SizeRequirements) -> int:
    """The smallest tile side (a multiple, <= ``side``) that needs no more tiles than ``side``.

    Shrinking the tiles to what their number requires keeps the overlap close to the requested
    one instead of wasting compute on a large last overlap.
    """
    if length <= side:
        return length
    m = size_req.multiple
    n = len(axis_starts(length, side, overlap, m))
    best = side
    cand = -(-(length + (n - 1) * overlap) // n)  # ceil((length + (n-1)*overlap) / n)
    cand = max(-(-cand // m) * m, size_req.minimum)
    while cand < side:
        if overlap <= cand // 2 and len(axis_starts(length, cand, overlap, m)) <= n:
            best = cand
            break
        cand += m
    return best


_Job = tuple[int, int, int, int, int]  # image index, y0, x0, tile row i, tile column j


def _pad_for_plan(
    ir: torch.Tensor, vis: torch.Tensor, plan: TilePlan, size_req: SizeRequirements
) -> tuple[torch.Tensor, torch.Tensor, Pads]:
    """Both host images padded as the untiled path pads them, after checking they fit ``plan``."""
    if ir.device.type != "cpu" or vis.device.type != "cpu":
        raise InputError("fuse_tiled expects host (CPU) tensors; only tiles go to the device")
    if ir.shape != vis.shape or ir.ndim != 4 or ir.shape[1] != 1:
        raise InputError(
            f"fuse_tiled expects two (N, 1, H, W) tensors of one shape, got {tuple(ir.shape)} and {tuple(vis.shape)}"
        )
    ir_p, pads = pad_to_network(ir.float(), size_req)
    vis_p, _ = pad_to_network(vis.float(), size_req)
    if tuple(ir_p.shape[-2:]) != (plan.height, plan.width):
        raise InputError(f"tile plan is for {plan.height}x{plan.width}, padded image is {tuple(ir_p.shape[-2:])}")
    return ir_p, vis_p, pads


def _tile_maker(ir_p: torch.Tensor, vis_p: torch.Tensor, plan: TilePlan, batch: list[_Job]) -> BatchMaker:
    """The host batch of the tiles in ``batch`` (in pinned memory when asked), built on demand."""
    th, tw = plan.tile_h, plan.tile_w

    def make(pin: bool) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.empty(len(batch), 1, th, tw, pin_memory=pin)
        b = torch.empty(len(batch), 1, th, tw, pin_memory=pin)
        for t, (k, y, x, _i, _j) in enumerate(batch):
            a[t].copy_(ir_p[k, :, y : y + th, x : x + tw])
            b[t].copy_(vis_p[k, :, y : y + th, x : x + tw])
        return a, b

    return make


def fuse_tiled(
    forward: ForwardFn,
    ir: torch.Tensor,
    vis: torch.Tensor,
    plan: TilePlan,
    *,
    device: torch.device,
    tile_batch: int = 1,
    size_req: SizeRequirements = UFUSER_SIZE,
    progress: bool = False,
) -> torch.Tensor:
    """Fuse host tensors ``(N, 1, H, W)`` tile by tile; returns the ``(N, 1, H, W)`` host result.

    ``forward(ir_tiles, vis_tiles)`` runs the network on device tensors of padded tile size and
    returns float32 device tensors. Tiles travel in mini-batches of ``tile_batch`` through
    :func:`~emmafuse.runner.run_pipelined`; the weighted tile outputs are accumulated into one host image.
    ``progress``: a tile-count progress bar on stderr, shown only when stderr is a terminal.
    """
    from tqdm import tqdm

    ir_p, vis_p, pads = _pad_for_plan(ir, vis, plan, size_req)
    out = torch.zeros(ir.shape[0], 1, plan.height, plan.width, dtype=torch.float32)
    wy, wx = plan.axis_weights()
    jobs: list[_Job] = [
        (k, y, x, i, j) for k in range(ir.shape[0]) for i, y in enumerate(plan.ys) for j, x in enumerate(plan.xs)
    ]
    step = max(int(tile_batch), 1)
    batches = [jobs[s : s + step] for s in range(0, len(jobs), step)]
    weights: dict[tuple[int, int], torch.Tensor] = {}

    def weigh(res: torch.Tensor, idx: int) -> torch.Tensor:
        for _k, _y, _x, i, j in batches[idx]:
            if (i, j) not in weights:
                weights[i, j] = (wy[i][:, None] * wx[j][None, :]).float().to(res.device)
        return res * torch.stack([weights[i, j] for (_k, _y, _x, i, j) in batches[idx]])[:, None]

    results = run_pipelined(forward, (_tile_maker(ir_p, vis_p, plan, b) for b in batches), device, weigh)
    # disable=None: tqdm shows the bar only when stderr is a terminal
    with tqdm(total=len(jobs), desc="tiles", unit="tile", file=sys.stderr, leave=False, disable=None if progress else True) as bar:
        for batch, res in zip(batches, results):
            for t, (k, y, x, _i, _j) in enumerate(batch):
                out[k, :, y : y + plan.tile_h, x : x + plan.tile_w] += res[t]
            bar.update(len(batch))
    return crop(out, pads)
