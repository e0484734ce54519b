"""emmafuse: multi-modality image fusion with EMMA's U-Fuser.

>>> import emmafuse
>>> fuser = emmafuse.load()                # default pretrained weights (or a path)
>>> fused = fuser.fuse(ir_image, vis_image)  # numpy / PIL / torch in, same kind out
"""

from __future__ import annotations

import os
from typing import Any

from emmafuse._version import __version__
from emmafuse.errors import NoPretrainedWeightsError, WeightsError
from emmafuse.fuser import Fuser
from emmafuse.weights import ModelEntry, list_models

__all__ = ["load", "Fuser", "list_models", "ModelEntry", "WeightsError", "NoPretrainedWeightsError", "__version__"]


def load(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    device: Any = None,
    dtype: Any = "float32",
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
) -> Fuser:
    """Load a :class:`Fuser` with pretrained or local weights.

    Args:
        name_or_path: a released model name (see :func:`list_models`) or a ``.safetensors``
            file. ``None`` picks the default released model.
        weights: a weights file path (same as passing a path as ``name_or_path``).
        device: ``"cpu"``, ``"cuda"``, ...; default CUDA when available.
        dtype: ``"float32"`` (default), ``"float16"`` or ``"bfloat16"``.
        revision: Hub revision (branch, tag or commit) of a released model; default: the one
            pinned by the manifest (checked against its sha256).
        cache_dir: Hugging Face cache folder (default: the standard HF cache).
        local_files_only: never touch the network (also when ``HF_HUB_OFFLINE=1``).

    Raises:
        NoPretrainedWeightsError: no weights given and none installed.
        WeightsError: missing, corrupt or mismatching weights file.
    """
    from emmafuse.checkpoint import build_ufuser, load_ufuser_file
    from emmafuse.weights import locate_weights

    if weights is not None and name_or_path is not None:
        raise ValueError("pass either name_or_path or weights=, not both")
    found = locate_weights(
        weights if weights is not None else name_or_path,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
    )
    path = found.path
    state, config, meta = load_ufuser_file(path)
    model = build_ufuser(state, config, source=str(path))
    info = {
        "path": str(path),
        "name": found.name or meta.get("name"),
        "sha256": found.sha256,
        "source": found.source,
        "revision": found.revision,
        "metadata": meta,
    }
    return Fuser(model, device=device, dtype=dtype, info=info)
