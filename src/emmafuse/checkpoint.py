"""Reading and writing U-Fuser weight files (``.safetensors``, pickle-free).

The file format: a safetensors file whose tensor names are exactly the U-Fuser's
``state_dict`` keys, with string metadata:

- ``format``: ``"emmafuse.ufuser"``
- ``config``: JSON of :class:`emmafuse.models.UFuserConfig` (channels, heads, ...)
- any further free-form keys (training data, steps, git commit, ...) as strings.

Writes go to a temporary file in the target folder and are renamed into place, so a crash
never leaves a half-written weights file behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from emmafuse._fs import atomic_write
from emmafuse.errors import WeightsError
from emmafuse.models import UFuser, UFuserConfig

__all__ = [
    "FORMAT_TAG",
    "WeightsError",
    "save_ufuser",
    "load_ufuser_file",
    "build_ufuser",
    "write_safetensors",
    "atomic_write",
]

FORMAT_TAG = "emmafuse.ufuser"


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, object],
    dtype: torch.dtype | None = None,
) -> Path:
    """The one writer of weights files (U-Fuser weights, converted sensing networks).

    Tensors are copied to the CPU (floating ones cast to ``dtype`` when given) into storage of
    their own; metadata values that are not strings are JSON-encoded. Written atomically.
    """
    from safetensors.torch import save_file

    meta = {str(key): value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        t = value.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[key] = t.contiguous().clone()  # own storage: safetensors refuses shared tensors
    return atomic_write(path, lambda tmp: save_file(out, tmp, metadata=meta))


def save_ufuser(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    config: UFuserConfig | None = None,
    metadata: Mapping[str, object] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a U-Fuser ``state_dict`` as a ``.safetensors`` weights file.

    Args:
        state_dict: the network's parameters (keys as :class:`~emmafuse.models.UFuser`).
        path: destination file.
        config: architecture; the default U-Fuser config when omitted.
        metadata: extra string-able facts to record (non-strings are JSON-encoded).
        dtype: store floating tensors in this dtype (e.g. ``torch.float16`` to halve the size).
    """
    config = config or UFuserConfig()
    meta: dict[str, object] = {"format": FORMAT_TAG, "config": json.dumps(config.to_dict())}
    meta.update({str(key): value for key, value in (metadata or {}).items()})
    return write_safetensors(path, state_dict, meta, dtype)


def load_ufuser_file(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], UFuserConfig, dict[str, str]]:
    """Read a weights file: returns ``(state_dict as float32, config, metadata)``.

    Raises:
        WeightsError: missing file, not a safetensors file, or not U-Fuser weights.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
        tensors = load_file(str(p))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise WeightsError(f"{p} is not a readable .safetensors file (corrupt or truncated?): {exc}") from exc
    if meta.get("format", FORMAT_TAG) != FORMAT_TAG:
        raise WeightsError(f"{p} holds '{meta.get('format')}', not U-Fuser weights ('{FORMAT_TAG}')")
    try:
        config = UFuserConfig.from_dict(json.loads(meta["config"])) if "config" in meta else UFuserConfig()
    except (ValueError, TypeError) as exc:
        raise WeightsError(f"{p}: invalid 'config' metadata: {exc}") from exc
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    return state, config, meta


def build_ufuser(state_dict: Mapping[str, torch.Tensor], config: UFuserConfig, source: str = "weights") -> UFuser:
    """Instantiate a :class:`UFuser` and load ``state_dict`` strictly, with a readable error."""
    model = UFuser(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict) if tuple(expected[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} with wrong shape (e.g. {k}: file {tuple(state_dict[k].shape)}, "
                f"model {tuple(expected[k].shape)})"
            )
        raise WeightsError(f"{source} does not match the U-Fuser {config.channels}: " + "; ".join(parts))
    for key, value in state_dict.items():
        if not value.is_floating_point():
            # load_state_dict would cast integers silently: such a file is not trained weights
            raise WeightsError(f"{source}: tensor '{key}' is stored as {value.dtype}; U-Fuser weights are floating point")
        if not torch.isfinite(value).all():
            raise WeightsError(f"{source}: tensor '{key}' contains NaN or Inf")
    model.load_state_dict(dict(state_dict), strict=True)
    return model.eval()
