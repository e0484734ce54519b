"""The stream and video methods of :class:`~emmafuse.fuser.Fuser`: ``fuse_frames`` and ``fuse_video``.

They bind :meth:`Fuser.fuse <emmafuse.fuser.Fuser.fuse>` to their options (checked when called)
and hand the work to :mod:`emmafuse.frames` (two streams of frames, in order) and
:mod:`emmafuse.video_job` (two video files into one). ``Fuser`` inherits them from
:class:`StreamMethods`; this module knows the fuser only through the :class:`_Fusing` protocol.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import torch

from emmafuse.batching import OutputRange, check_fuse_options
from emmafuse.errors import InputError
from emmafuse.models import UFuser
from emmafuse.tiling import TileLike, check_tile_options
from emmafuse.video import DEFAULT_CRF

if TYPE_CHECKING:
    from emmafuse.video_job import VideoResult

__all__ = ["StreamMethods"]


class _Fusing(Protocol):
    """What the stream methods use of a :class:`~emmafuse.fuser.Fuser`."""

    @property
    def device(self) -> torch.device: ...

    @property
    def model(self) -> UFuser: ...

    def fuse(
        self, ir: Any, vis: Any, *, output_range: OutputRange, batch_size: int, tile: TileLike, tile_overlap: int | None
    ) -> Any: ...

    def _fuse_lists(
        self, output_range: OutputRange, batch_size: int | None, tile: TileLike, tile_overlap: int | None
    ) -> tuple[Callable[[list[Any], list[Any]], list[Any]], int]: ...


class StreamMethods:
    """``fuse_frames`` and ``fuse_video`` (a base of :class:`~emmafuse.fuser.Fuser`)."""

    def _fuse_lists(
        self: _Fusing, output_range: OutputRange, batch_size: int | None, tile: TileLike, tile_overlap: int | None
    ) -> tuple[Callable[[list[Any], list[Any]], list[Any]], int]:
        """``fuse`` on lists with the options bound (checked now, not at the first frame) and
        the frames per call (``None``: 1 on the CPU, where batches gain nothing, else 8)."""
        if batch_size is None:
            batch_size = 1 if self.device.type == "cpu" else 8
        check_fuse_options(output_range, batch_size)
        check_tile_options(tile, tile_overlap, self.model.size_requirements)
        size = batch_size

        def fuse_lists(ir: list[Any], vis: list[Any]) -> list[Any]:
            return self.fuse(ir, vis, output_range=output_range, batch_size=size, tile=tile, tile_overlap=tile_overlap)

        return fuse_lists, batch_size

    def fuse_frames(
        self: _Fusing,
        ir_frames: Iterable[Any],
        vis_frames: Iterable[Any],
        *,
        batch_size: int | None = None,
        prefetch: int = 4,
        output_range: OutputRange = "clamp",
        tile: TileLike = None,
        tile_overlap: int | None = None,
    ) -> Generator[Any, None, None]:
        """Fuse two streams of registered frames; yields the fused frames in order.

        For live streams (two cameras) and custom pipelines: ``ir_frames`` and ``vis_frames``
        are iterables (generators, lists, a 4-D batch) of anything :meth:`fuse` accepts; the
        frames are paired by position and the pairing stops when either ends (as ``zip``).
        Each result is exactly what ``fuse(ir, vis)`` gives for the pair (container, dtype,
        layout and colour rule of :meth:`fuse`; bit-identical with a batch of one).

        Args:
            batch_size: frames per network call. ``None`` (default): 1 on the CPU (batches are
                no faster there and a frame waits for no other), 8 on CUDA. A frame is given
                out once its batch is full or the streams end.
            prefetch: frame pairs pulled ahead from the iterables in a background thread, so
                that reading (decoding, a camera) overlaps with fusing; ``0`` pulls them in the
                calling thread. The iterables are then advanced in that thread only.
            output_range, tile, tile_overlap: as for :meth:`fuse`. ``"minmax"`` stretches
                each frame by its own minimum and maximum and makes a video flicker: it warns.

        The options are checked when ``fuse_frames`` is called; an error of a frame (sizes
        differ, bad dtype) is raised when that frame is reached, and an exception of an
        iterable is raised in the consuming thread. Closing the returned generator (or leaving
        the loop that consumes it) stops the background thread.
        """
        from emmafuse.frames import fused_frames

        fuse_lists, size = self._fuse_lists(output_range, batch_size, tile, tile_overlap)
        if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0:
            raise InputError(f"prefetch must be an integer >= 0, got {prefetch!r}", parameter="prefetch")
        if output_range == "minmax":
            warnings.warn(
                "output_range='minmax' stretches each frame by its own minimum and maximum: the brightness of a "
                "video flickers from frame to frame; 'clamp' (the default) is a fixed function of each frame",
                UserWarning,
                stacklevel=2,
            )
        return fused_frames(ir_frames, vis_frames, fuse_lists, batch_size=size, prefetch=prefetch)

    def fuse_video(
        self: _Fusing,
        ir: str | os.PathLike[str],
        vis: str | os.PathLike[str],
        out: str | os.PathLike[str],
        *,
        frames: int | None = None,
        start: int = 0,
        side_by_side: bool = False,
        crf: int = DEFAULT_CRF,
        codec: str | None = None,
        overwrite: bool = True,
        batch_size: int | None = None,
        tile: TileLike = None,
        tile_overlap: int | None = None,
        output_range: OutputRange = "clamp",
        progress: bool = False,
        overlap: bool = True,
    ) -> VideoResult:
        """Fuse two registered video files (infrared, visible) frame by frame into ``out``.

        Needs PyAV (``pip install 'emmafuse[video]'``). Frames are paired by index; both videos
        must have the same frame size and frame rates within 1 %. A gray video is read as gray
        (also YUV video whose chroma is neutral), a colour one as RGB, and each frame pair is
        fused by :meth:`fuse` (a colour visible video keeps its chroma). The output is H.264
        (MPEG-4 part 2 when no H.264 encoder works), ``yuv420p``, at the visible video's frame
        rate; it is written under a temporary name in its folder and renamed at the end, so an
        exception or Ctrl-C leaves no file under ``out`` and no temporary file.

        Args:
            ir, vis: the input videos.
            out: the output file: ``.mp4``, ``.mkv``, ``.avi`` or ``.mov``; not an input.
            frames: fuse at most this many frame pairs (default: all).
            start: skip the first ``start`` frames of both videos.
            side_by_side: write ``ir | vis | fused`` side by side (three times as wide).
            crf: output quality on H.264's constant rate factor scale, 0 (lossless) to 51
                (worst); 18 (default) is close to visually lossless. For MPEG-4 part 2 it is
                mapped to the equivalent fixed quantiser.
            codec: an FFmpeg encoder name to use instead of the automatic choice.
            overwrite: replace an existing ``out`` (default); ``False`` refuses it.
            batch_size, tile, tile_overlap: as for :meth:`fuse_frames` / :meth:`fuse`.
            output_range: ``"clamp"`` only: ``"minmax"`` (a per-frame stretch) would flicker.
            progress: a progress bar with frames per second and time left on stderr, shown
                only when stderr is a terminal.
            overlap: decode and encode in background threads while frames are fused (default);
                ``False`` runs decode, fuse, encode one after the other in this thread.

        Returns:
            A :class:`~emmafuse.video_job.VideoResult`: the path, frames written, size, frame
            rate, encoder and the number of frames dropped.

        Warns:
            UserWarning: the videos have different frame counts: the common length is fused
                and the warning says how many frames of the longer one were dropped.

        Raises:
            MissingExtraError: PyAV is not installed (an ``ImportError``).
            OutputError: the output path (unknown suffix, an input, not writable, exists
                with ``overwrite=False``); checked before any work.
            VideoReadError: an input cannot be opened or decoded, or is truncated; the message
                names the file and the frame index.
            VideoError: frame sizes or rates differ, ``start`` is past the end, ``"minmax"``.
            InputError: other bad options (a ``ValueError``).
        """
        from emmafuse.video_job import check_video_options, prepare_video_job, run_video_job

        check_video_options(frames=frames, start=start, crf=crf, output_range=output_range)  # "minmax" refused
        fuse_lists, size = self._fuse_lists("clamp", batch_size, tile, tile_overlap)
        job = prepare_video_job(
            ir,
            vis,
            out,
            frames=frames,
            start=start,
            side_by_side=side_by_side,
            crf=crf,
            codec=codec,
            overwrite=overwrite,
            output_range=output_range,
        )
        return run_video_job(job, fuse_lists, batch_size=size, progress=progress, read_ahead=overlap, write_behind=overlap)

