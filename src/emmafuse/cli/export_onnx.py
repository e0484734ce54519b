"""``emmafuse export-onnx``: a model's network as an ONNX file (:mod:`emmafuse.onnx_export`)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_export_onnx_command"]


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from emmafuse.onnx_export import export_onnx, verify_onnx

    result = export_onnx(args.output, args.weights, opset=args.opset, fp16=args.fp16, overwrite=args.overwrite)
    meta = result.metadata
    size_mib = result.path.stat().st_size / 2**20
    print(
        f"wrote {result.path} ({size_mib:.1f} MiB, opset {result.opset}, {meta['precision']}, "
        f"model {meta.get('model.name', 'custom')}, weights sha256 {meta.get('weights.sha256', '-')[:12]})"
    )
    if args.verify:
        diff = verify_onnx(result.path, args.weights)
        if diff is None:
            print("not verified: onnxruntime is not installed (pip install 'emmafuse[onnx]')")
        else:
            print(f"verified with onnxruntime on the built-in sample pair: max |onnx - torch| = {diff:.1e}")
    return 0


def add_export_onnx_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``emmafuse export-onnx`` on an ``argparse`` sub-parsers object."""
    from emmafuse.onnx_export import DEFAULT_OPSET

    p: argparse.ArgumentParser = subparsers.add_parser(
        "export-onnx",
        help="write a model's network as an ONNX file (pip install 'emmafuse[onnx]')",
        description=(
            "Export the U-Fuser of a released model or weights file to ONNX: inputs ir and vis, "
            "output fused, each (N, 1, H, W) luminance in [0, 1], with dynamic batch, height and width "
            "(multiples of 8, at least 16). The pre- and post-processing that 'emmafuse fuse' does "
            "around the network (colour, padding, range) is in docs/onnx.md and examples/onnx_fuse.py. "
            "Needs the onnx extra: pip install 'emmafuse[onnx]'."
        ),
    )
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--weights", help="released model name or .safetensors file (default: the built-in model)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, 14-23 (default {DEFAULT_OPSET})")
    p.add_argument("--fp16", action="store_true", help="float16 weights, inputs and output (for GPU runtimes)")
    p.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the file with onnxruntime on the built-in sample and print its difference to PyTorch (default)",
    )
    p.add_argument(
        "--overwrite",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="replace an existing output (default); --no-overwrite refuses it",
    )
    p.set_defaults(func=_cmd_export_onnx)
    return p
