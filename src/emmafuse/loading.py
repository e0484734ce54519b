"""``emmafuse.load``: find weights (:mod:`emmafuse.weights`), read them (:mod:`emmafuse.checkpoint`),
wrap the network in a :class:`~emmafuse.fuser.Fuser`."""

from __future__ import annotations

import os
from typing import Any

import torch

from emmafuse.checkpoint import build_ufuser, load_ufuser_file
from emmafuse.errors import InputError
from emmafuse.fuser import Fuser, PrecisionLike
from emmafuse.weights import locate_weights

__all__ = ["load"]


def load(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: PrecisionLike = "float32",
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    backend: str = "torch",
) -> Fuser:
    """Load a :class:`Fuser` with pretrained or local weights.

    Args:
        name_or_path: a released model name (see :func:`~emmafuse.list_models`) or a
            ``.safetensors`` file. ``None`` picks the default released model.
        device: ``"cpu"``, ``"cuda"``, ``torch.device("cuda", 1)``, ...; default CUDA when available.
        dtype: ``"float32"`` (default), ``"float16"`` or ``"bfloat16"`` (or the torch dtype).
        revision: Hub revision (branch, tag or commit) of a released model; default: the one
            pinned by the manifest (checked against its sha256).
        cache_dir: Hugging Face cache folder (default: the standard HF cache).
        local_files_only: never touch the network (also when ``HF_HUB_OFFLINE=1``).
        backend: ``"torch"`` (default) or ``"onnxruntime"`` (CPU, float32; needs
            ``pip install 'emmafuse[onnx]'``; see :meth:`Fuser.use_onnxruntime`).

    Raises:
        NoPretrainedWeightsError: no weights given and none installed.
        WeightsError: missing, corrupt or mismatching weights file.
    """
    if backend not in ("torch", "onnxruntime"):
        raise InputError(f"backend must be 'torch' or 'onnxruntime', got {backend!r}", parameter="backend")
    found = locate_weights(name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    path = found.path
    state, config, meta = load_ufuser_file(path)
    model = build_ufuser(state, config, source=str(path))
    info: dict[str, Any] = {
        "path": str(path),
        "name": found.name or meta.get("name"),
        "sha256": found.sha256,
        "source": found.source,
        "revision": found.revision,
        "metadata": meta,
    }
    if backend == "onnxruntime" and device is None:
        device = "cpu"  # the backend's device, also where CUDA is available
    fuser = Fuser(model, device=device, dtype=dtype, info=info)
    return fuser.use_onnxruntime() if backend == "onnxruntime" else fuser
