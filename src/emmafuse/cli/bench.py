"""``emmafuse bench``: throughput of the installed fuser on this machine (:mod:`emmafuse.bench`).

Without pretrained weights installed locally (the benchmark never downloads), or with
``--random``, it times seeded random weights and says so. Every option is checked, and the
fuser loaded, before the first line is printed; a progress bar counts the runs on a terminal.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from emmafuse.cli._common import CliError, add_runtime_options, add_tile_options, load_fuser, tile_kwargs

if TYPE_CHECKING:
    from emmafuse.fuser import Fuser

__all__ = ["add_bench_command", "parse_sizes"]


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


def add_bench_command(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="measure fusion speed on this machine (ms/image, images/s)")
    add_runtime_options(p, output_range=False, weights_default="the installed model, else random")
    p.add_argument("--random", action="store_true", help="use seeded random weights (speed only)")
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes("640x480,1920x1080"), help="WIDTHxHEIGHT list (default 640x480,1920x1080)")
    p.add_argument("--batch", type=int, default=1, help="images per network call (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per size; the median is reported (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    add_tile_options(p)  # the same options as 'emmafuse fuse' (used by the fuse() timing)
    p.add_argument("--compile", action="store_true", help="torch.compile the network first (slow start)")
    p.add_argument("--cuda-graphs", action="store_true", help="replay CUDA graphs (CUDA only)")
    p.add_argument("--no-end-to-end", dest="end_to_end", action="store_false", help="time only the network")
    p.set_defaults(func=_cmd_bench)


def _bench_fuser(args: argparse.Namespace, notes: list[str]) -> Fuser:
    """The fuser to time: ``--weights``, else the installed model, else seeded random weights
    (the benchmark never downloads)."""
    from emmafuse.bench import random_fuser
    from emmafuse.errors import WeightsError

    if not args.random:
        try:
            return load_fuser(args, local_files_only=True)
        except CliError as exc:
            if args.weights is not None or not isinstance(exc.__cause__, WeightsError):
                raise  # asked for these weights: say what is wrong
            notes.append(f"note: no installed pretrained weights ({str(exc.__cause__).splitlines()[0]})")
    return random_fuser(args.device, args.dtype)


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from emmafuse.bench import check_counts, run_bench

    check_counts(args.batch, args.repeats, args.warmup)  # before loading anything
    if args.threads is not None and args.threads < 1:
        raise CliError(f"--threads must be at least 1, got {args.threads}")
    tiles = tile_kwargs(args)
    notes: list[str] = []
    if args.threads:
        torch.set_num_threads(args.threads)
    fuser = _bench_fuser(args, notes)
    if args.compile:
        fuser.compile()
    if args.cuda_graphs:
        fuser.use_cuda_graphs()
    for note in notes:  # printed only once nothing before the table can fail
        print(note)
    run_bench(
        fuser,
        args.sizes,
        batch=args.batch,
        repeats=args.repeats,
        warmup=args.warmup,
        end_to_end=args.end_to_end,
        out=lambda line: print(line, flush=True),
        progress=True,  # shown only when stderr is a terminal
        **tiles,
    )
    return 0
