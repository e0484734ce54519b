"""One video file from two: every check first, then decode | fuse | encode, written atomically.

:func:`prepare_video_job` does all the checks before any work (PyAV present, the output path,
both inputs readable, same frame size, frame rates within 1 %, the options) and returns a
:class:`VideoJob`; :func:`run_video_job` runs it with a fusion function (``Fuser.fuse`` on
lists, see :mod:`emmafuse.frames`): a background thread decodes and pairs the frames, the
calling thread fuses them, and a second background thread encodes the results, so decoding
and encoding overlap with fusing. The output is written under a temporary name in its folder
and renamed at the end (:func:`emmafuse._fs.atomic_write`): an exception or Ctrl-C leaves
neither the final file nor the temporary one, and stops both threads.

Only ``output_range="clamp"`` is allowed: it is a fixed function of each frame, whereas a
per-frame min-max stretch makes the brightness of the video flicker.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from emmafuse._fs import atomic_write
from emmafuse.errors import InputError, VideoError
from emmafuse.frames import BackgroundSink, FuseMany, fuse_frame_stream
from emmafuse.video import (
    DEFAULT_CRF,
    PairingReport,
    VideoInfo,
    VideoWriter,
    check_pair,
    check_video_output,
    paired_frames,
    pick_encoder,
    probe_video,
    require_av,
    side_by_side,
)

__all__ = ["VideoJob", "VideoResult", "check_video_options", "prepare_video_job", "run_video_job"]

_AHEAD = 4  # frames decoded ahead of the fusion, and fused frames waiting for the encoder


@dataclass(frozen=True)
class VideoJob:
    """A checked video fusion, ready to run."""

    ir: VideoInfo
    vis: VideoInfo
    out: Path
    container_format: str
    encoder: str
    start: int = 0
    frames: int | None = None
    side_by_side: bool = False
    crf: int = DEFAULT_CRF

    @property
    def fps(self) -> Fraction:
        """The output frame rate: the visible video's (the two agree within 1 %)."""
        return self.vis.fps

    @property
    def width(self) -> int:
        return self.vis.width * (3 if self.side_by_side else 1)

    @property
    def height(self) -> int:
        return self.vis.height

    @property
    def expected_frames(self) -> int | None:
        """Frame pairs to fuse, from the headers' counts and ``frames`` (``None``: unknown)."""
        counts = [n - self.start for n in (self.ir.frames, self.vis.frames) if n is not None]
        if self.frames is not None:
            counts.append(self.frames)
        return max(0, min(counts)) if counts else None


@dataclass(frozen=True)
class VideoResult:
    """What :meth:`emmafuse.Fuser.fuse_video` wrote."""

    path: Path
    frames: int  # frames written
    width: int
    height: int
    fps: Fraction
    encoder: str  # "libx264", "mpeg4", ...
    dropped: int = 0  # frames of the longer input left unpaired (a warning said so)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_video_options(*, frames: int | None = None, start: int = 0, crf: int = DEFAULT_CRF, output_range: str = "clamp") -> None:
    """Refuse options a video fusion cannot use, before any work.

    Raises:
        VideoError: ``output_range="minmax"`` (a per-frame stretch flickers).
        InputError: ``frames`` not a positive integer, ``start`` negative, ``crf`` outside 0..51.
    """
    if output_range == "minmax":
        raise VideoError(
            "output_range 'minmax' stretches each frame by its own minimum and maximum, which makes a video "
            "flicker; video fusion uses 'clamp' (a fixed function of each frame)",
            parameter="output_range",
        )
    if output_range != "clamp":
        raise InputError(f"output_range must be 'clamp' for video, got {output_range!r}", parameter="output_range")
    if frames is not None and (not _is_int(frames) or frames < 1):
        raise InputError(f"frames must be a positive integer (or None for all), got {frames!r}", parameter="frames")
    if not _is_int(start) or start < 0:
        raise InputError(f"start must be a frame index >= 0, got {start!r}", parameter="start")
    if not _is_int(crf) or not 0 <= crf <= 51:
        raise InputError(
            f"crf (output quality) must be an integer from 0 (lossless) to 51 (worst), got {crf!r}", parameter="crf"
        )


def prepare_video_job(
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
    output_range: str = "clamp",
) -> VideoJob:
    """Check everything a video fusion needs, in this order: the options, PyAV, the output
    (known suffix, not an input, writable, ``overwrite``), the inputs (readable videos), the
    pair (frame size, frame rate), ``start`` against the declared frame counts, the encoder.

    Raises:
        MissingExtraError: PyAV is not installed.
        OutputError: the output path.
        VideoReadError: an input cannot be read.
        VideoError: the pair or the options.
    """
    check_video_options(frames=frames, start=start, crf=crf, output_range=output_range)
    require_av()
    target, container_format = check_video_output(out, (ir, vis), overwrite=overwrite)
    ir_info = probe_video(ir, "infrared video")
    vis_info = probe_video(vis, "visible video")
    check_pair(ir_info, vis_info)
    for info in (ir_info, vis_info):
        if info.frames is not None and start >= info.frames:
            raise VideoError(f"start {start} is past the end of {info.name}: it has {info.frames} frames", parameter="start")
    width = vis_info.width * (3 if side_by_side else 1)
    encoder = pick_encoder(codec, width, vis_info.height, vis_info.fps)
    return VideoJob(ir_info, vis_info, target, container_format, encoder, start, frames, side_by_side, crf)


def run_video_job(
    job: VideoJob,
    fuse_many: FuseMany,
    *,
    batch_size: int = 1,
    progress: bool = False,
    read_ahead: bool = True,
    write_behind: bool = True,
) -> VideoResult:
    """Decode, fuse and encode ``job``; returns what was written.

    Args:
        fuse_many: fuses lists of frames (``Fuser.fuse`` with its options bound).
        batch_size: frame pairs per call of ``fuse_many``.
        progress: a progress bar (frames, frames per second, time left) on stderr, shown only
            when stderr is a terminal.
        read_ahead: decode and pair frames in a background thread (else in this one).
        write_behind: encode in a background thread (else in this one).

    Warns:
        UserWarning: the frame counts differ (the common length is fused; the warning says how
            many frames were dropped).

    Raises:
        VideoReadError: a frame cannot be decoded or a stream is truncated (names the file and
            the frame).
        OSError: the output cannot be written.
    """
    report = PairingReport()
    written = 0

    def write(tmp: str) -> None:
        nonlocal written
        written = _encode(job, tmp, fuse_many, report, batch_size, progress, read_ahead, write_behind)

    atomic_write(job.out, write)
    if report.note:
        warnings.warn(report.note, UserWarning, stacklevel=3)
    return VideoResult(job.out, written, job.width, job.height, job.fps, job.encoder, report.dropped)


def _encode(
    job: VideoJob,
    tmp: str,
    fuse_many: FuseMany,
    report: PairingReport,
    batch_size: int,
    progress: bool,
    read_ahead: bool,
    write_behind: bool,
) -> int:
    """Decode, fuse and encode ``job`` into the file ``tmp``; returns the frames written."""
    writer = VideoWriter(
        tmp,
        container_format=job.container_format,
        width=job.width,
        height=job.height,
        fps=job.fps,
        encoder=job.encoder,
        crf=job.crf,
    )
    pairs = paired_frames(job.ir, job.vis, start=job.start, frames=job.frames, report=report)
    stream = fuse_frame_stream(pairs, fuse_many, batch_size=batch_size, prefetch=_AHEAD if read_ahead else 0)
    sink: BackgroundSink[np.ndarray] | None = None
    try:
        if write_behind:
            sink = BackgroundSink(writer.write, _AHEAD, "emmafuse-encode")
        _pump(job, stream, sink.put if sink is not None else writer.write, progress)
        if sink is not None:
            sink.finish()
        writer.finish()
        return writer.frames
    except BaseException:
        if sink is not None:
            sink.close()  # before the container is closed under it
        raise
    finally:
        stream.close()  # stops the decoding thread, which closes the inputs
        if sink is None or not sink.running:
            writer.close()


def _pump(
    job: VideoJob, stream: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], put: Callable[[np.ndarray], None], progress: bool
) -> None:
    """Each fused frame (or ``ir | vis | fused``) to ``put``, with the progress bar."""
    from tqdm import tqdm

    # disable=None: tqdm shows the bar only when stderr is a terminal
    with tqdm(
        total=job.expected_frames, desc="fusing", unit="frame", file=sys.stderr, leave=False, disable=None if progress else True
    ) as bar:
        for ir, vis, fused in stream:
            put(side_by_side(ir, vis, fused) if job.side_by_side else fused)
            bar.update()
