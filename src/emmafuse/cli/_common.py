"""What every command shares: the one user-facing error, common options, loading the fuser."""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from emmafuse.errors import EmmafuseError

if TYPE_CHECKING:
    from emmafuse.fuser import Fuser

__all__ = [
    "CliError",
    "add_overwrite_option",
    "add_quiet_option",
    "add_runtime_options",
    "add_tile_options",
    "as_cli_error",
    "fuse_kwargs",
    "load_fuser",
    "parse_command_line",
    "run_command",
    "tile_kwargs",
    "tile_option",
    "warn_once",
]


class CliError(EmmafuseError):
    """A user-facing error: printed as one line, exit code 2.

    ``command`` names the sub-command in the prefix (``emmafuse eval: error: ...``); without it
    :func:`run_command` uses the command being run, so every command's errors read
    ``emmafuse <command>: error: ...`` (argparse's own errors have the same form).
    """

    def __init__(self, message: str, *, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command

    @property
    def prefix(self) -> str:
        return f"emmafuse {self.command}" if self.command else "emmafuse"

    def line(self, command: str | None = None) -> str:
        """The one line printed for this error (``command``: used when the error names none)."""
        prefix = self.prefix if self.command or not command else f"emmafuse {command}"
        return f"{prefix}: error: {self}"


@contextlib.contextmanager
def warn_once() -> Iterator[None]:
    """Within the block, each distinct warning is shown once: a folder of 500 RGBA images written
    as ``.jpg`` warns once that alpha is dropped, not 500 times."""
    seen: set[tuple[type[Warning], str]] = set()
    show = warnings.showwarning

    def show_first(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        key = (category, str(message))
        if key not in seen:
            seen.add(key)
            show(message, category, *args, **kwargs)

    with warnings.catch_warnings():  # the filters stay as they are (-W ignore still ignores)
        warnings.showwarning = show_first
        yield


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command (``args.func``); a :class:`CliError` becomes its line on stderr and 2."""
    try:
        with warn_once():
            return int(args.func(args) or 0)
    except CliError as exc:
        print(exc.line(getattr(args, "command", None)), file=sys.stderr)
        return 2


def _innermost_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub-)parser of the command that was parsed (``emmafuse train all`` -> its own parser)."""
    current = parser
    while True:
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, subs[0].dest, None) if subs else None
        if not subs or not isinstance(chosen, str) or chosen not in subs[0].choices:
            return current
        current = subs[0].choices[chosen]


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that unrecognized arguments are reported by the
    sub-command's parser, with that command's usage line (``emmafuse models extra`` shows the
    usage of ``emmafuse models``, not the top-level one). Exits with code 2 on errors."""
    args, extras = parser.parse_known_args(list(argv))
    if extras:
        _innermost_parser(parser, args).error(f"unrecognized arguments: {' '.join(extras)}")
    return args


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


def add_overwrite_option(p: argparse.ArgumentParser, extra_help: str = "") -> None:
    """``--overwrite`` (default) / ``--no-overwrite``; ``extra_help`` adds what the command does more."""
    p.add_argument(
        "--overwrite",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="replace existing outputs (default); --no-overwrite refuses an existing -o file" + extra_help,
    )


def add_quiet_option(p: argparse.ArgumentParser) -> None:
    """``-q`` / ``--quiet``: no progress bar."""
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar (bars are shown on a terminal only)")


def tile_option(text: str) -> int | str:
    """'auto' or an integer; the range rules live in emmafuse.tiling.check_tile_options."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a tile side in pixels, got {text!r}") from None


def add_tile_options(p: argparse.ArgumentParser) -> None:
    """``--tile`` and ``--tile-overlap``, the one definition for every command that fuses."""
    p.add_argument(
        "--tile",
        type=tile_option,
        default=None,
        help="tile side in pixels (at least 16) or 'auto' (default: whole images, tiled only when they "
        "do not fit in memory)",
    )
    p.add_argument(
        "--tile-overlap",
        type=int,
        default=None,
        help="overlap of neighbouring tiles in pixels, with --tile (default: a quarter of the tile side "
        "rounded down to a multiple of 8, at least 8, at most 64)",
    )


def load_fuser(args: argparse.Namespace) -> Fuser:
    """``emmafuse.load`` with ``--weights``, ``--device`` and ``--dtype``; its errors are usage errors."""
    from emmafuse.loading import load

    with as_cli_error():  # WeightsError is a ValueError
        return load(args.weights, device=args.device, dtype=args.dtype)


def tile_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``tile`` / ``tile_overlap`` of ``Fuser.fuse`` from ``--tile`` / ``--tile-overlap``, validated
    before any work (folder mode would otherwise skip every pair; bench would fail mid-table)."""
    from emmafuse.tiling import check_tile_options

    tile, overlap = getattr(args, "tile", None), getattr(args, "tile_overlap", None)
    if overlap is not None and tile is None:
        raise CliError("--tile-overlap needs --tile (a tile side in pixels, or 'auto')")
    with as_cli_error():
        check_tile_options(tile, overlap)
    return {name: value for name, value in (("tile", tile), ("tile_overlap", overlap)) if value is not None}


def fuse_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``Fuser.fuse`` options from ``--output-range``, ``--tile`` and ``--tile-overlap`` (validated once)."""
    return {"output_range": args.output_range, **tile_kwargs(args)}
