"""Export a U-Fuser to ONNX, for runtimes without PyTorch (onnxruntime, TensorRT, OpenVINO).

The file holds the *network* only: two ``(N, 1, H, W)`` luminance planes in [0, 1] in, the
fused luminance out, with dynamic batch, height and width (sides multiples of
``multiple``, at least ``min_side``; both are in the file's metadata). What
:meth:`emmafuse.Fuser.fuse` does around the network -- decoding, RGB to YCbCr, padding, range,
colour and dtype of the result -- is written down in ``docs/onnx.md`` and in the graph's
``doc_string``, and implemented with numpy only in ``examples/onnx_fuse.py``.

The graph itself comes from :func:`emmafuse.onnx_graph.onnx_bytes` (the network's exact
inference form); this module adds the metadata, checks the file and writes it atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from emmafuse._fs import atomic_write
from emmafuse._version import __version__
from emmafuse.errors import InputError, import_extra
from emmafuse.models import UFuser
from emmafuse.onnx_graph import DEFAULT_OPSET, onnx_bytes

__all__ = ["DEFAULT_OPSET", "OnnxExport", "PREPROCESSING", "export_onnx", "onnx_bytes", "verify_onnx"]

#: The contract around the network, stored as the graph's doc string.
PREPROCESSING = """\
Inputs ir, vis: float (N, 1, H, W) in [0, 1], H and W multiples of {multiple}, at least {min_side}.
Output fused: the fused luminance (N, 1, H, W), float, in (0, 1).
What emmafuse.Fuser.fuse does around this network (docs/onnx.md, examples/onnx_fuse.py):
1. Scale 8-bit inputs by 1/255 (16-bit by 1/65535).
2. Colour: RGB -> YCbCr (BT.601, full range: Y = 0.299 R + 0.587 G + 0.114 B,
   Cb = (B - Y) / 1.772 + 0.5, Cr = (R - Y) / 1.402 + 0.5); the network fuses Y only
   (an RGB infrared image is fused by its Y too).
3. Pad each side to a multiple of {multiple} by reflection (padding split evenly, the extra pixel at
   the bottom/right; replicate when the side is too short to reflect), crop the output back.
4. Clamp the output to [0, 1] (or stretch it to [0, 1]: output_range="minmax").
5. Put the visible image's Cb, Cr back: R = Y + 1.402 (Cr - 0.5), B = Y + 1.772 (Cb - 0.5),
   G = (Y - 0.299 R - 0.114 B) / 0.587; clamp to [0, 1]; 8-bit: round(255 x).
"""


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote."""

    path: Path
    opset: int
    fp16: bool
    metadata: dict[str, str]


def _model_version(meta: dict[str, Any]) -> str:
    """The weights' version: their recipe and creation time (e.g. ``cpu-ivf-v2 2026-12-06T17:16:10Z``)."""
    try:
        recipe = str(json.loads(meta.get("train_config", "{}")).get("recipe") or "")
    except (ValueError, AttributeError):
        recipe = ""
    return " ".join(part for part in (recipe, str(meta.get("created", ""))) if part)


def _metadata(model: UFuser, info: dict[str, Any], fp16: bool) -> dict[str, str]:
    req = model.size_requirements
    meta = info.get("metadata") or {}
    fields = {
        "emmafuse.version": __version__,
        "model.name": info.get("name") or "",
        "model.version": _model_version(meta),
        "weights.sha256": info.get("sha256") or "",
        "input.multiple": str(req.multiple),
        "input.min_side": str(req.minimum),
        "input.range": "0..1",
        "precision": "float16" if fp16 else "float32",
        "config": json.dumps(model.config.to_dict()),
    }
    return {k: v for k, v in fields.items() if v}


def export_onnx(
    path: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    overwrite: bool = True,
    local_files_only: bool = False,
) -> OnnxExport:
    """Write the network of a released model or weights file as an ONNX file.

    Args:
        path: the ``.onnx`` file to write (written atomically: never half a file).
        weights: a released model name or a ``.safetensors`` file (default: the default model).
        opset: the ONNX opset (14-23).
        fp16: float16 weights, inputs and output (for GPU runtimes such as TensorRT).
        overwrite: replace an existing ``path`` (else :class:`~emmafuse.outputs.OutputError`).
        local_files_only: never download weights.

    Returns:
        the written path, opset, precision and the metadata stored in the file
        (``model.name``, ``model.version``, ``weights.sha256``, ``input.multiple``, ...).
    """
    from emmafuse.loading import load
    from emmafuse.outputs import check_output_file

    onnx: Any = import_extra("onnx", extra="onnx", purpose="ONNX export")
    target = Path(path)
    if target.suffix.lower() != ".onnx":
        raise InputError(f"the ONNX file name must end in .onnx, got {target.name!r}", parameter="path")
    check_output_file(target, overwrite=overwrite, what="ONNX file", option="path")
    fuser = load(weights, device="cpu", local_files_only=local_files_only)
    model = fuser.model
    proto = onnx.load_from_string(onnx_bytes(model, opset=opset, fp16=fp16))
    metadata = _metadata(model, fuser.info, fp16)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name, proto.producer_version = "emmafuse", __version__
    req = model.size_requirements
    proto.doc_string = PREPROCESSING.format(multiple=req.multiple, min_side=req.minimum)
    onnx.checker.check_model(proto)
    atomic_write(target, lambda tmp: onnx.save_model(proto, tmp))
    return OnnxExport(path=target, opset=opset, fp16=fp16, metadata=metadata)


def verify_onnx(
    path: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None, *, size: tuple[int, int] = (240, 320)
) -> float | None:
    """Run an exported file with onnxruntime on the built-in synthetic pair (``size``: height,
    width) and return its largest difference to the PyTorch forward of ``weights``; ``None``
    when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import numpy as np

    from emmafuse.color import rgb_to_luma
    from emmafuse.loading import load
    from emmafuse.samples import synthetic_pair

    ir, vis = synthetic_pair(*size)
    planes = [(rgb_to_luma(x) if x.ndim == 3 else x) / 255.0 for x in (ir, vis)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    io_dtype = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
    feeds = {name: p[None, None].astype(io_dtype) for name, p in zip(("ir", "vis"), planes)}
    fused = session.run(None, feeds)[0].astype(np.float32)
    model = load(weights, device="cpu").model
    with torch.inference_mode():
        ref = model(*(torch.from_numpy(feeds[k].astype(np.float32)) for k in ("ir", "vis")))
    return float(np.abs(fused - ref.numpy()).max())
