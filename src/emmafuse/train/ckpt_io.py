"""Sharded, pickle-free storage of nested training state (models, optimiser, RNG, ...).

A checkpoint is a folder: ``manifest.json`` (the structure, with every tensor replaced by
a reference, and all non-tensor values) plus ``part-NNN.safetensors`` shards, each at most
``max_shard_bytes`` (tensors larger than that are split into flat chunks). The folder is
written under a temporary name and renamed into place, so a crash never leaves a
half-written checkpoint that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from emmafuse.errors import EmmafuseError, InputError, InputTypeError

__all__ = ["CheckpointError", "save_state", "load_state", "MANIFEST", "FORMAT"]

MANIFEST = "manifest.json"
FORMAT = "emmafuse.train.checkpoint/1"
_HEADER_MARGIN = 256 * 1024  # room for each shard's safetensors JSON header


class CheckpointError(EmmafuseError, ValueError):
    """A checkpoint folder is missing, incomplete or not ours."""


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().cpu()
        return {"__tensor__": name}
    if isinstance(value, Mapping):
        return {"__dict__": [[k, _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise InputTypeError(f"cannot store {type(value).__name__} in a checkpoint", parameter="state")


def _decode(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__dict__" in value:
            return {k: _decode(v, tensors) for k, v in value["__dict__"]}
        if "__tuple__" in value:
            return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    return value


def _shard(tensors: Mapping[str, torch.Tensor], budget: int) -> tuple[list[dict[str, torch.Tensor]], dict[str, dict[str, Any]]]:
    """Pack (chunks of) ``tensors`` greedily into shards of at most ``budget`` bytes.

    Returns the shards and, per tensor, its shape, dtype and ``[shard number, key]`` chunks.
    """
    shards: list[dict[str, torch.Tensor]] = [{}]
    used = 0
    index: dict[str, dict[str, Any]] = {}
    for name, t in tensors.items():
        t = t.contiguous()
        flat = t.reshape(-1)
        per = max(1, budget // max(t.element_size(), 1))
        pieces = [flat[i : i + per] for i in range(0, max(flat.numel(), 1), per)] if flat.numel() else [flat]
        entry: dict[str, Any] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "chunks": []}
        for j, piece in enumerate(pieces):
            nbytes = piece.numel() * piece.element_size()
            if used + nbytes > budget and shards[-1]:
                shards.append({})
                used = 0
            key = f"{name}.{j}"
            shards[-1][key] = piece.clone()  # own storage: safetensors refuses shared tensors
            used += nbytes
            entry["chunks"].append([len(shards) - 1, key])
        index[name] = entry
    return shards, index


def _write_shards(folder: Path, shards: list[dict[str, torch.Tensor]], max_shard_bytes: int) -> list[str]:
    """Write ``part-NNN.safetensors`` files into ``folder``; returns their names."""
    from safetensors.torch import save_file

    files = []
    for i, shard in enumerate(shards):
        fname = f"part-{i:03d}.safetensors"
        save_file(shard, str(folder / fname))
        size = (folder / fname).stat().st_size
        if size > max_shard_bytes:  # the margin makes this unreachable; keep the promise checked
            raise CheckpointError(f"shard {fname} is {size} bytes > {max_shard_bytes}")
        files.append(fname)
    return files


def _replace(target: Path, new: Path) -> None:
    """Rename ``new`` to ``target``, moving an existing ``target`` aside first and deleting it after."""
    trash = None
    if target.exists():
        trash = target.with_name(f".{target.name}.old")
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(target, trash)
    os.replace(new, target)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def save_state(directory: str | os.PathLike[str], state: Mapping[str, Any], max_shard_bytes: int = 16 << 20) -> Path:
    """Write ``state`` (nested dicts/lists/tuples of tensors and JSON scalars) to ``directory``.

    Raises:
        InputError: ``max_shard_bytes`` leaves no room for tensors.
        InputTypeError: ``state`` holds a value that is neither a tensor nor JSON.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    budget = max_shard_bytes - _HEADER_MARGIN
    if budget < 1024:
        raise InputError(f"max_shard_bytes={max_shard_bytes} is too small", parameter="max_shard_bytes")
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors)
    shards, index = _shard(tensors, budget)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the folder the usual permissions
    try:
        files = _write_shards(tmp, shards, max_shard_bytes)
        for entry in index.values():
            entry["chunks"] = [[files[s], key] for s, key in entry["chunks"]]
        manifest = {"format": FORMAT, "shards": files, "tensors": index, "state": tree}
        (tmp / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        _replace(target, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_state(directory: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a folder written by :func:`save_state`."""
    from safetensors.torch import load_file

    path = Path(directory)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path} (missing {MANIFEST})") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"corrupt checkpoint manifest {path / MANIFEST}: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an emmafuse training checkpoint")
    device = str(map_location)
    try:
        parts = {f: load_file(str(path / f), device=device) for f in manifest["shards"]}
    except Exception as exc:  # safetensors raises several types for damaged files
        raise CheckpointError(f"cannot read the shards of {path}: {exc}") from exc
    tensors = {}
    for name, entry in manifest["tensors"].items():
        dtype = getattr(torch, entry["dtype"])
        flat = torch.cat([parts[f][key] for f, key in entry["chunks"]]) if entry["chunks"] else torch.empty(0)
        tensors[name] = flat.to(dtype).reshape(entry["shape"])
    return _decode(manifest["state"], tensors)
