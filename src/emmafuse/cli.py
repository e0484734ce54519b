"""The ``emmafuse`` command line (``python -m emmafuse`` is the same).

Sub-commands: ``fuse`` (files or folders), ``demo`` (built-in synthetic pair), ``models``,
and those contributed by other modules (``eval``, ``convert``, ``bench``, ``train``).
``train`` is imported only when used, so inference never loads the training code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]

# (module, function) pairs that add sub-commands; missing modules are skipped quietly.
_EXTENSIONS = [
    ("emmafuse.evaluation", "add_eval_command"),
    ("emmafuse.convert", "add_convert_command"),
    ("emmafuse.bench", "add_bench_command"),
]


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="weights file (.safetensors) or released model name (default: the built-in model)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="compute precision")
    p.add_argument(
        "--output-range",
        default="clamp",
        choices=["clamp", "minmax"],
        help="clamp: keep the network output; minmax: stretch each image (paper protocol)",
    )


def _tile_option(text: str) -> int | str:
    """'auto' or an integer; the range rules live in emmafuse.tiling.check_tile_options."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a tile side in pixels, got {text!r}") from None


def _add_tile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tile",
        type=_tile_option,
        default=None,
        help="tile side in pixels or 'auto' (default: whole images, tiled only when they do not fit in memory)",
    )
    p.add_argument("--tile-overlap", type=int, default=None, help="overlap of neighbouring tiles in pixels (default 64)")


def _load_fuser(args: argparse.Namespace) -> Any:
    import emmafuse

    try:
        return emmafuse.load(args.weights, device=args.device, dtype=args.dtype)
    except (emmafuse.WeightsError, ValueError) as exc:
        raise CliError(str(exc)) from exc


def _fuse_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from emmafuse.tiling import DEFAULT_OVERLAP, check_tile_options

    kwargs: dict[str, Any] = {"output_range": args.output_range}
    for name in ("tile", "tile_overlap"):
        if getattr(args, name, None) is not None:
            kwargs[name] = getattr(args, name)
    try:  # validate once, before any pair is read (folder mode would otherwise skip every pair)
        check_tile_options(kwargs.get("tile"), kwargs.get("tile_overlap", DEFAULT_OVERLAP))
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    return kwargs


# --------------------------------------------------------------------------- fuse
def _pair_folders(ir_dir: Path, vis_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    from emmafuse.image_io import IMAGE_SUFFIXES

    def index(folder: Path) -> dict[str, Path]:
        if not folder.is_dir():
            raise CliError(f"{folder}: not a folder")
        return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}

    irs, viss = index(ir_dir), index(vis_dir)
    common = sorted(set(irs) & set(viss))
    unpaired = sorted(set(irs) ^ set(viss))
    return [(stem, irs[stem], viss[stem]) for stem in common], unpaired


def _cmd_fuse(args: argparse.Namespace) -> int:
    from emmafuse.image_io import ImageReadError, read_image, write_image

    folder_mode = args.ir_dir is not None or args.vis_dir is not None
    if folder_mode:
        if args.ir or args.vis or args.ir_dir is None or args.vis_dir is None:
            raise CliError("folder mode needs both --ir-dir and --vis-dir and no positional files")
    elif not (args.ir and args.vis):
        raise CliError("give IR and VIS files, or --ir-dir and --vis-dir")
    kwargs = _fuse_kwargs(args)
    fuser = _load_fuser(args)

    if not folder_mode:
        try:
            ir, vis = read_image(args.ir), read_image(args.vis)
            fused = fuser.fuse(ir, vis, **kwargs)
            write_image(args.output, fused)
        except (ImageReadError, ValueError, TypeError) as exc:
            raise CliError(str(exc)) from exc
        print(f"wrote {args.output}")
        return 0

    from tqdm import tqdm

    pairs, unpaired = _pair_folders(Path(args.ir_dir), Path(args.vis_dir))
    if not pairs:
        raise CliError(f"no pairs with matching names in {args.ir_dir} and {args.vis_dir}")
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for stem, ir_path, vis_path in tqdm(pairs, desc="fusing", unit="pair", disable=args.quiet):
        try:
            fused = fuser.fuse(read_image(ir_path), read_image(vis_path), **kwargs)
            write_image(out_dir / f"{stem}{args.ext}", fused)
        except (ImageReadError, ValueError, TypeError) as exc:
            failures.append(f"{stem}: {exc}")
    print(f"fused {len(pairs) - len(failures)} of {len(pairs)} pairs into {out_dir}")
    if unpaired:
        print(f"{len(unpaired)} file(s) without a partner skipped: {', '.join(unpaired[:10])}", file=sys.stderr)
    for line in failures:
        print(f"skipped {line}", file=sys.stderr)
    return 1 if failures else 0


# --------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from emmafuse.image_io import write_image
    from emmafuse.samples import synthetic_pair

    fuser = _load_fuser(args)
    ir, vis = synthetic_pair(seed=args.seed)
    fused = fuser.fuse(ir, vis, **_fuse_kwargs(args))
    gap = np.full((ir.shape[0], 4, 3), 255, np.uint8)
    panel = np.concatenate([np.repeat(ir[..., None], 3, -1), gap, vis, gap, fused], axis=1)
    write_image(args.output, panel)
    print(f"wrote {args.output}: infrared | visible | fused ({fuser})")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    import emmafuse

    models = emmafuse.list_models(include_unreleased=True)
    if not models:
        print("no models are listed in this build")
    for m in models:
        where = ", ".join(w for w, ok in (("embedded", m.embedded), ("hub", m.published)) if ok) or "-"
        state = "available" if m.available else m.status
        print(f"{m.name:10s} {state:11s} {where:14s} {m.repo_id}  {m.description}")
    return 0


# --------------------------------------------------------------------------- parser
def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emmafuse", description="Multi-modality image fusion (EMMA U-Fuser).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("fuse", help="fuse an image pair or two folders of pairs")
    p.add_argument("ir", nargs="?", help="infrared / CT / PET / SPECT image")
    p.add_argument("vis", nargs="?", help="visible / MRI image")
    p.add_argument("--ir-dir", help="folder of first-modality images (pairs by file name)")
    p.add_argument("--vis-dir", help="folder of second-modality images")
    p.add_argument("-o", "--output", required=True, help="output file, or output folder in folder mode")
    p.add_argument("--ext", default=".png", help="output suffix in folder mode (default .png)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_runtime_options(p)
    _add_tile_options(p)
    p.set_defaults(func=_cmd_fuse)

    p = sub.add_parser("demo", help="fuse the built-in synthetic example and write IR | VIS | fused")
    p.add_argument("-o", "--output", default="emmafuse_demo.png", help="output PNG (default emmafuse_demo.png)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic scene")
    _add_runtime_options(p)
    _add_tile_options(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("models", help="list the released models")
    p.set_defaults(func=_cmd_models)

    for module_name, function_name in _EXTENSIONS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        getattr(module, function_name)(sub)

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        try:
            from emmafuse.train.cli import add_train_command
        except ModuleNotFoundError as exc:
            raise CliError(f"'emmafuse train' needs the training extra: pip install 'emmafuse[train]' ({exc})") from exc
        add_train_command(sub)
    else:
        sub.add_parser("train", help="train or fine-tune (pip install 'emmafuse[train]'; see 'emmafuse train -h')")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emmafuse`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0 if not argv else 2
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"emmafuse: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("emmafuse: interrupted", file=sys.stderr)
        return 130
