"""The ``emmafuse`` command line (``python -m emmafuse`` is the same).

Every parser and every ``_cmd_*`` of the package lives in this sub-package, one module per
command group: :mod:`~emmafuse.cli.fuse` (``fuse``, ``demo``, ``models``),
:mod:`~emmafuse.cli.video`, :mod:`~emmafuse.cli.eval`, :mod:`~emmafuse.cli.convert`,
:mod:`~emmafuse.cli.bench` and :mod:`~emmafuse.cli.train`. :func:`build_parser` imports only
the module of the command given (the others appear in the top-level help by their one-line
summary in :data:`COMMANDS`), so ``emmafuse --version`` and ``emmafuse --help`` never import
torch, and inference never loads the training code. The library modules the commands call take
plain parameters and never import this package.

Errors: a :class:`CliError` is printed as one line (``emmafuse <command>: error: ...``, the form
of argparse's own errors) with exit code 2; unrecognized arguments are reported with the usage
line of the command given. Every command checks its outputs before any work (see
:mod:`emmafuse.outputs`). Each distinct warning is printed once per run
(``emmafuse: warning: ...``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from emmafuse.allocator import tune_for_fusion, wanted
from emmafuse._version import __version__
from emmafuse.cli._common import CliError, parse_command_line, run_command

__all__ = ["main", "build_parser", "CliError", "COMMANDS"]

#: Every command, in the order of the help: the module of ``emmafuse.cli`` that defines it, the
#: function of that module that adds its parser, and the one-line summary of the top-level help.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "fuse": ("fuse", "add_fuse_command", "fuse an image pair or two folders of pairs"),
    "video": ("video", "add_video_command", "fuse two registered videos frame by frame (pip install 'emmafuse[video]')"),
    "demo": ("fuse", "add_demo_command", "fuse the built-in synthetic example and write IR | VIS | fused"),
    "models": ("fuse", "add_models_command", "list the released models and where their weights come from"),
    "eval": ("eval", "add_eval_command", "score fused images (EN, SD, SF, AG, MI, MSE, CC, PSNR, SCD, VIF, Qabf, SSIM)"),
    "convert": ("convert", "add_convert_command", "convert an official EMMA .pth checkpoint to .safetensors"),
    "export-onnx": ("export_onnx", "add_export_onnx_command", "write a model's network as an ONNX file (pip install 'emmafuse[onnx]')"),
    "bench": ("bench", "add_bench_command", "measure fusion speed on this machine (ms/image, images/s)"),
    "train": ("train", "add_train_command", "train or fine-tune a U-Fuser on your own image pairs (EMMA recipe)"),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``emmafuse`` parser, with the full sub-parser of the command ``argv`` starts with only.

    The other commands are listed by their summary; their modules are not imported.
    """
    parser = argparse.ArgumentParser(prog="emmafuse", description="Multi-modality image fusion (EMMA U-Fuser).")
    parser.add_argument("--version", action="version", version=f"emmafuse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    argv = list(sys.argv[1:] if argv is None else argv)
    given = argv[0] if argv else None
    for name, (module, adder, summary) in COMMANDS.items():
        if name == given:
            getattr(importlib.import_module(f"emmafuse.cli.{module}"), adder)(sub)
        else:
            sub.add_parser(name, help=summary)
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
    parser = build_parser(argv)
    args = parse_command_line(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if not argv else 2
    return run_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emmafuse`` console script; returns the exit code.

    As the console script (``argv`` not given), the process is the command's own: it keeps freed
    memory for reuse (:func:`emmafuse.allocator.tune_for_fusion`, glibc only; 8K fusion 1.7x
    faster, docs/performance.md) unless ``EMMAFUSE_ALLOCATOR=system``. Called with ``argv`` from Python, the
    caller's process keeps its allocator.
    """
    if argv is None and wanted():
        tune_for_fusion()  # before torch is imported and allocates
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
