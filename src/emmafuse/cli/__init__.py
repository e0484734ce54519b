"""The ``emmafuse`` command line (``python -m emmafuse`` is the same).

Every parser and every ``_cmd_*`` of the package lives in this sub-package, one module per
command group: :mod:`~emmafuse.cli.fuse` (``fuse``, ``demo``, ``models``),
:mod:`~emmafuse.cli.video`, :mod:`~emmafuse.cli.eval`, :mod:`~emmafuse.cli.convert`,
:mod:`~emmafuse.cli.bench` and :mod:`~emmafuse.cli.train` (imported only when used, so
inference never loads the training code). The library modules they call take plain parameters and never import this package.

Errors: a :class:`CliError` is printed as one line (``emmafuse <command>: error: ...``, the form
of argparse's own errors) with exit code 2; unrecognized arguments are reported with the usage
line of the command given. Every command checks its outputs before any work (see
:mod:`emmafuse.outputs`). Each distinct warning is printed once per run
(``emmafuse: warning: ...``).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from emmafuse._version import __version__
from emmafuse.cli._common import CliError, parse_command_line, run_command
from emmafuse.cli.bench import add_bench_command
from emmafuse.cli.convert import add_convert_command
from emmafuse.cli.eval import add_eval_command
from emmafuse.cli.fuse import add_demo_command, add_fuse_command, add_models_command
from emmafuse.cli.video import add_video_command

__all__ = ["main", "build_parser", "CliError"]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``emmafuse`` parser; the ``train`` commands are added only when ``argv`` starts with ``train``."""
    parser = argparse.ArgumentParser(prog="emmafuse", description="Multi-modality image fusion (EMMA U-Fuser).")
    parser.add_argument("--version", action="version", version=f"emmafuse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_fuse_command(sub)
    add_video_command(sub)
    add_demo_command(sub)
    add_models_command(sub)
    add_eval_command(sub)
    add_convert_command(sub)
    add_bench_command(sub)

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        try:
            import emmafuse.train  # noqa: F401 - the training extra's dependencies, checked here
        except ModuleNotFoundError as exc:
            raise CliError(f"'emmafuse train' needs the training extra: pip install 'emmafuse[train]' ({exc})") from exc
        from emmafuse.cli.train import add_train_command

        add_train_command(sub)
    else:
        sub.add_parser("train", help="train or fine-tune (pip install 'emmafuse[train]'; see 'emmafuse train -h')")
    return parser


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """Warnings on the command line: one line each, without the source line of the library."""
    print(f"emmafuse: warning: {message}", file=sys.stderr)


def _silence_stdout() -> None:
    """After a closed pipe (``emmafuse ... | head``): drop what is left instead of a traceback at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _run(argv: list[str]) -> int:
    try:
        parser = build_parser(argv)
    except CliError as exc:
        print(exc.line(argv[0] if argv else None), file=sys.stderr)
        return 2
    args = parse_command_line(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if not argv else 2
    return run_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emmafuse`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            code = _run(argv)
        sys.stdout.flush()  # a closed pipe shows up here, still inside this handler
        return code
    except BrokenPipeError:
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a program cut off by `| head`
    except KeyboardInterrupt:
        print("emmafuse: interrupted", file=sys.stderr)
        return 130
