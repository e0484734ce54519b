"""The machinery of the U-Fuser's inference fast paths: switches and caches of folded weights.

- :class:`FastPaths`: the switches, one instance shared by all modules of one network;
- :class:`FoldCache`: derived (folded) weights, recomputed when a source weight changes;
- :func:`weight_version`: the in-place version counter such caches key on (the execution
  layer's CUDA-graph cache, :mod:`emmafuse.runner`, keys on it as well).

Networks only: no emmafuse imports beyond this sub-package (see ``docs/architecture.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["FastPaths", "FoldCache", "fold_dtype", "is_compiling", "is_nhwc", "reflect_border_", "reflect_pad1", "weight_version"]


@dataclass
class FastPaths:
    """Switches of the inference fast paths (shared by all modules of one :class:`UFuser`)."""

    fold_attention: bool = True
    fold_mlp: bool = True
    fused_layernorm: bool = True
    fused_concat: bool = True
    channels_last: bool = True
    #: Use the two folds with gradients too (training): the composed weights are rebuilt from
    #: the parameters every call, inside autograd, so gradients reach every original weight.
    #: Off by default: training then runs the release's computation unchanged.
    train_folds: bool = False


def weight_version(t: torch.Tensor) -> int:
    """The in-place version counter of ``t``; -1 for inference tensors, which keep none.

    (Weights created under ``torch.inference_mode`` can only be changed in place under it; such
    changes are not seen. Change weights outside inference mode, or call ``load_state_dict``.)
    """
    return -1 if t.is_inference() else t._version


def is_nhwc(x: torch.Tensor) -> bool:
    """Whether ``x`` is a multi-channel 4-D tensor in channels-last memory layout."""
    return x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)


def reflect_border_(buf: torch.Tensor) -> torch.Tensor:
    """Fill the 1-pixel border of ``buf`` by reflection of its interior (like ``F.pad``), in place."""
    buf[:, :, 0, 1:-1] = buf[:, :, 2, 1:-1]
    buf[:, :, -1, 1:-1] = buf[:, :, -3, 1:-1]
    buf[:, :, :, 0] = buf[:, :, :, 2]
    buf[:, :, :, -1] = buf[:, :, :, -3]
    return buf


def _is_tracing() -> bool:
    """Whether ``torch.jit.trace`` (the ONNX export) is recording the current call."""
    tracing: Callable[[], bool] = getattr(torch.jit, "is_tracing")  # untyped in torch's stubs
    return bool(tracing())


def reflect_pad1(x: torch.Tensor) -> torch.Tensor:
    """``F.pad(x, (1, 1, 1, 1), mode="reflect")``, the same values.

    PyTorch's reflection-pad kernel is slow on channels-last tensors with few channels (an
    8-channel 640x480 map: 3 ms against 0.7 ms for a copy into a new buffer plus four border
    strips), and the U-Fuser pads before almost every 3x3 convolution. Other tensors, and
    traced or compiled calls, take ``F.pad``.
    """
    n, c, h, w = x.shape
    if not is_nhwc(x) or h < 2 or w < 2 or is_compiling() or _is_tracing():
        return F.pad(x, (1, 1, 1, 1), mode="reflect")
    buf = torch.empty((n, c, h + 2, w + 2), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    buf[:, :, 1:-1, 1:-1] = x
    return reflect_border_(buf)


def is_compiling() -> bool:
    """Whether ``torch.compile`` is tracing the current call."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def fold_dtype(t: torch.Tensor) -> torch.dtype:
    """Fold in float64 where the device has it (cheap: the tensors are tiny)."""
    return torch.float32 if t.device.type == "mps" else torch.float64


class FoldCache:
    """Derived inference weights, recomputed when a source weight changes.

    The key is the storage, version counter, dtype and device of every source tensor, so
    in-place updates (optimisers, ``load_state_dict``), ``.to()`` and ``.half()`` all invalidate
    it. Under ``torch.compile`` the fold is traced into the graph instead (a few tiny ops).
    """

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.value: Any = None

    def get(self, sources: tuple[torch.Tensor, ...], compute: Callable[[], Any]) -> Any:
        device_type = sources[0].device.type
        if is_compiling():
            with torch.autocast(device_type, enabled=False):
                return compute()
        key = tuple((t.data_ptr(), weight_version(t), t.dtype, t.device) for t in sources)
        if key != self.key or self.value is None:
            # full precision whatever the caller's autocast: the folds are tiny
            with torch.no_grad(), torch.autocast(device_type, enabled=False):
                self.value = compute()
            self.key = key
        return self.value
