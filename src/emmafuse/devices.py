"""The ``device`` and ``dtype`` arguments of :class:`~emmafuse.fuser.Fuser` and ``emmafuse.load``:
names to torch objects, checked (``"fp16"`` -> ``torch.float16``; ``"cuda"`` only where CUDA is)."""

from __future__ import annotations

from typing import Union

import torch

from emmafuse.errors import InputError

__all__ = ["PrecisionLike", "parse_device", "parse_precision"]

PrecisionLike = Union[str, torch.dtype]

_PRECISIONS = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_precision(dtype: PrecisionLike) -> torch.dtype:
    """``"float32"``, ``"fp16"``, ``torch.bfloat16``, ... -> the torch dtype.

    Raises:
        InputError: not one of float32, float16, bfloat16 (``parameter="dtype"``).
    """
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise InputError(f"dtype must be float32, float16 or bfloat16, got {dtype}", parameter="dtype")
        return dtype
    key = str(dtype).lower().replace("torch.", "")
    if key not in _PRECISIONS:
        raise InputError(f"dtype must be one of 'float32', 'float16', 'bfloat16', got {dtype!r}", parameter="dtype")
    return _PRECISIONS[key]


def parse_device(device: str | torch.device | None) -> torch.device:
    """``None`` (CUDA when available, else the CPU), ``"cuda:1"``, ... -> the torch device.

    Raises:
        InputError: not a torch device, or CUDA asked for where there is none (``parameter="device"``).
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device {device!r} is not a valid torch device ({exc})", parameter="device") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} was requested but CUDA is not available on this machine", parameter="device")
    return dev
