"""``emmafuse eval``: score fused images with :mod:`emmafuse.evaluation`.

Three ways to get fused images (combinable; each becomes one row of the table):

- ``--fused DIR``: a folder of fused images, paired with the sources by file stem;
- ``--compare DIR1 DIR2 ...``: several methods' folders (row name = folder name), ranked;
- ``--weights W.safetensors``: fuse the pairs with ``emmafuse.load(W)`` first
  (``output_range="minmax"``, the authors' protocol), then score.

The protocol (printed with every table) and the ranking are described in
:mod:`emmafuse.evaluation`. Every skipped pair is named on stderr with its reason, and the exit
code is 1 when any pair was skipped; a fused folder with no image of a source pair is an error
(exit code 2). Outputs (``-o``, ``--save-fused``) are checked before any scoring.
``python -m emmafuse.evaluation ...`` is ``emmafuse eval ...``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emmafuse.cli._common import CliError, load_fuser, parse_command_line, run_command

__all__ = ["add_eval_command", "main"]


def _error(message: str) -> CliError:
    return CliError(message, command="eval")


def add_eval_command(subparsers: Any) -> None:
    """Register ``eval`` on an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "eval",
        help="score fused images (EN, SD, SF, AG, MI, MSE, CC, PSNR, SCD, VIF, Qabf, SSIM)",
        description=(
            "Score fused images against their source pairs and print a table of per-set means. "
            "Pairs are matched by file stem; unreadable or missing files are skipped, each named on "
            "stderr with its reason, and the exit code is then 1."
        ),
    )
    src = p.add_argument_group("what to score (one or more)")
    src.add_argument("--fused", metavar="DIR", help="folder of fused images")
    src.add_argument("--compare", nargs="+", metavar="DIR", help="several methods' folders: print a ranked leaderboard")
    src.add_argument("--weights", metavar="FILE", help="fuse the pairs with these U-Fuser weights first, then score")
    src.add_argument("--weights-name", metavar="NAME", help="row name for --weights (default: the file stem)")
    src.add_argument("--save-fused", metavar="DIR", help="with --weights: also write the fused images here")
    src.add_argument("--device", default=None, help="with --weights: cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--ir-dir", required=True, help="first sources (infrared / CT / PET / SPECT), the 'A' images")
    p.add_argument("--vis-dir", required=True, help="second sources (visible / MRI), the 'B' images")
    p.add_argument(
        "--preset", choices=["reference", "fixed"], default="reference", help="metric definitions (default reference)"
    )
    p.add_argument("--metrics", default=None, help="comma-separated subset, e.g. EN,SD,SSIM (default: all 12)")
    p.add_argument("--set-name", default=None, help="name of the test set in the output (default: from --ir-dir)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    fmt.add_argument("--csv", action="store_true", help="print CSV instead of Markdown")
    p.add_argument("-o", "--output", metavar="FILE", help="write the table to FILE instead of stdout")
    p.add_argument("-j", "--jobs", type=int, default=1, help="worker processes for scoring folders (default 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_eval)


def _check_outputs(args: argparse.Namespace) -> None:
    """``-o`` and ``--save-fused`` are checked before any scoring (exit 2, one line)."""
    from emmafuse.outputs import check_output_file, check_output_folder

    input_dirs = [Path(d) for d in (args.ir_dir, args.vis_dir, args.fused, *(args.compare or [])) if d]
    if args.output:
        # the table must not replace a source or fused image (e.g. -o fused/01.png)
        files = [f for d in input_dirs if d.is_dir() for f in d.iterdir() if f.is_file()]
        check_output_file(args.output, files, what="output file", option="-o")
    if args.save_fused:
        check_output_folder(args.save_fused, input_dirs, what="--save-fused folder")


def _write_table(text: str, output: str | None) -> None:
    if not output:
        sys.stdout.write(text)
        return
    try:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:  # the folder changed since the check
        raise _error(f"cannot write {output}: {exc.strerror or exc}") from exc


def _cmd_eval(args: argparse.Namespace) -> int:
    """Run ``emmafuse eval``; returns 0, 1 when any pair was skipped (or none scored); usage errors raise."""
    from emmafuse.evaluation import (
        format_csv,
        format_json,
        format_markdown,
        plan_scoring,
        score_plan,
        skip_summary,
        skipped_pairs,
    )

    from emmafuse.image_io import max_pixels

    if args.jobs < 1:
        raise _error("--jobs must be at least 1")
    max_pixels()  # a bad EMMAFUSE_MAX_PIXELS is a usage error, not a reason to skip every pair
    if args.save_fused and not args.weights:
        raise _error("--save-fused needs --weights")
    _check_outputs(args)
    weights_name = (args.weights_name or Path(args.weights).stem) if args.weights else None
    fused_dirs = ([args.fused] if args.fused else []) + list(args.compare or [])
    plan = plan_scoring(  # an EvalError is one line (run_command)
        args.ir_dir,
        args.vis_dir,
        fused_dirs,
        fuser_name=weights_name,
        preset=args.preset,
        metrics=args.metrics,
        set_name=args.set_name,
    )
    fuser = load_fuser(args) if args.weights else None  # after the cheap checks
    report = score_plan(
        plan,
        fuser=fuser,
        fuser_source=str(args.weights) if args.weights else "",
        save_fused=args.save_fused,
        jobs=args.jobs,
        progress=not args.quiet,
    )
    text = format_json(report) if args.json else format_csv(report) if args.csv else format_markdown(report)
    _write_table(text, args.output)
    if args.json or args.csv or args.output:  # the Markdown table already lists these
        for line in skip_summary(report, prefix="emmafuse eval: "):
            print(line, file=sys.stderr)
    for line in skipped_pairs(report):
        print(f"emmafuse eval: {line}", file=sys.stderr)
    scored = sum(len(m.per_image) for m in report.methods)
    skipped = any(m.skipped for m in report.methods)
    return 0 if scored and not skipped else 1


def main(argv: Iterable[str] | None = None) -> int:
    """Stand-alone entry point (``python -m emmafuse.evaluation ...`` = ``emmafuse eval ...``)."""
    parser = argparse.ArgumentParser(prog="emmafuse")
    add_eval_command(parser.add_subparsers(dest="command"))
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] != ["eval"]:
        args_list = ["eval", *args_list]
    return run_command(parse_command_line(parser, args_list))

