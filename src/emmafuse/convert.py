"""Convert the EMMA authors' PyTorch checkpoints to pickle-free ``.safetensors`` files.

- ``kind="ufuser"``: the released fusion network (``EMMA.pth``), a plain ``state_dict``
  (``module.``-prefixed keys and ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers are
  accepted). Its architecture is read from the tensor shapes
  (:meth:`~emmafuse.models.UFuserConfig.from_state_dict`; a state dict it cannot place is
  refused), it is validated strictly against :class:`~emmafuse.models.UFuser` and written in
  emmafuse's weights format.
- ``kind="sensing"``: the official UNet5 sensing networks (``Ai.pth``, ``Av.pth``) used to
  train the U-Fuser; any tensor ``state_dict`` (BatchNorm buffers included) is copied with the
  format tag ``"emmafuse.sensing"``.

The checkpoint is read with ``torch.load(weights_only=True)``: files containing anything but
tensors and plain containers are refused, never unpickled. The output is written atomically
with the source file name and sha256 in its metadata.

The command line (:mod:`emmafuse.cli.convert`): ``emmafuse convert EMMA.pth emma.safetensors``
and ``emmafuse convert --kind sensing Ai.pth Ai.safetensors``.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from emmafuse.checkpoint import build_ufuser, save_ufuser, write_safetensors
from emmafuse.errors import InputError, WeightsError
from emmafuse.models import UFuserConfig
from emmafuse.outputs import OutputError

__all__ = ["SENSING_FORMAT_TAG", "KINDS", "check_destination", "convert_checkpoint", "read_torch_checkpoint"]

SENSING_FORMAT_TAG = "emmafuse.sensing"
KINDS = ("ufuser", "sensing")
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if not text:
        return f"{type(exc).__name__} (empty or truncated file?)"
    return f"{type(exc).__name__}: {text.splitlines()[0]}"


def read_torch_checkpoint(src: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a ``.pth`` state dict safely (``weights_only=True``), unwrapped and de-prefixed.

    Raises:
        WeightsError: not a file, not a PyTorch checkpoint, non-tensor content, no tensors.
    """
    path = Path(src)
    if not path.is_file():
        raise WeightsError(f"{path}: not a file")
    try:
        obj: Any = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise WeightsError(f"{path} is not a readable PyTorch checkpoint: {_first_line(exc)}") from exc
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found is None:
            detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
            raise WeightsError(
                f"{path} is not a readable PyTorch checkpoint, or holds pickle content that "
                f"torch.load(weights_only=True) refuses{f' ({detail.group(1).strip()})' if detail else ''}"
            ) from exc
        raise WeightsError(
            f"{path} contains Python objects other than tensors (e.g. {found.group(1)}), so it was "
            "not loaded: emmafuse reads checkpoints with torch.load(weights_only=True) and never "
            "unpickles code. Re-save it as a plain state_dict: torch.save(model.state_dict(), path)"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint: {_first_line(exc)}") from exc

    for _ in range(3):  # {"model": {"state_dict": {...}}} and similar
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state_dict (a mapping of names to tensors)")
    non_tensors = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if non_tensors:
        raise WeightsError(
            f"{path}: not a plain state_dict; {len(non_tensors)} entries are not tensors "
            f"(e.g. '{non_tensors[0]}'); expected only parameter tensors"
        )
    if not obj:
        raise WeightsError(f"{path} holds no tensors")
    state = {str(k): v for k, v in obj.items()}
    for prefix in ("module.", "_orig_mod."):  # DataParallel / torch.compile
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _source_metadata(src: Path) -> dict[str, str]:
    from emmafuse._version import __version__
    from emmafuse.weights import file_sha256

    return {
        "source_file": src.name,
        "source_sha256": file_sha256(src),
        "converted_by": f"emmafuse {__version__} convert",
    }


def check_destination(dst: str | os.PathLike[str], what: str = "dst") -> Path:
    """Refuse a destination that does not end in ``.safetensors`` (checked before any work).

    A converted file named ``out.pth`` would be a safetensors file that every loader, emmafuse's
    included, takes for a pickle. ``what`` names the argument in the message.

    Raises:
        OutputError: the suffix is not ``.safetensors``.
    """
    path = Path(dst)
    if path.suffix.lower() != ".safetensors":
        raise OutputError(
            f"{what} {path} must end in .safetensors (the converted file is a safetensors file, "
            f"and emmafuse loads weights only from .safetensors files); e.g. {path.with_suffix('.safetensors')}"
        )
    return path


def convert_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None = None,
    kind: str = "ufuser",
    *,
    dtype: torch.dtype | None = None,
    metadata: Mapping[str, object] | None = None,
) -> Path:
    """Convert a PyTorch checkpoint to a ``.safetensors`` file; returns the written path.

    Args:
        src: the ``.pth`` file.
        dst: output file (default: ``src`` with the suffix ``.safetensors``).
        kind: ``"ufuser"`` (EMMA.pth, validated against the U-Fuser) or ``"sensing"``
            (UNet5 ``Ai.pth`` / ``Av.pth``).
        dtype: store floating tensors in this dtype (e.g. ``torch.float16``); default unchanged.
        metadata: extra facts stored in the file (strings; other values are JSON-encoded).

    Raises:
        WeightsError: unreadable or unsafe checkpoint, keys or shapes that do not match.
        InputError: unknown ``kind``.
        OutputError: ``dst`` does not end in ``.safetensors`` (:func:`check_destination`), or is ``src``.
    """
    if kind not in KINDS:
        raise InputError(f"kind must be one of {KINDS}, got {kind!r}", parameter="kind")
    src_path = Path(src)
    dst_path = check_destination(dst) if dst is not None else src_path.with_suffix(".safetensors")
    if dst_path.exists() and src_path.exists() and dst_path.resolve() == src_path.resolve():
        raise OutputError(f"output {dst_path} would overwrite the input checkpoint", parameter="dst")
    state = read_torch_checkpoint(src_path)
    meta: dict[str, object] = {**_source_metadata(src_path), **dict(metadata or {})}

    if kind == "ufuser":
        try:
            config = UFuserConfig.from_state_dict(state)
        except ValueError as exc:
            raise WeightsError(f"{src_path}: {exc}; is it an EMMA U-Fuser checkpoint (EMMA.pth)?") from exc
        build_ufuser(state, config, source=str(src_path))  # strict keys/shapes + finite values
        return save_ufuser(state, dst_path, config, metadata=meta, dtype=dtype)

    sensing_meta: dict[str, object] = {"format": SENSING_FORMAT_TAG, "architecture": "UNet5"}
    sensing_meta.update({str(key): value for key, value in meta.items()})
    return write_safetensors(dst_path, state, sensing_meta, dtype)
