"""Fusing a stream of frame pairs in order, with the reading and the writing overlapped.

:func:`fuse_frame_stream` takes an iterable of ``(ir, vis)`` pairs (frames of two cameras, of
two video files, anything :meth:`emmafuse.Fuser.fuse` accepts) and yields ``(ir, vis, fused)``
in order. It groups ``batch_size`` pairs per call of the fusion function (worth it on a GPU; on
the CPU a batch of one is as fast and has the least latency) and, with ``prefetch``, pulls the
pairs in a background thread (:class:`Prefetch`), so decoding the next frames overlaps with
fusing these. :class:`BackgroundSink` is the other end: a thread that consumes results (an
encoder) while the next frames are fused.

Both threads are daemons that stop when asked (:meth:`Prefetch.close`,
:meth:`BackgroundSink.close`), so an exception or Ctrl-C in the caller's thread never leaves
one running; an exception in a thread is raised again in the caller's thread. No emmafuse
imports but its errors: the fusion is a function given by the caller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from emmafuse.errors import FusionError

__all__ = ["BackgroundSink", "FuseMany", "Prefetch", "fuse_frame_stream", "fused_frames"]

T = TypeVar("T")

#: Fuses lists of pairs: ``fuse_many(ir_list, vis_list) -> fused_list`` (``Fuser.fuse`` on lists).
FuseMany = Callable[[list[Any], list[Any]], Sequence[Any]]

_POLL_S = 0.05  # how often a blocked thread looks at its stop flag
_READ_JOIN_S = 5.0  # how long Prefetch.close waits for a read in progress (a live source may block)
_SINK_JOIN_S = 30.0  # how long BackgroundSink.close waits for the item being consumed (an encode)


class _End:
    pass


_END = _End()


class Prefetch(Generic[T]):
    """Iterate ``source`` in a daemon thread, up to ``ahead`` items in advance.

    Iterating the ``Prefetch`` gives the items in order; an exception raised by ``source`` is
    raised again here. The source is iterated, and closed (``close()`` of a generator: its
    ``finally`` blocks run), in the background thread only.
    """

    def __init__(self, source: Iterable[T], ahead: int = 4, name: str = "emmafuse-prefetch") -> None:
        self._queue: queue.Queue[tuple[T | _End | BaseException, bool]] = queue.Queue(maxsize=max(1, ahead))
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._run, args=(source,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: T | _End | BaseException, failed: bool = False) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put((item, failed), timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: Iterable[T]) -> None:
        it = iter(source)
        try:
            for item in it:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc, failed=True)
        finally:
            close = getattr(it, "close", None)
            if callable(close):
                close()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item, failed = self._queue.get()
        if failed:
            self._finished = True
            assert isinstance(item, BaseException)
            raise item
        if isinstance(item, _End):
            self._finished = True
            raise StopIteration
        return item  # type: ignore[return-value]  # an item of source

    def close(self) -> None:
        """Stop the thread (it finishes the item it is reading) and wait for it."""
        self._finished = True
        self._stop.set()
        while True:  # unblock a put waiting for room
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(_READ_JOIN_S)


class BackgroundSink(Generic[T]):
    """Hand items to ``consume`` in a daemon thread, at most ``ahead`` waiting.

    :meth:`put` raises the exception of a failed ``consume`` (at the latest with
    :meth:`finish`, which waits for everything to be consumed). :meth:`close` abandons what
    is waiting and stops the thread.
    """

    def __init__(self, consume: Callable[[T], object], ahead: int = 4, name: str = "emmafuse-sink") -> None:
        self._consume = consume
        self._queue: queue.Queue[T | _End] = queue.Queue(maxsize=max(1, ahead))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if isinstance(item, _End):
                return
            try:
                self._consume(item)
            except BaseException as exc:  # raised in the producer's thread by put / finish
                self._error = exc
                return

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: T | _End) -> None:
        """Queue one item (waits while ``ahead`` items wait)."""
        while True:
            self._raise_error()
            if not self._thread.is_alive():
                raise FusionError("the background consumer has stopped")
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Wait until every item is consumed; raise the consumer's exception, if any."""
        self.put(_END)
        while self._thread.is_alive():
            self._thread.join(_POLL_S)
        self._raise_error()

    def close(self) -> None:
        """Stop the thread after the item it is consuming, dropping the rest."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(_SINK_JOIN_S)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


def fuse_frame_stream(
    pairs: Iterable[tuple[Any, Any]], fuse_many: FuseMany, *, batch_size: int = 1, prefetch: int = 4
) -> Generator[tuple[Any, Any, Any], None, None]:
    """``(ir, vis, fused)`` for each pair of ``pairs``, in order.

    Args:
        pairs: ``(ir, vis)`` frame pairs; read in a background thread when ``prefetch > 0``.
        fuse_many: fuses lists of frames (``Fuser.fuse`` with the options bound).
        batch_size: pairs per call of ``fuse_many`` (a result waits for its batch to fill, or
            for the stream to end).
        prefetch: pairs read ahead in a background thread; ``0`` reads them in this thread.

    The background thread stops when the stream ends, when this generator is closed, or when
    the caller's loop is left by an exception.
    """
    source: Iterator[tuple[Any, Any]] = Prefetch(pairs, prefetch, "emmafuse-read") if prefetch > 0 else iter(pairs)
    try:
        batch: list[tuple[Any, Any]] = []
        for pair in source:
            batch.append(pair)
            if len(batch) >= batch_size:
                yield from _fuse_batch(batch, fuse_many)
                batch = []
        if batch:
            yield from _fuse_batch(batch, fuse_many)
    finally:
        if isinstance(source, Prefetch):
            source.close()


def _fuse_batch(batch: list[tuple[Any, Any]], fuse_many: FuseMany) -> Iterator[tuple[Any, Any, Any]]:
    irs = [ir for ir, _ in batch]
    viss = [vis for _, vis in batch]
    fused = fuse_many(irs, viss)
    if len(fused) != len(batch):
        raise FusionError(f"the fusion function gave {len(fused)} results for {len(batch)} pairs")
    yield from zip(irs, viss, fused)


def fused_frames(
    ir_frames: Iterable[Any], vis_frames: Iterable[Any], fuse_many: FuseMany, *, batch_size: int = 1, prefetch: int = 4
) -> Generator[Any, None, None]:
    """The fused frame of each pair of two frame iterables (paired as ``zip`` pairs them), in
    order; see :func:`fuse_frame_stream`. Closing this generator stops the reading thread, which
    closes the two iterables that are generators."""
    stream = fuse_frame_stream(_zip_closing(ir_frames, vis_frames), fuse_many, batch_size=batch_size, prefetch=prefetch)
    try:
        for _, _, fused in stream:
            yield fused
    finally:
        stream.close()


def _zip_closing(a: Iterable[Any], b: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
    """``zip(a, b)`` that closes both iterators (generators: their ``finally`` blocks run) when
    it ends or is closed."""
    its = (iter(a), iter(b))
    try:
        yield from zip(*its)
    finally:
        for it in its:
            close = getattr(it, "close", None)
            if callable(close):
                close()
