"""``Fuser.fuse_frames`` and the frame pipeline of :mod:`emmafuse.frames` (no PyAV needed)."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from emmafuse.frames import BackgroundSink, Prefetch, fuse_frame_stream
from emmafuse.samples import synthetic_pair

pytestmark = pytest.mark.usefixtures("one_thread")


def frames(n: int = 6, h: int = 40, w: int = 56) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A gray infrared and an RGB visible stream, moving."""
    irs, viss = [], []
    for i in range(n):
        ir, vis = synthetic_pair(h, w + 8, seed=3)
        irs.append(np.ascontiguousarray(ir[:, i : i + w]))
        viss.append(np.ascontiguousarray(vis[:, i : i + w]))
    return irs, viss


def emma_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("emmafuse-")]


@pytest.mark.parametrize("prefetch", [4, 0])
def test_fuse_frames_equals_per_frame_fuse(fuser, prefetch):
    irs, viss = frames()
    got = list(fuser.fuse_frames(iter(irs), (v for v in viss), prefetch=prefetch))
    assert len(got) == len(irs)
    for ir, vis, out in zip(irs, viss, got):
        expected = fuser.fuse(ir, vis)
        assert out.dtype == expected.dtype and out.shape == expected.shape == (40, 56, 3)
        assert np.array_equal(out, expected)  # a batch of one on the CPU: bit-identical
    assert emma_threads() == []


def test_fuse_frames_batches_keep_order_and_values(fuser):
    irs, viss = frames(7)
    got = list(fuser.fuse_frames(irs, viss, batch_size=3))  # batches of 3, 3, 1
    assert len(got) == 7
    for ir, vis, out in zip(irs, viss, got):
        # batched convolutions round differently in the last bits: at most one level
        assert np.abs(out.astype(int) - fuser.fuse(ir, vis)).max() <= 1


def test_fuse_frames_takes_any_container_and_gives_it_back(fuser):
    irs, viss = frames(3)
    pil = list(fuser.fuse_frames([Image.fromarray(a) for a in irs], [Image.fromarray(v) for v in viss]))
    assert all(isinstance(p, Image.Image) and p.mode == "RGB" for p in pil)
    tensors = list(fuser.fuse_frames([torch.from_numpy(a) for a in irs], [torch.from_numpy(a) for a in irs]))
    assert all(isinstance(t, torch.Tensor) and t.shape == (40, 56) and t.dtype == torch.uint8 for t in tensors)
    assert np.array_equal(tensors[1].numpy(), fuser.fuse(irs[1], irs[1]))
    batch = list(fuser.fuse_frames(np.stack(irs), np.stack(viss)))  # a 4-D batch is a stream of frames
    assert len(batch) == 3 and np.array_equal(batch[2], fuser.fuse(irs[2], viss[2]))


def test_fuse_frames_stops_at_the_shorter_stream(fuser):
    irs, viss = frames(4)
    assert len(list(fuser.fuse_frames(irs, viss[:2]))) == 2


def test_options_are_checked_at_the_call(fuser):
    irs, viss = frames(2)
    with pytest.raises(ValueError, match="batch_size"):
        fuser.fuse_frames(irs, viss, batch_size=0)
    with pytest.raises(ValueError, match="prefetch"):
        fuser.fuse_frames(irs, viss, prefetch=-1)
    with pytest.raises(ValueError, match="output_range"):
        fuser.fuse_frames(irs, viss, output_range="stretch")
    with pytest.raises(ValueError, match="tile"):
        fuser.fuse_frames(irs, viss, tile=4)
    with pytest.warns(UserWarning, match="flicker"):
        fused = list(fuser.fuse_frames(irs, viss, output_range="minmax"))
    assert np.array_equal(fused[0], fuser.fuse(irs[0], viss[0], output_range="minmax"))


def test_a_bad_frame_is_raised_when_reached(fuser):
    irs, viss = frames(4)
    viss[2] = viss[2][:, :40]
    stream = fuser.fuse_frames(irs, viss)
    assert len([next(stream), next(stream)]) == 2
    with pytest.raises(ValueError, match="same height and width"):
        next(stream)
    assert emma_threads() == []


def test_an_exception_of_the_source_reaches_the_consumer_and_stops_the_thread(fuser):
    irs, viss = frames(3)

    def camera():
        yield irs[0]
        yield irs[1]
        raise OSError("camera unplugged")

    stream = fuser.fuse_frames(camera(), viss)
    assert next(stream).shape == (40, 56, 3)
    with pytest.raises(OSError, match="camera unplugged"):
        list(stream)
    assert emma_threads() == []


def test_closing_early_stops_the_reader_and_closes_the_source(fuser):
    irs, viss = frames(2)
    closed = threading.Event()
    reader_threads = []

    def endless():
        try:
            while True:
                reader_threads.append(threading.current_thread().name)
                yield irs[0]
        finally:
            closed.set()

    stream = fuser.fuse_frames(endless(), itertools.repeat(viss[0]))
    assert next(stream).shape == (40, 56, 3)
    stream.close()
    assert closed.wait(5) and emma_threads() == []
    assert set(reader_threads) == {"emmafuse-read"}  # the source ran in the reading thread only


def test_prefetch_overlaps_reading_with_fusing():
    """A slow source and a slow fusion: with a reading thread the two waits overlap."""

    def slow_pairs(n):
        for i in range(n):
            time.sleep(0.05)
            yield i, i

    def slow_fuse(a, b):
        time.sleep(0.05)
        return [x + y for x, y in zip(a, b)]

    for prefetch, limit in [(0, None), (4, 0.8)]:
        t0 = time.perf_counter()
        out = [f for _, _, f in fuse_frame_stream(slow_pairs(8), slow_fuse, prefetch=prefetch)]
        elapsed = time.perf_counter() - t0
        assert out == [2 * i for i in range(8)]
        if limit is None:
            sequential = elapsed
        else:
            assert elapsed < limit * sequential, (elapsed, sequential)


def test_background_sink_consumes_in_order_and_reports_failures():
    seen: list[int] = []
    sink: BackgroundSink[int] = BackgroundSink(seen.append, ahead=2)
    for i in range(10):
        sink.put(i)
    sink.finish()
    assert seen == list(range(10)) and not sink.running

    def fail_at_3(i: int) -> None:
        if i == 3:
            raise OSError("disk full")

    sink = BackgroundSink(fail_at_3, ahead=1)
    with pytest.raises(OSError, match="disk full"):
        for i in range(100):
            sink.put(i)
        sink.finish()
    sink.close()
    assert emma_threads() == []


def test_prefetch_gives_items_in_order_and_closes():
    p = Prefetch(iter(range(50)), ahead=3)
    assert list(p) == list(range(50))
    p.close()
    assert emma_threads() == []
