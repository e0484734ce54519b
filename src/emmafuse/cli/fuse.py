"""``emmafuse fuse`` (files or folders), ``emmafuse demo`` and ``emmafuse models``.

Every command checks its outputs before any work (see :mod:`emmafuse.outputs`): an output that
is one of the inputs, that cannot be written, or whose format cannot hold the fused image (16-bit
data as ``.jpg``) is a one-line error with exit code 2. An output file has the layout the library
gives (``Fuser.fuse``): an RGB input file gives an RGB output file, R = G = B when both images
are gray.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from emmafuse.cli._common import (
    CliError,
    add_overwrite_option,
    add_quiet_option,
    add_runtime_options,
    add_tile_options,
    fuse_kwargs,
    load_fuser,
)

__all__ = ["add_demo_command", "add_fuse_command", "add_models_command"]


def _output_file(output: str, stem: str) -> Path:
    """``-o`` of a single image: a file, or ``<folder>/<stem>.png`` for an existing folder or a
    path ending in a separator (``-o out/``)."""
    if not output.strip():
        raise CliError("-o/--output is empty")
    if output.endswith(("/", os.sep)) or Path(output).is_dir():
        return Path(output) / f"{stem}.png"
    return Path(output)


def _fuse_files(args: argparse.Namespace, kwargs: dict[str, Any]) -> int:
    from emmafuse.image_io import output_format, read_header, read_image, write_image
    from emmafuse.outputs import check_fused_outputs, check_output_file

    out = _output_file(args.output, Path(args.ir).stem)
    # before loading weights or decoding images; the library's errors are one line (run_command)
    output_format(out)
    check_output_file(out, [args.ir, args.vis], overwrite=args.overwrite, option="-o")
    for source in (args.ir, args.vis):
        read_header(source)  # missing, unreadable or over the pixel limit: exit 2 before any work
    check_fused_outputs([(out, args.ir, args.vis)])
    fuser = load_fuser(args)
    ir, vis = read_image(args.ir), read_image(args.vis)
    fused = fuser.fuse(ir, vis, **kwargs, progress=not args.quiet)  # tile progress on a TTY
    try:
        write_image(out, fused)
    except OSError as exc:  # the folder changed since the check (disk full, removed)
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from exc
    print(f"wrote {out}")
    return 0


def _fuse_folders(args: argparse.Namespace, kwargs: dict[str, Any]) -> int:
    """Folder mode: :mod:`emmafuse.folder_fusion` does the work; this prints its report."""
    from emmafuse.folder_fusion import FolderReport, plan_folder_fusion, run_folder_fusion

    if not args.output.strip():
        raise CliError("-o/--output is empty")
    plan = plan_folder_fusion(args.ir_dir, args.vis_dir, args.output, ext=args.ext, overwrite=args.overwrite)
    if plan.todo:
        report = run_folder_fusion(load_fuser(args), plan, progress=not args.quiet, **kwargs)
    else:  # nothing left to fuse: no need for weights
        plan.out_dir.mkdir(parents=True, exist_ok=True)
        report = FolderReport(plan.out_dir, kept=plan.kept, unpaired=plan.unpaired)
    failures = report.failures
    print(f"fused {len(report.fused)} of {report.attempted} pairs into {report.out_dir}")
    if report.kept:
        print(f"kept {len(report.kept)} existing output(s) (--no-overwrite)")
    if report.unpaired:
        names = ", ".join(report.unpaired[:10]) + (", ..." if len(report.unpaired) > 10 else "")
        print(f"{len(report.unpaired)} file(s) without a partner skipped: {names}", file=sys.stderr)
    for stem, reason in failures.items():
        print(f"skipped {stem}: {reason}", file=sys.stderr)
    return 1 if failures else 0


def _cmd_fuse(args: argparse.Namespace) -> int:
    from emmafuse.image_io import max_pixels

    folder_mode = args.ir_dir is not None or args.vis_dir is not None
    if folder_mode:
        if args.ir or args.vis or args.ir_dir is None or args.vis_dir is None:
            raise CliError("folder mode needs both --ir-dir and --vis-dir and no positional files")
    elif not (args.ir and args.vis):
        raise CliError("give IR and VIS files, or --ir-dir and --vis-dir")
    kwargs = fuse_kwargs(args)
    max_pixels()  # a bad EMMAFUSE_MAX_PIXELS is a usage error, not a reason to skip every pair
    return _fuse_folders(args, kwargs) if folder_mode else _fuse_files(args, kwargs)


def _cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from emmafuse.image_io import output_format, write_image
    from emmafuse.outputs import check_output_file
    from emmafuse.samples import synthetic_pair

    out = _output_file(args.output, "emmafuse_demo")
    output_format(out)
    check_output_file(out, option="-o")
    kwargs = fuse_kwargs(args)
    fuser = load_fuser(args)
    ir, vis = synthetic_pair(seed=args.seed)
    fused = fuser.fuse(ir, vis, **kwargs)
    gap = np.full((ir.shape[0], 4, 3), 255, np.uint8)
    panel = np.concatenate([np.repeat(ir[..., None], 3, -1), gap, vis, gap, fused], axis=1)
    try:
        write_image(out, panel)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from exc
    print(f"wrote {out}: infrared | visible | fused ({fuser})")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from emmafuse.manifest import list_models
    from emmafuse.weights import weights_source

    models = list_models(include_unreleased=True)
    if not models:
        print("no models are listed in this build")
        return 0
    rows = [(m.name, "available" if m.available else m.status, weights_source(m), m.description) for m in models]
    widths = [max(len(r[i]) for r in [("NAME", "STATUS", "SOURCE", ""), *rows]) for i in range(3)]
    for row in [("NAME", "STATUS", "SOURCE", "DESCRIPTION"), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])
    print(
        "\nSOURCE is where emmafuse.load() takes the weights from: the Hugging Face cache, the copy "
        "embedded in this package, or a download from the Hub."
    )
    published = [m for m in models if m.published]
    if published:
        print("Published on the Hugging Face Hub: " + ", ".join(f"{m.name} ({m.repo_id})" for m in published))
    else:
        print("Nothing is published on the Hugging Face Hub yet: the models ship inside the package and work offline.")
    return 0


def add_fuse_command(sub: Any) -> None:
    p = sub.add_parser("fuse", help="fuse an image pair or two folders of pairs")
    p.add_argument("ir", nargs="?", help="infrared / CT / PET / SPECT image")
    p.add_argument("vis", nargs="?", help="visible / MRI image")
    p.add_argument("--ir-dir", help="folder of first-modality images (pairs by file name; two files with one name are refused)")
    p.add_argument("--vis-dir", help="folder of second-modality images")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output file (an existing folder or a path ending in / gets <IR stem>.png), or output folder in folder mode",
    )
    p.add_argument("--ext", default=".png", help="output suffix in folder mode: png, .jpg, ... (default .png)")
    add_overwrite_option(p, " and, in folder mode, keeps existing outputs and fuses only the missing ones")
    add_quiet_option(p)
    add_runtime_options(p)
    add_tile_options(p)
    p.set_defaults(func=_cmd_fuse)


def add_demo_command(sub: Any) -> None:
    p = sub.add_parser("demo", help="fuse the built-in synthetic example and write IR | VIS | fused")
    p.add_argument("-o", "--output", default="emmafuse_demo.png", help="output image (default emmafuse_demo.png; a folder gets emmafuse_demo.png inside)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic scene")
    add_runtime_options(p)
    add_tile_options(p)
    p.set_defaults(func=_cmd_demo)


def add_models_command(sub: Any) -> None:
    p = sub.add_parser("models", help="list the released models and where their weights come from")
    p.set_defaults(func=_cmd_models)
