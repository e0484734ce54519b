"""The U-Fuser as an ONNX graph, and an onnxruntime session that runs it like the network.

:func:`onnx_bytes` traces the network's exact inference form (the weight-only folds of
``docs/performance.md`` baked in; the per-image attention fold and the in-place concatenation
do not trace and are left out) with dynamic batch, height and width.
:class:`OnnxRuntimeForward` is the CPU backend ``emmafuse.load(..., backend="onnxruntime")``
uses: a ``forward(ir, vis)`` on torch tensors that runs an onnxruntime session, rebuilt when the
network's weights change. Graphs are cached in ``$EMMAFUSE_CACHE/onnx`` (default
``~/.cache/emmafuse/onnx``) by a hash of the weights, so a second load does not trace again.
"""

from __future__ import annotations

import copy
import hashlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emmafuse._fs import atomic_write, cache_root
from emmafuse._version import __version__
from emmafuse.errors import InputError, import_extra
from emmafuse.models import UFuser
from emmafuse.models.fast_paths import weight_version

__all__ = ["DEFAULT_OPSET", "OnnxRuntimeForward", "onnx_bytes"]

#: The opset of exported files unless asked otherwise (supported by onnxruntime >= 1.14, TensorRT 8.6+).
DEFAULT_OPSET = 17
#: Export traces the network at this size (any multiple of 8 works; the axes stay dynamic).
_TRACE_SHAPE = (2, 1, 64, 96)  # batch 2: the batch-1 per-image fold must not be traced


def _export_module(model: UFuser, fp16: bool) -> UFuser:
    """A copy of ``model`` set up to trace its exact inference form on the CPU."""
    net = copy.deepcopy(model).to("cpu").eval()
    net.set_fast_paths(False, fold_attention=True, fold_mlp=True, fused_layernorm=True)
    if fp16:
        net = net.half()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def onnx_bytes(model: UFuser, *, opset: int = DEFAULT_OPSET, fp16: bool = False) -> bytes:
    """The ONNX serialisation of ``model``'s inference graph (no metadata), as bytes.

    ``fp16``: weights, inputs and output in float16 (for GPU runtimes).
    """
    if not isinstance(opset, int) or not 14 <= opset <= 23:
        raise InputError(f"opset must be an integer from 14 to 23, got {opset!r}", parameter="opset")
    net = _export_module(model, fp16)
    dtype = torch.float16 if fp16 else torch.float32
    gen = torch.Generator().manual_seed(0)
    example = tuple(torch.rand(_TRACE_SHAPE, generator=gen).to(dtype) for _ in range(2))
    axes = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter warns about its deprecation and about traced shape arithmetic
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            example,
            buffer,  # type: ignore[arg-type]  # a file object works too
            input_names=["ir", "vis"],
            output_names=["fused"],
            dynamic_axes={"ir": axes, "vis": axes, "fused": axes},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return buffer.getvalue()


def _cache_file(model: UFuser) -> Path:
    """Where the graph of these weights is cached (a hash of weights, code and torch versions)."""
    digest = hashlib.sha256(f"{__version__} {torch.__version__} {DEFAULT_OPSET}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return cache_root() / "onnx" / f"ufuser-{digest.hexdigest()[:24]}.onnx"


def _graph_for(model: UFuser) -> bytes:
    """The model's ONNX graph, from the cache when these weights were traced before."""
    cached = _cache_file(model)
    if cached.is_file():
        return cached.read_bytes()
    data = onnx_bytes(model)
    try:
        atomic_write(cached, lambda tmp: Path(tmp).write_bytes(data))
    except OSError:
        pass  # a read-only home: trace again next time
    return data


class OnnxRuntimeForward:
    """``forward(ir, vis)`` of a U-Fuser through onnxruntime on the CPU (float32).

    The session is built from the network's weights at the first call and rebuilt when they
    change (load_state_dict, in-place updates), like the CUDA graphs of :mod:`emmafuse.runner`.
    ``threads``: onnxruntime's intra-op threads (default: torch's thread count).
    """

    def __init__(self, model: UFuser, threads: int | None = None) -> None:
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads must be a positive integer, got {threads!r}", parameter="threads")
        self._ort: Any = import_extra("onnxruntime", extra="onnx", purpose="the onnxruntime backend")
        self.model = model
        self.threads = threads
        self._session: Any = None
        self._key: tuple[tuple[int, int], ...] | None = None

    def _weights_key(self) -> tuple[tuple[int, int], ...]:
        return tuple((p.data_ptr(), weight_version(p)) for p in self.model.parameters())

    @property
    def session(self) -> Any:
        """The onnxruntime ``InferenceSession`` for the network's current weights."""
        key = self._weights_key()
        if self._session is None or key != self._key:
            options = self._ort.SessionOptions()
            options.intra_op_num_threads = self.threads or torch.get_num_threads()
            options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = self._ort.InferenceSession(
                _graph_for(self.model), options, providers=["CPUExecutionProvider"]
            )
            self._key = key
        return self._session

    def __call__(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        feeds = {
            "ir": np.ascontiguousarray(ir.detach().to("cpu", torch.float32).numpy()),
            "vis": np.ascontiguousarray(vis.detach().to("cpu", torch.float32).numpy()),
        }
        return torch.from_numpy(self.session.run(None, feeds)[0])
