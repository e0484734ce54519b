"""``emmafuse convert``: the EMMA authors' ``.pth`` checkpoints to ``.safetensors`` (:mod:`emmafuse.convert`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from emmafuse.cli._common import CliError
from emmafuse.convert import KINDS

__all__ = ["add_convert_command"]


def _cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from emmafuse.convert import check_destination, convert_checkpoint
    from emmafuse.outputs import check_output_file
    from emmafuse.weights import file_sha256

    dtype = torch.float16 if args.fp16 else None
    dst = Path(args.dst) if args.dst is not None else Path(args.src).with_suffix(".safetensors")
    what = "DST" if args.dst is not None else "output (SRC with suffix .safetensors)"
    # the destination before reading the checkpoint; the library's errors are one line (run_command)
    check_output_file(dst, [args.src], what=what, option="DST")
    check_destination(dst, what=what)
    try:
        out = convert_checkpoint(args.src, dst, kind=args.kind, dtype=dtype)
    except OSError as exc:  # the folder changed since the check
        raise CliError(f"cannot write {dst}: {exc.strerror or exc}") from exc
    print(f"wrote {out} ({out.stat().st_size} bytes, sha256 {file_sha256(out)})")
    return 0


def add_convert_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``emmafuse convert`` on an ``argparse`` sub-parsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "convert",
        help="convert an official EMMA .pth checkpoint to .safetensors",
        description=(
            "Convert the EMMA authors' PyTorch checkpoint (EMMA.pth, or with --kind sensing the UNet5 "
            "Ai.pth / Av.pth) to a pickle-free .safetensors file. The checkpoint is read with "
            "torch.load(weights_only=True) and validated before anything is written."
        ),
    )
    p.add_argument("src", help="input .pth checkpoint")
    p.add_argument("dst", nargs="?", help="output file, ending in .safetensors (default: SRC with suffix .safetensors)")
    p.add_argument("--kind", choices=KINDS, default="ufuser", help="ufuser (EMMA.pth, default) or sensing (Ai/Av.pth)")
    p.add_argument("--fp16", action="store_true", help="store floating tensors as float16 (half the size)")
    p.set_defaults(func=_cmd_convert)
    return p
