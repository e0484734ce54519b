"""What every command shares: the error model, common options, loading the fuser.

Errors: a command raises :class:`CliError` for a usage error of its own; the library raises
:class:`~emmafuse.errors.EmmafuseError` s. :func:`run_command` prints either as one line
(``emmafuse <command>: error: ...``, the form of argparse's own errors) and returns 2; where the
library error names the ``parameter`` at fault, the line names its flag (``argument --tile: ...``,
see :data:`FLAGS`). An ``OSError`` about a file (it carries the file name) is one line too. Any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
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
    "FLAGS",
    "error_line",
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


#: The flag of each library parameter that the command line sets (one table for every command).
FLAGS: dict[str, str] = {
    "name_or_path": "--weights",
    "weights": "--weights",
    "device": "--device",
    "dtype": "--dtype",
    "output_range": "--output-range",
    "tile": "--tile",
    "tile_overlap": "--tile-overlap",
    "batch": "--batch",
    "batch_size": "--batch",
    "repeats": "--repeats",
    "warmup": "--warmup",
    "threads": "--threads",
    "frames": "--frames",
    "start": "--start",
    "crf": "--crf",
    "overwrite": "--no-overwrite",  # the library refuses an existing output only when overwrite is off
    "ext": "--ext",
    "suffix": "--ext",
    "ir_dir": "--ir-dir",
    "vis_dir": "--vis-dir",
    "out_dir": "-o",
    "jobs": "--jobs",
    "metrics": "--metrics",
    "preset": "--preset",
    "kind": "--kind",
    "fused_dirs": "--fused/--compare",
    "fuser_name": "--weights-name",
    "opset": "--opset",
}


def error_line(
    exc: BaseException, command: str | None = None, flag_of: Callable[[str], str | None] | None = None
) -> str:
    """The one line printed for a user-facing error: a :class:`CliError`, an
    :class:`~emmafuse.errors.EmmafuseError` (with the flag of its ``parameter``: ``flag_of``, a
    command's own lookup set with ``set_defaults(flag_of=...)``, else :data:`FLAGS`) or an
    ``OSError`` about a file."""
    if isinstance(exc, CliError):
        return exc.line(command)
    prefix = f"emmafuse {command}" if command else "emmafuse"
    if isinstance(exc, EmmafuseError):
        parameter = exc.parameter or ""
        flag = (flag_of(parameter) if flag_of is not None else None) or FLAGS.get(parameter)
        return f"{prefix}: error: {f'argument {flag}: ' if flag else ''}{exc}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{prefix}: error: {exc.filename}: {exc.strerror or exc}"
    return f"{prefix}: error: {exc}"


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command (``args.func``). A :class:`CliError`, any
    :class:`~emmafuse.errors.EmmafuseError` and an ``OSError`` about a named file become one line
    on stderr and exit code 2; anything else propagates with its traceback (it is a bug)."""
    try:
        with warn_once():
            return int(args.func(args) or 0)
    except EmmafuseError as exc:
        print(error_line(exc, getattr(args, "command", None), getattr(args, "flag_of", None)), file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:  # not about a file the user named (a socket, the GPU, ...): a bug
            raise
        print(error_line(exc, getattr(args, "command", None)), file=sys.stderr)
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


def add_runtime_options(p: argparse.ArgumentParser, *, output_range: bool = True, weights_default: str = "the built-in model") -> None:
    """``--weights``, ``--device``, ``--dtype`` and (unless ``output_range=False``) ``--output-range``."""
    p.add_argument("--weights", help=f"weights file (.safetensors) or released model name (default: {weights_default})")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="compute precision")
    if output_range:
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


def load_fuser(args: argparse.Namespace, *, local_files_only: bool = False) -> Fuser:
    """``emmafuse.load`` with ``--weights``, ``--device`` and ``--dtype`` (float32 where a command has
    no ``--dtype``), the one loader of every command. A weights error becomes
    ``cannot load weights ...`` (the library's error is its ``__cause__``); a bad device or
    precision is the library's error, with its flag."""
    from emmafuse.errors import WeightsError
    from emmafuse.loading import load

    weights = getattr(args, "weights", None)
    try:
        return load(
            weights,
            device=getattr(args, "device", None),
            dtype=getattr(args, "dtype", None) or "float32",
            local_files_only=local_files_only,
        )
    except WeightsError as exc:
        what = f"weights {weights}" if weights else "the default weights"
        raise CliError(f"cannot load {what}: {exc}") from exc


def tile_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``tile`` / ``tile_overlap`` of ``Fuser.fuse`` from ``--tile`` / ``--tile-overlap``, validated
    before any work (folder mode would otherwise skip every pair; bench would fail mid-table)."""
    from emmafuse.tiling import check_tile_options

    tile, overlap = getattr(args, "tile", None), getattr(args, "tile_overlap", None)
    if overlap is not None and tile is None:
        raise CliError("--tile-overlap needs --tile (a tile side in pixels, or 'auto')")
    check_tile_options(tile, overlap)
    return {name: value for name, value in (("tile", tile), ("tile_overlap", overlap)) if value is not None}


def fuse_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``Fuser.fuse`` options from ``--output-range``, ``--tile`` and ``--tile-overlap`` (validated once)."""
    return {"output_range": args.output_range, **tile_kwargs(args)}
