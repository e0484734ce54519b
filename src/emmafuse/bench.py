"""Throughput of a fuser on this machine (the library side of ``emmafuse bench``).

:func:`run_bench` prints, per image size: milliseconds per image and images per second of the
network (``Fuser.fuse_tensor`` on inputs already in host memory, including the copy to the
device) and of the whole ``Fuser.fuse`` call on 8-bit images (colour conversion, padding,
encoding), with the device, thread count, precision and weights. :func:`random_fuser` gives
seeded random weights for timing without pretrained ones: the timing is the same, the output
meaningless, and the report says "random weights (speed only)". With ``progress=True`` a bar
on stderr counts the runs (only when stderr is a terminal; the table lines are printed around it).

:func:`time_interleaved` is the one timing loop of the package and of ``benchmarks/``: several
variants run round-robin (so that a change of machine load hits them all alike), each run
timed on the wall clock and in process CPU time, with the device synchronised around it.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from emmafuse.errors import InputError
from emmafuse.fuser import Fuser, PrecisionLike
from emmafuse.models import UFuser
from emmafuse.tiling import TileLike, check_tile_options

__all__ = ["RANDOM_LABEL", "Timing", "check_counts", "random_fuser", "run_bench", "time_interleaved"]

RANDOM_LABEL = "random weights (speed only)"


def check_counts(batch: int, repeats: int, warmup: int) -> None:
    """Refuse counts that would time nothing (a median of zero runs is no measurement).

    Raises:
        InputError: ``batch`` or ``repeats`` below 1, or ``warmup`` negative (names the parameter).
    """
    if batch < 1:
        raise InputError(f"batch must be at least 1, got {batch}", parameter="batch")
    if repeats < 1:
        raise InputError(f"repeats must be at least 1 (timed runs per size), got {repeats}", parameter="repeats")
    if warmup < 0:
        raise InputError(f"warmup must be 0 or more, got {warmup}", parameter="warmup")


def random_fuser(device: str | torch.device | None = None, dtype: PrecisionLike = "float32") -> Fuser:
    """A fuser with seeded random weights (speed only), leaving the global RNG as it was."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = UFuser()
    torch.random.set_rng_state(gen_state)
    return Fuser(model, device=device, dtype=dtype, info={"name": RANDOM_LABEL})


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """The timed runs of one variant, in seconds."""

    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)  # process CPU time (steadier on a shared machine)

    @property
    def median_wall(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu_s)

    @property
    def min_wall(self) -> float:
        return min(self.wall_s)


def time_interleaved(
    variants: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 0,
    device: torch.device | None = None,
    budget_s: float | None = None,
    tick: Callable[[], object] = lambda: None,
) -> dict[str, Timing]:
    """Time each variant ``repeats`` times, round-robin, after ``warmup`` untimed rounds.

    ``device``: a CUDA device is synchronised before and after each timed run. ``budget_s``:
    stop after the round in which this much wall time has passed (at least one round is timed).
    ``tick`` is called after every run, warm-up included (a progress bar).

    Raises:
        InputError: ``repeats`` below 1 or ``warmup`` negative.
    """
    check_counts(1, repeats, warmup)
    for _ in range(warmup):
        for fn in variants.values():
            fn()
            tick()
    _sync(device)
    timings = {name: Timing() for name in variants}
    start = time.perf_counter()
    for _ in range(repeats):
        for name, fn in variants.items():
            _sync(device)
            cpu, wall = time.process_time(), time.perf_counter()
            fn()
            _sync(device)
            timings[name].wall_s.append(time.perf_counter() - wall)
            timings[name].cpu_s.append(time.process_time() - cpu)
            tick()
        if budget_s is not None and time.perf_counter() - start > budget_s:
            break
    return timings


def _median_seconds(
    fn: Callable[[], object], device: torch.device, repeats: int, warmup: int, tick: Callable[[], object] = lambda: None
) -> float:
    return time_interleaved({"run": fn}, repeats=repeats, warmup=warmup, device=device, tick=tick)["run"].median_wall


def run_bench(
    fuser: Fuser,
    sizes: Sequence[tuple[int, int]],
    *,
    batch: int = 1,
    repeats: int = 5,
    warmup: int = 1,
    tile: TileLike = None,
    tile_overlap: int | None = None,
    end_to_end: bool = True,
    label: str | None = None,
    out: Callable[[str], None] = print,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Time ``fuser`` on each ``(height, width)`` of ``sizes``; writes a table with ``out``, returns its rows.

    Args:
        batch: images per network call.
        repeats: timed runs per size (the median is reported); ``warmup`` untimed runs first.
        tile, tile_overlap: the tiling options passed to ``fuse()`` for the end-to-end time.
        end_to_end: also time the whole ``fuse()`` call on 8-bit images.
        label: what the weights are (default: the fuser's ``info`` name or path).
        progress: a progress bar of the runs on stderr (shown only when stderr is a terminal).

    Raises:
        InputError: bad counts or tile options (checked before anything is written).
    """
    from tqdm import tqdm

    check_counts(batch, repeats, warmup)
    check_tile_options(tile, tile_overlap, fuser.model.size_requirements)
    runs = len(sizes) * (warmup + repeats) * (2 if end_to_end else 1)
    # disable=None: tqdm shows the bar only when stderr is a terminal
    with tqdm(total=runs, desc="bench", unit="run", file=sys.stderr, leave=False, disable=None if progress else True) as bar:

        def write(line: str) -> None:
            with tqdm.external_write_mode(file=sys.stdout):  # the table line above the bar, not through it
                out(line)

        fuse = partial(fuser.fuse, tile=tile, tile_overlap=tile_overlap) if end_to_end else None
        return _table(fuser, sizes, batch, repeats, warmup, fuse, label, write, bar.update)


def _table(
    fuser: Fuser,
    sizes: Sequence[tuple[int, int]],
    batch: int,
    repeats: int,
    warmup: int,
    fuse: Callable[..., object] | None,
    label: str | None,
    out: Callable[[str], None],
    tick: Callable[[], object],
) -> list[dict[str, Any]]:
    """The measurements of :func:`run_bench` (``fuse``: the end-to-end call, ``None``: network only)."""
    import numpy as np

    from emmafuse.samples import synthetic_pair

    label = label or str(fuser.info.get("name") or fuser.info.get("path"))
    device = fuser.device
    where = str(device)
    if device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(device)})"
    else:
        where += f" ({torch.get_num_threads()} threads)"
    out(f"emmafuse bench: device {where}, dtype {str(fuser.dtype).replace('torch.', '')}, weights: {label}")
    out(f"torch {torch.__version__}; median of {repeats} runs after {warmup} warm-up")
    header = f"{'size':>11} {'batch':>5} {'ms/image':>10} {'images/s':>9} {'MP/s':>7}"
    if fuse is not None:
        header += f" {'fuse() ms/image':>16}"
    out(header)
    rows: list[dict[str, Any]] = []
    gen = torch.Generator().manual_seed(0)
    for h, w in sizes:
        ir = torch.rand(batch, 1, h, w, generator=gen)
        vis = torch.rand(batch, 1, h, w, generator=gen)
        net = _median_seconds(partial(fuser.fuse_tensor, ir, vis), device, repeats, warmup, tick) / batch
        row: dict[str, Any] = {"width": w, "height": h, "batch": batch, "ms_per_image": net * 1e3, "images_per_s": 1.0 / net}
        line = f"{f'{w}x{h}':>11} {batch:>5} {net * 1e3:>10.2f} {1.0 / net:>9.2f} {h * w / net / 1e6:>7.2f}"
        if fuse is not None:
            if min(h, w) >= 32:
                ir8, vis8 = synthetic_pair(h, w, seed=0)
            else:
                ir8 = np.zeros((h, w), np.uint8)
                vis8 = np.zeros((h, w, 3), np.uint8)
            e2e = _median_seconds(partial(fuse, ir8, vis8), device, repeats, warmup, tick)
            row["fuse_ms_per_image"] = e2e * 1e3
            line += f" {e2e * 1e3:>16.2f}"
        rows.append(row)
        out(line)
    if label == RANDOM_LABEL:
        out(f"note: {RANDOM_LABEL}; outputs are meaningless, timings are representative")
    return rows
