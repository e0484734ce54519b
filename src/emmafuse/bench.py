"""``emmafuse bench``: throughput of the installed fuser on this machine.

Prints, per image size: milliseconds per image and images per second of the network
(``Fuser.fuse_tensor`` on inputs already in host memory, including the copy to the device) and
of the whole ``Fuser.fuse`` call on 8-bit images (colour conversion, padding, encoding), with
the device, thread count, precision and weights. Without pretrained weights (or with
``--random``) it uses seeded random weights: the timing is the same, the output meaningless, and
the report says "random weights (speed only)".

This module is imported when the CLI parser is built: keep heavy imports inside functions.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

__all__ = ["add_bench_command", "check_counts", "parse_sizes", "run_bench"]

RANDOM_LABEL = "random weights (speed only)"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"640x480,1920x1080"`` -> ``[(480, 640), (1080, 1920)]`` as (height, width)."""
    sizes = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        try:
            w, h = (int(v) for v in part.split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"sizes are WIDTHxHEIGHT, comma-separated; got {part!r}") from None
        if w < 1 or h < 1:
            raise argparse.ArgumentTypeError(f"size {part!r} must be positive")
        sizes.append((h, w))
    if not sizes:
        raise argparse.ArgumentTypeError("give at least one size, e.g. 640x480")
    return sizes


def check_counts(batch: int, repeats: int, warmup: int) -> None:
    """Refuse counts that would time nothing (a median of zero runs is no measurement).

    Raises:
        ValueError: ``batch`` or ``repeats`` below 1, or ``warmup`` negative.
    """
    if batch < 1:
        raise ValueError(f"--batch must be at least 1, got {batch}")
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1 (timed runs per size), got {repeats}")
    if warmup < 0:
        raise ValueError(f"--warmup must be 0 or more, got {warmup}")


def add_bench_command(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="measure fusion speed on this machine (ms/image, images/s)")
    p.add_argument("--weights", help="weights file or released model name (default: the installed model, else random)")
    p.add_argument("--random", action="store_true", help="use seeded random weights (speed only)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="compute precision")
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes("640x480,1920x1080"), help="WIDTHxHEIGHT list (default 640x480,1920x1080)")
    p.add_argument("--batch", type=int, default=1, help="images per network call (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per size; the median is reported (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--tile", default=None, help="tile option passed to fuse() ('auto' or a side in pixels)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network first (slow start)")
    p.add_argument("--cuda-graphs", action="store_true", help="replay CUDA graphs (CUDA only)")
    p.add_argument("--no-end-to-end", dest="end_to_end", action="store_false", help="time only the network")
    p.set_defaults(func=_cmd_bench)


def _load(args: argparse.Namespace) -> tuple[Any, str]:
    import torch

    import emmafuse
    from emmafuse.fuser import Fuser
    from emmafuse.models import UFuser

    if not args.random:
        try:
            fuser = emmafuse.load(args.weights, device=args.device, dtype=args.dtype, local_files_only=True)
            return fuser, str(fuser.info.get("name") or fuser.info.get("path"))
        except emmafuse.WeightsError as exc:
            if args.weights is not None:  # asked for these weights: say what is wrong
                raise
            # nothing installed locally (the benchmark never downloads): time random weights
            print(f"note: no installed pretrained weights ({str(exc).splitlines()[0]})")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = UFuser()
    torch.random.set_rng_state(gen_state)
    return Fuser(model, device=args.device, dtype=args.dtype, info={"name": RANDOM_LABEL}), RANDOM_LABEL


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn: Any, device: Any, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run_bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the benchmark described by ``args``; prints a table and returns its rows."""
    import numpy as np
    import torch

    from emmafuse.samples import synthetic_pair

    check_counts(args.batch, args.repeats, args.warmup)  # before loading anything
    if args.threads:
        torch.set_num_threads(args.threads)
    fuser, label = _load(args)
    if args.compile:
        fuser.compile()
    if args.cuda_graphs:
        fuser.use_cuda_graphs()
    device = fuser.device
    where = str(device)
    if device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(device)})"
    else:
        where += f" ({torch.get_num_threads()} threads)"
    tile = args.tile
    if tile is not None and tile != "auto":
        tile = int(tile)
    print(f"emmafuse bench: device {where}, dtype {str(fuser.dtype).replace('torch.', '')}, weights: {label}")
    print(f"torch {torch.__version__}; median of {args.repeats} runs after {args.warmup} warm-up")
    header = f"{'size':>11} {'batch':>5} {'ms/image':>10} {'images/s':>9} {'MP/s':>7}"
    if args.end_to_end:
        header += f" {'fuse() ms/image':>16}"
    print(header)
    rows = []
    gen = torch.Generator().manual_seed(0)
    for h, w in args.sizes:
        ir = torch.rand(args.batch, 1, h, w, generator=gen)
        vis = torch.rand(args.batch, 1, h, w, generator=gen)
        net = _median_seconds(lambda a=ir, b=vis: fuser.fuse_tensor(a, b), device, args.repeats, args.warmup) / args.batch
        row = {"width": w, "height": h, "batch": args.batch, "ms_per_image": net * 1e3, "images_per_s": 1.0 / net}
        line = f"{f'{w}x{h}':>11} {args.batch:>5} {net * 1e3:>10.2f} {1.0 / net:>9.2f} {h * w / net / 1e6:>7.2f}"
        if args.end_to_end:
            if min(h, w) >= 32:
                ir8, vis8 = synthetic_pair(h, w, seed=0)
            else:
                ir8 = np.zeros((h, w), np.uint8)
                vis8 = np.zeros((h, w, 3), np.uint8)
            e2e = _median_seconds(lambda a=ir8, b=vis8: fuser.fuse(a, b, tile=tile), device, args.repeats, args.warmup)
            row["fuse_ms_per_image"] = e2e * 1e3
            line += f" {e2e * 1e3:>16.2f}"
        rows.append(row)
        print(line, flush=True)
    if label == RANDOM_LABEL:
        print(f"note: {RANDOM_LABEL}; outputs are meaningless, timings are representative")
    return rows


def _cmd_bench(args: argparse.Namespace) -> int:
    import emmafuse
    from emmafuse.cli import CliError

    try:
        run_bench(args)
    except (emmafuse.WeightsError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    return 0
