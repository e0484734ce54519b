"""Running a network's forward: in a compute precision, by the fastest path set up, on any device.

- :class:`NetworkRunner`: eager, ``torch.compile`` d or replayed CUDA graphs, under autocast,
  with the float32 fallback for half-precision outputs holding NaN/Inf;
- :func:`run_pipelined`: a stream of host batches through a forward, overlapping copies and
  compute on CUDA (used for whole images and for tiles alike).

This module knows networks only as ``nn.Module`` s called with ``(ir, vis)``; from the networks
layer below it takes only :func:`~emmafuse.models.fast_paths.weight_version`, the version counter
the folded-weight caches of the models key on as well.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from emmafuse.errors import InputError
from emmafuse.models.fast_paths import weight_version

__all__ = ["ForwardFn", "NetworkRunner", "run_pipelined"]

ForwardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BatchMaker = Callable[[bool], tuple[torch.Tensor, torch.Tensor]]


def _prepare(model: nn.Module) -> None:
    """Precompute derived inference weights (the U-Fuser's folds), if the network has any."""
    prepare = getattr(model, "prepare_inference", None)
    if callable(prepare):
        prepare()


_Graph = tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]  # graph, static ir, static vis, static out


class _CudaGraphs:
    """Recorded CUDA graphs of the eager network, one per input shape and precision (LRU)."""

    def __init__(self, max_shapes: int = 4) -> None:
        self.max_shapes = max_shapes
        self.entries: dict[tuple[Any, ...], _Graph] = {}

    @staticmethod
    def _weights_key(model: nn.Module) -> tuple[tuple[int, int], ...]:
        return tuple((p.data_ptr(), weight_version(p)) for p in model.parameters())

    def run(
        self,
        model: nn.Module,
        autocast: Callable[[], contextlib.AbstractContextManager[Any]],
        dtype: torch.dtype,
        ir: torch.Tensor,
        vis: torch.Tensor,
    ) -> torch.Tensor:
        key = (tuple(ir.shape), ir.device, dtype, self._weights_key(model))
        entry = self.entries.pop(key, None)
        if entry is None:
            entry = self._record(model, autocast, ir, vis)
            # drop graphs of stale weights and the least recently used shapes
            self.entries = {k: v for k, v in self.entries.items() if k[3] == key[3]}
            while len(self.entries) >= self.max_shapes:
                self.entries.pop(next(iter(self.entries)))
        self.entries[key] = entry  # most recently used last
        graph, static_ir, static_vis, static_out = entry
        static_ir.copy_(ir)
        static_vis.copy_(vis)
        graph.replay()
        return static_out.clone()

    @staticmethod
    def _record(
        model: nn.Module,
        autocast: Callable[[], contextlib.AbstractContextManager[Any]],
        ir: torch.Tensor,
        vis: torch.Tensor,
    ) -> _Graph:
        _prepare(model)
        static_ir, static_vis = ir.clone(), vis.clone()
        side = torch.cuda.Stream(ir.device)
        side.wait_stream(torch.cuda.current_stream(ir.device))
        with torch.cuda.stream(side):  # warm-up: cuDNN autotuning, folded-weight caches
            for _ in range(2):
                with autocast():
                    model(static_ir, static_vis)
        torch.cuda.current_stream(ir.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), autocast():
            static_out = model(static_ir, static_vis)
        return graph, static_ir, static_vis, static_out


class NetworkRunner:
    """Runs ``model(ir, vis)`` on network-sized device tensors in a compute precision.

    Eager by default; :meth:`compile` switches to a ``torch.compile`` d forward and
    :meth:`use_cuda_graphs` to recorded CUDA graphs (the last one called wins). Half precision
    runs under autocast; a batch whose output holds NaN/Inf is recomputed in float32.
    """

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self.device = device
        self.dtype = dtype
        self._compiled: Callable[..., torch.Tensor] | None = None
        self._graphs: _CudaGraphs | None = None
        self.external: ForwardFn | None = None  # another runtime's forward (onnxruntime), CPU float32

    def move(self, device: torch.device, dtype: torch.dtype) -> None:
        """Put the network on ``device`` and compute in ``dtype`` (graphs are re-recorded)."""
        if device != self.device and self._graphs is not None:
            self._graphs = _CudaGraphs(self._graphs.max_shapes) if device.type == "cuda" else None
        self.model.to(device)
        self.device, self.dtype = device, dtype

    def compile(self, **compile_kwargs: Any) -> None:
        _prepare(self.model)
        self._compiled = torch.compile(self.model, **compile_kwargs)
        self._graphs = self.external = None

    def use_external(self, forward: ForwardFn | None) -> None:
        """Run ``forward`` (e.g. an onnxruntime session) instead of the network; ``None``: back to torch."""
        self.external = forward
        if forward is not None:
            self._compiled = self._graphs = None

    def use_cuda_graphs(self, enabled: bool = True, *, max_shapes: int = 4) -> None:
        if not enabled:
            self._graphs = None
            return
        if self.device.type != "cuda":
            raise InputError(f"CUDA graphs need a CUDA device; this Fuser runs on {self.device}")
        if not isinstance(max_shapes, int) or max_shapes < 1:
            raise InputError(f"max_shapes must be a positive integer, got {max_shapes!r}", parameter="max_shapes")
        self._compiled = self.external = None
        self._graphs = _CudaGraphs(max_shapes)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype == torch.float32:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.dtype)

    def run(self, ir_p: torch.Tensor, vis_p: torch.Tensor) -> torch.Tensor:
        """One forward in the compute precision, by the fastest runner set up."""
        if self.external is not None:
            return self.external(ir_p, vis_p)
        if self._graphs is not None:
            return self._graphs.run(self.model, self.autocast, self.dtype, ir_p, vis_p)
        with self.autocast():
            if self._compiled is not None:
                return self._compiled(ir_p, vis_p)
            out: torch.Tensor = self.model(ir_p, vis_p)
            return out

    @torch.inference_mode()
    def forward(self, ir_p: torch.Tensor, vis_p: torch.Tensor) -> torch.Tensor:
        """Network output (float32) for network-sized device tensors, with the float32 fallback.

        Runs under ``torch.inference_mode`` (the fast paths need autograd off); callers combine
        the results outside it, so what users get back are ordinary tensors.
        """
        out = self.run(ir_p, vis_p).float()
        if self.dtype != torch.float32 and not torch.isfinite(out).all():
            warnings.warn(
                f"{self.dtype} inference produced NaN/Inf; recomputing this batch in float32",
                RuntimeWarning,
                stacklevel=4,
            )
            out = self.model(ir_p.float(), vis_p.float()).float()
        return out


def run_pipelined(
    forward: ForwardFn,
    batches: Iterable[BatchMaker],
    device: torch.device,
    finish: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> Iterator[torch.Tensor]:
    """Run ``forward`` over host batches; yield each float32 result on the host, in order.

    Each item of ``batches`` is a callable ``make(pin) -> (ir, vis)`` building one host batch
    (in pinned memory when ``pin``). ``finish(device_result, index)`` post-processes a result on
    the device before it is copied back. On CUDA the upload of batch k+1 runs on a copy stream
    and the download of batch k is asynchronous into pinned memory, so host work (building the
    next batch, consuming the previous result) overlaps with device compute. Elsewhere this is
    a plain loop.
    """
    post: Callable[[torch.Tensor, int], torch.Tensor] = finish or (lambda res, _i: res)
    if device.type != "cuda":
        for idx, make in enumerate(batches):
            a, b = make(False)
            yield post(forward(a.to(device), b.to(device)), idx).float().cpu()
        return

    compute = torch.cuda.current_stream(device)
    copy = torch.cuda.Stream(device)

    def upload(make: BatchMaker) -> tuple[torch.Tensor, torch.Tensor, torch.cuda.Event]:
        a, b = make(True)
        copy.wait_stream(compute)  # device memory freed on the compute stream may be reused here
        with torch.cuda.stream(copy):
            da = a.to(device, non_blocking=True)
            db = b.to(device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(copy)
        da.record_stream(compute)  # allocated on the copy stream, consumed on the compute stream
        db.record_stream(compute)
        return da, db, ready

    it = iter(batches)
    first = next(it, None)
    nxt = upload(first) if first is not None else None
    pending: tuple[torch.Tensor, torch.cuda.Event] | None = None
    idx = 0
    while nxt is not None:
        da, db, ready = nxt
        compute.wait_event(ready)
        res = post(forward(da, db), idx).float()
        host = torch.empty(res.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(res, non_blocking=True)
        done = torch.cuda.Event()
        done.record(compute)
        following = next(it, None)  # the GPU works through the queue while the host prepares more
        nxt = upload(following) if following is not None else None
        if pending is not None:
            pending[1].synchronize()
            yield pending[0]
        pending = (host, done)
        idx += 1
    if pending is not None:
        pending[1].synchronize()
        yield pending[0]
