"""What every command shares: the one user-facing error, common options, loading the fuser."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emmafuse.fuser import Fuser

__all__ = [
    "CliError",
    "add_runtime_options",
    "add_tile_options",
    "as_cli_error",
    "fuse_kwargs",
    "load_fuser",
    "run_command",
    "tile_option",
]


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2.

    ``command`` names the sub-command in the prefix (``emmafuse eval: error: ...``); without it
    the prefix is ``emmafuse: error:``.
    """

    def __init__(self, message: str, *, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command

    @property
    def prefix(self) -> str:
        return f"emmafuse {self.command}" if self.command else "emmafuse"


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command (``args.func``); a :class:`CliError` becomes its line on stderr and 2."""
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"{exc.prefix}: error: {exc}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def as_cli_error(command: str | None = None) -> Iterator[None]:
    """Turn the library's one-line ``ValueError`` s (bad paths, suffixes, options) into exit code 2."""
    try:
        yield
    except ValueError as exc:
        raise CliError(str(exc), command=command) from exc


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="weights file (.safetensors) or released model name (default: the built-in model)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="compute precision")
    p.add_argument(
        "--output-range",
        default="clamp",
        choices=["clamp", "minmax"],
        help="clamp: keep the network output; minmax: stretch each image (paper protocol)",
    )


def tile_option(text: str) -> int | str:
    """'auto' or an integer; the range rules live in emmafuse.tiling.check_tile_options."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a tile side in pixels, got {text!r}") from None


def add_tile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tile",
        type=tile_option,
        default=None,
        help="tile side in pixels or 'auto' (default: whole images, tiled only when they do not fit in memory)",
    )
    p.add_argument("--tile-overlap", type=int, default=None, help="overlap of neighbouring tiles in pixels (default 64)")


def load_fuser(args: argparse.Namespace) -> Fuser:
    """``emmafuse.load`` with ``--weights``, ``--device`` and ``--dtype``; its errors are usage errors."""
    from emmafuse.loading import load

    with as_cli_error():  # WeightsError is a ValueError
        return load(args.weights, device=args.device, dtype=args.dtype)


def fuse_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``Fuser.fuse`` options from ``--output-range``, ``--tile`` and ``--tile-overlap`` (validated once)."""
    from emmafuse.tiling import DEFAULT_OVERLAP, check_tile_options

    kwargs: dict[str, Any] = {"output_range": args.output_range}
    for name in ("tile", "tile_overlap"):
        if getattr(args, name, None) is not None:
            kwargs[name] = getattr(args, name)
    with as_cli_error():  # validate once, before any pair is read (folder mode would otherwise skip every pair)
        check_tile_options(kwargs.get("tile"), kwargs.get("tile_overlap", DEFAULT_OVERLAP))
    return kwargs
